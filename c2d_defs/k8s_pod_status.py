"""Reading a Kubernetes pod of a stage: whether it started, why it never will, and how it ended
(`PodResult`'s termination, exit code and messages), from the pod's status alone.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from c2d_defs.k8s_manifests import LAYOUT_CONTAINER
from c2d_defs.pod_runner import PodSpec, Termination
from c2d_defs.pods.common import TERMINATION_MESSAGE_LIMIT

# Waiting reasons that no amount of waiting fixes.
_IMAGE_NEVER = frozenset({"InvalidImageName", "ErrImageNeverPull"})
_IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff"})


def pod_outcome(pod: Any, spec: PodSpec) -> tuple[Termination, int | None, str, str]:
    """(termination, exit code, message, termination message) of a pod that has ended."""
    status = pod.status
    container = next(
        (s for s in (status.container_statuses or []) if s.name == spec.component),
        None,
    )
    terminated = container.state.terminated if container and container.state else None
    termination_message = ((terminated.message if terminated else None) or "")[:TERMINATION_MESSAGE_LIMIT]
    exit_code = terminated.exit_code if terminated else None
    if status.reason == "DeadlineExceeded":
        return (
            "DeadlineExceeded",
            exit_code,
            f"pod was killed at its deadline of {spec.deadline_seconds} s",
            termination_message,
        )
    if status.reason == "Evicted":
        what = status.message or "evicted by the node"
        kind: Termination = "DiskQuotaExceeded" if "ephemeral" in what.lower() else "Error"
        return kind, exit_code, f"pod was evicted: {what}", termination_message
    if terminated is None:
        return "StartError", None, f"pod ended without its container running ({status.phase})", ""
    if terminated.reason == "OOMKilled":
        return (
            "OOMKilled",
            exit_code,
            f"pod was killed for using more than its memory limit of {spec.memory_bytes} bytes",
            termination_message,
        )
    if terminated.reason in ("StartError", "ContainerCannotRun"):
        detail = terminated.message or terminated.reason
        return "StartError", exit_code, f"the pod's command could not be run: {detail}", ""
    if exit_code == 0:
        return "Completed", 0, "pod exited with code 0", termination_message
    message = f"pod exited with code {exit_code}"
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        with contextlib.suppress(ValueError):
            message += f" (killed by {signal.Signals(exit_code - 128).name})"
    return "Error", exit_code, message, termination_message


def start_problem(pod: Any, spec: PodSpec) -> tuple[Termination, str] | None:
    """Why a pod that has not started yet never will, or None while it still may."""
    for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in _IMAGE_NEVER:
            return (
                "ImageNotFound",
                f"image of container {status.name} cannot be pulled: {waiting.message or waiting.reason}",
            )
        terminated = status.state.terminated if status.state else None
        if status.name == LAYOUT_CONTAINER and terminated is not None and terminated.exit_code != 0:
            return (
                "StartError",
                f"the job volume could not be laid out: {terminated.message or terminated.reason}",
            )
    return None


def pending_reason(pod: Any | None, spec: PodSpec, waited: float) -> tuple[Termination, str]:
    """How a pod still not running at the start timeout is reported."""
    if pod is None:
        return "StartError", f"no pod was created for the {spec.component} stage within {waited:.0f} s"
    for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in _IMAGE_PULL | _IMAGE_NEVER:
            return (
                "ImageNotFound",
                f"image of container {status.name} could not be pulled within {waited:.0f} s: "
                f"{waiting.reason}: {waiting.message or ''}".rstrip(": "),
            )
        if waiting is not None and waiting.reason:
            return (
                "StartError",
                (
                    f"container {status.name} did not start within {waited:.0f} s: "
                    f"{waiting.reason}: {waiting.message or ''}"
                ).rstrip(": "),
            )
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return (
                "StartError",
                f"pod could not be scheduled within {waited:.0f} s: {condition.reason}: {condition.message}",
            )
    return "StartError", f"pod did not start within {waited:.0f} s (phase {pod.status.phase})"


def main_container_started(pod: Any, spec: PodSpec) -> bool:
    if pod.status.phase in ("Running", "Succeeded", "Failed"):
        return True
    for status in pod.status.container_statuses or []:
        if (
            status.name == spec.component
            and status.state
            and (status.state.running or status.state.terminated)
        ):
            return True
    return False


def pod_ended(pod: Any, spec: PodSpec) -> bool:
    if pod.status.phase in ("Succeeded", "Failed"):
        return True
    return any(
        s.name == spec.component and s.state is not None and s.state.terminated is not None
        for s in pod.status.container_statuses or []
    )
