"""`compute_job`, built by `build_compute_job` from an ordered list of stages.

A compute job is configure -> run_algorithm -> any number of output stages -> publish. The built-in
stages are `CONFIGURE`, `RUN_ALGORITHM` and `PUBLISH`; an output stage is an
`c2d_defs.output_stages.OutputStage` (its contract is documented there). A code location adds a stage
without copying the job:

    from c2d_defs.jobs.compute import DEFAULT_OUTPUT_STAGES, build_compute_job, default_stages

    compute_job = build_compute_job(default_stages(*DEFAULT_OUTPUT_STAGES, MyStage()))
    defs = dg.Definitions(jobs=[compute_job, ...], resources=...)

The job keeps the name `compute_job` (the Provider submits runs of that job in code location `c2d`), so
a code location defines exactly one. An environment runs only the output stages its `outputStages`
lists (c2d_core.environments), in the job's order; the others' ops hand the job on untouched, so a job
of an environment without output stages behaves as a three-stage job: same statuses, phases, results
and run outcome.

The in-process executor runs the ops in the run worker itself: each op already isolates its work in a
sandbox or pod, and a step subprocess would add about 2 s per op on a small machine.
`require_upstream_step_success` is off: a stage step that failed after handing the job's state on
(c2d_defs.ops.stages) does not skip the steps after it, so a failed job's logs still come back and
its run fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from c2d_core import engine
from c2d_defs.ops.output_stages import output_stage_op
from c2d_defs.ops.stages import configure, publish, run_algorithm
from c2d_defs.output_stages import OutputStage
from c2d_defs.output_stages.leak_filter import LEAK_FILTER

# A step runs once its inputs exist, whether or not the step that made them then failed.
EXECUTOR = dg.in_process_executor.configured(
    {"step_dependency_config": {"require_upstream_step_success": False}}, name="c2d_in_process"
)


@dataclass(frozen=True)
class BuiltinStage:
    """One of the compute job's own stages, by its op."""

    name: str
    op: dg.OpDefinition


CONFIGURE = BuiltinStage("configure", configure)
RUN_ALGORITHM = BuiltinStage("run_algorithm", run_algorithm)
PUBLISH = BuiltinStage("publish", publish)

JobStage = BuiltinStage | OutputStage[Any]

# The output stages the default compute job can run (each only where an environment lists it).
DEFAULT_OUTPUT_STAGES: tuple[OutputStage[Any], ...] = (LEAK_FILTER,)


def default_stages(*output_stages: OutputStage[Any]) -> list[JobStage]:
    """configure, run_algorithm, `output_stages` in order, publish."""
    return [CONFIGURE, RUN_ALGORITHM, *output_stages, PUBLISH]


def _output_stages(stages: Sequence[JobStage]) -> list[OutputStage[Any]]:
    """The output stages of `stages`; ValueError unless it is configure, run_algorithm, output
    stages (unique names), publish."""
    if (
        len(stages) < 3
        or stages[0] is not CONFIGURE
        or stages[1] is not RUN_ALGORITHM
        or stages[-1] is not PUBLISH
    ):
        raise ValueError(
            "a compute job's stages are CONFIGURE, RUN_ALGORITHM, any output stages, then PUBLISH "
            "(see default_stages)"
        )
    middle = list(stages[2:-1])
    strangers = [stage for stage in middle if not isinstance(stage, OutputStage)]
    if strangers:
        raise ValueError(f"between run_algorithm and publish only output stages may run, got {strangers}")
    outputs = [stage for stage in middle if isinstance(stage, OutputStage)]
    names = [stage.name for stage in outputs]
    if len(names) != len(set(names)):
        raise ValueError(f"each output stage may appear once in a compute job, got {names}")
    return outputs


def build_compute_job(
    stages: Sequence[JobStage] | None = None,
    *,
    name: str = engine.JOB_NAME,
    description: str = "One Compute-to-Data job: fetch inputs, run the algorithm, check the outputs "
    "(where the environment configures output stages), publish results and logs.",
    tags: dict[str, str] | None = None,
) -> dg.JobDefinition:
    """The compute job of `stages` (default: `default_stages(*DEFAULT_OUTPUT_STAGES)`).

    Every stage gets the job's recorder and pod runner; see c2d_defs.output_stages for what an
    output stage implements. `name` is the Provider's `compute_job` unless a test or a second code
    location needs another one.
    """
    chosen = list(stages) if stages is not None else default_stages(*DEFAULT_OUTPUT_STAGES)
    output_ops = [output_stage_op(stage) for stage in _output_stages(chosen)]

    @dg.job(
        name=name,
        description=description,
        executor_def=EXECUTOR,
        tags={".dagster/c2d/kind": "compute", **(tags or {})},
    )
    def _compute_job() -> None:
        state = run_algorithm(configure())
        for op in output_ops:
            state = op(state)
        publish(state)

    return _compute_job


compute_job = build_compute_job()
