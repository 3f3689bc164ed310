"""Runs pod specs in a bubblewrap sandbox on this machine: the embedded stand-in for Kubernetes pods.

Each pod runs as an unprivileged uid of its own (one per slot), in new namespaces (no network unless
the spec asks), on an empty root that holds only its runtime and its job-volume folders, within cgroup
(v1 or v2, c2d_core.sandbox_cgroups) or rlimit limits, and is killed at its deadline. The runner
itself must run as root. The command line it launches is built in `c2d_defs.sandbox.command`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from c2d_core.environments import Environments
from c2d_core.sandbox_cgroups import CgroupBackend, CgroupVersion, PodCgroup, PodLimits, choose_backend
from c2d_core.workflow import JOB_ID_PATTERN
from c2d_defs.pod_runner import Mount, PodResult, PodRunner, PodSpec, Termination
from c2d_defs.pods import layout
from c2d_defs.pods.common import TERMINATION_MESSAGE_LIMIT
from c2d_defs.sandbox.command import (
    SYSTEM_PATH,
    TOOLS,
    HostBind,
    SandboxLaunch,
    SandboxPlan,
    StartRefused,
    in_mount_order,
    outermost,
    pod_path,
    sandbox_command,
)
from c2d_defs.sandbox.host import (
    NO_CGROUP,
    Slot,
    disk_usage,
    hand_over,
    kill_pids,
    make_nested_mount_points,
    make_stage,
    path_in_volume,
    processes_naming,
    read_volume_file,
    real_uid,
    sweep_uid,
    try_slot,
)
from c2d_defs.sandbox.outcome import Interruption, read_head, read_log_since, sandbox_outcome
from c2d_defs.sandbox.runtimes import RuntimeLayout, passwd_and_group, runtime_for_spec

# bwrap's monitor runs as the pod's uid and in its cgroups; process limits get this much on top so
# the pod's own processes get what the spec asks for.
SANDBOX_OWN_PROCESSES = 1


# --- Per-run state -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _RunningPod:
    job_id: str
    stop_requested: threading.Event = field(default_factory=threading.Event)


class StatusPipe:
    """bwrap's --json-status-fd: `{"child-pid": N}` once the sandbox is up, `{"exit-code": N}` at its end."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._buffer = b""
        self.child_pid: int | None = None
        self.exit_code: int | None = None

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def read(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                document = json.loads(line)
                self.child_pid = document.get("child-pid", self.child_pid)
                self.exit_code = document.get("exit-code", self.exit_code)

    def close(self) -> None:
        self.close_write_end()
        os.close(self.read_fd)


class ExitWatch:
    """Waits up to a timeout for the launch to end, and learns of its end at once: a pidfd (Linux 5.3)
    is readable the moment the process exits. `Popen.wait(timeout)` polls with sleeps that grow to
    50 ms, which a pod of a few tens of milliseconds paid in full. Without pidfds, that poll."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._fd: int | None = None
        self._poll: select.poll | None = None

    def __enter__(self) -> Callable[[float], bool]:
        try:
            self._fd = os.pidfd_open(self.process.pid)
        except (AttributeError, OSError):  # an older kernel, or the launch is already reaped
            return self._wait
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        return self._ended

    def __exit__(self, *_: object) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def _ended(self, timeout: float) -> bool:
        assert self._poll is not None
        if not self._poll.poll(timeout * 1000):
            return self.process.poll() is not None
        self.process.wait()  # it has exited: reaped at once
        return True

    def _wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


# --- The runner --------------------------------------------------------------------------------------


class LocalPodRunner(PodRunner):
    """Runs `PodSpec`s as bubblewrap sandboxes on this host; see the module docstring.

    Volume ownership: before each pod starts, the job volume's folders are handed to the uid of the
    slot that runs it (chown, not following symlinks). Unlike Ocean's world-writable (0777) folders,
    nothing of a job is then writable by other uids, and each stage's pod owns what the previous
    stage wrote (the publish pod can read outputs the algorithm made private). The job dir itself
    stays root's with mode 0700: pods reach its folders only through their bind mounts.
    """

    def __init__(
        self,
        work_dir: Path,
        environments: Environments,
        pod_image: str = "c2d-pod:latest",
        secrets: Mapping[str, Path] | None = None,
        uid_base: int = 61000,
        slots: int = 32,
        keep_work_dirs: bool = False,
        *,
        poll_interval: float = 0.2,
        disk_check_interval: float = 1.0,
        state_dir: Path = Path("/run/c2d-sandbox"),
        cgroup_root: Path | None = None,
        cgroup_parent: str = "c2d",
        cgroup_version: CgroupVersion = "auto",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if uid_base < 1000 or slots < 1:
            raise ValueError("uid_base must be >= 1000 (no system uids) and slots >= 1")
        self.work_dir = Path(work_dir)
        self.environments = environments
        self.pod_image = pod_image
        self.secrets = dict(secrets or {})
        self.uid_base = uid_base
        self.slots = slots
        self.keep_work_dirs = keep_work_dirs
        self.poll_interval = poll_interval
        self.disk_check_interval = disk_check_interval
        # Slot locks are keyed by uid and live host-wide, not in the work dir: two runners with
        # different work dirs (two deployments, parallel tests) must not hand out the same uid.
        self.slot_dir = state_dir / "slots"
        self.stage_root = state_dir / "stage"
        # Pod cgroups: v1 or v2 from the host's mount table, or from the layout of a given root
        # (c2d_core.sandbox_cgroups); the runner sees only the backend's small interface.
        self.cgroups: CgroupBackend = choose_backend(cgroup_root, cgroup_parent, cgroup_version)
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._running: dict[str, set[_RunningPod]] = {}
        self._next_slot = 0

    @property
    def sandbox_uids(self) -> range:
        """The uids of this runner's slots (no other uid's files are ever handed over or swept)."""
        return range(self.uid_base, self.uid_base + self.slots)

    # --- volumes --------------------------------------------------------------------------------------

    def volume_path(self, job_id: str) -> Path:
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"job id {job_id!r} must be 32 lowercase hex characters")
        return self.work_dir / job_id

    def prepare_volume(self, job_id: str, disk_bytes: int) -> None:
        # disk_bytes is enforced per pod (RLIMIT_FSIZE and the disk watcher), not on the volume.
        volume = self.volume_path(job_id)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        volume.mkdir(mode=0o700, exist_ok=True)
        os.chmod(volume, 0o700)
        for sub_path in layout.VOLUME_DIRS:
            (volume / sub_path).mkdir(mode=0o755, parents=True, exist_ok=True)

    def write_file(self, job_id: str, sub_path: str, content: bytes) -> None:
        target = path_in_volume(self.volume_path(job_id), sub_path, must_exist=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a symlink a pod left at the name is replaced, never followed.
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".write-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def release_volume(self, job_id: str) -> None:
        volume = self.volume_path(job_id)
        if not self.keep_work_dirs:
            shutil.rmtree(volume, ignore_errors=True)

    # --- running ------------------------------------------------------------------------------------

    def stop(self, job_id: str) -> int:
        """Stop every pod of the job that is running or waiting for a slot; how many were asked to stop.

        Each reports termination "Stopped" from its `run` call.
        """
        with self._lock:
            pods = list(self._running.get(job_id, ()))
        for pod in pods:
            pod.stop_requested.set()
        return len(pods)

    def has_volume(self, job_id: str) -> bool:
        return self.volume_path(job_id).is_dir()

    def read_log(self, job_id: str, sub_path: str, offset: int, limit: int) -> bytes:
        return read_volume_file(self.volume_path(job_id), sub_path, offset, limit)

    def kill_pods(self, job_id: str) -> int:
        """Kill what is left of the job's pods after its runner died (`stop` reaches only pods this
        process runs); how many pods were found.

        A pod leaves these traces: its stage dir (`<job id>-<component>-*`, whose termination-log
        belongs to the pod's slot uid), its sandbox process (bwrap, whose command line names that
        stage dir; what runs inside dies with it), its cgroups (`<job id>-<component>-<slot>`) and
        its slot uid's processes. A slot uid is swept only when its lock is free: a locked slot
        belongs to a pod a live (possibly hung) runner holds, possibly another job's.
        """
        self.volume_path(job_id)  # validates the id before it becomes part of a glob
        found = 0
        uids: set[int] = set()
        for stage in self.stage_root.glob(f"{job_id}-*"):
            found += 1
            with contextlib.suppress(OSError):
                uids.add((stage / "termination-log").stat().st_uid)
        if found:
            kill_pids(processes_naming(f"{self.stage_root}/{job_id}-"))
        self.cgroups.remove_matching(f"{job_id}-")  # kills their tasks, then removes them
        self.slot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for uid in sorted(uids):
            if uid not in self.sandbox_uids:
                continue
            slot = try_slot(self.slot_dir, self.uid_base, uid)
            if slot is not None:
                try:
                    sweep_uid(uid, NO_CGROUP)
                finally:
                    slot.release()
        for stage in self.stage_root.glob(f"{job_id}-*"):
            shutil.rmtree(stage, ignore_errors=True)
        return found

    def memory_limit_mechanism(self) -> Literal["cgroup", "rlimit"]:
        """How pod memory is bounded on this host: a memory cgroup, or RLIMIT_AS where none is writable."""
        return "cgroup" if "memory" in self.cgroups.controllers() else "rlimit"

    def run(self, spec: PodSpec) -> PodResult:
        started = self._wall_clock()
        try:
            volume = self.volume_path(spec.job_id)
            runtime = runtime_for_spec(spec, self.environments, self.pod_image)
            self._preflight(volume)
            secret_files = self._secret_files(spec)
        except StartRefused as refused:
            return self._early_result(refused.termination, str(refused), started)
        except ValueError as invalid:
            return self._early_result("StartError", str(invalid), started)

        pod = _RunningPod(spec.job_id)
        with self._lock:
            self._running.setdefault(spec.job_id, set()).add(pod)
        try:
            slot = self._acquire_slot(pod)
            if slot is None:
                return self._early_result("Stopped", "pod was stopped before it started", started)
            try:
                return self._run_in_slot(spec, volume, runtime, secret_files, slot, pod, started)
            except OSError as exc:
                # The host side failed (a volume folder, the stage, a cgroup); the pod, if it got
                # that far, is already gone (see _run_in_slot's cleanup).
                return self._early_result("StartError", f"the sandbox could not be prepared: {exc}", started)
            finally:
                slot.release()
        finally:
            with self._lock:
                self._running[spec.job_id].discard(pod)
                if not self._running[spec.job_id]:
                    del self._running[spec.job_id]

    def _preflight(self, volume: Path) -> None:
        if os.geteuid() != 0:
            raise StartRefused(
                "StartError", "the local sandbox runs each pod as its own uid and must itself run as root"
            )
        missing = [tool for tool in TOOLS if shutil.which(tool, path=SYSTEM_PATH) is None]
        if missing:
            raise StartRefused("StartError", f"the local sandbox needs {', '.join(missing)} on {SYSTEM_PATH}")
        if not volume.is_dir():
            raise StartRefused("StartError", f"job volume {volume} does not exist (prepare_volume first)")

    def _secret_files(self, spec: PodSpec) -> dict[str, bytes]:
        files = {}
        for name, path_in_pod in spec.secrets.items():
            source = self.secrets.get(name)
            if source is None:
                known = ", ".join(sorted(self.secrets)) or "none"
                raise StartRefused("StartError", f"secret {name!r} is not configured (configured: {known})")
            try:
                files[pod_path(path_in_pod, f"secret {name} path")] = Path(source).read_bytes()
            except OSError as exc:
                raise StartRefused("StartError", f"cannot read secret {name!r}: {exc.strerror}") from None
        return files

    def _acquire_slot(self, pod: _RunningPod) -> Slot | None:
        """An exclusive uid for the pod (flock held until release), or None when stopped while waiting."""
        self.slot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            with self._lock:
                first = self._next_slot
                self._next_slot = (self._next_slot + 1) % self.slots
            for index in itertools.chain(range(first, self.slots), range(first)):
                slot = try_slot(self.slot_dir, self.uid_base, self.uid_base + index)
                if slot is not None:
                    return slot
            if pod.stop_requested.wait(self.poll_interval):
                return None

    def _run_in_slot(
        self,
        spec: PodSpec,
        volume: Path,
        runtime: RuntimeLayout,
        secret_files: dict[str, bytes],
        slot: Slot,
        pod: _RunningPod,
        started: float,
    ) -> PodResult:
        uid = slot.uid
        # Leftovers of a runner that crashed holding this uid would eat the pod's process budget.
        sweep_uid(uid, NO_CGROUP)
        try:
            volume_binds = [self._mount_bind(volume, mount) for mount in spec.mounts]
            workdir = pod_path(spec.workdir, "workdir")
            log_path = path_in_volume(volume, spec.log_sub_path, must_exist=False)
        except StartRefused as refused:
            return self._early_result(refused.termination, str(refused), started)
        except ValueError as invalid:
            return self._early_result("StartError", str(invalid), started)

        with contextlib.ExitStack() as cleanup:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_fd = os.open(
                log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644
            )
            cleanup.callback(os.close, log_fd)
            log_offset = os.fstat(log_fd).st_size

            make_nested_mount_points(volume_binds, str(volume))
            hand_over(volume, uid, self.sandbox_uids, include_root=False)
            for mount, bind in zip(spec.mounts, volume_binds, strict=True):
                if mount.host_path is not None and bind.writable:
                    hand_over(Path(bind.source), uid, self.sandbox_uids, include_root=True)

            files = dict(secret_files)
            if runtime.identity_files:
                files.update(passwd_and_group(uid))
            plan = SandboxPlan(
                command=tuple(spec.command),
                env=tuple({"PATH": runtime.path, "HOME": "/tmp", "LANG": "C.UTF-8", **spec.env}.items()),  # noqa: S108
                workdir=workdir,
                network=spec.network,
                hostname=spec.component,
                binds=in_mount_order([*runtime.binds, *volume_binds]),
                symlinks=runtime.symlinks,
                files=tuple(files),
                tmp_bytes=spec.disk_bytes,
                shm_bytes=spec.memory_bytes,
            )

            stage = make_stage(self.stage_root, plan, uid, prefix=f"{spec.job_id}-{spec.component}-")
            cleanup.callback(shutil.rmtree, stage, ignore_errors=True)
            termination_log = stage / "termination-log"

            cgroups = self.cgroups.create(
                f"{spec.job_id}-{spec.component}-{slot.index}",
                PodLimits(spec.memory_bytes, spec.cpu, spec.max_processes + SANDBOX_OWN_PROCESSES),
            )
            cleanup.callback(cgroups.remove)
            rlimits = [
                ("nproc", spec.max_processes + SANDBOX_OWN_PROCESSES),
                ("fsize", spec.disk_bytes),
                ("core", 0),
            ]
            if "memory" not in cgroups.limited:
                rlimits.append(("as", spec.memory_bytes))

            status = StatusPipe()
            cleanup.callback(status.close)
            file_fds = []
            for content in files.values():
                # Unlinked at once: the content reaches bwrap on the descriptor only.
                handle = cleanup.enter_context(tempfile.TemporaryFile())
                handle.write(content)
                handle.flush()
                handle.seek(0)
                file_fds.append(handle.fileno())
            launch = SandboxLaunch(
                uid=uid,
                stage_dir=str(stage),
                termination_log=str(termination_log),
                cgroup_procs=cgroups.procs_files(),
                rlimits=tuple(rlimits),
                status_fd=status.write_fd,
                file_fds=tuple(file_fds),
            )
            if pod.stop_requested.is_set():
                return self._early_result("Stopped", "pod was stopped before it started", started)
            started = self._wall_clock()
            try:
                process = subprocess.Popen(
                    sandbox_command(plan, launch),
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    pass_fds=(status.write_fd, *file_fds),
                    start_new_session=True,
                    cwd="/",
                    env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
                )
            except OSError as exc:
                return self._early_result("StartError", f"cannot start the sandbox: {exc}", started)
            status.close_write_end()
            reaped = False

            def reap() -> None:
                nonlocal reaped
                if not reaped:
                    self._reap(process, uid, status, cgroups)
                    reaped = True

            # Runs first when unwinding (an interrupt included): nothing of the pod outlives `run`.
            cleanup.callback(reap)

            disk_paths = outermost([b.source for b in volume_binds if b.writable] + [str(log_path)])
            interruption = self._supervise(process, pod, spec, status, uid, cgroups, disk_paths)
            reap()
            finished = self._wall_clock()
            return sandbox_outcome(
                spec,
                interruption,
                process.returncode,
                status.child_pid,
                status.exit_code,
                oom_kills=cgroups.oom_kills(),
                peak_memory=cgroups.peak_memory(),
                memory_by_rlimit="memory" not in cgroups.limited,
                disk_used=disk_usage(disk_paths),
                log_text=read_log_since(log_path, log_offset),
                termination_message=read_head(termination_log, TERMINATION_MESSAGE_LIMIT),
                started=started,
                finished=finished,
            )

    def _mount_bind(self, volume: Path, mount: Mount) -> HostBind:
        dest = pod_path(mount.mount_path, "mount path")
        if mount.host_path is not None:
            source = os.path.realpath(mount.host_path)
            if not os.path.isabs(mount.host_path) or not os.path.exists(source):
                raise StartRefused(
                    "StartError", f"host path {mount.host_path!r} must be an existing absolute path"
                )
        else:
            source = str(path_in_volume(volume, mount.sub_path or "."))
        return HostBind(source, dest, writable=not mount.read_only)

    def _supervise(
        self,
        process: subprocess.Popen[bytes],
        pod: _RunningPod,
        spec: PodSpec,
        status: StatusPipe,
        uid: int,
        cgroups: PodCgroup,
        disk_paths: list[str],
    ) -> Interruption | None:
        """Wait for the pod to end; kill it at its deadline, over its disk quota, or on a stop request."""
        deadline = self._clock() + spec.deadline_seconds
        next_disk_check = self._clock() + self.disk_check_interval
        with ExitWatch(process) as ended:
            while True:
                remaining = deadline - self._clock()
                if ended(max(0.0, min(self.poll_interval, remaining))):
                    return None
                status.read()
                interruption: Interruption | None = None
                now = self._clock()
                if pod.stop_requested.is_set():
                    interruption = "Stopped"
                elif now >= deadline:
                    interruption = "DeadlineExceeded"
                elif now >= next_disk_check:
                    next_disk_check = now + self.disk_check_interval
                    if disk_usage(disk_paths) > spec.disk_bytes:
                        interruption = "DiskQuotaExceeded"
                if interruption is not None:
                    self._kill(process, status, uid, cgroups)
                    return interruption

    def _kill(
        self, process: subprocess.Popen[bytes], status: StatusPipe, uid: int, cgroups: PodCgroup
    ) -> None:
        """Kill the pod: its pid 1 first, so the kernel takes its whole pid namespace down and bwrap's
        monitor reaps it (nothing is orphaned), then all its cgroup holds (v2: cgroup.kill), then the
        launch's process group if still needed."""
        status.read()
        child = status.child_pid
        # The uid check guards against a recycled pid, should pid 1 be gone already.
        if child is not None and real_uid(child) == uid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=2)
        cgroups.kill_all()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def _reap(
        self, process: subprocess.Popen[bytes], uid: int, status: StatusPipe, cgroups: PodCgroup
    ) -> None:
        """Make sure nothing of the pod is left: the launch ended, its cgroups and its uid empty."""
        if process.poll() is None:
            self._kill(process, status, uid, cgroups)
        status.read()
        sweep_uid(uid, cgroups)

    def _early_result(self, termination: Termination, message: str, started: float) -> PodResult:
        return PodResult(
            termination=termination, message=message, started_at=started, finished_at=self._wall_clock()
        )
