"""The run coordinator: Dagster's run queue, plus a fast path that launches a run at once when the
queue would start it anyway (its environment under `maxJobs`, nothing waiting ahead of it).

Configured in the instance file like any coordinator (`dagster.yaml`, `deploy/dagster-postgres.yaml`,
the Helm values' `CustomRunCoordinator`); it runs wherever Dagster submits runs: the webserver (the
Provider's GraphQL submit) and the daemon (sensor run requests).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from dagster import DagsterEvent, DagsterEventType, Field
from dagster._config.config_schema import UserConfigSchema
from dagster._core.errors import DagsterCodeLocationLoadError, DagsterUserCodeUnreachableError
from dagster._core.events import EngineEventData
from dagster._core.launcher import LaunchRunContext
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import PRIORITY_TAG
from dagster._serdes import ConfigurableClassData
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.tags import TagConcurrencyLimitsCounter

from c2d_core import engine

LOG = logging.getLogger("c2d.run_coordinator")

# Longer than the daemon ever takes between its two reads of a dequeue pass (the in-progress runs,
# then the queue: milliseconds). See `ImmediateRunCoordinator`.
DEFAULT_SETTLE_SECONDS = 0.5
# The lock is held for one read and one event write; waiting this long means its holder is stuck.
DEFAULT_LOCK_WAIT_SECONDS = 10.0
LOCK_FILE = "run-coordinator.lock"
# One advisory-lock key per database; any fixed 63-bit number not used by others.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"c2d run coordinator").digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Verdict:
    """What the fast path decided for a run, and the sentence its event log gets."""

    launch: bool
    reason: str


def _priority(run: DagsterRun) -> int:
    try:
        return int(run.tags.get(PRIORITY_TAG, "0"))
    except ValueError:
        return 0


def _limited(run: DagsterRun, limits: Sequence[Mapping[str, Any]]) -> set[tuple[str, str | None]]:
    """The limits a run counts against: (key, value) for a value limit, (key, None) for a key limit."""
    found: set[tuple[str, str | None]] = set()
    for limit in limits:
        key, value = limit["key"], limit.get("value")
        if key not in run.tags:
            continue
        if isinstance(value, str):
            if run.tags[key] == value:
                found.add((key, value))
        elif value and value.get("applyLimitPerUniqueValue"):
            found.add((key, run.tags[key]))
        else:
            found.add((key, None))
    return found


def decide(
    run: DagsterRun,
    active: Sequence[DagsterRun],
    queued: Sequence[DagsterRun],
    tag_limits: Sequence[Mapping[str, Any]],
    max_concurrent_runs: int,
) -> Verdict:
    """Whether `run` may start now, given the runs in progress and the other queued runs (oldest first).

    It may when the daemon's next pass would start it: no queued run of higher priority, none that
    counts against one of its limits ahead of it; its tag limits hold even if every queued run sharing
    them started too; and the instance's maximum holds even if every queued run the daemon could start
    (by its tag limits) started too. Counting those queued runs keeps a daemon pass that began just
    before this launch from exceeding a limit with runs it already chose.
    """
    mine = _limited(run, tag_limits)
    priority = _priority(run)
    for other in queued:
        if _priority(other) > priority:
            return Verdict(False, f"run {other.run_id} of higher priority is queued")
        if mine & _limited(other, tag_limits):
            return Verdict(False, f"run {other.run_id} of the same limit is queued ahead")
    if TagConcurrencyLimitsCounter(list(tag_limits), [*active, *queued]).is_blocked(run):
        return Verdict(False, "its tag concurrency limit is reached")
    if max_concurrent_runs != -1:
        counter = TagConcurrencyLimitsCounter(list(tag_limits), list(active))
        startable = 0
        for other in sorted(queued, key=_priority, reverse=True):
            if not counter.is_blocked(other):
                counter.update_counters_with_launched_item(other)
                startable += 1
        if len(active) + startable + 1 > max_concurrent_runs:
            return Verdict(False, f"the instance runs its maximum of {max_concurrent_runs}")
    environment = run.tags.get(engine.ENVIRONMENT)
    if environment is None:
        return Verdict(True, f"under max_concurrent_runs ({len(active)} in progress), nothing queued ahead")
    running = sum(1 for other in active if other.tags.get(engine.ENVIRONMENT) == environment)
    return Verdict(True, f"environment {environment} has {running} in progress, nothing queued ahead")


class _FileLock:
    """An exclusive flock on a file next to the instance's storage (SQLite: one host)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[bool]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline, pause = time.monotonic() + timeout, 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class _AdvisoryLock:
    """A Postgres session advisory lock in the run storage's database (every webserver, daemon and
    replica that shares the database). The server drops it with the connection of a dead holder."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url, pool_size=2, max_overflow=30, pool_pre_ping=True)

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[bool]:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"SET lock_timeout = {max(1, int(timeout * 1000))}"))
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            except OperationalError:  # lock_timeout: the holder is stuck
                yield False
                return
            try:
                yield True
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})


class ImmediateRunCoordinator(QueuedRunCoordinator):
    """A `QueuedRunCoordinator` whose `submit_run` launches the run at once when the daemon's next
    dequeue would start it anyway, and enqueues it otherwise. The daemon and the tag concurrency
    limits stay as they are: the backstop, and the only path for every run that waits.

    Atomicity. "Read the runs in progress and the queue, then report the run STARTING" is one critical
    section under a lock every submitter shares: a Postgres advisory lock in the run storage's
    database when run storage is Postgres (the webserver pods, the daemon and any replica share it),
    else an `flock` on `$DAGSTER_HOME/run-coordinator.lock` (SQLite is one host; flock excludes
    threads and processes alike and dies with its holder). Not a transaction on the run storage: a
    SQLite `BEGIN IMMEDIATE` there would block the very event write the section makes, and Dagster
    writes through its own connections. The read is one query, so a run the daemon moves from QUEUED
    to STARTING is seen in one state or the other. The STARTING event is written before the lock is
    released, so the next submitter counts it; the launch itself (seconds with the default launcher)
    happens outside the lock. An enqueue happens under the lock too: an enqueue that slipped in
    between another submitter's read and its STARTING would be a run the daemon may start on a count
    that misses that one.

    The daemon does not take the lock. Its pass reads the runs in progress, then the queue, and starts
    runs on that count. A run this coordinator launched between those two reads, followed by a run
    enqueued before the second, would make it start one run too many. So a run is enqueued only when
    the last STARTING is at least `settle_seconds` old (the submitter waits, off the lock, and decides
    again); the daemon's two reads are milliseconds apart, so no pass can straddle both. Runs already
    queued when a run is launched are counted as if they started too (`decide`), which covers a pass
    that read the queue earlier.

    If the lock cannot be had within `lock_wait_seconds` the run is enqueued. A launch that fails is
    handled as the daemon's dequeuer does: an unreachable code server with
    `max_user_code_failure_retries` puts the run back in the queue, anything else fails the run with
    the error in its event log. `launch_at_once: false` is Dagster's `QueuedRunCoordinator` exactly.
    """

    def __init__(
        self,
        launch_at_once: bool = True,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
        **queue: Any,
    ) -> None:
        super().__init__(**queue)
        self._launch_at_once = launch_at_once
        self._settle_seconds = settle_seconds
        self._lock_wait_seconds = lock_wait_seconds
        self._lock: _FileLock | _AdvisoryLock | None = None
        self._lock_made = threading.Lock()  # the webserver submits from many threads

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        base = super().config_type()
        assert isinstance(base, dict)
        return {
            **base,
            "launch_at_once": Field(
                bool, is_required=False, default_value=True, description="False: queue every run."
            ),
            "settle_seconds": Field(
                float,
                is_required=False,
                default_value=DEFAULT_SETTLE_SECONDS,
                description="An enqueue waits until the last STARTING is this old.",
            ),
            "lock_wait_seconds": Field(
                float,
                is_required=False,
                default_value=DEFAULT_LOCK_WAIT_SECONDS,
                description="Enqueue when the coordinator's lock is not had within this time.",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        own = ("launch_at_once", "settle_seconds", "lock_wait_seconds")
        queue = {key: value for key, value in config_value.items() if key not in own}
        return cls(
            inst_data=inst_data,
            launch_at_once=config_value.get("launch_at_once", True),
            settle_seconds=float(config_value.get("settle_seconds", DEFAULT_SETTLE_SECONDS)),
            lock_wait_seconds=float(config_value.get("lock_wait_seconds", DEFAULT_LOCK_WAIT_SECONDS)),
            **queue,
        )

    @property
    def launch_at_once(self) -> bool:
        return self._launch_at_once

    def _shared_lock(self) -> _FileLock | _AdvisoryLock:
        with self._lock_made:
            if self._lock is None:
                url = getattr(self._instance.run_storage, "postgres_url", None)
                if isinstance(url, str):
                    self._lock = _AdvisoryLock(url)
                else:
                    self._lock = _FileLock(Path(self._instance.root_directory) / LOCK_FILE)
            return self._lock

    def dispose(self) -> None:
        if isinstance(self._lock, _AdvisoryLock):
            self._lock.engine.dispose()
        super().dispose()

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if not self._launch_at_once or run.status != DagsterRunStatus.NOT_STARTED:
            return super().submit_run(context)
        deadline = time.monotonic() + self._lock_wait_seconds
        while True:
            wait, enqueued = 0.0, False
            with self._shared_lock().hold(max(0.0, deadline - time.monotonic())) as held:
                if not held:
                    LOG.warning(
                        "run %s: no coordinator lock in %ss, enqueued", run.run_id, self._lock_wait_seconds
                    )
                    return super().submit_run(context)
                current = self._instance.get_run_by_id(run.run_id)
                if current is None or current.status != DagsterRunStatus.NOT_STARTED:
                    return super().submit_run(context)
                verdict = self._verdict(current)
                if verdict.launch:
                    self._instance.report_dagster_event(
                        DagsterEvent(
                            event_type_value=DagsterEventType.PIPELINE_STARTING.value,
                            job_name=current.job_name,
                        ),
                        run_id=current.run_id,
                    )
                else:
                    wait = self._settle_seconds - self._since_last_starting()
                    if wait <= 0 or time.monotonic() + wait > deadline:
                        self._instance.report_dagster_event(
                            DagsterEvent.job_enqueue(current), run_id=current.run_id
                        )
                        enqueued = True
            if verdict.launch:
                return self._launch(current, verdict, context)
            if enqueued:
                return self._reload(run.run_id)
            time.sleep(wait)

    def _verdict(self, run: DagsterRun) -> Verdict:
        config = self._instance.get_concurrency_config().run_queue_config
        assert config is not None
        records = self._instance.get_run_records(
            RunsFilter(statuses=[DagsterRunStatus.QUEUED, *ACTIVE_RUN_STATUSES]), ascending=True
        )
        runs = [record.dagster_run for record in records if record.dagster_run.run_id != run.run_id]
        active = [other for other in runs if other.status in ACTIVE_RUN_STATUSES]
        queued = [other for other in runs if other.status == DagsterRunStatus.QUEUED]
        return decide(run, active, queued, config.tag_concurrency_limits, config.max_concurrent_runs)

    def _since_last_starting(self) -> float:
        """Seconds since any run last went STARTING (by this path or the daemon's)."""
        records = self._instance.fetch_run_status_changes(DagsterEventType.RUN_STARTING, limit=1).records
        return time.time() - records[0].timestamp if records else float("inf")

    def _reload(self, run_id: str) -> DagsterRun:
        run = self._instance.get_run_by_id(run_id)
        assert run is not None, f"run {run_id} vanished"
        return run

    def _launch(self, run: DagsterRun, verdict: Verdict, context: SubmitRunContext) -> DagsterRun:
        """Launch as the daemon's dequeuer does, failures included."""
        self._instance.report_engine_event(f"Launched at once by the run coordinator: {verdict.reason}.", run)
        run = self._reload(run.run_id)
        try:
            self._instance.run_launcher.launch_run(
                LaunchRunContext(dagster_run=run, workspace=context.workspace)
            )
        except Exception as error:
            info = serializable_error_info_from_exc_info(sys.exc_info())
            LOG.exception("run %s: launching at once failed", run.run_id)
            run = self._reload(run.run_id)
            if run.status not in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING):
                return run
            retries = self.get_run_queue_config().max_user_code_failure_retries
            if retries and isinstance(error, DagsterUserCodeUnreachableError | DagsterCodeLocationLoadError):
                self._instance.report_engine_event(
                    "Launching at once failed to reach the user code server, putting the run into the queue"
                    f" ({retries} retries there)",
                    run,
                    EngineEventData.engine_error(info),
                )
                self._instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)
            else:
                self._instance.report_engine_event(
                    "Caught an unrecoverable error while launching the run at once. Marking the run as"
                    f" failed: {info.message.strip()[:500]}",
                    run,
                    EngineEventData.engine_error(info),
                )
                self._instance.report_run_failed(run)
        return self._reload(run.run_id)
