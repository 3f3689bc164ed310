"""Compute environments: the pools a consumer chooses from, loaded from a YAML file.

Each environment fixes the resources every job in it gets (never the request), how many jobs run at
once (`maxJobs`, enforced by Dagster's run queue), whether algorithms may use the network, and, for
the embedded sandbox, which local runtime stands in for which container image.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from c2d_core.status import Stage

if TYPE_CHECKING:
    from c2d_core.settings import EngineSettings

GIB = 1024**3


class ImageRuntime(BaseModel):
    """A local stand-in for a container image in the embedded sandbox.

    `rootfs` is bound read-only as the sandbox's root directories (`/` means the host's own `/usr`,
    library dirs and a few `/etc` files, never the host's homes or the project's state). `aliases`
    put commands an image would have on PATH (`python` for `python:3.11`) in front of it.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    image: str = Field(description="fnmatch pattern over image:tag, e.g. 'python:3.11*'")
    rootfs: str = "/"
    aliases: dict[str, str] = Field(default_factory=dict)

    def matches(self, reference: str) -> bool:
        return fnmatch.fnmatchcase(reference, self.image)


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    description: str = ""
    cpu_number: int = Field(default=1, alias="cpuNumber", ge=1)
    ram_gb: float = Field(default=1.0, alias="ramGB", gt=0)
    disk_gb: float = Field(default=1.0, alias="diskGB", gt=0)
    max_job_duration: int = Field(default=600, alias="maxJobDuration", ge=1, description="seconds")
    max_jobs: int = Field(default=2, alias="maxJobs", ge=1)
    # How long a job may wait in this environment's queue before it ends with status 2; unset means
    # the engine-wide C2D_MAX_QUEUE_WAIT, 0 means no limit for this environment.
    max_queue_wait: int | None = Field(default=None, alias="maxQueueWait", ge=0, description="seconds")
    max_processes: int = Field(default=256, alias="maxProcesses", ge=8)
    price_min: float = Field(default=0.0, alias="priceMin", ge=0)
    fee_token: str | None = Field(default=None, alias="feeToken")
    consumer_address: str | None = Field(default=None, alias="consumerAddress")
    storage_expiry: int = Field(default=604800, alias="storageExpiry", ge=0, description="seconds")
    allow_network: bool = Field(default=False, alias="allowNetwork")
    image_map: list[ImageRuntime] = Field(default_factory=list, alias="imageMap")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("environment id may hold letters, digits and . _ - (at most 128)")
        return value

    @property
    def memory_bytes(self) -> int:
        return int(self.ram_gb * GIB)

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * GIB)

    def queue_wait_limit(self, default: int) -> int:
        """Seconds a job may wait in this environment's queue (0: no limit); `default` is the
        engine-wide C2D_MAX_QUEUE_WAIT, used when the environment sets none."""
        return default if self.max_queue_wait is None else self.max_queue_wait

    def stage_deadline(self, stage: Stage | str, settings: EngineSettings) -> int:
        """Seconds a job of this environment may spend in `stage`: the algorithm gets the
        environment's maxJobDuration, configure and publish the engine-wide C2D_*_DEADLINE."""
        return stage_deadline(stage, self, settings)

    def max_runtime(self, settings: EngineSettings) -> int:
        """The whole job's deadline (its run's `dagster/max_runtime`): every stage's own deadline end to
        end, plus the watchdog's grace. The pods' deadlines fire first; this one catches a run whose
        worker hung between or around them."""
        return sum(self.stage_deadline(stage, settings) for stage in Stage) + settings.watchdog_grace

    def runtime_for(self, reference: str) -> ImageRuntime | None:
        """The first image-map entry matching `image:tag` (or `image@digest`), or None."""
        return next((entry for entry in self.image_map if entry.matches(reference)), None)


def stage_deadline(stage: Stage | str, environment: Environment | None, settings: EngineSettings) -> int:
    """Seconds a job may spend in `stage`; for a job of an unknown environment (None, it fails its
    configure stage) the algorithm stage gets the configure deadline."""
    stage = Stage(stage)
    if stage is Stage.CONFIGURE:
        return settings.configure_deadline
    if stage is Stage.PUBLISH:
        return settings.publish_deadline
    return environment.max_job_duration if environment else settings.configure_deadline


class EnvironmentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environments: list[Environment] = Field(min_length=1)

    @field_validator("environments")
    @classmethod
    def _unique_ids(cls, value: list[Environment]) -> list[Environment]:
        ids = [env.id for env in value]
        if len(ids) != len(set(ids)):
            raise ValueError(f"environment ids must be unique, got {ids}")
        return value


class UnknownEnvironmentError(LookupError):
    pass


class Environments:
    """The loaded environments file, looked up by id."""

    def __init__(self, environments: list[Environment]) -> None:
        self._by_id = {env.id: env for env in environments}

    @classmethod
    def load(cls, path: str | Path) -> Environments:
        raw: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return cls(EnvironmentsFile.model_validate(raw).environments)

    def get(self, env_id: str) -> Environment:
        try:
            return self._by_id[env_id]
        except KeyError:
            known = ", ".join(sorted(self._by_id)) or "none"
            raise UnknownEnvironmentError(
                f"unknown compute environment {env_id!r} (known: {known})"
            ) from None

    def all(self) -> list[Environment]:
        return list(self._by_id.values())

    def max_runtime(self, env_id: str, settings: EngineSettings) -> int | None:
        """The `dagster/max_runtime` of a job in `env_id` (`Environment.max_runtime`), or None for an
        unknown environment: that job fails its configure stage at once and needs none. The Provider
        tags every run it submits with this."""
        try:
            return self.get(env_id).max_runtime(settings)
        except UnknownEnvironmentError:
            return None
