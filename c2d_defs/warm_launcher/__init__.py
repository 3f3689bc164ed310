"""The warm run launcher of the embedded default: WarmRunLauncher (Dagster's side) hands each run to a
long-lived worker (worker.py) that has imported Dagster and the code location and forks one child per run."""

from c2d_defs.warm_launcher.launcher import WORKER_PID_TAG, WarmRunLauncher

__all__ = ["WORKER_PID_TAG", "WarmRunLauncher"]
