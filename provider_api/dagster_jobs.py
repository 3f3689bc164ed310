"""The Provider's only door to the compute engine: `compute_job` runs over Dagster's GraphQL API.

Plain GraphQL over httpx, not `dagster_graphql.DagsterGraphQLClient`: the client imports all of
Dagster (about a second, and its memory) for what is a handful of HTTP posts. There is no job table:
a job is a run, found by its `c2d/*` tags (see c2d_core.job_tags).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from c2d_core import job_tags
from c2d_core.environments import Environments
from c2d_core.run_stamp import stamp_key_from_file
from c2d_core.settings import engine_settings
from provider_api.jobs import JobRecord

if TYPE_CHECKING:
    from c2d_core.workflow import Workflow

LOCATION = "c2d"
REPOSITORY = "__repository__"
JOB_NAME = "compute_job"
# A consumer's job list is newest first and cut here; Ocean's own list had no bound at all.
JOBS_LIMIT = 100
RUNNING_STATES = ("STARTING", "STARTED", "CANCELING")
QUEUED_STATES = ("QUEUED", "NOT_STARTED")
LOCK_STRIPES = 64
# A run worker takes about 2 s to start on a small machine; Dagster cannot terminate it before.
STARTING_WAIT = 15.0
STARTING_POLL = 0.2

_RUN_FIELDS = "runId status creationTime startTime endTime updateTime tags { key value }"
_ERROR_FIELDS = "... on Error { message }"

_RUNS_QUERY = f"""
query C2dJobs($filter: RunsFilter!, $limit: Int!) {{
  runsOrError(filter: $filter, limit: $limit) {{
    __typename
    ... on Runs {{ results {{ {_RUN_FIELDS} }} }}
    {_ERROR_FIELDS}
  }}
}}
"""

_LAUNCH_MUTATION = f"""
mutation C2dLaunch($params: ExecutionParams!) {{
  launchRun(executionParams: $params) {{
    __typename
    ... on LaunchRunSuccess {{ run {{ {_RUN_FIELDS} }} }}
    ... on RunConfigValidationInvalid {{ errors {{ message }} }}
    {_ERROR_FIELDS}
  }}
}}
"""

_TERMINATE_MUTATION = f"""
mutation C2dStop($runId: String!) {{
  terminateRun(runId: $runId) {{
    __typename
    ... on TerminateRunSuccess {{ run {{ {_RUN_FIELDS} }} }}
    ... on TerminateRunFailure {{ message run {{ {_RUN_FIELDS} }} }}
    {_ERROR_FIELDS}
  }}
}}
"""

# Two counts in one round trip; `count` is a COUNT query in run storage, no rows are sent.
_COUNTS_QUERY = """
query C2dCounts($running: RunsFilter!, $queued: RunsFilter!) {
  running: runsOrError(filter: $running) { __typename ... on Runs { count } ... on Error { message } }
  queued: runsOrError(filter: $queued) { __typename ... on Runs { count } ... on Error { message } }
}
"""

_QUEUE_AHEAD_QUERY = """
query C2dQueueAhead($filter: RunsFilter!) {
  runsOrError(filter: $filter) { __typename ... on Runs { count } ... on Error { message } }
}
"""


class BackendUnavailable(RuntimeError):
    """Dagster did not answer, or answered with an error: the Provider reports 503."""


class JobConflict(RuntimeError):
    """The agreement (order) already has an unfinished job; Ocean allows one at a time."""

    def __init__(self, message: str, existing: JobRecord) -> None:
        super().__init__(message)
        self.existing = existing


class JobNotFound(LookupError):
    pass


def _record(run: dict[str, Any]) -> JobRecord:
    status = str(run["status"])
    ended = run.get("endTime")
    # A run canceled while queued never started, so it may have no endTime; its last update is when
    # it was canceled.
    if ended is None and status in ("SUCCESS", "FAILURE", "CANCELED"):
        ended = run.get("updateTime")
    started = run.get("startTime")
    return JobRecord(
        run_id=str(run["runId"]),
        run_status=status,
        tags={str(item["key"]): str(item["value"]) for item in run.get("tags") or []},
        created=float(run["creationTime"]),
        ended=float(ended) if ended is not None else None,
        started=float(started) if started is not None else None,
    )


def _tag_filter(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags.items()]


class DagsterJobs:
    """Submit, list, read and stop compute jobs; count an environment's running and queued jobs."""

    def __init__(
        self,
        graphql_url: str,
        timeout: float = 10,
        environments_file: str | Path | None = None,
        stamp_key: bytes | None = None,
    ) -> None:
        self.graphql_url = graphql_url
        # The key of the stamp each submitted run carries (c2d_core.run_stamp); None: the one derived
        # from the engine's Provider key file, when there is one.
        self._stamp_key = stamp_key
        self._http = httpx.Client(timeout=timeout)
        # The environments give each run its `dagster/max_runtime` (None: the engine's own file).
        self._environments_file = environments_file
        self._environments: Environments | None = None
        # Striped locks serialise submits of one agreement (or job id) in this process, with bounded
        # memory however many agreements pass through.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DagsterJobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------------

    def _post(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(self.graphql_url, json={"query": query, "variables": variables})
        except httpx.HTTPError as error:
            raise BackendUnavailable(f"the compute engine did not answer ({type(error).__name__})") from error
        if response.status_code != 200:
            raise BackendUnavailable(f"the compute engine answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError as error:
            raise BackendUnavailable("the compute engine sent a response that is not JSON") from error
        if answer.get("errors"):
            messages = "; ".join(str(item.get("message", item)) for item in answer["errors"][:3])
            raise BackendUnavailable(f"the compute engine rejected a query: {messages}")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise BackendUnavailable("the compute engine sent no data")
        return data

    @staticmethod
    def _expect(result: dict[str, Any], typename: str, what: str) -> dict[str, Any]:
        if result.get("__typename") != typename:
            message = result.get("message") or result.get("__typename")
            raise BackendUnavailable(f"{what} failed: {message}")
        return result

    # -- reading -----------------------------------------------------------------------------------

    def _runs(self, tags: dict[str, str], limit: int = JOBS_LIMIT) -> list[JobRecord]:
        run_filter = {"pipelineName": JOB_NAME, "tags": _tag_filter(tags)}
        data = self._post(_RUNS_QUERY, {"filter": run_filter, "limit": limit})
        runs = self._expect(data["runsOrError"], "Runs", "listing jobs")
        records = [_record(run) for run in runs["results"]]
        # A re-execution or a refused run holds its job's tags but is not the job: never listed.
        # Of several runs of one job id (a copy the engine refuses, a submit race), the first is the job.
        first: dict[str, JobRecord] = {}
        for record in reversed(records):  # oldest first
            if job_tags.job_run(record.tags):
                first.setdefault(record.job_id, record)
        kept = {id(record) for record in first.values()}
        return [record for record in records if id(record) in kept]

    def jobs(
        self, owner: str | None = None, job_id: str | None = None, agreement_id: str | None = None
    ) -> list[JobRecord]:
        """Jobs matching every given filter (tags match exactly), newest first, at most JOBS_LIMIT.

        At least one filter is required: an unfiltered call would list every consumer's jobs.
        """
        tags = {
            key: value
            for key, value in (
                (job_tags.OWNER, owner),
                (job_tags.JOB_ID, job_id),
                (job_tags.AGREEMENT_ID, agreement_id),
            )
            if value
        }
        if not tags:
            raise ValueError("give at least one of owner, job_id, agreement_id")
        return self._runs(tags)

    def job(self, job_id: str) -> JobRecord | None:
        runs = self._runs({job_tags.JOB_ID: job_id})
        # One run per job id is what submit guarantees; if a race ever made two, the first one
        # launched is the job the consumer was told about.
        return runs[-1] if runs else None

    def current_jobs(self, env_id: str) -> tuple[int, int]:
        """(running, queued) compute jobs of an environment, for `computeEnvironments`' currentJobs."""
        base = {"pipelineName": JOB_NAME, "tags": _tag_filter({job_tags.ENVIRONMENT: env_id})}
        data = self._post(
            _COUNTS_QUERY,
            {
                "running": {**base, "statuses": list(RUNNING_STATES)},
                "queued": {**base, "statuses": list(QUEUED_STATES)},
            },
        )
        running = self._expect(data["running"], "Runs", "counting jobs")["count"]
        queued = self._expect(data["queued"], "Runs", "counting jobs")["count"]
        return int(running), int(queued)

    def queue_position(self, record: JobRecord) -> int | None:
        """1 for the next queued job of its environment, or None when the job is not queued.

        Counts the environment's queued runs created before this one: Dagster's queue is first in,
        first out within a priority, and compute jobs all share one priority.
        """
        if record.run_status not in QUEUED_STATES:
            return None
        run_filter = {
            "pipelineName": JOB_NAME,
            "tags": _tag_filter({job_tags.ENVIRONMENT: record.environment}),
            "statuses": list(QUEUED_STATES),
            "createdBefore": record.created,
        }
        data = self._post(_QUEUE_AHEAD_QUERY, {"filter": run_filter})
        return int(self._expect(data["runsOrError"], "Runs", "counting queued jobs")["count"]) + 1

    # -- writing -----------------------------------------------------------------------------------

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
        id serialises lookup+launch, and in front of it the signature nonce's compare-and-set lets
        only one of a consumer's identical retries through. Closing it fully needs a store with a
        unique key (Dagster has none on tags); a duplicate that slips through is still found by
        `job()`, which answers with the first run launched.
        """
        agreement = workflow.agreement_id or ""
        with self._serialised(workflow.job_id, agreement):
            existing = self._runs({job_tags.JOB_ID: workflow.job_id})
            if existing:
                return existing[-1]
            if agreement:
                for record in self._runs({job_tags.AGREEMENT_ID: agreement}):
                    if not record.finished:
                        raise JobConflict(
                            f"agreementId {agreement} already has an unfinished compute job "
                            f"({record.job_id}); wait for it to finish or stop it",
                            record,
                        )
            return self._launch(workflow)

    def _stamp(self) -> bytes | None:
        if self._stamp_key is None:
            self._stamp_key = stamp_key_from_file(engine_settings().resolved_provider_key_file)
        return self._stamp_key

    def _max_runtime(self, env_id: str) -> int | None:
        """The run's whole deadline (configure + maxJobDuration + publish + grace), or None for an
        unknown environment: that job fails its configure stage at once and needs none."""
        settings = engine_settings()
        if self._environments is None:
            self._environments = Environments.load(self._environments_file or settings.environments_file)
        return self._environments.max_runtime(env_id, settings)

    def _launch(self, workflow: Workflow) -> JobRecord:
        tags = job_tags.submission_tags(workflow, self._max_runtime(workflow.environment), self._stamp())
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "jobName": JOB_NAME,
            },
            "runConfigData": {
                "ops": {
                    "configure": {
                        "config": {
                            "workflow": workflow.model_dump(by_alias=True, mode="json", exclude_none=True)
                        }
                    }
                }
            },
            "executionMetadata": {"tags": _tag_filter(tags)},
        }
        try:
            data = self._post(_LAUNCH_MUTATION, {"params": params})
        except BackendUnavailable as error:
            # A timeout after the request went out may still have created the run: look before
            # reporting a failure, so the consumer's retry is not the only way to find it.
            if isinstance(error.__cause__, httpx.TimeoutException):
                try:
                    found = self._runs({job_tags.JOB_ID: workflow.job_id})
                except BackendUnavailable:
                    raise error from None
                if found:
                    return found[-1]
            raise
        result = data["launchRun"]
        if result.get("__typename") == "RunConfigValidationInvalid":
            reasons = "; ".join(item["message"] for item in result.get("errors", [])[:3])
            raise BackendUnavailable(f"the compute engine refused the job's run config: {reasons}")
        return _record(self._expect(result, "LaunchRunSuccess", "launching the job")["run"])

    def stop(self, job_id: str, starting_wait: float = STARTING_WAIT) -> JobRecord:
        """Terminate the job's run; a finished (or already stopping) job is returned unchanged.

        Returns with the run usually CANCELING: the stage op the stop interrupts (configure or the
        algorithm) kills its pod, tags the run `c2d/stopreq` and publishes the outputs and logs. The
        Provider cannot tag the run before terminating it (Dagster's GraphQL API has no mutation
        that adds run tags); the op tells a stop from the engine's own terminations by the
        watchdog's tag and the run's max_runtime. A stop caught while queued or between ops is on
        record only as the run's CANCELING / CANCELED state, which ocean_job_json reads as stopreq 1
        unless the engine ended the run (jobs.JobRecord.ended_by_engine).

        Dagster refuses to terminate a STARTING run (its worker is not up yet) and marking it
        canceled without a worker to stop could leave the algorithm running unseen, so a stop that
        meets a starting run waits, up to `starting_wait` seconds, for it to start, then terminates.
        """
        deadline = time.monotonic() + starting_wait
        while True:
            record = self.job(job_id)
            if record is None:
                raise JobNotFound(f"no compute job {job_id}")
            if record.finished or record.run_ended or record.run_status == "CANCELING":
                return record  # (a run ended but still salvaged by the watchdog has nothing to stop)
            if record.run_status != "STARTING":
                data = self._post(_TERMINATE_MUTATION, {"runId": record.run_id})
                result = data["terminateRun"]
                kind = result.get("__typename")
                if kind == "TerminateRunSuccess":
                    # The mutation's run can predate the cancel (a queued run still shows QUEUED).
                    return self.job(job_id) or _record(result["run"])
                if kind != "TerminateRunFailure":
                    raise BackendUnavailable(f"stopping the job failed: {result.get('message') or kind}")
                # A failure means the run moved (queued -> starting, or it ended) since we read it.
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"job {job_id} is still starting after {starting_wait:.0f} s; ask to stop it again"
                )
            time.sleep(STARTING_POLL)
