"""Runs pod specs in a bubblewrap sandbox on this machine: the embedded stand-in for Kubernetes pods.

Each pod runs as an unprivileged uid of its own (one per slot), in new namespaces (no network unless
the spec asks), on an empty root that holds only its runtime and its job-volume folders, within cgroup
(v1 or v2, c2d_core.sandbox_cgroups) or rlimit limits, and is killed at its deadline. The runner
itself must run as root.

How one pod is started (`sandbox_command` builds it, a pure function):

    unshare --mount  sh -c '<join cgroups; bind every source onto a stage dir>; exec "$@"'
      prlimit ...  setpriv --reuid U ...  bwrap --unshare-all ... --ro-bind <stage>/<i> <dest> ... -- cmd

bwrap runs as the sandbox uid, so it could only bind what that uid may traverse: not the interpreter
under /root/.pyenv, nor a work dir under a 0700 parent (/root/..., pytest's /tmp/pytest-of-root). Root
therefore first binds every source onto a world-traversable stage dir, in a private mount namespace
that only this launch sees and that vanishes with it; bwrap then binds from the stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from c2d_core.environments import Environments, ImageRuntime, UnknownEnvironmentError
from c2d_core.sandbox_cgroups import (
    CgroupBackend,
    CgroupVersion,
    NoCgroups,
    PodCgroup,
    PodLimits,
    choose_backend,
)
from c2d_defs.pod_spec import Mount, PodResult, PodRunner, PodSpec, Termination
from c2d_defs.pods import layout

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")
TERMINATION_MESSAGE_LIMIT = 4096
LOG_TAIL_LIMIT = 4096
# Image aliases (`python` -> /usr/bin/python3) live here inside the sandbox, first on PATH.
ALIAS_DIR = "/opt/c2d/bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# bwrap's monitor runs as the pod's uid and in its cgroups; process limits get this much on top so
# the pod's own processes get what the spec asks for.
SANDBOX_OWN_PROCESSES = 1
# Exit code of the launch script when it could not join a cgroup or stage a mount (Docker's 125).
LAUNCH_FAILED = 125
TOOLS = ("unshare", "sh", "mount", "prlimit", "setpriv", "bwrap")

# The host's top-level dirs a runtime on "/" needs besides /usr (symlinks into /usr on merged-usr hosts).
_HOST_LIB_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The few /etc entries such a runtime reads; name resolution and CA certificates only with network.
_ETC_ALWAYS = ("ld.so.cache", "localtime", "alternatives", "os-release")
_ETC_NETWORK = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "ssl/certs")
# Top-level entries of a custom rootfs that the sandbox provides itself.
_ROOTFS_OWN = frozenset({"proc", "dev", "sys", "tmp"})


# --- The sandbox as data, and its command line -------------------------------------------------------


@dataclass(frozen=True)
class HostBind:
    """A host file or folder seen in the pod at `dest` (bound through the launch stage)."""

    source: str
    dest: str
    writable: bool = False


@dataclass(frozen=True)
class RuntimeLayout:
    """What makes up an image's filesystem in the sandbox: host binds, symlinks, and PATH."""

    binds: tuple[HostBind, ...]
    symlinks: tuple[tuple[str, str], ...]  # (target, path in the pod)
    path: str
    # A runtime on the host's root gets a minimal passwd/group; a rootfs brings its own.
    identity_files: bool


@dataclass(frozen=True)
class SandboxPlan:
    """Everything one pod's sandbox holds; `sandbox_command` turns it into a command line."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str
    network: bool
    hostname: str
    binds: tuple[HostBind, ...]  # mounted in this order: parents before children
    symlinks: tuple[tuple[str, str], ...]
    # In-pod paths of read-only files whose content reaches bwrap on a file descriptor (passwd, group,
    # secrets): bwrap copies them into its own tmpfs, so no copy of a secret is left on the host disk.
    files: tuple[str, ...]
    tmp_bytes: int
    shm_bytes: int


@dataclass(frozen=True)
class SandboxLaunch:
    """The per-launch facts: who runs it, where its stage is, its cgroups, rlimits and descriptors."""

    uid: int
    stage_dir: str  # plan.binds[i] is staged at <stage_dir>/<i>
    termination_log: str
    cgroup_procs: tuple[str, ...]
    rlimits: tuple[tuple[str, int], ...]  # prlimit resource name, value
    status_fd: int
    file_fds: tuple[int, ...]  # one per plan.files, same order


def stage_path(stage_dir: str, index: int) -> str:
    return f"{stage_dir}/{index}"


def sandbox_command(plan: SandboxPlan, launch: SandboxLaunch) -> list[str]:
    """The full command line of one pod (see the module docstring for its shape)."""
    if len(launch.file_fds) != len(plan.files):
        raise ValueError("one file descriptor per sandbox file is needed")
    script = [f'fail() {{ echo "c2d sandbox: $*" >&2; exit {LAUNCH_FAILED}; }}']
    for procs in launch.cgroup_procs:
        script.append(f"echo $$ > {shlex.quote(procs)} || fail cannot join cgroup {shlex.quote(procs)}")
    for index, bind in enumerate(plan.binds):
        source, staged = shlex.quote(bind.source), shlex.quote(stage_path(launch.stage_dir, index))
        script.append(f"mount --bind {source} {staged} || fail cannot stage {source}")
    script.append('exec "$@"')

    command = ["unshare", "--mount", "--propagation", "private", "--"]
    command += ["sh", "-c", "\n".join(script), "c2d-sandbox"]
    command += ["prlimit", *(f"--{name}={value}" for name, value in launch.rlimits), "--"]
    command += ["setpriv", f"--reuid={launch.uid}", f"--regid={launch.uid}", "--clear-groups"]
    command += ["--no-new-privs", "--"]
    command += ["bwrap", "--unshare-all", *(["--share-net"] if plan.network else [])]
    # --as-pid-1: the command is pid 1 of its namespace, as a container's entrypoint is. bwrap's own
    # init would outlive its monitor by a moment and be left to the host's init as a zombie of the
    # slot's uid, counted against the next pod's RLIMIT_NPROC.
    command += ["--as-pid-1", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    command += ["--hostname", plan.hostname, "--json-status-fd", str(launch.status_fd)]
    for name, value in plan.env:
        command += ["--setenv", name, value]
    command += ["--tmpfs", "/", "--proc", "/proc", "--dev", "/dev"]
    command += ["--size", str(plan.shm_bytes), "--tmpfs", "/dev/shm"]  # noqa: S108 - the pod's own tmpfs
    command += ["--size", str(plan.tmp_bytes), "--tmpfs", "/tmp"]  # noqa: S108 - the pod's own tmpfs
    for target, link in plan.symlinks:
        command += ["--symlink", target, link]
    for index, bind in enumerate(plan.binds):
        command += [
            "--bind" if bind.writable else "--ro-bind",
            stage_path(launch.stage_dir, index),
            bind.dest,
        ]
    for path, fd in zip(plan.files, launch.file_fds, strict=True):
        command += ["--perms", "0400", "--ro-bind-data", str(fd), path]
    command += ["--bind", launch.termination_log, layout.TERMINATION_LOG_PATH, "--dir", plan.workdir]
    # The root and /dev are tmpfs: read-only, so a pod cannot fill memory through them (/tmp and
    # /dev/shm are their own, size-capped tmpfs; binds keep their own flags).
    command += ["--remount-ro", "/dev", "--remount-ro", "/"]
    command += ["--chdir", plan.workdir, "--", *plan.command]
    return command


# --- Runtimes: what of the host an image stands for --------------------------------------------------


def image_repository(reference: str) -> str:
    """`registry:5000/c2d-pod:1.2@sha256:..` -> `registry:5000/c2d-pod`."""
    name = reference.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    return name


def host_root_layout(network: bool, aliases: Mapping[str, str] | None = None) -> RuntimeLayout:
    """A runtime on the host's own root: /usr, the lib dirs, and only the /etc entries it reads."""
    binds = [HostBind("/usr", "/usr")]
    symlinks: list[tuple[str, str]] = []
    for name in _HOST_LIB_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            symlinks.append((os.readlink(path), path))
        elif os.path.isdir(path):
            binds.append(HostBind(path, path))
    for name in (*_ETC_ALWAYS, *(_ETC_NETWORK if network else ())):
        path = f"/etc/{name}"
        # Bound by their resolved path: /etc/resolv.conf may point into /run, which is not bound.
        if os.path.exists(path):
            binds.append(HostBind(os.path.realpath(path), path))
    symlinks += _alias_links(aliases or {})
    return RuntimeLayout(tuple(binds), tuple(symlinks), f"{ALIAS_DIR}:{SYSTEM_PATH}", identity_files=True)


def rootfs_layout(rootfs: str, aliases: Mapping[str, str] | None = None) -> RuntimeLayout:
    """A runtime in an unpacked image: every top-level entry of `rootfs` bound read-only at `/`.

    Entries rather than the dir itself, so the sandbox can still create its mount points (/data,
    /proc, /tmp) on its own tmpfs root where the image lacks them.
    """
    root = os.path.realpath(rootfs)
    if not os.path.isdir(root):
        raise _StartRefused("ImageNotFound", f"rootfs {rootfs} is not a directory")
    binds: list[HostBind] = []
    symlinks: list[tuple[str, str]] = []
    for name in sorted(os.listdir(root)):
        if name in _ROOTFS_OWN:
            continue
        path = os.path.join(root, name)
        if os.path.islink(path):
            symlinks.append((os.readlink(path), f"/{name}"))
        else:
            binds.append(HostBind(path, f"/{name}"))
    symlinks += _alias_links(aliases or {})
    return RuntimeLayout(tuple(binds), tuple(symlinks), f"{ALIAS_DIR}:{SYSTEM_PATH}", identity_files=False)


def project_layout(network: bool) -> RuntimeLayout:
    """The pod image: this project's interpreter, venv and packages, at their host paths.

    Only the base interpreter, the venv and the packages' own source dirs are bound, never the project
    checkout, so `.c2d/` state and everything else in it stay invisible. The venv's bin dir goes first
    on PATH: its `python` must be run from there (a symlink elsewhere would lose the venv).
    """
    base = host_root_layout(network)
    sources = [sys.base_prefix, sys.prefix]
    for package in ("c2d_core", "c2d_defs"):
        spec = importlib.util.find_spec(package)
        sources += list(spec.submodule_search_locations or []) if spec else []
    binds = [HostBind(path, path) for path in _outermost(os.path.realpath(p) for p in sources)]
    return RuntimeLayout(base.binds + tuple(binds), base.symlinks, f"{sys.prefix}/bin:{SYSTEM_PATH}", True)


def _alias_links(aliases: Mapping[str, str]) -> list[tuple[str, str]]:
    links = []
    for name, target in sorted(aliases.items()):
        if not name or "/" in name or name in {".", ".."}:
            raise _StartRefused("StartError", f"image alias {name!r} must be a plain command name")
        links.append((target, f"{ALIAS_DIR}/{name}"))
    return links


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths with duplicates and paths inside another one dropped (order kept)."""
    unique = list(dict.fromkeys(paths))
    return [p for p in unique if not any(o != p and _is_within(p, o) for o in unique)]


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _pod_path(value: str, what: str) -> str:
    """An absolute, normalized path inside the pod, or a refusal naming the field."""
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or str(path) != value.rstrip("/") or value == "/":
        raise _StartRefused("StartError", f"{what} {value!r} must be an absolute path without '..', not '/'")
    if path.parts[1] in {"proc", "dev"} and value != layout.TERMINATION_LOG_PATH:
        raise _StartRefused("StartError", f"{what} {value!r} may not be under /proc or /dev")
    return value


def in_mount_order(binds: Iterable[HostBind]) -> tuple[HostBind, ...]:
    """Parents before children (a stable sort, so equal depths keep their order)."""
    return tuple(sorted(binds, key=lambda bind: len(PurePosixPath(bind.dest).parts)))


# --- Host helpers ------------------------------------------------------------------------------------


def processes_of_uid(uid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) != uid:
            continue
        if include_zombies or not fields.get("State", "").strip().startswith("Z"):
            found.append(int(entry))
    return found


def processes_naming(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (a sandbox's bwrap names its stage dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def disk_usage(paths: Iterable[str]) -> int:
    """Bytes under `paths`, without following symlinks: the larger of size and allocated blocks, so
    neither sparse files nor many small files slip under the quota."""
    total = 0
    pending = list(paths)
    while pending:
        path = pending.pop()
        try:
            info = os.lstat(path)
        except OSError:
            continue
        total += max(info.st_size, info.st_blocks * 512)
        if stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(OSError), os.scandir(path) as entries:
                pending.extend(entry.path for entry in entries)
    return total


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


class _StartRefused(Exception):
    """A pod that cannot start; `termination` says how it is reported (ImageNotFound or StartError)."""

    def __init__(self, termination: Termination, message: str) -> None:
        super().__init__(message)
        self.termination: Termination = termination


# A pod without cgroups: what sweeps of a slot's leftovers (by uid only) pass.
_NO_CGROUP: PodCgroup = NoCgroups(Path("/nonexistent"), "c2d").create("", PodLimits(0, 0.0, 0))


# --- Per-run state -----------------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    uid: int
    fd: int

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor drops the flock


@dataclass(eq=False)
class _RunningPod:
    job_id: str
    stop_requested: threading.Event = field(default_factory=threading.Event)


class _StatusPipe:
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


Interruption = Literal["Stopped", "DeadlineExceeded", "DiskQuotaExceeded"]


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

    # --- volumes --------------------------------------------------------------------------------------

    def volume_path(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
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
        target = self._in_volume(self.volume_path(job_id), sub_path, must_exist=False)
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

    def _in_volume(self, volume: Path, sub_path: str, *, must_exist: bool = True) -> Path:
        """`volume/sub_path`, refused when it leaves the volume (by '..' or by a symlink)."""
        relative = PurePosixPath(sub_path)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"volume path {sub_path!r} must be relative and without '..'")
        candidate = volume / relative
        resolved = Path(os.path.realpath(candidate))
        if not _is_within(str(resolved), os.path.realpath(volume)):
            raise ValueError(f"volume path {sub_path!r} leads outside the job volume")
        if must_exist and not resolved.exists():
            raise ValueError(f"volume path {sub_path!r} does not exist")
        return resolved if must_exist else candidate

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
            _kill_all(processes_naming(f"{self.stage_root}/{job_id}-"))
        self.cgroups.remove_matching(f"{job_id}-")  # kills their tasks, then removes them
        self.slot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for uid in sorted(uids):
            if not self.uid_base <= uid < self.uid_base + self.slots:
                continue
            slot = self._try_slot(uid)
            if slot is not None:
                try:
                    self._sweep(uid, _NO_CGROUP)
                finally:
                    slot.release()
        for stage in self.stage_root.glob(f"{job_id}-*"):
            shutil.rmtree(stage, ignore_errors=True)
        return found

    def _try_slot(self, uid: int) -> _Slot | None:
        """The slot of `uid` if no pod holds it (its flock is free), else None; never waits."""
        fd = os.open(self.slot_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return _Slot(uid - self.uid_base, uid, fd)

    def memory_limit_mechanism(self) -> Literal["cgroup", "rlimit"]:
        """How pod memory is bounded on this host: a memory cgroup, or RLIMIT_AS where none is writable."""
        return "cgroup" if "memory" in self.cgroups.controllers() else "rlimit"

    def run(self, spec: PodSpec) -> PodResult:
        started = self._wall_clock()
        try:
            volume = self.volume_path(spec.job_id)
            runtime = self._runtime_layout(spec)
            self._preflight(volume)
            secret_files = self._secret_files(spec)
        except _StartRefused as refused:
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

    def _runtime_layout(self, spec: PodSpec) -> RuntimeLayout:
        # The project's own runtime (its venv and sources) is for the engine's configure and publish
        # pods only; an algorithm naming the pod image gets the image map like any other image.
        if spec.component != "algorithm" and image_repository(spec.image) == image_repository(self.pod_image):
            return project_layout(spec.network)
        try:
            environment = self.environments.get(spec.environment_id)
        except UnknownEnvironmentError as exc:
            raise _StartRefused("StartError", str(exc)) from None
        runtime: ImageRuntime | None = environment.runtime_for(spec.image)
        if runtime is None:
            image_map = ", ".join(f"{e.image} -> {e.rootfs}" for e in environment.image_map) or "empty"
            raise _StartRefused(
                "ImageNotFound",
                f"image {spec.image} has no local runtime in environment {environment.id} "
                f"(image map: {image_map})",
            )
        if runtime.rootfs == "/":
            return host_root_layout(spec.network, runtime.aliases)
        return rootfs_layout(runtime.rootfs, runtime.aliases)

    def _preflight(self, volume: Path) -> None:
        if os.geteuid() != 0:
            raise _StartRefused(
                "StartError", "the local sandbox runs each pod as its own uid and must itself run as root"
            )
        missing = [tool for tool in TOOLS if shutil.which(tool, path=SYSTEM_PATH) is None]
        if missing:
            raise _StartRefused(
                "StartError", f"the local sandbox needs {', '.join(missing)} on {SYSTEM_PATH}"
            )
        if not volume.is_dir():
            raise _StartRefused("StartError", f"job volume {volume} does not exist (prepare_volume first)")

    def _secret_files(self, spec: PodSpec) -> dict[str, bytes]:
        files = {}
        for name, pod_path in spec.secrets.items():
            source = self.secrets.get(name)
            if source is None:
                known = ", ".join(sorted(self.secrets)) or "none"
                raise _StartRefused("StartError", f"secret {name!r} is not configured (configured: {known})")
            try:
                files[_pod_path(pod_path, f"secret {name} path")] = Path(source).read_bytes()
            except OSError as exc:
                raise _StartRefused("StartError", f"cannot read secret {name!r}: {exc.strerror}") from None
        return files

    def _acquire_slot(self, pod: _RunningPod) -> _Slot | None:
        """An exclusive uid for the pod (flock held until release), or None when stopped while waiting."""
        self.slot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            with self._lock:
                first = self._next_slot
                self._next_slot = (self._next_slot + 1) % self.slots
            for index in itertools.chain(range(first, self.slots), range(first)):
                slot = self._try_slot(self.uid_base + index)
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
        slot: _Slot,
        pod: _RunningPod,
        started: float,
    ) -> PodResult:
        uid = slot.uid
        # Leftovers of a runner that crashed holding this uid would eat the pod's process budget.
        self._sweep(uid, _NO_CGROUP)
        try:
            volume_binds = [self._mount_bind(volume, mount) for mount in spec.mounts]
            workdir = _pod_path(spec.workdir, "workdir")
            log_path = self._in_volume(volume, spec.log_sub_path, must_exist=False)
        except _StartRefused as refused:
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

            _make_mount_points(volume_binds, str(volume))
            self._hand_over(volume, uid, include_root=False)
            for mount, bind in zip(spec.mounts, volume_binds, strict=True):
                if mount.host_path is not None and bind.writable:
                    self._hand_over(Path(bind.source), uid, include_root=True)

            files = dict(secret_files)
            if runtime.identity_files:
                files.update(_identity_files(uid))
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

            stage = self._make_stage(plan, uid, prefix=f"{spec.job_id}-{spec.component}-")
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

            status = _StatusPipe()
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
            # Runs first when unwinding (an interrupt included): nothing of the pod outlives `run`.
            cleanup.callback(self._reap, process, uid, status, cgroups)

            disk_paths = _outermost([b.source for b in volume_binds if b.writable] + [str(log_path)])
            interruption = self._supervise(process, pod, spec, status, uid, cgroups, disk_paths)
            self._reap(process, uid, status, cgroups)
            finished = self._wall_clock()
            return self._outcome(
                spec,
                interruption,
                process.returncode,
                status,
                oom_kills=cgroups.oom_kills(),
                peak_memory=cgroups.peak_memory(),
                memory_by_rlimit="memory" not in cgroups.limited,
                disk_used=disk_usage(disk_paths),
                log_text=_read_from(log_path, log_offset),
                termination_message=_read_head(termination_log, TERMINATION_MESSAGE_LIMIT),
                started=started,
                finished=finished,
            )

    def _make_stage(self, plan: SandboxPlan, uid: int, prefix: str) -> Path:
        """A fresh stage dir: one empty mount point per bind, and the pod's termination-log file.

        Mode 0711 down from the state dir: the sandbox uid can traverse it to the staged mounts but
        cannot list it (another pod's stage is not guessable from inside a sandbox anyway).
        """
        traversable = 0o711
        self.stage_root.mkdir(parents=True, exist_ok=True)
        for directory in (self.stage_root.parent, self.stage_root):
            os.chmod(directory, traversable)
        stage = Path(tempfile.mkdtemp(prefix=prefix, dir=self.stage_root))
        os.chmod(stage, traversable)
        for index, bind in enumerate(plan.binds):
            target = Path(stage_path(str(stage), index))
            if os.path.isdir(bind.source):
                target.mkdir()
            else:
                target.touch()
        termination_log = stage / "termination-log"
        termination_log.touch(mode=0o600)
        os.chown(termination_log, uid, uid)
        return stage

    def _mount_bind(self, volume: Path, mount: Mount) -> HostBind:
        dest = _pod_path(mount.mount_path, "mount path")
        if mount.host_path is not None:
            source = os.path.realpath(mount.host_path)
            if not os.path.isabs(mount.host_path) or not os.path.exists(source):
                raise _StartRefused(
                    "StartError", f"host path {mount.host_path!r} must be an existing absolute path"
                )
        else:
            source = str(self._in_volume(volume, mount.sub_path or "."))
        return HostBind(source, dest, writable=not mount.read_only)

    def _hand_over(self, root: Path, uid: int, *, include_root: bool) -> None:
        """Make a tree the given uid's own (see the class docstring), never following symlinks.

        Only entries owned by root or by a sandbox uid change hands; setuid/setgid bits are dropped.
        """
        sandbox_uids = range(self.uid_base, self.uid_base + self.slots)

        def adopt(path: str) -> None:
            try:
                info = os.lstat(path)
            except OSError:
                return
            if info.st_uid != 0 and info.st_uid not in sandbox_uids:
                return
            if (info.st_uid, info.st_gid) != (uid, uid):
                os.lchown(path, uid, uid)
            if stat.S_ISLNK(info.st_mode):
                return
            mode = stat.S_IMODE(info.st_mode)
            wanted = (mode | (0o700 if stat.S_ISDIR(info.st_mode) else 0o600)) & ~0o6000
            if wanted != mode:
                os.chmod(path, wanted)

        if include_root:
            adopt(str(root))
        for directory, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                adopt(os.path.join(directory, name))

    def _supervise(
        self,
        process: subprocess.Popen[bytes],
        pod: _RunningPod,
        spec: PodSpec,
        status: _StatusPipe,
        uid: int,
        cgroups: PodCgroup,
        disk_paths: list[str],
    ) -> Interruption | None:
        """Wait for the pod to end; kill it at its deadline, over its disk quota, or on a stop request."""
        deadline = self._clock() + spec.deadline_seconds
        next_disk_check = self._clock() + self.disk_check_interval
        while True:
            remaining = deadline - self._clock()
            try:
                process.wait(timeout=max(0.0, min(self.poll_interval, remaining)))
                return None
            except subprocess.TimeoutExpired:
                pass
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
        self, process: subprocess.Popen[bytes], status: _StatusPipe, uid: int, cgroups: PodCgroup
    ) -> None:
        """Kill the pod: its pid 1 first, so the kernel takes its whole pid namespace down and bwrap's
        monitor reaps it (nothing is orphaned), then all its cgroup holds (v2: cgroup.kill), then the
        launch's process group if still needed."""
        status.read()
        child = status.child_pid
        # The uid check guards against a recycled pid, should pid 1 be gone already.
        if child is not None and _real_uid(child) == uid:
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
        self, process: subprocess.Popen[bytes], uid: int, status: _StatusPipe, cgroups: PodCgroup
    ) -> None:
        """Make sure nothing of the pod is left: the launch ended, its cgroups and its uid empty."""
        if process.poll() is None:
            self._kill(process, status, uid, cgroups)
        status.read()
        self._sweep(uid, cgroups)

    def _sweep(self, uid: int, cgroups: PodCgroup, timeout: float = 5.0) -> None:
        give_up = time.monotonic() + timeout
        while True:
            pids = cgroups.pids() | set(processes_of_uid(uid))
            if not pids:
                return
            cgroups.kill_all()  # v2: atomically, forks in flight included
            _kill_all(pids)
            if time.monotonic() > give_up:
                log.warning("processes %s of sandbox uid %d survived SIGKILL", sorted(pids), uid)
                return
            time.sleep(0.02)

    # --- results --------------------------------------------------------------------------------------

    def _outcome(
        self,
        spec: PodSpec,
        interruption: Interruption | None,
        returncode: int | None,
        status: _StatusPipe,
        *,
        oom_kills: int,
        peak_memory: int | None,
        memory_by_rlimit: bool,
        disk_used: int,
        log_text: str,
        termination_message: str,
        started: float,
        finished: float,
    ) -> PodResult:
        def result(termination: Termination, exit_code: int | None, message: str) -> PodResult:
            return PodResult(
                termination=termination,
                exit_code=exit_code,
                message=message,
                termination_message=termination_message,
                log_tail=log_text[-LOG_TAIL_LIMIT:],
                started_at=started,
                finished_at=finished,
            )

        if interruption == "Stopped":
            return result("Stopped", None, "pod was stopped on request")
        if interruption == "DeadlineExceeded":
            return result(
                "DeadlineExceeded", None, f"pod was killed at its deadline of {spec.deadline_seconds} s"
            )
        if interruption == "DiskQuotaExceeded":
            return result(
                "DiskQuotaExceeded",
                None,
                f"pod was killed for writing {_size(disk_used)}, "
                f"over its disk limit of {_size(spec.disk_bytes)}",
            )
        sandbox_errors = [
            line
            for line in log_text.splitlines()
            if line.startswith(("bwrap: ", "c2d sandbox: ", "setpriv: "))
        ]
        if status.child_pid is None:
            reason = sandbox_errors[-1] if sandbox_errors else f"launch exited with {returncode}"
            return result("StartError", None, f"the sandbox could not start: {reason}")
        exit_code = status.exit_code
        if exit_code is None:
            exit_code = 128 - returncode if returncode is not None and returncode < 0 else returncode
        execs = [line for line in sandbox_errors if line.startswith("bwrap: execvp ")]
        if exit_code != 0 and execs:
            return result("StartError", exit_code, f"the pod's command could not be run: {execs[-1]}")
        if exit_code == 0:
            return result("Completed", 0, "pod exited with code 0")
        if oom_kills:
            peak = f" (peak {_size(peak_memory)})" if peak_memory else ""
            return result(
                "OOMKilled",
                exit_code,
                f"pod was killed for using more than its memory limit of {_size(spec.memory_bytes)}{peak}",
            )
        if disk_used >= spec.disk_bytes:
            return result(
                "DiskQuotaExceeded",
                exit_code,
                f"pod reached its disk limit of {_size(spec.disk_bytes)}; writes beyond it fail (EFBIG)",
            )
        message = f"pod exited with code {exit_code}"
        if exit_code is not None and 128 < exit_code <= 128 + 64:
            with contextlib.suppress(ValueError):
                message += f" (killed by {signal.Signals(exit_code - 128).name})"
        if "File too large" in log_text or "No space left on device" in log_text:
            message += f"; its log shows a write refused for size: its disk limit is {_size(spec.disk_bytes)}"
        if memory_by_rlimit and ("MemoryError" in log_text or "Cannot allocate memory" in log_text):
            message += (
                f"; its log shows an allocation failure: memory is bounded by RLIMIT_AS "
                f"({_size(spec.memory_bytes)}) on this host, where no memory cgroup is writable"
            )
        return result("Error", exit_code, message)

    def _early_result(self, termination: Termination, message: str, started: float) -> PodResult:
        return PodResult(
            termination=termination, message=message, started_at=started, finished_at=self._wall_clock()
        )


def _make_mount_points(binds: list[HostBind], volume: str) -> None:
    """Create, in the job volume, the mount points of binds nested in another volume bind.

    bwrap cannot create them itself inside a read-only bind (the publish pod's /data/adminlogs
    within a read-only /data); Kubernetes' kubelet likewise creates subPath mount points.
    """
    for bind in binds:
        parents = [
            p for p in binds if p is not bind and _is_within(bind.dest, p.dest) and p.dest != bind.dest
        ]
        if not parents:
            continue
        parent = max(parents, key=lambda p: len(p.dest))
        if not _is_within(os.path.realpath(parent.source), os.path.realpath(volume)):
            continue
        point = Path(parent.source, PurePosixPath(bind.dest).relative_to(parent.dest))
        # Never create anything through a symlink a pod left in the volume.
        if os.path.lexists(point) or not _is_within(os.path.realpath(point.parent), os.path.realpath(volume)):
            continue
        if os.path.isdir(bind.source):
            point.mkdir(parents=True)
        else:
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()


def _identity_files(uid: int) -> dict[str, bytes]:
    """A passwd and group naming only root, the pod's uid and nobody (the host's stay unseen)."""
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"c2d:x:{uid}:{uid}:c2d sandbox:/tmp:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nc2d:x:{uid}:\nnogroup:x:65534:\n"
    return {"/etc/passwd": passwd.encode(), "/etc/group": group.encode()}


def _read_from(path: Path, offset: int) -> str:
    """What was appended to `path` since `offset`, its last LOG_TAIL_LIMIT bytes at most."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - LOG_TAIL_LIMIT))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""
