"""`compute_job`: Ocean's three pods as one Dagster job.

The in-process executor runs the three ops in the run worker itself: each op already isolates its
work in a sandbox or pod, and a step subprocess would add about 2 s per op on a small machine.
`require_upstream_step_success` is off: a stage step that failed after handing the job's state on
(c2d_defs.ops.stages) does not skip publish, so a failed job's logs still come back and its run fails.
"""

from __future__ import annotations

import dagster as dg

from c2d_defs.ops.stages import configure, publish, run_algorithm

# A step runs once its inputs exist, whether or not the step that made them then failed.
EXECUTOR = dg.in_process_executor.configured(
    {"step_dependency_config": {"require_upstream_step_success": False}}, name="c2d_in_process"
)


@dg.job(
    description="One Compute-to-Data job: fetch inputs, run the algorithm, publish results and logs.",
    executor_def=EXECUTOR,
    # Hidden (c2d_core.engine): the runs list shows a compute run's few operator tags only.
    tags={".dagster/c2d/kind": "compute"},
)
def compute_job() -> None:
    publish(run_algorithm(configure()))
