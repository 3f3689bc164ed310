"""The job volume's layout, shared by the ops (which mount it) and the pod programs (which fill it).

Inside pods, Ocean's contract: /data/inputs/<did hash>/<file index>, /data/inputs/algoCustomData.json,
/data/transformations/algorithm (+ 1..N), /data/ddos/<did hash>, /data/outputs/, /data/logs/.
On the volume, `data/` holds that tree; `adminlogs/` (configure and publish logs) and `pod/` (the
workflow document) sit beside it so the algorithm pod, which mounts only `data/...`, never sees them.
"""

from __future__ import annotations

from c2d_core import result_store_base

# Sub-paths of the job volume.
DATA = "data"
INPUTS = "data/inputs"
TRANSFORMATIONS = "data/transformations"
DDOS = "data/ddos"
OUTPUTS = "data/outputs"
LOGS = "data/logs"
ADMINLOGS = "adminlogs"
WORKFLOW_DOC = "pod/workflow.json"
VOLUME_DIRS = (DATA, INPUTS, TRANSFORMATIONS, DDOS, OUTPUTS, LOGS, ADMINLOGS, "pod")

# Paths inside pods.
VOLUME_PATH = "/data"
ADMINLOGS_PATH = "/data/adminlogs"
WORKFLOW_PATH = "/workflow.json"
RESULTS_PATH = "/results"
PROVIDER_KEY_PATH = "/secrets/provider-key"
TERMINATION_LOG_PATH = "/dev/termination-log"
ALGORITHM_PATH = "/data/transformations/algorithm"

ALGORITHM_LOG = "data/logs/algorithm.log"
CONFIGURE_LOG = "adminlogs/configure.log"
PUBLISH_LOG = "adminlogs/publish.log"
ALGO_CUSTOM_DATA = "algoCustomData.json"
MANIFEST_NAME = result_store_base.MANIFEST_NAME
# c2d_core.attestation.FILENAME, named here so the publish pod need not import the attestation's
# models (tests/unit/test_pod_imports.py holds them equal).
ATTESTATION_NAME = "attestation.json"

# Exit codes of the pod programs; equal to the job status they report, so a pod's exit code alone
# says what happened even when its termination message is lost.
EXIT_OK = 0
