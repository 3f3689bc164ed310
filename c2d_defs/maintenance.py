"""Maintenance runs: how a sensor asks a job to act, and how that job's op acts and retries.

Sensors decide, jobs act. A maintenance tick (queue watchdog, storage expiry, k8s volume cleanup)
only reads run storage and yields at most one `RunRequest`: the targets (run ids or job ids) in the
op's config, `c2d/maintenance` (what) and `c2d/maintenance_reason` (why) as tags. The op judges each
target again with fresh state, acts, logs each one and lets Dagster retry known-transient errors.

A maintenance run never counts as a consumer's job: it carries no `c2d/environment` (the run queue's
`maxJobs` limits key on it), no `c2d/owner`, `c2d/job_id` or `.dagster/c2d/agreement_id`, and is not
a `compute_job` run (the Provider lists only those).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import dagster as dg

MAINTENANCE = "c2d/maintenance"  # what: queue_expiry, results_expiry, volume_cleanup
REASON = "c2d/maintenance_reason"  # why, in a sentence
BATCH = "c2d/maintenance_batch"  # digest of the targets: a retried tick asks for the same run
# Short runs, ahead of queued compute jobs (Dagster's queue is first in, first out per priority).
PRIORITY = "10"
# A run in these states will still act on its targets: a tick leaves them to it.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Runs asked for one batch of targets, at most: one that always fails stops there (its runs show why).
MAX_ATTEMPTS = 5
# Errors retried this many times, waiting 5, 10, 20 s (plus or minus a jitter) in between.
RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

T = TypeVar("T")


class MaintenanceConfig(dg.Config):
    """What a maintenance op acts on: run ids or job ids, as the tick chose them."""

    targets: list[str]


def run_config(op_name: str, targets: Sequence[str]) -> dict[str, Any]:
    return {"ops": {op_name: {"config": {"targets": list(targets)}}}}


def targets_of(run: dg.DagsterRun, op_name: str) -> list[str]:
    """The targets a maintenance run was asked to act on (the inverse of `run_config`)."""
    raw: dict[str, Any] = dict(run.run_config or {})
    config = raw.get("ops", {}).get(op_name, {}).get("config", {})
    return [str(target) for target in config.get("targets", [])]


def request(
    instance: dg.DagsterInstance,
    *,
    what: str,
    job_name: str,
    op_name: str,
    targets: Iterable[str],
    reason: str,
) -> dg.RunRequest | None:
    """One run of `job_name` for the `targets` no earlier run is still acting on; None if none is left.

    The run key is the targets' digest plus how many runs with that digest ended already: a retried
    or repeated tick over the same state asks for the same key (Dagster launches a run key once),
    while a batch whose run failed for good is asked for again on a later tick, up to MAX_ATTEMPTS
    runs (so a batch that always fails does not start a run every tick).
    """
    pending = set()
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT)):
        pending.update(targets_of(run, op_name))
    todo = [target for target in dict.fromkeys(targets) if target not in pending]
    if not todo:
        return None
    batch = hashlib.sha256("\n".join(sorted(todo)).encode()).hexdigest()[:16]
    attempt = len(instance.get_run_ids(filters=dg.RunsFilter(job_name=job_name, tags={BATCH: batch})))
    if attempt >= MAX_ATTEMPTS:
        return None  # failed for good this often (each run retried its op): an operator looks, in the UI
    return dg.RunRequest(
        run_key=f"{what}:{batch}:{attempt}",
        run_config=run_config(op_name, todo),
        tags={MAINTENANCE: what, REASON: reason[:1000], BATCH: batch, "dagster/priority": PRIORITY},
    )


def nothing_to_ask(found: str, verb: str) -> dg.SkipReason:
    """A tick's answer when `request` gave None: what it found, and why it asked for no run."""
    return dg.SkipReason(
        f"{found} and none is left to {verb} (a pending run holds them, or they failed {MAX_ATTEMPTS} times)"
    )


# --- acting ------------------------------------------------------------------------------------------


class TransientMaintenanceError(Exception):
    """Some targets failed on an error that passes (a timeout, a throttled or unavailable service):
    the op's `RetryPolicy` runs it again, and the retry acts on what is still due."""


def act_on_each(
    items: Sequence[T],
    act: Callable[[T], bool],
    name: Callable[[T], str],
    log: Any = None,
) -> list[T]:
    """`act` on every item (True: done, False: nothing left to do); the items done.

    One item's error never stops the others. At the end, an error known to be transient raises
    `TransientMaintenanceError` (retried), any other a `dg.Failure` that is not retried.
    """
    done: list[T] = []
    transient: list[str] = []
    permanent: list[str] = []
    for item in items:
        try:
            if act(item):
                done.append(item)
        except Exception as error:
            failed = transient if is_transient(error) else permanent
            failed.append(name(item))
            if log is not None:
                log.warning(f"{name(item)}: {type(error).__name__}: {str(error)[:300]}")
    if transient:
        raise TransientMaintenanceError(
            f"{len(transient)} target(s) failed on a transient error: {', '.join(transient[:20])}"
        )
    if permanent:
        raise dg.Failure(
            f"{len(permanent)} target(s) failed: {', '.join(permanent[:20])}", allow_retries=False
        )
    return done


_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_TRANSIENT_S3_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "ServiceUnavailable",
}


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) is one that passes by itself: a timeout, a
    refused or dropped connection, an S3 or Kubernetes API answer of 429 / 5xx, a lost database link.

    Library classes are looked up only when their module is loaded already: an error of a library
    nobody imported cannot have been raised, and the embedded default never imports dagster-k8s.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _loaded(module: str, name: str) -> type | None:
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _transient_itself(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | ConnectionError | TransientMaintenanceError):
        return True
    for module, name in (
        ("botocore.exceptions", "ConnectionError"),  # endpoint down, connect and read timeouts
        ("urllib3.exceptions", "HTTPError"),  # the Kubernetes client's transport
        ("httpx", "TransportError"),  # IPFS
        ("sqlalchemy.exc", "OperationalError"),  # run storage: Postgres restarting
    ):
        cls = _loaded(module, name)
        if cls is not None and isinstance(error, cls):
            return True
    client_error = _loaded("botocore.exceptions", "ClientError")
    if client_error is not None and isinstance(error, client_error):
        response: dict[str, Any] = getattr(error, "response", {}) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in _TRANSIENT_STATUS or response.get("Error", {}).get("Code") in _TRANSIENT_S3_CODES
    api_exception = _loaded("kubernetes.client.exceptions", "ApiException")
    if api_exception is not None and isinstance(error, api_exception):
        return getattr(error, "status", None) in _TRANSIENT_STATUS
    return False
