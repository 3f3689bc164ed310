"""The Provider's only door to the compute engine: a compute job is one Dagster run of `compute_job`.

Reads go to Dagster's run storage through Dagster's own storage API, never through the webserver: a
`DagsterInstance` over the instance the engine writes (the SQLite files of the embedded stack's
DAGSTER_HOME, or Postgres through dagster-postgres in production), of which only the storage is built
(`storage_instance`), used to read runs, count them and record a consumer's stop. On Postgres its
connections stay open between reads, in a pool per storage, and each is checked before use, so a
restarted database costs no failed read. Status polls are answered from a per-process cache
(provider_api.status_cache):

- a finished job (its run ended and publish wrote the job's finish date) is kept until its results
  are due to expire (`storageExpiry` after it finished); from then on it is read again at most every
  `active_seconds` until the expiry tag appears, and kept for good after that. Nothing else changes a
  finished job: the stage watchdog only takes over runs that ended *without* publishing, which are
  not finished yet;
- anything else (an unfinished job, a job not found, a listing, the queue counts) is kept for
  `active_seconds` (PROVIDER_STATUS_CACHE_SECONDS: 1 s in a single server process, 0 with several,
  provider_api.server): a poll sees a change at most that late;
- what this process writes (a launch, a stop) replaces or drops the entries it touches at once.

Concurrent misses for one key are one read. A run an operator deletes from Dagster stays visible to
the processes that cached it until the entry is evicted (least recently used, `cache_entries`).

Writes go to Dagster over GraphQL with `dagster_graphql.DagsterGraphQLClient` (submit_job_execution
with the run config and tags, terminate_run). The one write into run storage directly is the
consumer's stop record (two hidden tags just before the terminate): Dagster's GraphQL API has no
mutation that adds run tags.
"""

from __future__ import annotations

import math
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from c2d_core import engine
from c2d_core.environments import Environments
from c2d_core.run_stamp import stamp_key_from_file
from c2d_core.settings import engine_settings
from provider_api.jobs import CANCELED_RUN_STATES, JobRecord
from provider_api.settings import STATUS_CACHE_ENTRIES, STATUS_CACHE_SECONDS
from provider_api.status_cache import FOREVER, ReadCache

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster_graphql import DagsterGraphQLClient
    from sqlalchemy.engine import Engine

    from c2d_core.workflow import Workflow

T = TypeVar("T")

# A consumer's job list is newest first and cut here; Ocean's own list had no bound at all.
JOBS_LIMIT = 100
RUNNING_STATES = ("STARTING", "STARTED", "CANCELING")
QUEUED_STATES = ("QUEUED", "NOT_STARTED")
LOCK_STRIPES = 64
# Run storage connection pool (storage_instance, on Postgres). No read may take longer than the
# Provider's own deadlines (10 s for a chain call or a Dagster GraphQL request), so a statement that
# runs longer is cancelled by Postgres. Connections are replaced after an hour, as Dagster's webserver
# does. One connection per storage stays open; more, up to 1 + 20 (Dagster's webserver default), are
# opened only while that many reads run at once and closed after. A server process runs up to 40
# requests at once (its thread pool), so at such a peak a read may wait a few milliseconds for a free
# connection, and Postgres's default limit of 100 connections is not reached by a couple of processes.
STATEMENT_TIMEOUT_MS = 10_000
POOL_RECYCLE_SECONDS = 3600
POOL_MAX_OVERFLOW = 20
# A run worker takes about 2 s to start on a small machine; Dagster cannot terminate it before.
STARTING_WAIT = 15.0
STARTING_POLL = 0.2


class BackendUnavailable(RuntimeError):
    """Dagster (its run storage, or its webserver for a write) did not answer: the Provider reports 503."""


class JobConflict(RuntimeError):
    """The agreement (order) already has an unfinished job; Ocean allows one at a time."""

    def __init__(self, message: str, existing: JobRecord) -> None:
        super().__init__(message)
        self.existing = existing


class JobNotFound(LookupError):
    pass


def _record(run_record: Any, canceled_at: float | None = None) -> JobRecord:
    """A JobRecord from a Dagster `RunRecord` (its run, create/update timestamps, start and end)."""
    run = run_record.dagster_run
    status = str(run.status.value)
    ended = run_record.end_time
    # A run canceled while queued never started, so it may have no end time; its last update is when
    # it was canceled.
    if ended is None and status in ("SUCCESS", "FAILURE", "CANCELED"):
        ended = run_record.update_timestamp.timestamp()
    return JobRecord(
        run_id=str(run.run_id),
        run_status=status,
        # A run from before the state tags were hidden reads as today's (engine.current_tags).
        tags=engine.current_tags({str(key): str(value) for key, value in run.tags.items()}),
        created=run_record.create_timestamp.timestamp(),
        ended=float(ended) if ended is not None else None,
        started=float(run_record.start_time) if run_record.start_time is not None else None,
        canceled_at=canceled_at,
    )


def _graphql_client(url: str, timeout: float) -> DagsterGraphQLClient:
    """Dagster's GraphQL client for the webserver at `url` (its /graphql endpoint, as configured)."""
    from urllib.parse import urlsplit

    from dagster_graphql import DagsterGraphQLClient
    from gql.transport.requests import RequestsHTTPTransport

    parts = urlsplit(url)
    # The transport is given the URL as configured (a path prefix, another path); the host and port
    # only name the server in the client's own messages.
    transport = RequestsHTTPTransport(url=url, use_json=True, timeout=max(1, math.ceil(timeout)))
    return DagsterGraphQLClient(
        parts.hostname or "localhost",
        port_number=parts.port,
        transport=transport,
        use_https=parts.scheme == "https",
    )


def _timed_out(error: BaseException) -> bool:
    """Whether a GraphQL client error was a timeout after the request went out."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.exceptions.Timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _client_error_kind(error: BaseException) -> str:
    """What went wrong, in words that name no query, variable or URL (the client's own messages carry
    the whole query and its variables, the run config included)."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.exceptions.RequestException):
            return f"the compute engine did not answer ({type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    kind = error.args[0] if error.args and isinstance(error.args[0], str) else type(error).__name__
    if kind.startswith("Server error with code"):
        return f"the compute engine answered HTTP {kind.split()[4]}"
    if " " in kind:
        return "the compute engine sent an answer that is not Dagster's GraphQL"
    return f"the compute engine answered {kind}"


def storage_instance(home: str | Path) -> DagsterInstance:
    """A `DagsterInstance` over the run, event-log and schedule storage that `home`/dagster.yaml names,
    and nothing else of that file.

    The engine's instance file also names its run launcher (dagster_k8s.K8sRunLauncher on Kubernetes),
    run coordinator (c2d_defs.run_coordinator), compute log manager (dagster_aws S3) and scheduler.
    The Provider neither launches, queues nor reads compute logs through Dagster, so those are replaced
    by Dagster's own defaults here: the Provider never imports c2d_defs or an engine-only integration,
    whichever code path touches the instance, and the dagster chart's instance ConfigMap can be mounted
    as it is (docs/deploy-kubernetes.md). Settings are dropped too (telemetry off: nothing is written
    into `home`, which is a read-only mount there). The storage config itself, its `{env: ...}`
    credentials (DAGSTER_PG_PASSWORD) included, is read exactly as Dagster reads it. (A custom
    `instance_class` would still be imported while Dagster parses the file; the dagster chart sets none.)
    """
    import yaml
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import ConfigurableClassData

    def core(module: str, name: str) -> ConfigurableClassData:
        return ConfigurableClassData(module, name, yaml.dump({}))

    ref = InstanceRef.from_dir(str(home))
    storage_only = ref._replace(
        compute_logs_data=core("dagster._core.storage.noop_compute_log_manager", "NoOpComputeLogManager"),
        scheduler_data=None,
        run_coordinator_data=core("dagster._core.run_coordinator", "DefaultRunCoordinator"),
        run_launcher_data=core("dagster", "DefaultRunLauncher"),
        secrets_loader_data=None,
        defs_state_storage_data=None,
        custom_instance_class_data=None,
        settings={"telemetry": {"enabled": False}},
    )
    instance = DagsterInstance.from_ref(storage_only)
    _pool_connections(instance)
    return instance


def _pool_connections(instance: DagsterInstance) -> None:
    """Keep run storage connections open between reads, as Dagster's webserver does.

    Outside the webserver, dagster-postgres opens a new connection for each read (NullPool), about
    30 ms under load, and a status poll that the cache does not answer pays that every time.
    `optimize_for_webserver` gives each Postgres storage a connection pool instead. Storage on
    SQLite ignores the call: it keeps no connection open anyway.

    Dagster's pool does not check a pooled connection before use. After Postgres restarts (or
    fails over, or ends an idle session), the first read on a stale connection would fail and the
    consumer would get a 503. SQLAlchemy's pre-ping prevents that: every checkout first sends a
    `SELECT 1`, and if that fails, the pool drops all its connections and reconnects. A ping costs
    one round trip, much less than a new connection.
    """
    from sqlalchemy.pool import QueuePool

    instance.optimize_for_webserver(
        statement_timeout=STATEMENT_TIMEOUT_MS,
        pool_recycle=POOL_RECYCLE_SECONDS,
        max_overflow=POOL_MAX_OVERFLOW,
    )
    for sql_engine in _storage_engines(instance):
        if isinstance(sql_engine.pool, QueuePool):
            # The pool's own pre-ping switch. Dagster builds the engine and has no option for it.
            sql_engine.pool._pre_ping = True


def _storage_engines(instance: DagsterInstance) -> list[Engine]:
    """The SQLAlchemy engines that the instance's storages keep (dagster-postgres's `_engine`;
    SQLite storage keeps none)."""
    from sqlalchemy.engine import Engine

    engines = []
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        sql_engine = getattr(storage, "_engine", None)
        if isinstance(sql_engine, Engine):
            engines.append(sql_engine)
    return engines


def release_storage(instance: DagsterInstance) -> None:
    """Dispose of `instance` and close its pooled connections. Dagster's `dispose` leaves those open
    until the engine is garbage collected."""
    instance.dispose()
    for sql_engine in _storage_engines(instance):
        sql_engine.dispose()


class DagsterJobs:
    """Submit, list, read and stop compute jobs; count an environment's running and queued jobs.

    `dagster_home` is the Dagster instance folder whose run storage is read (its dagster.yaml names
    the storage; default: $DAGSTER_HOME); `instance` gives the instance itself instead.
    `active_seconds` and `cache_entries` bound the status cache (the Provider passes its settings
    status_cache_seconds / status_cache_entries, whose defaults these are).
    """

    def __init__(
        self,
        graphql_url: str,
        timeout: float = 10,
        environments_file: str | Path | None = None,
        stamp_key: bytes | None = None,
        *,
        dagster_home: str | Path | None = None,
        instance: DagsterInstance | None = None,
        active_seconds: float = STATUS_CACHE_SECONDS,
        cache_entries: int = STATUS_CACHE_ENTRIES,
    ) -> None:
        self.graphql_url = graphql_url
        self._timeout = timeout
        # The key of the stamp each submitted run carries (c2d_core.run_stamp); None: the one derived
        # from the engine's Provider key file, when there is one.
        self._stamp_key = stamp_key
        # The environments give each run its `dagster/max_runtime` and each finished job its expiry
        # (None: the engine's own file).
        self._environments_file = environments_file
        self._environments: Environments | None = None
        # Striped locks serialise submits of one agreement (or job id) in this process, with bounded
        # memory however many agreements pass through.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._home = str(dagster_home) if dagster_home is not None else None
        self._instance: DagsterInstance | None = instance
        self._own_instance = instance is None
        self._instance_lock = threading.Lock()
        # One GraphQL client per thread: the client's transport holds one session at a time.
        self._clients = threading.local()
        self.active_seconds = active_seconds
        self.cache: ReadCache[Any] = ReadCache(cache_entries)
        # When an operator's terminate was asked, per run: it never changes once recorded.
        self._cancel_times: ReadCache[float | None] = ReadCache(cache_entries)

    def close(self) -> None:
        with self._instance_lock:
            instance, self._instance = self._instance, None
        if instance is not None and self._own_instance:
            release_storage(instance)

    def __enter__(self) -> DagsterJobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run storage -------------------------------------------------------------------------------

    def _dagster(self) -> DagsterInstance:
        if self._instance is not None:
            return self._instance
        with self._instance_lock:
            if self._instance is None:
                home = self._home or os.environ.get("DAGSTER_HOME")
                if not home:
                    raise BackendUnavailable(
                        "no Dagster instance to read jobs from: set DAGSTER_HOME (or PROVIDER_DAGSTER_HOME) "
                        "to the folder of the engine's dagster.yaml"
                    )
                try:
                    self._instance = storage_instance(home)
                except Exception as error:  # a storage that is down, a config it cannot read
                    raise BackendUnavailable(
                        f"the compute engine's run storage is unavailable ({type(error).__name__})"
                    ) from error
            return self._instance

    def _storage(self, read: Callable[[DagsterInstance], T]) -> T:
        instance = self._dagster()
        try:
            return read(instance)
        except Exception as error:  # sqlite3 / psycopg2 errors, through SQLAlchemy or not
            raise BackendUnavailable(
                f"the compute engine's run storage did not answer ({type(error).__name__})"
            ) from error

    def _read_runs(self, tags: dict[str, str], limit: int = JOBS_LIMIT) -> list[JobRecord]:
        """Job runs matching `tags`, newest first, read from run storage now."""
        from dagster import RunsFilter

        run_filter = RunsFilter(job_name=engine.JOB_NAME, tags=tags)
        rows = self._storage(lambda instance: instance.get_run_records(filters=run_filter, limit=limit))
        records = [_record(row) for row in rows]
        # A re-execution or a refused run holds its job's tags but is not the job: never listed.
        # Of several runs of one job id (a copy the engine refuses, a submit race), the first is the job.
        first: dict[str, JobRecord] = {}
        for record in reversed(records):  # oldest first
            if engine.job_run(record.tags):
                first.setdefault(record.job_id, record)
        kept = {id(record) for record in first.values()}
        return [self._with_cancel_time(record) for record in records if id(record) in kept]

    def _with_cancel_time(self, record: JobRecord) -> JobRecord:
        """`record` with `canceled_at` when it was stopped without a consumer's stop record (an
        operator's terminate): the time of the run's first cancel event, from its event log."""
        if (
            record.run_status not in CANCELED_RUN_STATES
            or record.tags.get(engine.STOPPED_BY)
            or record.ended_by_engine
        ):
            return record
        from dataclasses import replace

        at = self._cancel_times.get(
            record.run_id,
            lambda: self._read_cancel_time(record.run_id),
            lambda found: FOREVER if found is not None else 0,
        )
        return replace(record, canceled_at=at) if at is not None else record

    def _read_cancel_time(self, run_id: str) -> float | None:
        from dagster import DagsterEventType

        kinds = {DagsterEventType.RUN_CANCELING, DagsterEventType.RUN_CANCELED}
        found = self._storage(
            lambda instance: instance.get_records_for_run(run_id, of_type=kinds, limit=1, ascending=True)
        )
        return float(found.records[0].timestamp) if found.records else None

    def _lifetime(self, record: JobRecord | None) -> float:
        """How long this process may answer with `record` (the job as read) without reading again."""
        if record is None or not (record.run_ended and record.published):
            return self.active_seconds
        if record.tags.get(engine.RESULTS_EXPIRED) == "1":
            return FOREVER
        finished = engine.epoch(record.tags.get(engine.DATE_FINISHED))
        try:
            expiry = self._environments_of().get(record.environment).storage_expiry
        except Exception:  # an environment since removed (its results are kept), an unreadable file
            return FOREVER if finished is not None else self.active_seconds
        if not expiry or finished is None:
            return FOREVER  # results kept until an operator deletes them
        # Until the results are due to expire; then as an active job until the expiry tag is read.
        return max(self.active_seconds, finished + expiry - time.time())

    # -- reading -----------------------------------------------------------------------------------

    def jobs(
        self, owner: str | None = None, job_id: str | None = None, agreement_id: str | None = None
    ) -> list[JobRecord]:
        """Jobs matching every given filter (tags match exactly), newest first, at most JOBS_LIMIT.

        At least one filter is required: an unfiltered call would list every consumer's jobs.
        """
        tags = {
            key: value
            for key, value in (
                (engine.OWNER, owner),
                (engine.JOB_ID, job_id),
                (engine.AGREEMENT_ID, agreement_id),
            )
            if value
        }
        if not tags:
            raise ValueError("give at least one of owner, job_id, agreement_id")
        if set(tags) == {engine.JOB_ID}:
            found = self.job(tags[engine.JOB_ID])
            return [found] if found is not None else []
        key = ("jobs", tuple(sorted(tags.items())))
        listed: list[JobRecord] = self.cache.get(
            key, lambda: self._read_runs(tags), lambda _: self.active_seconds
        )
        return listed

    def job(self, job_id: str, *, fresh: bool = False) -> JobRecord | None:
        """The job's run (None if there is none); `fresh` reads run storage now, bypassing the cache."""
        if fresh:
            record = self._read_job(job_id)
            self.cache.put(("job", job_id), record, self._lifetime(record))
            return record
        found: JobRecord | None = self.cache.get(
            ("job", job_id), lambda: self._read_job(job_id), self._lifetime
        )
        return found

    def _read_job(self, job_id: str) -> JobRecord | None:
        runs = self._read_runs({engine.JOB_ID: job_id})
        # One run per job id is what submit guarantees; if a race ever made two, the first one
        # launched is the job the consumer was told about.
        return runs[-1] if runs else None

    def _count(self, env_id: str, statuses: tuple[str, ...], created_before: float | None = None) -> int:
        from dagster import DagsterRunStatus, RunsFilter

        run_filter = RunsFilter(
            job_name=engine.JOB_NAME,
            tags={engine.ENVIRONMENT: env_id},
            statuses=[DagsterRunStatus(status) for status in statuses],
            created_before=None if created_before is None else datetime.fromtimestamp(created_before, UTC),
        )
        return int(self._storage(lambda instance: instance.get_runs_count(run_filter)))

    def current_jobs(self, env_id: str) -> tuple[int, int]:
        """(running, queued) compute jobs of an environment, for `computeEnvironments`' currentJobs."""
        counts: tuple[int, int] = self.cache.get(
            ("counts", env_id),
            lambda: (self._count(env_id, RUNNING_STATES), self._count(env_id, QUEUED_STATES)),
            lambda _: self.active_seconds,
        )
        return counts

    def queue_position(self, record: JobRecord) -> int | None:
        """1 for the next queued job of its environment, or None when the job is not queued.

        Counts the environment's queued runs created before this one: Dagster's queue is first in,
        first out within a priority, and compute jobs all share one priority.
        """
        if record.run_status not in QUEUED_STATES:
            return None
        position: int = self.cache.get(
            ("queue", record.run_id),
            lambda: self._count(record.environment, QUEUED_STATES, record.created) + 1,
            lambda _: self.active_seconds,
        )
        return position

    def _forget(self, *records: JobRecord) -> None:
        """Drop what this process cached about these jobs: it has just changed them."""
        job_ids = {record.job_id for record in records}
        owners = {record.owner for record in records}
        agreements = {record.agreement_id for record in records if record.agreement_id}
        environments = {record.environment for record in records}

        def touched(key: Any) -> bool:
            kind, value = key
            if kind == "job":
                return value in job_ids
            if kind == "counts":
                return value in environments
            if kind == "jobs":
                filters = dict(value)
                return filters.get(engine.OWNER) in owners or filters.get(engine.AGREEMENT_ID) in agreements
            return False

        self.cache.forget_where(touched)

    # -- writing -----------------------------------------------------------------------------------

    def _graphql(self) -> DagsterGraphQLClient:
        client: DagsterGraphQLClient | None = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = _graphql_client(self.graphql_url, self._timeout)
        return client

    @contextmanager
    def _serialised(self, *keys: str) -> Iterator[None]:
        stripes = sorted({zlib.crc32(key.encode()) % LOCK_STRIPES for key in keys if key})
        with ExitStack() as stack:
            for stripe in stripes:  # always in ascending order, so two submits cannot deadlock
                stack.enter_context(self._locks[stripe])
            yield

    def submit(self, workflow: Workflow) -> JobRecord:
        """Launch `compute_job` for `workflow`; idempotent per job id, one unfinished job per agreement.

        A retried submit of the same job id returns the run already launched. Another job on an
        agreement whose job is unfinished raises `JobConflict`.

        Lookup and launch are two calls, so two Providers (or processes) could both see "no run" and
        both launch. The window is narrowed, not closed: in this process a lock per agreement and job
        id serialises lookup+launch, in front of it the signature nonce's compare-and-set lets only one
        of a consumer's identical retries through, and across processes the agreement claim
        (provider_api.agreements) admits one start per agreement. A duplicate that slips through is
        still found by `job()`, which answers with the first run launched. Both lookups read run
        storage now, never the cache.
        """
        agreement = workflow.agreement_id or ""
        with self._serialised(workflow.job_id, agreement):
            existing = self._read_runs({engine.JOB_ID: workflow.job_id})
            if existing:
                return existing[-1]
            if agreement:
                for record in self._read_runs({engine.AGREEMENT_ID: agreement}):
                    if not record.finished:
                        raise JobConflict(
                            f"agreementId {agreement} already has an unfinished compute job "
                            f"({record.job_id}); wait for it to finish or stop it",
                            record,
                        )
            record = self._launch(workflow)
        self._forget(record)
        self.cache.put(("job", record.job_id), record, self.active_seconds)
        return record

    def _stamp(self) -> bytes | None:
        if self._stamp_key is None:
            self._stamp_key = stamp_key_from_file(engine_settings().resolved_provider_key_file)
        return self._stamp_key

    def _environments_of(self) -> Environments:
        if self._environments is None:
            path = self._environments_file or engine_settings().environments_file
            self._environments = Environments.load(path)
        return self._environments

    def _max_runtime(self, env_id: str) -> int | None:
        """The run's whole deadline (configure + maxJobDuration + publish + grace), or None for an
        unknown environment: that job fails its configure stage at once and needs none."""
        return self._environments_of().max_runtime(env_id, engine_settings())

    def _launch(self, workflow: Workflow) -> JobRecord:
        from dagster_graphql import DagsterGraphQLClientError

        tags = engine.submission_tags(workflow, self._max_runtime(workflow.environment), self._stamp())
        try:
            self._graphql().submit_job_execution(
                engine.JOB_NAME,
                repository_location_name=engine.LOCATION,
                repository_name=engine.REPOSITORY,
                run_config=engine.run_config(workflow),
                tags=tags,
            )
        except DagsterGraphQLClientError as error:
            kind = error.args[0] if error.args else ""
            if kind in ("RunConfigValidationInvalid", "PipelineConfigValidationInvalid"):
                problems = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], list) else []
                reasons = "; ".join(str(item.get("message", item)) for item in problems[:3])
                raise BackendUnavailable(
                    f"the compute engine refused the job's run config: {reasons}"
                ) from None
            # A timeout after the request went out may still have created the run: look before
            # reporting a failure, so the consumer's retry is not the only way to find it.
            failure = BackendUnavailable(f"launching the job failed: {_client_error_kind(error)}")
            if _timed_out(error):
                try:
                    found = self._read_runs({engine.JOB_ID: workflow.job_id})
                except BackendUnavailable:
                    raise failure from None
                if found:
                    return found[-1]
            raise failure from None
        found = self._read_runs({engine.JOB_ID: workflow.job_id})
        if not found:
            raise BackendUnavailable("the compute engine launched the job but its run is not in run storage")
        return found[-1]

    def _record_stop(self, record: JobRecord, by: str) -> None:
        """Tag the run with who asked it to stop and when, and say so in its event log, before the
        terminate: the Dagster UI and the job JSON then tell a consumer's stop from an operator's."""
        now = f"{time.time():.6f}"

        def write(instance: DagsterInstance) -> None:
            instance.add_run_tags(record.run_id, {engine.STOPPED_BY: by, engine.STOPPED_AT: now})
            run = instance.get_run_by_id(record.run_id)
            if run is not None:
                message = f"Stop requested by the consumer {by} through the Provider."
                instance.report_engine_event(message, run)

        self._storage(write)

    def _unrecord_stop(self, record: JobRecord) -> None:
        """The terminate did not go through: the run must not read as stopped by the consumer if an
        operator stops it later (Dagster cannot delete a tag; an empty value means no stop)."""
        cleared = {engine.STOPPED_BY: "", engine.STOPPED_AT: ""}
        # Best effort: a consumer's retried stop records it again.
        with suppress(BackendUnavailable):
            self._storage(lambda instance: instance.add_run_tags(record.run_id, cleared))

    def stop(self, job_id: str, starting_wait: float = STARTING_WAIT, *, by: str | None = None) -> JobRecord:
        """Terminate the job's run; a finished (or already stopping) job is returned unchanged.

        `by` is the consumer asking: the run is tagged with it and the time (engine.STOPPED_BY,
        STOPPED_AT) before the terminate. Returns with the run usually CANCELING: the stage op the
        stop interrupts (configure or the algorithm) kills its pod, tags the run `stopreq` and
        publishes the outputs and logs. A stop caught while queued or between ops is on record as the
        run's CANCELING / CANCELED state, which ocean_job_json reads as stopreq 1 unless the engine
        ended the run (jobs.JobRecord.ended_by_engine).

        Dagster refuses to terminate a STARTING run (its worker is not up yet) and marking it
        canceled without a worker to stop could leave the algorithm running unseen, so a stop that
        meets a starting run waits, up to `starting_wait` seconds, for it to start, then terminates.
        """
        from dagster_graphql import DagsterGraphQLClientError

        deadline = time.monotonic() + starting_wait
        recorded = False
        while True:
            record = self.job(job_id, fresh=True)
            if record is None:
                raise JobNotFound(f"no compute job {job_id}")
            if record.finished or record.run_ended or record.run_status == "CANCELING":
                return record  # (a run ended but still salvaged by the watchdog has nothing to stop)
            if record.run_status != "STARTING":
                if by and not recorded:
                    self._record_stop(record, by)
                    recorded = True
                try:
                    self._graphql().terminate_run(record.run_id)
                except DagsterGraphQLClientError as error:
                    # A refusal means the run moved (queued -> starting, or it ended) since we read it.
                    if not error.args or error.args[0] != "TerminateRunFailure":
                        if recorded:
                            self._unrecord_stop(record)
                        kind = _client_error_kind(error)
                        raise BackendUnavailable(f"stopping the job failed: {kind}") from None
                else:
                    self._forget(record)
                    # Read back: the mutation's answer can predate the cancel (a queued run).
                    return self.job(job_id, fresh=True) or record
            if time.monotonic() >= deadline:
                if recorded:
                    self._unrecord_stop(record)
                raise BackendUnavailable(
                    f"job {job_id} is still starting after {starting_wait:.0f} s; ask to stop it again"
                )
            time.sleep(STARTING_POLL)
