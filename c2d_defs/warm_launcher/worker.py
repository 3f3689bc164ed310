"""The warm run worker: a long-lived process that has imported Dagster and the code location once and
forks one child per run, which executes it as `dagster api execute_run` would.

    python -m c2d_defs.warm_launcher.worker [--socket PATH]     ($DAGSTER_HOME must be set)

Why fork: the default launcher's code server spawns a fresh interpreter per run that imports Dagster
and c2d_defs again (about 1.4 s here); a fork of a process that already holds them costs milliseconds.
The worker itself never opens a database, gRPC or HTTP connection, so a child inherits none: it builds
its instance from the run's ref after the fork. Everything that touches run storage (a run, a failure
report) happens in a child. The worker is single-threaded, so forking is safe.

A child dies with the worker (PR_SET_PDEATHSIG), as a run worker dies with its code server. The worker
reaps its children (SIGCHLD, waitpid) and reports RUN_FAILURE for a run whose child died before the
run finished, in the words Dagster's code server uses ("Run execution process for <run id> ..."), so the
stage watchdog salvages the job. Live runs are recorded in $DAGSTER_HOME/warm-worker/runs.json: a worker
started again after a crash fails the runs its predecessor left unfinished at once.

It re-executes itself (same pid, so its children stay its children and `c2d dev down` still finds it)
when a file of the code location changes (mtimes of the c2d_defs and c2d_core packages, checked every
second) or on a `reload` request; runs in flight finish on the code they started with. The listening
socket survives the re-exec (its fd is handed to the new image): a request that comes while the new
image imports Dagster (several seconds under load, longer than the launcher's connect wait) waits in
the socket's backlog and is answered by the new image, instead of being refused or reset.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2d_core import engine
from c2d_defs.warm_launcher import protocol

# The packages whose code the worker holds in memory: a change to one of their files re-executes it.
WATCHED_PACKAGES = ("c2d_defs", "c2d_core")
WATCH_INTERVAL = 1.0
_PR_SET_PDEATHSIG = 1
# Kept per finished run for health checks that come after the child is gone.
_FINISHED_KEPT = 2000
# The listening socket's fd, handed from an image to the one it re-executes into.
LISTENER_FD_ENV = "C2D_WARM_WORKER_LISTENER_FD"


def warm_imports() -> None:
    """Import what every run needs, without connecting to anything."""
    import dagster._cli.api
    import dagster._core.execution.api
    import dagster._core.storage.event_log.sqlite.sqlite_event_log
    import dagster._core.storage.runs.sqlite.sqlite_run_storage
    import dagster._core.storage.schedules.sqlite.sqlite_schedule_storage  # noqa: F401
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    with contextlib.suppress(ImportError):
        import dagster_postgres  # noqa: F401

    # Loads c2d_defs.definitions and builds compute_job (and the others) once: a child's
    # recon_job_from_origin then finds the module imported and the definitions built.
    repository = ReconstructableRepository.for_module(
        "c2d_defs.definitions", "defs", working_directory=os.getcwd()
    )
    definition = repository.get_definition()
    for name in definition.job_names:
        definition.get_job(name)
    # What a compute run imports lazily on its way: the sandbox (built with the pod_runner resource)
    # and eth_account, which signs the attestation at publish (about 0.45 s to import, paid by every
    # forked run otherwise; bench/job_overhead.py).
    import eth_account
    import eth_account.messages  # noqa: F401

    import c2d_defs.sandbox  # noqa: F401


@dataclass
class Child:
    run_id: str
    pid: int
    args_json: str  # the serialized ExecuteRunArgs (with the instance ref the reporter uses)


@dataclass
class Finished:
    status: str  # SUCCESS (the child finished the run) or FAILED (it died or failed to execute)
    message: str


@dataclass
class Worker:
    socket_path: Path
    runs_file: Path
    argv: list[str]
    fork: Any = os.fork  # injectable: a test makes the kernel refuse a fork
    inherited_listener: int | None = None  # the fd of the previous image's listener (re-exec)
    children: dict[str, Child] = field(default_factory=dict)
    by_pid: dict[int, Child] = field(default_factory=dict)
    reporters: set[int] = field(default_factory=set)
    finished: dict[str, Finished] = field(default_factory=dict)
    _listener: socket.socket | None = None
    _wakeup_r: int = -1
    _wakeup_w: int = -1
    _stopping: bool = False
    _reload: bool = False

    # --- life cycle -------------------------------------------------------------------------------

    def serve(self) -> None:
        # Listen first: a re-exec hands the listener over as an inheritable fd, and `_listen` takes it
        # (non-inheritable, as `self._listener`) before adopting runs can fork a reporter, which would
        # otherwise keep the listening socket open.
        self._listen()
        self._adopt_or_fail_recorded_runs()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)
        signal.set_wakeup_fd(self._wakeup_w)
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, "accept")
        selector.register(self._wakeup_r, selectors.EVENT_READ, "wakeup")
        mtimes = code_mtimes()
        next_watch = time.monotonic() + WATCH_INTERVAL
        log(f"ready on {self.socket_path} (pid {os.getpid()}, {len(self.children)} run(s) adopted)")
        while not self._stopping and not self._reload:
            for key, _ in selector.select(timeout=WATCH_INTERVAL):
                if key.data == "accept":
                    self._accept()
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wakeup_r, 512):
                            pass
            self._reap()
            if time.monotonic() >= next_watch:
                next_watch = time.monotonic() + WATCH_INTERVAL
                current = code_mtimes()
                if current != mtimes:
                    log("the code location changed: re-executing")
                    self._reload = True
        selector.close()
        if self._reload and not self._stopping:
            self._reexec()  # with the listener open: what connects meanwhile waits for the new image
        self._close_listener()
        self._shut_down()

    def _listen(self) -> None:
        listener = self._inherit_listener()
        if listener is not None:
            self._listener = listener
            return
        engine.check_socket_path(self.socket_path)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_path.parent, 0o700)  # only the stack's user may launch runs
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener

    def _inherit_listener(self) -> socket.socket | None:
        """The previous image's listener, when it is still bound to our socket file."""
        fd, self.inherited_listener = self.inherited_listener, None
        if fd is None:
            return None
        try:
            listener = socket.socket(fileno=fd)
        except OSError as error:
            log(f"the listener handed over (fd {fd}) is unusable ({error}): binding anew")
            return None
        try:
            same_file = os.stat(self.socket_path).st_ino == os.stat(listener.getsockname()).st_ino
        except (OSError, TypeError):
            same_file = False
        if listener.family != socket.AF_UNIX or not same_file:
            log(f"the listener handed over (fd {fd}) is not bound to {self.socket_path}: binding anew")
            listener.close()
            return None
        listener.set_inheritable(False)
        listener.setblocking(False)
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self.socket_path.unlink(missing_ok=True)

    def _on_sigterm(self, *_: object) -> None:
        self._stopping = True

    def _shut_down(self) -> None:
        """Stopped (`c2d dev down`): interrupt the runs, as a terminate would, and give their stage
        handlers a moment; what is left dies with the worker (PDEATHSIG)."""
        for child in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGINT)
        deadline = time.monotonic() + 8
        while (self.children or self.reporters) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        self._save_runs()
        log("stopped")

    def _reexec(self) -> None:
        self._save_runs()
        signal.set_wakeup_fd(-1)
        log("re-executing")
        sys.stdout.flush()
        sys.stderr.flush()
        env = dict(os.environ)
        if self._listener is not None:
            # Kept open across the exec: closing it would reset the connections in its backlog and
            # refuse the next ones until the new image has imported Dagster and bound again.
            self._listener.set_inheritable(True)
            env[LISTENER_FD_ENV] = str(self._listener.fileno())
        # Same pid: the children stay ours and are adopted from runs.json by the new image.
        command = [sys.executable, "-m", "c2d_defs.warm_launcher.worker", *self.argv]
        os.execve(sys.executable, command, env)  # noqa: S606

    # --- requests ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        with conn:
            conn.setblocking(True)
            conn.settimeout(5)
            try:
                message = protocol.read_line(conn)
                answer = self._handle(message, conn)
            except (OSError, ValueError) as error:
                answer = {"ok": False, "error": f"bad request: {error}"}
            with contextlib.suppress(OSError):
                protocol.write_line(conn, answer)

    def _handle(self, message: dict[str, Any], conn: socket.socket) -> dict[str, Any]:
        command = message.get("cmd")
        run_id = str(message.get("run_id", ""))
        if command == "launch":
            return self._launch(run_id, str(message.get("args", "")), conn)
        if command == "terminate":
            child = self.children.get(run_id)
            if child is None:
                return {"ok": False, "error": f"run {run_id} has no process in the warm run worker"}
            # The child's process group holds the run's process only (pods run in sessions of
            # their own): SIGINT is what Dagster's code server sends, and the stage ops' interrupt
            # handlers kill the pod and publish the logs.
            os.killpg(child.pid, signal.SIGINT)
            return {"ok": True, "pid": child.pid}
        if command == "health":
            return self._health(run_id)
        if command == "ping":
            return {"ok": True, "pid": os.getpid(), "runs": sorted(self.children)}
        if command == "reload":
            self._reload = True
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def _health(self, run_id: str) -> dict[str, Any]:
        if run_id in self.children:
            return {"status": "RUNNING", "message": f"process {self.children[run_id].pid} runs it"}
        done = self.finished.get(run_id)
        if done is not None:
            return {"status": done.status, "message": done.message}
        return {"status": "NOT_FOUND", "message": "the warm run worker has no process for this run"}

    def _launch(self, run_id: str, args_json: str, conn: socket.socket) -> dict[str, Any]:
        if not run_id or not args_json:
            return {"ok": False, "error": "a launch needs run_id and args"}
        if run_id in self.children:
            return {"ok": True, "pid": self.children[run_id].pid, "already": True}
        if threading.active_count() != 1:
            log(f"warning: {threading.active_count()} threads at fork time")
        try:
            pid = self.fork()
        except OSError as error:
            return {"ok": False, "error": f"fork failed: {error.strerror or error} (errno {error.errno})"}
        if pid == 0:  # the run's process; never returns
            self._become_run_process(args_json, conn)
        child = Child(run_id, pid, args_json)
        self.children[run_id] = child
        self.by_pid[pid] = child
        self.finished.pop(run_id, None)
        self._save_runs()
        log(f"run {run_id}: process {pid}")
        return {"ok": True, "pid": pid}

    def _become_run_process(self, args_json: str, conn: socket.socket) -> None:
        code = 70
        try:
            self._detach(conn)
            code = execute_run(args_json)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _detach(self, conn: socket.socket | None) -> None:
        """In a fresh child: drop the worker's sockets, pipes and handlers; die with the worker."""
        worker = os.getppid()
        os.setpgid(0, 0)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != worker:  # the worker died before the prctl took effect
            os._exit(1)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        if conn is not None:
            conn.close()
        if self._listener is not None:
            self._listener.close()  # not _close_listener: the socket file is the worker's
        for fd in (self._wakeup_r, self._wakeup_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- children ---------------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.reporters:
                self.reporters.discard(pid)
                continue
            child = self.by_pid.pop(pid, None)
            if child is None:
                continue
            self.children.pop(child.run_id, None)
            self._finished(
                child, exit_description(status), os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            )
            self._save_runs()

    def _finished(self, child: Child, how: str, clean: bool) -> None:
        if clean:
            self.finished[child.run_id] = Finished("SUCCESS", f"process {child.pid} {how}")
        else:
            message = (
                f"Run execution process for {child.run_id} (pid {child.pid}, forked by the warm run worker) "
                f"{how} before the run finished"
            )
            self.finished[child.run_id] = Finished("FAILED", message)
            self._report_failure(child, message)
        while len(self.finished) > _FINISHED_KEPT:
            self.finished.pop(next(iter(self.finished)))

    def _report_failure(self, child: Child, message: str) -> None:
        """Fail the run in storage, from a forked child (the worker stays free of connections)."""
        try:
            pid = self.fork()
        except OSError as error:
            log(f"run {child.run_id}: cannot fork to report its failure ({error}); run monitoring will")
            return
        if pid == 0:
            code = 1
            try:
                self._detach(None)
                code = report_failure(child.args_json, message)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.reporters.add(pid)
        log(f"run {child.run_id}: {message}")

    def _save_runs(self) -> None:
        data = {c.run_id: {"pid": c.pid, "args": c.args_json} for c in self.children.values()}
        tmp = self.runs_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.runs_file)

    def _adopt_or_fail_recorded_runs(self) -> None:
        """Runs recorded by this pid before a re-exec are still our children; those of a worker that
        died died with it (PDEATHSIG) and are failed now, not at run monitoring's next poll."""
        try:
            recorded = json.loads(self.runs_file.read_text())
        except (OSError, ValueError):
            return
        for run_id, entry in recorded.items():
            child = Child(run_id, int(entry["pid"]), str(entry["args"]))
            if parent_of(child.pid) == os.getpid():
                self.children[run_id] = child
                self.by_pid[child.pid] = child
            else:
                self._finished(child, "died with its warm run worker", clean=False)
        self._save_runs()


def execute_run(args_json: str) -> int:
    """Run the launched run in this process, exactly as `dagster api execute_run` does."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    args = deserialize_value(args_json, ExecuteRunArgs)
    if args.instance_ref is None:
        raise ValueError(f"run {args.run_id} was launched without an instance ref")
    with capture_interrupts(), DagsterInstance.from_ref(args.instance_ref) as instance:
        return _execute_run_command_body(
            args.run_id, instance, lambda _event: None, set_exit_code_on_failure=False
        )


def report_failure(args_json: str, message: str) -> int:
    from dagster._core.instance import DagsterInstance
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value

    args = deserialize_value(args_json, ExecuteRunArgs)
    if args.instance_ref is None:
        return 1
    with DagsterInstance.from_ref(args.instance_ref) as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None or run.is_finished:
            return 0
        instance.report_engine_event(message, run)
        instance.report_run_failed(run)
    return 0


def exit_description(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"was killed by signal {number} ({signal.Signals(number).name})"
        return f"was killed by signal {number}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1])


def code_mtimes() -> dict[str, float]:
    found: dict[str, float] = {}
    for package in WATCHED_PACKAGES:
        module = sys.modules.get(package)
        if module is None or not getattr(module, "__path__", None):
            continue
        for root in module.__path__:
            for path in Path(root).rglob("*.py"):
                with contextlib.suppress(OSError):
                    found[str(path)] = path.stat().st_mtime
    return found


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm-worker: {message}", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, help="default: $DAGSTER_HOME/warm-worker/worker.sock")
    args = parser.parse_args(argv)
    socket_path = args.socket or protocol.default_socket_path()
    # Popped before anything forks: a run's process must not take the fd for a listener of its own.
    handed = os.environ.pop(LISTENER_FD_ENV, None)
    inherited = int(handed) if handed and handed.isdigit() else None
    warm_imports()
    home = os.environ.get("DAGSTER_HOME") or str(socket_path.parent.parent)
    runs_file = protocol.state_dir(home) / protocol.RUNS_FILE
    runs_file.parent.mkdir(parents=True, exist_ok=True)
    Worker(socket_path=socket_path, runs_file=runs_file, argv=argv, inherited_listener=inherited).serve()


if __name__ == "__main__":
    main()
