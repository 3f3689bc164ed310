"""Ocean's compute job status codes with their exact texts, a job's stages, and how a pod ended.

Codes 1..70 are the Operator-Service / Operator-Engine set that ocean.py and ocean.js know; the finer
failure codes (2, 11, 21, 22, 33, 41, 42, 61, 62) are Ocean Node's C2D v2 additions.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Literal


class JobStatus(IntEnum):
    WARMING_UP = 1
    QUEUE_EXPIRED = 2
    JOB_STARTED = 10
    PULL_IMAGE_FAILED = 11
    CONFIGURING_VOLUMES = 20
    VOLUME_CREATION_FAILED = 21
    CONTAINER_CREATION_FAILED = 22
    PROVISIONING_SUCCESS = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    DATA_UPLOAD_FAILED = 33
    RUNNING_ALGORITHM = 40
    ALGORITHM_FAILED = 41
    DISK_QUOTA_EXCEEDED = 42
    FILTERING_RESULTS = 50
    AWAITING_REVIEW = 55
    REVIEW_REJECTED = 56
    REVIEW_EXPIRED = 57
    PUBLISHING_RESULTS = 60
    RESULTS_FETCH_FAILED = 61
    RESULTS_UPLOAD_FAILED = 62
    JOB_FINISHED = 70

    @property
    def text(self) -> str:
        return _TEXTS[self]

    @property
    def is_failure(self) -> bool:
        return self in _FAILURES

    @property
    def is_terminal(self) -> bool:
        return self is JobStatus.JOB_FINISHED or self in _FAILURES


# Texts as Ocean's clients display them; "Running algorithm " keeps Ocean's trailing space.
_TEXTS: dict[JobStatus, str] = {
    JobStatus.WARMING_UP: "Warming up",
    JobStatus.QUEUE_EXPIRED: "Job expired in queue",
    JobStatus.JOB_STARTED: "Job started",
    JobStatus.PULL_IMAGE_FAILED: "Pulling algorithm image failed",
    JobStatus.CONFIGURING_VOLUMES: "Configuring volumes",
    JobStatus.VOLUME_CREATION_FAILED: "Volume creation failed",
    JobStatus.CONTAINER_CREATION_FAILED: "Container creation failed",
    JobStatus.PROVISIONING_SUCCESS: "Provisioning success",
    JobStatus.DATA_PROVISIONING_FAILED: "Data provisioning failed",
    JobStatus.ALGORITHM_PROVISIONING_FAILED: "Algorithm provisioning failed",
    JobStatus.DATA_UPLOAD_FAILED: "Data upload to container failed",
    JobStatus.RUNNING_ALGORITHM: "Running algorithm ",
    JobStatus.ALGORITHM_FAILED: "Failed to run algorithm",
    JobStatus.DISK_QUOTA_EXCEEDED: "Error: disk quota exceeded",
    JobStatus.FILTERING_RESULTS: "Filtering results",
    JobStatus.AWAITING_REVIEW: "Awaiting review",
    JobStatus.REVIEW_REJECTED: "Results rejected by review",
    JobStatus.REVIEW_EXPIRED: "Review deadline passed",
    JobStatus.PUBLISHING_RESULTS: "Publishing results",
    JobStatus.RESULTS_FETCH_FAILED: "Failed to fetch results",
    JobStatus.RESULTS_UPLOAD_FAILED: "Failed to upload results",
    JobStatus.JOB_FINISHED: "Job finished",
}

_FAILURES = frozenset(
    {
        JobStatus.QUEUE_EXPIRED,
        JobStatus.PULL_IMAGE_FAILED,
        JobStatus.VOLUME_CREATION_FAILED,
        JobStatus.CONTAINER_CREATION_FAILED,
        JobStatus.DATA_PROVISIONING_FAILED,
        JobStatus.ALGORITHM_PROVISIONING_FAILED,
        JobStatus.DATA_UPLOAD_FAILED,
        JobStatus.ALGORITHM_FAILED,
        JobStatus.DISK_QUOTA_EXCEEDED,
        JobStatus.RESULTS_FETCH_FAILED,
        JobStatus.RESULTS_UPLOAD_FAILED,
        JobStatus.REVIEW_REJECTED,
        JobStatus.REVIEW_EXPIRED,
    }
)


class Stage(StrEnum):
    """The stages of a compute job, in order; each runs one pod. The values are the names of the
    phase tags (`.dagster/c2d/phase/<stage>/...`), of the job JSON's `phases` and of the pods' components."""

    CONFIGURE = "configure"
    ALGORITHM = "algorithm"
    # Ocean's status 50 "Filtering results": the environment's output stages (c2d_defs.output_stages),
    # e.g. the leak filter, check the outputs between the algorithm and publish. A job whose
    # environment configures none never enters it (no phase tags, no pod).
    FILTER = "filter"
    PUBLISH = "publish"

    @property
    def failure(self) -> JobStatus:
        """Ocean's closest failure status for a job that ended in this stage."""
        return _STAGE_FAILURES[self]

    @property
    def next(self) -> Stage:
        """The stage every job enters after this one (the last one's is itself). The filter stage is
        skipped: only jobs whose environment has output stages enter it, and they record its start."""
        stages = [stage for stage in Stage if stage is not Stage.FILTER]
        if self is Stage.FILTER:
            return Stage.PUBLISH
        return stages[min(stages.index(self) + 1, len(stages) - 1)]


_STAGE_FAILURES: dict[Stage, JobStatus] = {
    Stage.CONFIGURE: JobStatus.DATA_PROVISIONING_FAILED,
    Stage.ALGORITHM: JobStatus.ALGORITHM_FAILED,
    # Ocean has no code for results an output stage refused; 61 "Failed to fetch results" is the one its
    # clients know that says what the consumer meets (no outputs to fetch) without blaming the result
    # store, which 62 does (and which keeps the volume for an operator's re-publish).
    Stage.FILTER: JobStatus.RESULTS_FETCH_FAILED,
    Stage.PUBLISH: JobStatus.RESULTS_UPLOAD_FAILED,
}

# How a pod ended, named as Kubernetes names container and pod terminations; the algorithm's reaches
# consumers as the job JSON's `terminationDetails.reason`.
Termination = Literal[
    "Completed",  # exit code 0
    "Error",  # non-zero exit code
    "DeadlineExceeded",  # killed at the wall-clock deadline
    "OOMKilled",  # killed for exceeding its memory limit
    "DiskQuotaExceeded",  # killed for writing more than its disk limit
    "Stopped",  # stopped on request (job stop, run terminated)
    "ImageNotFound",  # the image has no local runtime / cannot be pulled
    "StartError",  # the sandbox or container could not be started
]

# Terminations of an algorithm that ran and did not succeed: its job still ends 70 (its logs are
# published, as Ocean Node does) and these say it failed.
ALGORITHM_FAILURES: frozenset[Termination] = frozenset(
    {"Error", "OOMKilled", "DeadlineExceeded", "DiskQuotaExceeded"}
)
# Terminations of an algorithm that never started: the job ends 41.
NEVER_STARTED: frozenset[Termination] = frozenset({"ImageNotFound", "StartError"})

# The status of a job whose outputs an output stage refused (or could not check): the filter stage's
# failure (Ocean's 61, why that one: `_STAGE_FAILURES`), with the stage's sentence in statusDetail; its
# logs are published, its outputs never (docs/leak-filter.md).
OUTPUTS_REJECTED = _STAGE_FAILURES[Stage.FILTER]
