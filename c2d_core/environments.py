"""Compute environments: the pools a consumer chooses from, loaded from a YAML file.

Each environment fixes the resources every job in it gets (never the request), how many jobs run at
once (`maxJobs`, enforced by Dagster's run queue), whether algorithms may use the network, which
output stages check the outputs before publish (`outputStages`, Ocean's status 50), and, for the
embedded sandbox, which local runtime stands in for which container image.

Output stages are named here and defined in the code location (c2d_defs.output_stages). This module
checks what it can without the code location: the list's shape, and the settings of every stage whose
settings parser is registered (`register_output_stage`; the built-in leak filter's always is). The
code location checks the rest (`check_output_stages` with its job's stages) before a job fetches
anything, and fails the job with the sentence when the environment names a stage it does not run.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from c2d_core.review import ReviewPolicy
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


# An output stage's settings parser: the raw `settings` mapping in, the stage's settings out; raises
# ValueError (pydantic's ValidationError is one) with a message that names the bad field.
SettingsParser = Callable[[Mapping[str, Any]], object]
_SETTINGS_PARSERS: dict[str, SettingsParser] = {}
DEFAULT_OUTPUT_STAGE_DEADLINE = 600
_STAGE_NAME = r"[a-z][a-z0-9_]{0,47}"


class OutputStageError(ValueError):
    """An environment's `outputStages` names an unknown stage or gives one unusable settings."""


def register_output_stage(name: str, parse: SettingsParser) -> None:
    """Make `name`'s settings checked wherever environments load (the Provider too), not only when a
    job of the code location starts. Registering the same name again replaces its parser."""
    _SETTINGS_PARSERS[name] = parse


def _parse_leak_filter(raw: Mapping[str, Any]) -> object:
    from c2d_core.leak_filter import LeakFilterConfig

    return LeakFilterConfig.from_mapping(raw)


register_output_stage("leak_filter", _parse_leak_filter)


def _settings_problem(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors()
        )
    return str(error)


class OutputStageConfig(BaseModel):
    """One entry of an environment's `outputStages`: which stage, its settings, its deadline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=f"^{_STAGE_NAME}$", description="the stage's name in the code location")
    settings: dict[str, Any] = Field(default_factory=dict)
    # The stage's pod (or wait) ends at this deadline; the watchdog's limit for the filter phase is the
    # sum of the configured stages' deadlines.
    deadline: int = Field(default=DEFAULT_OUTPUT_STAGE_DEADLINE, ge=1, description="seconds")

    def parsed_settings(self, parse: SettingsParser | None = None) -> object:
        """The settings through `parse` (default: the registered parser; none registered: the raw
        mapping); OutputStageError names the stage and the field."""
        parse = parse or _SETTINGS_PARSERS.get(self.name)
        if parse is None:
            return dict(self.settings)
        try:
            return parse(self.settings)
        except ValueError as error:
            raise OutputStageError(
                f"output stage {self.name!r}: bad settings: {_settings_problem(error)}"
            ) from None


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
    # What checks the outputs, in order, between the algorithm and publish; none: straight to publish.
    output_stages: list[OutputStageConfig] = Field(default_factory=list, alias="outputStages")
    # The review gate (c2d_core.review): hold each job's results for an operator's decision.
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)

    @field_validator("output_stages")
    @classmethod
    def _stages(cls, value: list[OutputStageConfig]) -> list[OutputStageConfig]:
        names = [stage.name for stage in value]
        if len(names) != len(set(names)):
            raise ValueError(f"outputStages: each stage may appear once, got {names}")
        for stage in value:
            stage.parsed_settings()  # a registered stage's settings are checked at load
        return value

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
        worker hung between or around them. A job without output stages never enters the filter stage."""
        stages = [stage for stage in Stage if stage is not Stage.FILTER or self.output_stages]
        return sum(self.stage_deadline(stage, settings) for stage in stages) + settings.watchdog_grace

    def output_stage(self, name: str) -> OutputStageConfig | None:
        return next((stage for stage in self.output_stages if stage.name == name), None)

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
    if stage is Stage.FILTER:
        if environment is None or not environment.output_stages:
            # No output stages: a job goes from its algorithm straight to publish, and the moment in
            # between counts against publish's deadline, as it did before the filter stage existed.
            return settings.publish_deadline
        return sum(config.deadline for config in environment.output_stages)
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


def check_output_stages(
    environment: Environment, known: Sequence[str], parsers: Mapping[str, SettingsParser] | None = None
) -> dict[str, object]:
    """The parsed settings of each of `environment`'s output stages, by name, checked against the
    stages a code location's job runs (`known`, in the job's order; `parsers` their settings parsers).

    OutputStageError, with a sentence an operator can act on, when the environment names a stage the
    job does not run, lists them in another order than the job runs them, or gives bad settings.
    """
    parsers = parsers or {}
    settings: dict[str, object] = {}
    for config in environment.output_stages:
        if config.name not in known:
            runs = ", ".join(known) or "none"
            raise OutputStageError(
                f"environment {environment.id!r} configures the output stage {config.name!r}, which this "
                f"code location does not define (its compute job runs: {runs})"
            )
        settings[config.name] = config.parsed_settings(parsers.get(config.name))
    order = [name for name in known if name in settings]
    if order != list(settings):
        raise OutputStageError(
            f"environment {environment.id!r} lists its output stages as {list(settings)}, but they run in "
            f"the compute job's order {order}: list them in that order"
        )
    return settings


def check_environments(
    environments: Iterable[Environment],
    known: Sequence[str],
    parsers: Mapping[str, SettingsParser] | None = None,
) -> None:
    """`check_output_stages` for every environment; the first problem raised."""
    for environment in environments:
        check_output_stages(environment, known, parsers)


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
