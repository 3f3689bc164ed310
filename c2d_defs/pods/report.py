"""The report a configure or publish pod leaves in its termination message, and the op reads back.

One model for both ends: the pod programs fill it and write it as compact JSON (at most 4096 bytes,
see `common.fit_termination_message`); the ops (c2d_defs.ops.compute) parse it. It says what happened
with ids, sizes, checksums and sentences only, never a location. Pods import this in a fresh interpreter
for every job, so it imports nothing heavier than pydantic.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from c2d_core.status import JobStatus


class FileReport(BaseModel):
    """One file the configure pod fetched (or wrote, for raw code)."""

    index: int
    size: int
    sha256: str


class AssetReport(BaseModel):
    """One input dataset, or the algorithm, as the configure pod provisioned it."""

    did: str | None = None  # None until the configure pod reached it
    files: list[FileReport] = Field(default_factory=list)
    error: str | None = None  # why provisioning it failed, when it did


class PodReport(BaseModel):
    """What a stage's pod did; `status` is the job status it reports. Each stage's pod extends it."""

    model_config = ConfigDict(extra="ignore")

    status: int | None = None
    message: str = ""
    # set when the report was cut to fit the termination message (file lists lose their tail first)
    truncated: bool | None = None

    @property
    def job_status(self) -> JobStatus | None:
        """The reported status as a known code, else None."""
        try:
            return JobStatus(self.status) if self.status is not None else None
        except ValueError:
            return None

    def document(self) -> dict[str, Any]:
        """The report as the JSON object a termination message holds (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_message(cls, message: str | None) -> Self | None:
        """The report in a pod's termination message; None when there is none or it is not a report."""
        if not message:
            return None
        try:
            return cls.model_validate_json(message)
        except ValidationError:
            return None


class ConfigureReport(PodReport):
    """The configure pod's: 30, 31 or 32, and what it provisioned."""

    inputs: list[AssetReport] = Field(default_factory=list)
    algorithm: AssetReport = Field(default_factory=AssetReport)


class PublishReport(PodReport):
    """The publish pod's: 70 or 62, the results manifest's store location, how many results of how
    many bytes."""

    manifest: str = ""
    count: int = 0
    bytes: int = 0
