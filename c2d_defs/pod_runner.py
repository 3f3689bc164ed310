"""What a stage asks to run, and what came back: the contract between ops and pod runners.

A `PodSpec` reads like a one-container Kubernetes pod because in production it becomes one
(dagster-k8s); the embedded default runs the same spec in a bubblewrap sandbox. Ops build specs and
never ask which runner will run them.
"""

from __future__ import annotations

import abc

from pydantic import BaseModel, ConfigDict, Field

from c2d_core.status import Stage, Termination

# How a pod ended is a c2d_core.status.Termination; the runners import it from here with the rest.
__all__ = ["LOG_TAIL_LIMIT", "Mount", "PodResult", "PodRunner", "PodSpec", "Termination"]


class Mount(BaseModel):
    """A folder of the job volume (or, for a local result store only, a host folder) in the pod."""

    model_config = ConfigDict(frozen=True)

    mount_path: str
    sub_path: str = ""
    host_path: str | None = None
    read_only: bool = True


class PodSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    component: Stage  # the stage the pod runs
    environment_id: str
    image: str
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    # Secret name -> path inside the pod; each runner resolves the name (a file, a k8s Secret).
    secrets: dict[str, str] = Field(default_factory=dict)
    workdir: str = "/data"
    cpu: float = 1.0
    memory_bytes: int
    disk_bytes: int
    max_processes: int = 256
    network: bool = False
    deadline_seconds: int = Field(ge=1)
    # Where, inside the job volume, the pod's stdout and stderr are written.
    log_sub_path: str
    labels: dict[str, str] = Field(default_factory=dict)


# Every runner keeps at most this many characters of a pod's log in `PodResult.log_tail`.
LOG_TAIL_LIMIT = 4096


class PodResult(BaseModel):
    termination: Termination
    exit_code: int | None = None
    message: str = ""
    # What the pod wrote to its termination-message file (/dev/termination-log), at most 4 KiB.
    termination_message: str = ""
    log_tail: str = ""  # the log's last LOG_TAIL_LIMIT characters
    started_at: float
    finished_at: float

    @property
    def succeeded(self) -> bool:
        return self.termination == "Completed"

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


class PodRunner(abc.ABC):
    """Runs pod specs for one job volume's lifetime: prepare, run each stage, release."""

    @abc.abstractmethod
    def prepare_volume(self, job_id: str, disk_bytes: int) -> None:
        """Create the job's volume with Ocean's folder layout (idempotent)."""

    @abc.abstractmethod
    def write_file(self, job_id: str, sub_path: str, content: bytes) -> None:
        """Put a small file (the workflow document) into the job volume before a stage runs."""

    @abc.abstractmethod
    def run(self, spec: PodSpec) -> PodResult:
        """Run one pod to its end and report how it ended; never raises for the pod's own failure."""

    @abc.abstractmethod
    def release_volume(self, job_id: str) -> None:
        """Delete the job's volume (idempotent)."""

    def read_log(self, job_id: str, sub_path: str, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of a pod's log (`PodSpec.log_sub_path`) from `offset`, read while the pod
        runs (c2d_defs.pod_output follows it); a runner that cannot read a live log returns b"", and
        the pod's output then shows only in its `PodResult.log_tail`."""
        return b""

    def has_volume(self, job_id: str) -> bool:
        """Whether the job's volume still exists (what a watchdog can still publish from)."""
        return False

    def kill_pods(self, job_id: str) -> int:
        """Kill whatever of the job's pods still runs, from any process; how many were found.

        For a job whose run worker died or hung: `run` is not there to end its pods. Idempotent.
        """
        return 0

    def volumes(self) -> list[tuple[str, float]]:
        """(job id, creation time) of every job volume, for the volume cleanup; a runner whose
        volumes never outlive their runs lists none."""
        return []
