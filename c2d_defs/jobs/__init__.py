"""Every job of the code location, side by side: the compute job and the runs sensors ask for.

- `compute_job` (compute.py): one Compute-to-Data job, Ocean's three pods.
- `salvage_job` (salvage.py): finishes a job whose run died, for the stage watchdog.
- `queue_expiry_job`, `results_expiry_job` (maintenance.py): end jobs that waited too long in the
  queue, delete results past their storageExpiry, for the queue watchdog and the storage expiry sensor.
- `volume_cleanup_job` (volume_cleanup.py, Kubernetes only, so the embedded default never imports
  dagster-k8s): deletes job volumes their runs left behind, for the k8s volume cleanup sensor.

Sensors decide, jobs act: a tick reads run storage and yields `RunRequest`s; deleting, cancelling and
publishing happen in these jobs' ops, with logs, retries and a place in the Dagster UI.
"""

from c2d_defs.jobs.compute import compute_job
from c2d_defs.jobs.maintenance import queue_expiry_job, results_expiry_job
from c2d_defs.jobs.salvage import salvage_job

__all__ = ["compute_job", "queue_expiry_job", "results_expiry_job", "salvage_job"]
