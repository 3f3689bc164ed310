"""The local sandbox's per-pod cgroups on cgroup v1 and v2 hosts: limits, OOM verdict, kill, removal.

`choose_backend` picks the backend from what the host mounts (/proc/self/mountinfo) or from a
configured root; the runner then only calls the small `CgroupBackend` / `PodCgroup` interface and
never asks which version it got. `describe_sandbox` says which backend and limits are in force (printed
by `c2d dev up`). Here in c2d_core, not c2d_defs, because the CLI prints that description and the
CLI depends on c2d_core only.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from c2d_core.environments import Environment
    from c2d_core.settings import EngineSettings

log = logging.getLogger(__name__)

# The controllers the sandbox uses, in the order descriptions name them.
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
# Below 1 ms per period the kernel refuses a CFS quota (v1 and v2 alike).
CPU_MIN_QUOTA_US = 1000
MOUNTINFO = Path("/proc/self/mountinfo")
CgroupVersion = Literal["auto", "v1", "v2", "none"]
HostKind = Literal["v1", "v2", "hybrid", "none"]
# v2 mount points in order of preference: the unified root, then systemd's hybrid mount.
_V2_PREFERRED = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


@dataclass(frozen=True)
class PodLimits:
    memory_bytes: int
    cpu: float
    pids: int


# --- What the host mounts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupMounts:
    """The cgroup hierarchies a mount table shows: v1 controllers by mount point, and cgroup2 mounts."""

    v1: Mapping[str, Path]  # controller -> mount point of its v1 hierarchy
    v2: tuple[Path, ...]

    @property
    def kind(self) -> HostKind:
        if self.v1 and self.v2:
            return "hybrid"
        if self.v1:
            return "v1"
        return "v2" if self.v2 else "none"

    @property
    def v2_mount(self) -> Path | None:
        for preferred in _V2_PREFERRED:
            if preferred in self.v2:
                return preferred
        return self.v2[0] if self.v2 else None


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040 ...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


# v1 controllers the sandbox does not use; a hierarchy of one of them still makes a host v1 or hybrid.
_OTHER_V1_CONTROLLERS = frozenset(
    {"cpuacct", "cpuset", "blkio", "io", "devices", "freezer", "net_cls", "net_prio", "perf_event"}
    | {"hugetlb", "rdma", "misc"}
)


def parse_mountinfo(text: str) -> CgroupMounts:
    """The cgroup mounts of a /proc/<pid>/mountinfo text (see proc(5) for its fields)."""
    v1: dict[str, Path] = {}
    v2: list[Path] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 6 or len(fields) < separator + 4:  # id parent dev root mount options ... -
            continue
        mount_point = Path(_unescape(fields[4]))
        fstype, super_options = fields[separator + 1], fields[separator + 3].split(",")
        if fstype == "cgroup2":
            v2.append(mount_point)
        elif fstype == "cgroup":
            # Named hierarchies (name=systemd) carry no controller; only the resource ones count.
            for option in super_options:
                if option in CONTROLLERS or option in _OTHER_V1_CONTROLLERS:
                    v1.setdefault(option, mount_point)
    return CgroupMounts(v1=v1, v2=tuple(v2))


def read_mounts(mountinfo: Path = MOUNTINFO) -> CgroupMounts:
    try:
        return parse_mountinfo(mountinfo.read_text())
    except OSError:
        return CgroupMounts(v1={}, v2=())


# --- Files of cgroupfs -------------------------------------------------------------------------------


def _write(path: Path, value: str) -> bool:
    """Write one cgroupfs file; False (logged) when the kernel refuses or the file is absent."""
    try:
        path.write_text(value)
    except OSError as exc:
        log.debug("cannot write %s to %s: %s", value, path, exc)
        return False
    return True


def _procs(path: Path) -> set[int]:
    try:
        return {int(line) for line in (path / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroupfs file (`name value` lines: memory.events, memory.oom_control)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in lines:
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            found[name] = int(value)
    return found


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _signal_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove_cgroup(path: Path, timeout: float = 5.0) -> None:
    """Kill what a cgroup holds and remove it; rmdir fails while it has tasks, which can last a moment
    after the last one was killed, so this retries for a bounded time."""
    give_up = time.monotonic() + timeout
    while True:
        if not _write(path / "cgroup.kill", "1"):  # v2 (kernel >= 5.14); else signal each task
            _signal_all(_procs(path))
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # cgroupfs answers EBUSY while tasks linger; any other error will not pass by waiting.
            if exc.errno != errno.EBUSY or time.monotonic() > give_up:
                log.warning("cannot remove cgroup %s: %s", path, exc)
                return
        time.sleep(0.02)


def _fresh_dir(path: Path) -> bool:
    """Create a cgroup dir; one left by a crashed runner is removed first (its counters are stale)."""
    try:
        if path.exists():
            remove_cgroup(path)
        path.mkdir()
    except OSError as exc:
        log.debug("no cgroup %s: %s", path, exc)
        return False
    return True


# --- The interface -----------------------------------------------------------------------------------


class PodCgroup(abc.ABC):
    """One pod's cgroup(s), created for a job slot with its limits already written."""

    @property
    @abc.abstractmethod
    def limited(self) -> frozenset[str]:
        """The controllers (of CONTROLLERS) whose limits are in force for this pod."""

    @abc.abstractmethod
    def procs_files(self) -> tuple[str, ...]:
        """The `cgroup.procs` files a process writes its pid to in order to join the pod's cgroups."""

    def add(self, pid: int) -> None:
        for procs in self.procs_files():
            Path(procs).write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            found |= _procs(Path(procs).parent)
        return found

    def oom_kills(self) -> int:
        """How often the kernel's OOM killer killed a process of the pod."""
        return 0

    def peak_memory(self) -> int | None:
        """The most memory the pod used at once, in bytes, where the kernel records it."""
        return None

    @abc.abstractmethod
    def kill_all(self) -> None:
        """SIGKILL every process in the pod's cgroups."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Kill what is left and remove the cgroups (idempotent)."""


class CgroupBackend(abc.ABC):
    """Creates pods' cgroups under `<root>/<parent>/` (the runner's delegated subtree)."""

    name: str

    def __init__(self, root: Path, parent: str) -> None:
        self.root = root
        self.parent = parent

    @abc.abstractmethod
    def controllers(self) -> tuple[str, ...]:
        """The controllers (of CONTROLLERS) pods get on this host; prepares the parent cgroup."""

    @abc.abstractmethod
    def create(self, name: str, limits: PodLimits) -> PodCgroup:
        """A fresh cgroup for one pod in a job slot (`<job id>-<component>-<slot>`), limits written."""

    @abc.abstractmethod
    def remove_matching(self, prefix: str) -> int:
        """Kill and remove the pods' cgroups whose name starts with `prefix` (a dead runner's); how many."""


class _EmptyPodCgroup(PodCgroup):
    @property
    def limited(self) -> frozenset[str]:
        return frozenset()

    def procs_files(self) -> tuple[str, ...]:
        return ()

    def kill_all(self) -> None:
        pass

    def remove(self) -> None:
        pass


class NoCgroups(CgroupBackend):
    """A host without usable cgroups: the runner's rlimits are all there is (no CPU limit)."""

    name = "no cgroups"

    def controllers(self) -> tuple[str, ...]:
        return ()

    def create(self, name: str, limits: PodLimits) -> PodCgroup:
        return _EmptyPodCgroup()

    def remove_matching(self, prefix: str) -> int:
        return 0


# --- cgroup v1 ---------------------------------------------------------------------------------------


class _V1PodCgroups(PodCgroup):
    def __init__(self, dirs: Mapping[str, Path]) -> None:
        self.dirs = dict(dirs)

    @property
    def limited(self) -> frozenset[str]:
        return frozenset(self.dirs)

    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(path / "cgroup.procs") for path in self.dirs.values())

    def oom_kills(self) -> int:
        memory = self.dirs.get("memory")
        return 0 if memory is None else _keyed(memory / "memory.oom_control").get("oom_kill", 0)

    def peak_memory(self) -> int | None:
        memory = self.dirs.get("memory")
        return None if memory is None else _read_int(memory / "memory.max_usage_in_bytes")

    def kill_all(self) -> None:
        # v1 has no atomic kill: a task forking meanwhile survives this pass; callers sweep until empty.
        _signal_all(self.pids())

    def remove(self) -> None:
        for path in self.dirs.values():
            remove_cgroup(path)


class CgroupV1(CgroupBackend):
    """One cgroup per controller under `<hierarchy>/<parent>/<name>` (memory, pids, cpu hierarchies).

    Each controller is optional: without a memory cgroup the runner falls back to RLIMIT_AS, without
    a pids cgroup RLIMIT_NPROC still bounds processes, without a cpu cgroup CPU is unbounded.
    """

    name = "cgroup v1"

    def __init__(self, hierarchies: Mapping[str, Path], parent: str, root: Path | None = None) -> None:
        self.hierarchies = {c: p for c, p in hierarchies.items() if c in CONTROLLERS}
        super().__init__(root or _common_root(self.hierarchies.values()), parent)

    @classmethod
    def under(cls, root: Path, parent: str) -> CgroupV1:
        """The hierarchies mounted as `<root>/<controller>` (the usual /sys/fs/cgroup layout)."""
        return cls({c: root / c for c in CONTROLLERS if (root / c).is_dir()}, parent, root)

    def _parent_dir(self, controller: str) -> Path | None:
        hierarchy = self.hierarchies.get(controller)
        if hierarchy is None or not hierarchy.is_dir():
            return None
        parent = hierarchy / self.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.debug("no %s cgroup parent %s: %s", controller, parent, exc)
            return None
        return parent if os.access(parent, os.W_OK) else None

    def controllers(self) -> tuple[str, ...]:
        return tuple(c for c in CONTROLLERS if self._parent_dir(c) is not None)

    def create(self, name: str, limits: PodLimits) -> PodCgroup:
        quota = max(CPU_MIN_QUOTA_US, int(limits.cpu * CPU_PERIOD_US))
        wanted: dict[str, list[tuple[str, str, bool]]] = {  # file, value, required
            "memory": [
                ("memory.limit_in_bytes", str(limits.memory_bytes), True),
                # No swap either (written after the limit: memsw must be >= it); absent without
                # swap accounting.
                ("memory.memsw.limit_in_bytes", str(limits.memory_bytes), False),
            ],
            "pids": [("pids.max", str(limits.pids), True)],
            "cpu": [
                ("cpu.cfs_period_us", str(CPU_PERIOD_US), True),
                ("cpu.cfs_quota_us", str(quota), True),
            ],
        }
        dirs: dict[str, Path] = {}
        for controller, settings in wanted.items():
            parent = self._parent_dir(controller)
            if parent is None or not _fresh_dir(parent / name):
                continue
            path = parent / name
            for filename, value, required in settings:
                if not required and not (path / filename).exists():
                    continue
                if not _write(path / filename, value) and required:
                    log.warning("cannot set %s to %s; not using this cgroup", path / filename, value)
                    remove_cgroup(path)
                    break
            else:
                dirs[controller] = path
        return _V1PodCgroups(dirs)

    def remove_matching(self, prefix: str) -> int:
        found = 0
        for hierarchy in self.hierarchies.values():
            for cgroup in (hierarchy / self.parent).glob(f"{prefix}*"):
                found += 1
                remove_cgroup(cgroup)
        return found


def _common_root(paths: Iterable[Path]) -> Path:
    parents = {p.parent for p in paths}
    return parents.pop() if len(parents) == 1 else Path("/sys/fs/cgroup")


# --- cgroup v2 ---------------------------------------------------------------------------------------


class _V2PodCgroup(PodCgroup):
    def __init__(self, path: Path, limited: frozenset[str]) -> None:
        self.path = path
        self._limited = limited

    @property
    def limited(self) -> frozenset[str]:
        return self._limited

    def procs_files(self) -> tuple[str, ...]:
        return (str(self.path / "cgroup.procs"),)

    def oom_kills(self) -> int:
        if "memory" not in self._limited:
            return 0
        return _keyed(self.path / "memory.events").get("oom_kill", 0)

    def peak_memory(self) -> int | None:
        # memory.peak exists from kernel 5.19 on.
        return _read_int(self.path / "memory.peak") if "memory" in self._limited else None

    def kill_all(self) -> None:
        # cgroup.kill (kernel >= 5.14) kills every task at once, forks in flight included.
        if not _write(self.path / "cgroup.kill", "1"):
            _signal_all(self.pids())

    def remove(self) -> None:
        remove_cgroup(self.path)


class CgroupV2(CgroupBackend):
    """One cgroup per pod at `<root>/<parent>/<name>` in the unified hierarchy.

    `<root>` is a cgroup2 mount or a subtree delegated to the runner; the controllers it offers are
    enabled down to `<parent>` through each level's `cgroup.subtree_control`. v2 forbids processes in
    a cgroup that enables controllers for its children (the hierarchy's root excepted): a delegated
    root must not hold the runner itself (systemd: `Delegate=yes` with `DelegateSubgroup=`).
    """

    name = "cgroup v2"

    def _enable_down_to_parent(self) -> frozenset[str]:
        """Enable our controllers from the root down to the parent; the ones pods get."""
        offered = (self.root / "cgroup.controllers").read_text().split()
        enabled = frozenset(c for c in CONTROLLERS if c in offered)
        level = self.root
        for part in (None, *Path(self.parent).parts):
            if part is not None:
                level = level / part
                level.mkdir(exist_ok=True)
            enabled = _enable(level, enabled)
        return enabled

    def controllers(self) -> tuple[str, ...]:
        try:
            enabled = self._enable_down_to_parent()
        except OSError as exc:
            log.debug("no cgroup v2 subtree under %s: %s", self.root, exc)
            return ()
        return tuple(c for c in CONTROLLERS if c in enabled)

    def create(self, name: str, limits: PodLimits) -> PodCgroup:
        try:
            enabled = self._enable_down_to_parent()
        except OSError as exc:
            log.warning("no cgroup v2 subtree under %s: %s", self.root, exc)
            return _EmptyPodCgroup()
        path = self.root / self.parent / name
        if not _fresh_dir(path):
            return _EmptyPodCgroup()
        quota = max(CPU_MIN_QUOTA_US, int(limits.cpu * CPU_PERIOD_US))
        settings = {
            "memory": ("memory.max", str(limits.memory_bytes)),
            "pids": ("pids.max", str(limits.pids)),
            "cpu": ("cpu.max", f"{quota} {CPU_PERIOD_US}"),
        }
        limited = set()
        for controller in enabled:
            filename, value = settings[controller]
            if _write(path / filename, value):
                limited.add(controller)
            else:
                log.warning(
                    "cannot set %s to %s; %s is not limited by cgroup", path / filename, value, controller
                )
        if "memory" in limited:
            # No swap either; the file is absent where the kernel has no swap accounting.
            _write(path / "memory.swap.max", "0")
        return _V2PodCgroup(path, frozenset(limited))

    def remove_matching(self, prefix: str) -> int:
        found = 0
        for cgroup in (self.root / self.parent).glob(f"{prefix}*"):
            found += 1
            remove_cgroup(cgroup)
        return found


def _enable(level: Path, wanted: frozenset[str]) -> frozenset[str]:
    """Enable `wanted` in one cgroup's subtree_control; the ones enabled for its children after."""
    control = level / "cgroup.subtree_control"
    try:
        already = set(control.read_text().split())
    except OSError:
        already = set()
    missing = sorted(wanted - already)
    if not missing or _write(control, " ".join(f"+{c}" for c in missing)):
        return wanted
    # The kernel takes a write whole or not at all: retry one by one to keep what it allows.
    return frozenset(c for c in wanted if c in already or _write(control, f"+{c}"))


# --- Choosing a backend ------------------------------------------------------------------------------


def choose_backend(
    root: Path | None = None,
    parent: str = "c2d",
    version: CgroupVersion = "auto",
    *,
    mountinfo: Path = MOUNTINFO,
) -> CgroupBackend:
    """The backend for this host.

    Without a root, the mount table decides: a cgroup2-only host gets v2, a v1 host v1, and a hybrid
    host the version its memory controller is bound to (systemd's hybrid mode binds every resource
    controller to v1 and mounts a controller-less cgroup2 for process tracking only). With a root,
    its layout decides: `cgroup.controllers` in it means v2, `<root>/<controller>` dirs mean v1.
    """
    if version == "none":
        return NoCgroups(root or Path("/sys/fs/cgroup"), parent)
    if root is not None:
        if version == "v2" or (version == "auto" and (root / "cgroup.controllers").is_file()):
            return CgroupV2(root, parent)
        v1 = CgroupV1.under(root, parent)
        if version == "v1" or v1.hierarchies:
            return v1
        return NoCgroups(root, parent)
    mounts = read_mounts(mountinfo)
    v2_mount = mounts.v2_mount
    use_v2 = version == "v2" or (version == "auto" and "memory" not in mounts.v1)
    if use_v2 and v2_mount is not None:
        return CgroupV2(v2_mount, parent)
    if version != "v2" and mounts.v1:
        return CgroupV1(mounts.v1, parent)
    return NoCgroups(Path("/sys/fs/cgroup"), parent)


def backend_from_settings(settings: EngineSettings) -> CgroupBackend:
    return choose_backend(settings.sandbox.cgroup_root, "c2d", settings.sandbox.cgroups)


# --- What is in force --------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def describe_limits(
    backend: CgroupBackend, environments: Iterable[Environment], host: CgroupMounts | None = None
) -> str:
    """Which backend and which per-pod limits an algorithm gets in each environment, in a few lines.

    E.g. `cgroup v1 (memory, cpu, pids) at /sys/fs/cgroup` then per environment
    `ocean-compute: memory 1 GiB, cpu 1, pids 128 per pod`, naming the rlimit where it stands in.
    """
    controllers = backend.controllers()
    head = f"sandbox limits: {backend.name}"
    if not isinstance(backend, NoCgroups):
        head += f" ({', '.join(controllers) or 'no controllers usable'}) at {backend.root}"
    if host is not None:
        head += f"; host mounts {host.kind}"
    lines = [head]
    for env in environments:
        memory = _size(env.memory_bytes) + ("" if "memory" in controllers else " by RLIMIT_AS")
        cpu = str(env.cpu_number) if "cpu" in controllers else "unlimited (no cpu controller)"
        pids = str(env.max_processes) + ("" if "pids" in controllers else " by RLIMIT_NPROC")
        lines.append(f"  {env.id}: memory {memory}, cpu {cpu}, pids {pids} per pod")
    return "\n".join(lines)


def describe_sandbox(settings: EngineSettings | None = None) -> str:
    """`describe_limits` for the engine's settings and environments file (what `c2d dev up` prints)."""
    from c2d_core.environments import Environments
    from c2d_core.settings import engine_settings

    settings = settings or engine_settings()
    backend = backend_from_settings(settings)
    host = read_mounts() if settings.sandbox.cgroup_root is None else None
    try:
        environments = Environments.load(settings.environments_file).all()
    except (OSError, ValueError) as exc:  # the stack is up already: say why, do not fail `dev up`
        return describe_limits(backend, [], host) + f"\n  (environments file unreadable: {exc})"
    return describe_limits(backend, environments, host)
