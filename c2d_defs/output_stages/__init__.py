"""Output stages: what a data engineer adds between the algorithm and publish (Ocean's status 50).

A compute job is an ordered list of stages (c2d_defs.jobs.compute.build_compute_job):
configure, run_algorithm, any number of output stages, publish. An output stage checks (or holds)
the algorithm's outputs before they are published. Each one is a subclass of `OutputStage`:

    class NoCsvStage(OutputStage[NoCsvSettings]):
        name = "no_csv"                              # its key in environments.yaml `outputStages`
        description = "Refuse outputs that are CSV files."
        settings_model = NoCsvSettings               # a pydantic model of its `settings`

        def pod(self, ctx: StageContext, settings: NoCsvSettings) -> PodSpec:
            return ctx.pod_spec(command=["python", "-m", "my_pkg.no_csv_pod"],
                                pod_env={"MAX_ROWS": str(settings.max_rows)})

    compute_job = build_compute_job(default_stages(LEAK_FILTER, NoCsvStage()))

and an environment turns it on, with its settings and deadline:

    outputStages:
      - {name: leak_filter, settings: {window_bytes: 4096}}
      - {name: no_csv, settings: {max_rows: 10}, deadline: 120}

The contract (what the engine does for a stage, and what the stage does):

- The engine gives each configured stage a Dagster op of its own (named after the stage), run in the
  job's order, only for environments that list it; in an environment that does not, the op does
  nothing and the job is as it was. Before the first one the job enters the `filter` phase (phase
  tags `.dagster/c2d/phase/filter/started|finished`, the job JSON's `phases.filter`); each stage records its
  own `status` (default 50 "Filtering results") while it runs, and its times in
  `.dagster/c2d/output_stage/<name>/started|finished` (hidden tags, like the job's other state).
- `run(ctx, settings)` does the stage's work and returns a `StageVerdict`. The default runs one pod,
  `pod(ctx, settings)`, through the job's `PodRunner` (`ctx.run_pod`: the pod's log is followed into
  the step's logs) and hands its `PodResult` to `judge`. Algorithm outputs are only ever read inside a
  pod: `ctx.pod_spec` builds the standard one (job /data read-only, /data/adminlogs writable, no
  network, no secrets). Never open the job volume from the op's own process.
- `judge(ctx, settings, result)` turns the pod's end into the verdict. The default reads the pod's
  termination message (`/dev/termination-log`, at most 4 KiB of JSON): `{"verdict": "pass" |
  "reject", "message": "one sentence"}` with exit code 0. Anything else (another exit, a deadline, no
  or unreadable message, `"verdict": "error"`) rejects: outputs a stage could not check are never
  published (fail closed).
- A rejection ends the job with `failure_status` (default Ocean's 61 "Failed to fetch results", see
  docs/leak-filter.md) and the sentence "Outputs withheld by the <name> stage: <reason>" in
  `statusDetail`; the stages after it do not run; publish still runs and stores the logs, never the
  outputs; the stage's step fails with a `dg.Failure` (a failed job is a failed run). The reason is
  shown to the consumer: never put a path, URL, input byte or secret in it.
- `parse_settings(raw)` turns the environment's `settings` mapping into the stage's settings; the
  default validates `settings_model`. It raises ValueError with a message naming the field; the
  engine checks every environment's settings before a job fetches anything (31 with the sentence),
  and `register_output_stage` in c2d_core.environments makes the Provider check them at load too.
- A stop, or the engine ending the run, during a stage: the outputs are unchecked, so the job ends
  61, its logs are published and its outputs are not.

`StageContext` is what a stage gets: the job's id, workflow, environment, the engine settings, the job's
`recorder` (status, phases, tags, log: c2d_defs.ops.compute.JobRecorder), the `pod_runner`, the
`result_store`, the stage's own `config` (its `outputStages` entry: settings and `deadline`) and the
op's `log`. A stage that waits for something other than a pod (a review gate) overrides `run`; it
still runs any look at the outputs through `ctx.run_pod`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from c2d_core.environments import Environment, OutputStageConfig
from c2d_core.settings import EngineSettings
from c2d_core.status import OUTPUTS_REJECTED, JobStatus
from c2d_core.workflow import Workflow
from c2d_defs.ops.compute import log_pod
from c2d_defs.ops.recorder import JobRecorder, StageLog
from c2d_defs.pod_output import run_followed
from c2d_defs.pod_runner import PodResult, PodRunner, PodSpec
from c2d_defs.resources import ResultStorage
from c2d_defs.stage_pods import POD_PROGRAM_MEMORY, output_stage_spec

SettingsT = TypeVar("SettingsT")

__all__ = [
    "OutputStage",
    "SettingsT",
    "StageContext",
    "StageVerdict",
]


@dataclass(frozen=True)
class StageVerdict:
    """An output stage's decision: accept the outputs, or reject them with one sentence.

    `reason` reaches the consumer (statusDetail) on a rejection and the step's log either way;
    `metadata` is shown on the stage's step in the Dagster UI (numbers, short strings).
    """

    accepted: bool
    reason: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def accept(cls, reason: str = "", **metadata: Any) -> StageVerdict:
        return cls(True, reason, metadata)

    @classmethod
    def reject(cls, reason: str, **metadata: Any) -> StageVerdict:
        return cls(False, reason or "the stage refused the outputs", metadata)


@dataclass(frozen=True)
class StageContext:
    """What an output stage gets for one job (see the module docstring)."""

    job_id: str
    workflow: Workflow
    environment: Environment
    settings: EngineSettings
    recorder: JobRecorder
    pod_runner: PodRunner
    result_store: ResultStorage
    config: OutputStageConfig
    stage_name: str

    @property
    def log(self) -> StageLog:
        return self.recorder.log

    @property
    def deadline(self) -> int:
        """Seconds this stage may take (its `outputStages` entry's `deadline`)."""
        return self.config.deadline

    def pod_spec(
        self,
        *,
        command: list[str],
        pod_env: dict[str, str] | None = None,
        image: str | None = None,
        memory_bytes: int = POD_PROGRAM_MEMORY,
        cpu: float = 1.0,
    ) -> PodSpec:
        """The standard output-stage pod for this job (c2d_defs.stage_pods.output_stage_spec): the
        engine's pod image unless `image` is given, this stage's deadline, its log at
        adminlogs/<stage name>.log."""
        return output_stage_spec(
            self.job_id,
            self.environment,
            self.settings,
            command=command,
            pod_env=pod_env,
            image=image,
            memory_bytes=memory_bytes,
            cpu=cpu,
            deadline_seconds=self.deadline,
            log_sub_path=f"adminlogs/{self.stage_name}.log",
        )

    def run_pod(self, spec: PodSpec) -> PodResult:
        """Run `spec` through the job's pod runner, its log followed into the step's logs."""
        result = run_followed(self.pod_runner, spec)
        log_pod(self.log, self.stage_name, result)
        return result


class OutputStage(abc.ABC, Generic[SettingsT]):
    """One output stage (see the module docstring for the whole contract).

    Class attributes: `name` (its `outputStages` key and its op's name: lowercase letters, digits and
    `_`, not a built-in op's name), `description` (the op's, in the Dagster UI), `settings_model` (a
    pydantic model, used by the default `parse_settings`), `status` (Ocean status while it runs) and
    `failure_status` (the job's status when it rejects).
    """

    name: ClassVar[str]
    description: ClassVar[str] = "An output stage: checks the outputs before they are published."
    settings_model: ClassVar[type[BaseModel] | None] = None
    status: ClassVar[JobStatus] = JobStatus.FILTERING_RESULTS
    failure_status: ClassVar[JobStatus] = OUTPUTS_REJECTED

    def parse_settings(self, raw: Mapping[str, Any]) -> SettingsT:
        """The stage's settings from the environment's `settings` mapping; ValueError naming the field."""
        if self.settings_model is None:
            if raw:
                raise ValueError(f"the {self.name} stage takes no settings, got {sorted(raw)}")
            return None  # type: ignore[return-value]
        return self.settings_model.model_validate(dict(raw))  # type: ignore[return-value]

    def pod(self, ctx: StageContext, settings: SettingsT) -> PodSpec:
        """The pod that looks at the outputs; usually `ctx.pod_spec(command=[...], pod_env={...})`."""
        raise NotImplementedError(f"the {self.name} stage defines neither pod() nor run()")

    def run(self, ctx: StageContext, settings: SettingsT) -> StageVerdict:
        """The stage's work; by default one pod, judged by `judge`."""
        return self.judge(ctx, settings, ctx.run_pod(self.pod(ctx, settings)))

    def judge(self, ctx: StageContext, settings: SettingsT, result: PodResult) -> StageVerdict:
        """The verdict from the pod's end: see the module docstring (fails closed)."""
        return verdict_from_pod(self.name, result)


def verdict_from_pod(name: str, result: PodResult) -> StageVerdict:
    """The default verdict protocol: exit 0 and `{"verdict": "pass" | "reject", "message": ...}` in the
    termination message; anything else is a rejection because the outputs went unchecked."""
    report: dict[str, Any] = {}
    try:
        loaded = json.loads(result.termination_message) if result.termination_message else {}
        report = loaded if isinstance(loaded, dict) else {}
    except ValueError:
        report = {}
    verdict, message = report.get("verdict"), str(report.get("message") or "").strip()
    metadata = {"pod_seconds": round(result.duration, 3), "termination": result.termination}
    if result.termination == "Completed" and verdict == "pass":
        return StageVerdict.accept(message, **metadata)
    if result.termination == "Completed" and verdict == "reject":
        return StageVerdict.reject(message, **metadata)
    why = message if verdict == "error" and message else _pod_end(result)
    return StageVerdict.reject(
        f"the outputs could not be checked ({why}), so they are not published", **metadata
    )


def _pod_end(result: PodResult) -> str:
    if result.termination == "DeadlineExceeded":
        return "its pod ran past the stage's deadline"
    if result.termination == "Completed":
        return "its pod ended without a verdict"
    code = f" (exit code {result.exit_code})" if result.exit_code is not None else ""
    return f"its pod ended: {result.termination}{code}"
