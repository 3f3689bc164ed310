"""The Provider's stamp on the compute runs it submits, and the engine's check of it.

Anyone who can reach the Dagster UI or its GraphQL API can start a run of `compute_job`: "Re-execute
all", re-execution from failure, the launchpad. Such a run would process the data again with no new
order. So the Provider stamps every run it submits for a valid order with an HMAC over the run's
workflow (which names the job id, owner, environment and agreement), keyed by a secret derived from
its own private key, which the run worker also holds (it signs the job's attestation with it). The
first op refuses a run whose stamp is missing or wrong, a re-execution (Dagster tags those with
`dagster/parent_run_id`), and a second run of a job id that already has one: a copied stamp still
verifies, so "first run of the job id wins" is what stops a copy of a stamped run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Dagster's own tags on a re-execution (dagster._core.storage.tags); named here so the Provider,
# which does not import Dagster, reads them too.
PARENT_RUN_ID = "dagster/parent_run_id"
ROOT_RUN_ID = "dagster/root_run_id"

_CONTEXT = b"c2d compute run stamp v1"


def stamp_key(private_key_hex: str) -> bytes:
    """The stamp's secret: an HMAC of a fixed context under the Provider's private key, so the key
    itself is never used for anything but signing and decrypting."""
    raw = bytes.fromhex(private_key_hex.strip().removeprefix("0x"))
    return hmac.new(raw, _CONTEXT, hashlib.sha256).digest()


def stamp_key_from_file(path: Path) -> bytes | None:
    """The stamp key from a Provider key file; None when the file is missing or holds no hex key."""
    try:
        return stamp_key(path.read_text())
    except (OSError, ValueError):
        return None


def _canonical(workflow_document: Mapping[str, Any]) -> bytes:
    return json.dumps(workflow_document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def stamp(key: bytes, workflow_document: Mapping[str, Any]) -> str:
    """The stamp of a run whose run config carries `workflow_document` (as the run config holds it)."""
    return hmac.new(key, _canonical(workflow_document), hashlib.sha256).hexdigest()


def stamp_problem(key: bytes, given: str | None, workflow_document: Mapping[str, Any]) -> str | None:
    """Why `given` is not the Provider's stamp of this workflow (a sentence), or None when it is."""
    if not given:
        return "it carries no Provider stamp: it was not submitted by the Provider for an order"
    if not hmac.compare_digest(given, stamp(key, workflow_document)):
        return "its Provider stamp does not match its workflow: the run config was changed or made up"
    return None
