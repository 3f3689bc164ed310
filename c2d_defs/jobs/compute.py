"""`compute_job`: Ocean's three pods as one Dagster job.

The in-process executor runs the three ops in the run worker itself: each op already isolates its
work in a sandbox or pod, and a step subprocess would add about 2 s per op on a small machine.
"""

from __future__ import annotations

import dagster as dg

from c2d_core import engine
from c2d_defs.ops.compute import configure, publish, run_algorithm


@dg.job(
    name=engine.JOB_NAME,
    description="One Compute-to-Data job: fetch inputs, run the algorithm, publish results and logs.",
    executor_def=dg.in_process_executor,
    tags={"c2d/kind": "compute"},
)
def compute_job() -> None:
    publish(run_algorithm(configure()))
