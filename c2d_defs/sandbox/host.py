"""Host side of the sandbox: slot uids, job-volume paths, the stage dir, the hand-over walk, and
finding, measuring and sweeping a pod's processes and files. Everything here runs as root, outside
any pod.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import stat
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from c2d_core.sandbox_cgroups import NoCgroups, PodCgroup, PodLimits
from c2d_defs.sandbox.command import (
    HostBind,
    SandboxPlan,
    is_within,
    stage_path,
    stage_table,
    stage_table_path,
)

log = logging.getLogger(__name__)

# A pod without cgroups: what sweeps of a slot's leftovers (by uid only) pass.
NO_CGROUP: PodCgroup = NoCgroups(Path("/nonexistent"), "c2d").create("", PodLimits(0, 0.0, 0))


# --- Slots: one uid per concurrent pod ---------------------------------------------------------------


@dataclass
class Slot:
    index: int
    uid: int
    fd: int

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor drops the flock


def try_slot(slot_dir: Path, uid_base: int, uid: int) -> Slot | None:
    """The slot of `uid` if no pod holds it (its flock is free), else None; never waits."""
    fd = os.open(slot_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return Slot(uid - uid_base, uid, fd)


# --- Job volume and stage dirs -----------------------------------------------------------------------


def path_in_volume(volume: Path, sub_path: str, *, must_exist: bool = True) -> Path:
    """`volume/sub_path`, refused when it leaves the volume (by '..' or by a symlink)."""
    relative = PurePosixPath(sub_path)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"volume path {sub_path!r} must be relative and without '..'")
    candidate = volume / relative
    resolved = Path(os.path.realpath(candidate))
    if not is_within(str(resolved), os.path.realpath(volume)):
        raise ValueError(f"volume path {sub_path!r} leads outside the job volume")
    if must_exist and not resolved.exists():
        raise ValueError(f"volume path {sub_path!r} does not exist")
    return resolved if must_exist else candidate


def read_volume_file(volume: Path, sub_path: str, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of a regular file of the volume from `offset`; b"" when there is none.

    Pods own the folders they write, so while one runs it may swap a folder or the file for a symlink
    at any moment: each component is opened relative to the last with O_NOFOLLOW (no check-then-open
    race), and anything but a regular file reads as empty. This runs as root: it must never read a
    host file through a pod's link.
    """
    relative = PurePosixPath(sub_path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"volume path {sub_path!r} must be relative and without '..'")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds = [os.open(volume, flags | os.O_DIRECTORY)]
    try:
        for part in relative.parts[:-1]:
            fds.append(os.open(part, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
        fds.append(os.open(relative.parts[-1], flags | os.O_NONBLOCK, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
            return b""
        return os.pread(fds[-1], limit, offset)
    except OSError:  # missing, a link (ELOOP), not a folder: nothing to read yet
        return b""
    finally:
        for fd in fds:
            os.close(fd)


def make_stage(stage_root: Path, plan: SandboxPlan, uid: int, prefix: str) -> Path:
    """A fresh stage dir: one empty mount point per bind, the table that binds them (root's, 0600),
    and the pod's termination-log file.

    Mode 0711 down from the state dir: the sandbox uid can traverse it to the staged mounts but
    cannot list it (another pod's stage is not guessable from inside a sandbox anyway).
    """
    traversable = 0o711
    stage_root.mkdir(parents=True, exist_ok=True)
    for directory in (stage_root.parent, stage_root):
        os.chmod(directory, traversable)
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=stage_root))
    os.chmod(stage, traversable)
    for index, bind in enumerate(plan.binds):
        target = Path(stage_path(str(stage), index))
        if os.path.isdir(bind.source):
            target.mkdir()
        else:
            target.touch()
    fd = os.open(stage_table_path(str(stage)), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as table:
        table.write(stage_table(plan, str(stage)))
    termination_log = stage / "termination-log"
    termination_log.touch(mode=0o600)
    os.chown(termination_log, uid, uid)
    return stage


def make_nested_mount_points(binds: list[HostBind], volume: str) -> None:
    """Create, in the job volume, the mount points of binds nested in another volume bind.

    bwrap cannot create them itself inside a read-only bind (the publish pod's /data/adminlogs
    within a read-only /data); Kubernetes' kubelet likewise creates subPath mount points.
    """
    for bind in binds:
        parents = [p for p in binds if p is not bind and is_within(bind.dest, p.dest) and p.dest != bind.dest]
        if not parents:
            continue
        parent = max(parents, key=lambda p: len(p.dest))
        if not is_within(os.path.realpath(parent.source), os.path.realpath(volume)):
            continue
        point = Path(parent.source, PurePosixPath(bind.dest).relative_to(parent.dest))
        # Never create anything through a symlink a pod left in the volume.
        if os.path.lexists(point) or not is_within(os.path.realpath(point.parent), os.path.realpath(volume)):
            continue
        if os.path.isdir(bind.source):
            point.mkdir(parents=True)
        else:
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()


def hand_over(root: Path, uid: int, sandbox_uids: range, *, include_root: bool) -> None:
    """Make a tree the given uid's own (see `LocalPodRunner`'s docstring), never following symlinks.

    Only entries owned by root or by a sandbox uid change hands; setuid/setgid bits are dropped.
    """

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


# --- Processes ---------------------------------------------------------------------------------------


def processes_of_uid(uid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids whose real uid is `uid` (what RLIMIT_NPROC counts).

    Read from each /proc/<pid>/status (a process cannot hide its real uid there, as it can hide the
    owner of /proc/<pid> by making itself non-dumpable); only the two lines it needs are parsed, since
    every pod start and end walks every process of the host (three times per pod).
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as status:
                text = status.read()
        except OSError:
            continue
        if _real_uid_in(text) != uid:
            continue
        if include_zombies or not _is_zombie(text):
            found.append(int(entry))
    return found


def _real_uid_in(status: bytes) -> int | None:
    """The first of the `Uid:` line's four ids (real, effective, saved, filesystem)."""
    start = status.find(b"\nUid:")
    if start < 0:
        return None
    fields = status[start + 5 : status.find(b"\n", start + 1)].split()
    try:
        return int(fields[0])
    except (IndexError, ValueError):
        return None


def _is_zombie(status: bytes) -> bool:
    start = status.find(b"\nState:")
    return start >= 0 and status[start + 7 : start + 24].lstrip().startswith(b"Z")


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


def real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each pid; one already gone or no longer ours is skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sweep_uid(uid: int, cgroups: PodCgroup, timeout: float = 5.0) -> None:
    """Kill every process of the slot uid and of the pod's cgroups until none is left (or give up)."""
    give_up = time.monotonic() + timeout
    while True:
        pids = cgroups.pids() | set(processes_of_uid(uid))
        if not pids:
            return
        cgroups.kill_all()  # v2: atomically, forks in flight included
        kill_pids(pids)
        if time.monotonic() > give_up:
            log.warning("processes %s of sandbox uid %d survived SIGKILL", sorted(pids), uid)
            return
        time.sleep(0.02)
