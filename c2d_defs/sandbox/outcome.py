"""How a sandboxed pod ended: its `PodResult`, read from the launch's exit, bwrap's status, the
cgroups' verdict and the pod's own log and termination message.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Literal

from c2d_defs.pod_runner import LOG_TAIL_LIMIT, PodResult, PodSpec, Termination

# Why the runner killed a pod, if it did.
Interruption = Literal["Stopped", "DeadlineExceeded", "DiskQuotaExceeded"]


def sandbox_outcome(
    spec: PodSpec,
    interruption: Interruption | None,
    returncode: int | None,
    child_pid: int | None,
    reported_exit_code: int | None,
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
    """How the pod ended, from what the launch, bwrap's status pipe, its cgroups and its log say."""

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

    memory_limit, disk_limit = format_size(spec.memory_bytes), format_size(spec.disk_bytes)
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
            f"pod was killed for writing {format_size(disk_used)}, over its disk limit of {disk_limit}",
        )
    sandbox_errors = [
        line for line in log_text.splitlines() if line.startswith(("bwrap: ", "c2d sandbox: ", "setpriv: "))
    ]
    if child_pid is None:
        reason = sandbox_errors[-1] if sandbox_errors else f"launch exited with {returncode}"
        return result("StartError", None, f"the sandbox could not start: {reason}")
    exit_code = reported_exit_code
    if exit_code is None:
        exit_code = 128 - returncode if returncode is not None and returncode < 0 else returncode
    execs = [line for line in sandbox_errors if line.startswith("bwrap: execvp ")]
    if exit_code != 0 and execs:
        return result("StartError", exit_code, f"the pod's command could not be run: {execs[-1]}")
    if exit_code == 0:
        return result("Completed", 0, "pod exited with code 0")
    if oom_kills:
        peak = f" (peak {format_size(peak_memory)})" if peak_memory else ""
        return result(
            "OOMKilled",
            exit_code,
            f"pod was killed for using more than its memory limit of {memory_limit}{peak}",
        )
    if disk_used >= spec.disk_bytes:
        return result(
            "DiskQuotaExceeded",
            exit_code,
            f"pod reached its disk limit of {disk_limit}; writes beyond it fail (EFBIG)",
        )
    message = f"pod exited with code {exit_code}"
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        with contextlib.suppress(ValueError):
            message += f" (killed by {signal.Signals(exit_code - 128).name})"
    if "File too large" in log_text or "No space left on device" in log_text:
        message += f"; its log shows a write refused for size: its disk limit is {disk_limit}"
    if memory_by_rlimit and ("MemoryError" in log_text or "Cannot allocate memory" in log_text):
        message += (
            f"; its log shows an allocation failure: memory is bounded by RLIMIT_AS "
            f"({memory_limit}) on this host, where no memory cgroup is writable"
        )
    return result("Error", exit_code, message)


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def read_log_since(path: Path, offset: int) -> str:
    """What was appended to `path` since `offset`, its last LOG_TAIL_LIMIT bytes at most."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - LOG_TAIL_LIMIT))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def read_head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""
