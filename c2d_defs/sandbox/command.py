"""The sandbox as data (`SandboxPlan`, `SandboxLaunch`, `HostBind`) and the command line built from it.

How one pod is started (`sandbox_command` builds it, a pure function):

    unshare --mount  sh -c '<join cgroups>; mount --all --fstab <stage>/mounts; exec "$@"'
      prlimit ...  setpriv --reuid U ...  bwrap --unshare-all ... --ro-bind <stage>/<i> <dest> ... -- cmd

bwrap runs as the sandbox uid, so it could only bind what that uid may traverse: not the interpreter
under /root/.pyenv, nor a work dir under a 0700 parent (/root/..., pytest's /tmp/pytest-of-root). Root
therefore first binds every source onto a world-traversable stage dir, in a private mount namespace
that only this launch sees and that vanishes with it; bwrap then binds from the stage. The binds are
one table (`stage_table`, fstab's format, written into the stage dir by the host side) that one `mount`
process mounts: a pod has 10 to 20 of them, and a `mount` process each cost about 25 ms per pod.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from c2d_defs.pod_runner import Termination
from c2d_defs.pods import layout

# Image aliases (`python` -> /usr/bin/python3) live here inside the sandbox, first on PATH.
ALIAS_DIR = "/opt/c2d/bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Exit code of the launch script when it could not join a cgroup or stage a mount (Docker's 125).
LAUNCH_FAILED = 125
# The programs the command line runs, found on SYSTEM_PATH.
TOOLS = ("unshare", "sh", "mount", "prlimit", "setpriv", "bwrap")


class StartRefused(Exception):
    """A pod that cannot start; `termination` says how it is reported (ImageNotFound or StartError)."""

    def __init__(self, termination: Termination, message: str) -> None:
        super().__init__(message)
        self.termination: Termination = termination


@dataclass(frozen=True)
class HostBind:
    """A host file or folder seen in the pod at `dest` (bound through the launch stage)."""

    source: str
    dest: str
    writable: bool = False


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


# The stage dir's mount table (fstab format): every bind of the plan onto its staged mount point.
STAGE_TABLE = "mounts"


def stage_table_path(stage_dir: str) -> str:
    return f"{stage_dir}/{STAGE_TABLE}"


def _fstab_field(path: str) -> str:
    """A path as one fstab field: the characters fstab separates or ends fields with, octal-escaped
    (libmount's own escapes), the backslash first."""
    for char, escaped in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(char, escaped)
    return path


def stage_table(plan: SandboxPlan, stage_dir: str) -> str:
    """The mount table that stages every bind of `plan` (`mount --bind <source> <stage>/<i>`, in
    order): plain, non-recursive binds; bwrap makes them read-only where the plan says so."""
    return "".join(
        f"{_fstab_field(bind.source)} {_fstab_field(stage_path(stage_dir, index))} none bind 0 0\n"
        for index, bind in enumerate(plan.binds)
    )


def sandbox_command(plan: SandboxPlan, launch: SandboxLaunch) -> list[str]:
    """The full command line of one pod (see the module docstring for its shape)."""
    if len(launch.file_fds) != len(plan.files):
        raise ValueError("one file descriptor per sandbox file is needed")
    script = [f'fail() {{ echo "c2d sandbox: $*" >&2; exit {LAUNCH_FAILED}; }}']
    for procs in launch.cgroup_procs:
        script.append(f"echo $$ > {shlex.quote(procs)} || fail cannot join cgroup {shlex.quote(procs)}")
    if plan.binds:
        table = shlex.quote(stage_table_path(launch.stage_dir))
        script.append(f"mount --all --fstab {table} || fail cannot stage the sandbox mounts")
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


# --- Paths in the plan -------------------------------------------------------------------------------


def pod_path(value: str, what: str) -> str:
    """An absolute, normalized path inside the pod, or a refusal naming the field."""
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or str(path) != value.rstrip("/") or value == "/":
        raise StartRefused("StartError", f"{what} {value!r} must be an absolute path without '..', not '/'")
    if path.parts[1] in {"proc", "dev"} and value != layout.TERMINATION_LOG_PATH:
        raise StartRefused("StartError", f"{what} {value!r} may not be under /proc or /dev")
    return value


def in_mount_order(binds: Iterable[HostBind]) -> tuple[HostBind, ...]:
    """Parents before children (a stable sort, so equal depths keep their order)."""
    return tuple(sorted(binds, key=lambda bind: len(PurePosixPath(bind.dest).parts)))


def outermost(paths: Iterable[str]) -> list[str]:
    """The paths with duplicates and paths inside another one dropped (order kept)."""
    unique = list(dict.fromkeys(paths))
    return [p for p in unique if not any(o != p and is_within(p, o) for o in unique)]


def is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")
