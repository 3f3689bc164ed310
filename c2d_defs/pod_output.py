"""Following a pod's log while it runs: into the step's compute logs, and the algorithm's into its live copy.

The op runs its pod on its own thread; a follower thread reads the pod's log as it grows
(`PodRunner.read_log`) and writes it, scrubbed and bounded (c2d_core.live_logs), to the op process's
stdout, which Dagster's compute log manager captures as the step's stdout (the Dagster UI's tab). For
the algorithm pod it also keeps the live copy of the log in the result store that the Provider
streams to the job's owner. Both are courtesies: a failure to write them never changes the job.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

from c2d_core.live_logs import (
    LIVE_LOG_CAP,
    LIVE_LOG_NAME,
    MAX_LINE,
    STEP_LOG_CAP,
    scrub_for_operators,
    truncation_line,
)
from c2d_core.results import ResultStore
from c2d_defs.pod_runner import PodResult, PodRunner, PodSpec

log = logging.getLogger(__name__)

# How much of the log one read takes; a poll reads until it has caught up.
READ_CHUNK = 64 * 1024
FOLLOW_INTERVAL = 0.5
LIVE_COPY_INTERVAL = 1.0


class LiveLogCopy:
    """The algorithm's log so far, kept in the result store as `LIVE_LOG_NAME` of the job, at most
    `cap` bytes, rewritten at most every `interval` seconds while it grows (and once at the end).
    `on_stored` learns its location once, the first time it is stored."""

    def __init__(
        self,
        store: ResultStore,
        job_id: str,
        on_stored: Callable[[str], None],
        *,
        cap: int = LIVE_LOG_CAP,
        interval: float = LIVE_COPY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.job_id, self.on_stored = store, job_id, on_stored
        self.cap, self.interval, self.clock = cap, interval, clock
        self.content = bytearray()
        self.full = False
        self.location: str | None = None
        self._dirty = False
        self._stored_at: float | None = None
        self._failed = False

    def add(self, data: bytes) -> None:
        if self.full or not data:
            return
        room = self.cap - len(self.content)
        self.content += data[:room]
        if len(data) > room:
            self.content += truncation_line("algorithm", self.cap).encode()
            self.full = True
        self._dirty = True

    def store_now(self, *, final: bool = False) -> None:
        """Store the copy if it changed and the interval has passed (always when `final`)."""
        if not self._dirty or self._failed:
            return
        now = self.clock()
        if not final and self._stored_at is not None and now - self._stored_at < self.interval:
            return
        try:
            stored = self.store.put(self.job_id, LIVE_LOG_NAME, io.BytesIO(bytes(self.content)))
        except Exception as error:  # the store is down: the log still comes with the results
            self._failed = True
            log.warning("live algorithm log not stored (%s); it comes with the results", type(error).__name__)
            return
        self._dirty, self._stored_at = False, now
        if self.location is None:
            self.location = stored.location
            self.on_stored(stored.location)


def write_stdout(text: str) -> None:
    # Looked up at each write: Dagster redirects the descriptor, tests may swap the object.
    sys.stdout.write(text)
    sys.stdout.flush()


class PodOutput:
    """One pod's log, read on from where the last read ended and passed on in whole lines."""

    def __init__(
        self,
        read: Callable[[int, int], bytes],
        component: str,
        sink: Callable[[str], None] = write_stdout,
        *,
        cap: int = STEP_LOG_CAP,
        live: LiveLogCopy | None = None,
    ) -> None:
        self.read, self.component, self.sink, self.cap, self.live = read, component, sink, cap, live
        self.offset = 0
        self.written = 0
        self.cut = False
        self._partial = b""
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            self._poll()
            if self.live is not None:
                self.live.store_now()

    def finish(self) -> None:
        """The last of the log, once the pod has ended: the rest, an unfinished last line, the live copy."""
        with self._lock:
            self._poll()
            if self._partial:
                self._emit(self._partial + b"\n")
                self._partial = b""
            if self.live is not None:
                self.live.store_now(final=True)

    def _poll(self) -> None:
        while not (self.cut and (self.live is None or self.live.full)):
            data = self.read(self.offset, READ_CHUNK)
            if not data:
                return
            self.offset += len(data)
            if self.live is not None:
                self.live.add(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                self._emit(line + b"\n")
            while len(self._partial) > MAX_LINE:
                self._emit(self._partial[:MAX_LINE] + b"\n")
                self._partial = self._partial[MAX_LINE:]

    def _emit(self, line: bytes) -> None:
        if self.cut:
            return
        text = (
            f"[{self.component}] " + scrub_for_operators(line.decode("utf-8", "replace").rstrip("\n")) + "\n"
        )
        size = len(text.encode())
        # The cap bounds the pod's own lines; the line saying it was reached comes on top.
        if self.written + size > self.cap:
            self.cut = True
            text = truncation_line(self.component, self.cap)
        self.written += size
        try:
            self.sink(text)
        except (OSError, ValueError):  # a closed stdout: the step's log is a courtesy
            self.cut = True


@contextlib.contextmanager
def followed(output: PodOutput, interval: float = FOLLOW_INTERVAL) -> Iterator[PodOutput]:
    """Poll `output` on a thread of its own while the block runs (the pod), then read its last."""
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(interval):
            try:
                output.poll()
            except Exception as error:  # never let a log reader take the op down
                log.warning("stopped following the %s pod's log: %s", output.component, type(error).__name__)
                return

    thread = threading.Thread(target=follow, name=f"c2d-{output.component}-log", daemon=True)
    thread.start()
    try:
        yield output
    finally:
        stop.set()
        thread.join(timeout=10)
        with contextlib.suppress(Exception):
            output.finish()


def run_followed(
    pod_runner: PodRunner,
    spec: PodSpec,
    *,
    live: LiveLogCopy | None = None,
    sink: Callable[[str], None] = write_stdout,
    interval: float = FOLLOW_INTERVAL,
) -> PodResult:
    """`pod_runner.run(spec)` with the pod's log followed as it runs (see the module docstring)."""

    def read(offset: int, limit: int) -> bytes:
        return pod_runner.read_log(spec.job_id, spec.log_sub_path, offset, limit)

    with followed(PodOutput(read, spec.component.value, sink, live=live), interval):
        return pod_runner.run(spec)
