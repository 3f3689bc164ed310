"""`c2d admin review list|show|download|approve|reject`: an operator's side of the review gate.

Operator credentials, never a consumer's key: the Dagster webserver's GraphQL API the operator can
reach (`--dagster-url`, env C2D_DAGSTER_URL, else the embedded stack's), the operator's identity
(`--reviewer`, env C2D_REVIEWER, else the login name), and, to read held results, the result store as
the engine's settings configure it (C2D_RESULTS_DIR, C2D_S3_*, C2D_IPFS_API_URL; the embedded stack's
folder by default). Approving or rejecting launches `review_job` (c2d_defs.jobs.review) and waits for
its outcome; the engine checks the job again there, so these commands decide nothing themselves.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from c2d_cli.cli_output import JsonOption, OutputOption, print_json, stdout_console, wants_json
from c2d_cli.stack_paths import find_stack_home, read_stack_json
from c2d_core import engine, review

admin_app = typer.Typer(
    help="Operator commands (Dagster credentials, not a consumer's key).", no_args_is_help=True
)
review_app = typer.Typer(
    help="Jobs held for review (status 55): list, inspect, download, approve, reject.", no_args_is_help=True
)
admin_app.add_typer(review_app, name="review")
out = stdout_console()
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}

DagsterUrlOption = Annotated[
    str | None,
    typer.Option(
        "--dagster-url",
        envvar="C2D_DAGSTER_URL",
        help="The Dagster webserver (its /graphql API). Default: the embedded stack's.",
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", help="State folder of the embedded stack (its webserver and results).", show_default=False
    ),
]
ReviewerOption = Annotated[
    str | None,
    typer.Option(
        "--reviewer",
        envvar="C2D_REVIEWER",
        help="Who decides, kept with the job. Default: your login name.",
        show_default=False,
    ),
]
JobArgument = Annotated[str, typer.Argument(metavar="JOB", help="The job id (the Provider's jobId).")]

_RUNS = """
query C2dReviewRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 200) {
    __typename
    ... on Runs { results { runId status creationTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""
_RUN = """
query C2dReviewRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status tags { key value } }
    ... on PythonError { message }
  }
}
"""
_LAUNCH = """
mutation C2dReview($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""


class AdminError(RuntimeError):
    pass


class Engine:
    """The Dagster webserver an operator reaches, over its GraphQL API."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        import httpx  # here, not at the top: `c2d --help` must not pay for it

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)
        self.transport_error: type[Exception] = httpx.HTTPError

    def close(self) -> None:
        self.http.close()

    def query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self.http.post(f"{self.url}/graphql", json={"query": query, "variables": variables})
        except self.transport_error as error:
            raise AdminError(
                f"the Dagster webserver at {self.url} did not answer ({type(error).__name__})"
            ) from None
        if answer.status_code != 200:
            raise AdminError(f"the Dagster webserver answered HTTP {answer.status_code}")
        body = answer.json()
        if body.get("errors"):
            raise AdminError(f"the Dagster webserver refused the query: {body['errors'][0].get('message')}")
        return dict(body["data"])

    def runs(self, job_name: str, tags: dict[str, str]) -> list[dict[str, Any]]:
        run_filter = {"pipelineName": job_name, "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        result = self.query(_RUNS, {"filter": run_filter})["runsOrError"]
        if result.get("__typename") != "Runs":
            raise AdminError(f"listing runs failed: {result.get('message')}")
        return [_run(item) for item in result["results"]]

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's own compute run (the first of its id; re-executions and refused runs skipped)."""
        runs = [
            run for run in self.runs(engine.JOB_NAME, {engine.JOB_ID: job_id}) if engine.job_run(run["tags"])
        ]
        if not runs:
            raise AdminError(f"no compute job {job_id}")
        return min(runs, key=lambda run: run["creationTime"])

    def run(self, run_id: str) -> dict[str, Any]:
        result = self.query(_RUN, {"runId": run_id})["runOrError"]
        if result.get("__typename") != "Run":
            raise AdminError(f"reading run {run_id} failed: {result.get('message')}")
        return _run(result)

    def launch_review(
        self, job_id: str, decision: str, reviewer: str, reason: str, release_logs: bool
    ) -> str:
        config: dict[str, Any] = {
            "job_id": job_id,
            "decision": decision,
            "reviewer": reviewer,
            "reason": reason,
            "release_logs": release_logs,
        }
        params = {
            "selector": {
                "repositoryLocationName": engine.LOCATION,
                "repositoryName": engine.REPOSITORY,
                "jobName": review.REVIEW_JOB_NAME,
            },
            "runConfigData": {"ops": {review.REVIEW_OP: {"config": config}}},
            "executionMetadata": {
                "tags": [
                    {"key": review.REVIEW_JOB_ID, "value": job_id},
                    {"key": engine.LAUNCHED_BY, "value": reviewer},
                ]
            },
        }
        result = self.query(_LAUNCH, {"params": params})["launchRun"]
        if result.get("__typename") != "LaunchRunSuccess":
            errors = "; ".join(item["message"] for item in result.get("errors") or [])
            raise AdminError(f"launching review_job failed: {errors or result.get('message') or result}")
        return str(result["run"]["runId"])


def _run(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "tags": {str(item["key"]): str(item["value"]) for item in raw.get("tags") or []}}


def _stack(home: Path | None) -> tuple[Path, dict[str, Any] | None]:
    found = find_stack_home(home)[0].resolve()
    return found, read_stack_json(found)


def _engine(url: str | None, home: Path | None) -> Engine:
    if url:
        return Engine(url)
    _, recorded = _stack(home)
    if not recorded or not recorded.get("webserver_url"):
        raise AdminError(
            "no Dagster webserver: pass --dagster-url (or C2D_DAGSTER_URL), or start `c2d dev up`"
        )
    return Engine(str(recorded["webserver_url"]))


def _store(home: Path | None) -> Any:
    """The result store as the engine's settings configure it; the embedded stack's folder when this
    shell configures none (no C2D_HOME / C2D_RESULTS_DIR) and a stack is found."""
    from c2d_core.result_stores import result_store_from_settings, store_options
    from c2d_core.settings import EngineSettings, engine_settings

    settings = engine_settings()
    if not (os.environ.get("C2D_HOME") or os.environ.get("C2D_RESULTS_DIR")):
        found, recorded = _stack(home)
        if recorded is not None:
            settings = EngineSettings(home=found)
    kind = (os.environ.get("C2D_RESULT_STORE") or "local").strip() or "local"
    return result_store_from_settings(kind, **store_options(settings))


def held_manifest(store: Any, job_id: str) -> list[dict[str, Any]]:
    """The held results' manifest (with store locations: for this process only, never printed)."""
    from c2d_core.results import MANIFEST_NAME

    try:
        with store.open(f"{review.held_key(job_id)}/{MANIFEST_NAME}") as handle:
            entries = json.load(handle)
    except FileNotFoundError:
        raise AdminError(f"job {job_id} holds no results in this result store") from None
    return [entry for entry in entries if isinstance(entry, dict)]


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


def _when(value: str | None) -> str:
    seconds = engine.epoch(value)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds is not None else "-"


def _review_row(run: dict[str, Any]) -> dict[str, Any]:
    tags = run["tags"]
    return {
        "jobId": tags.get(engine.JOB_ID, ""),
        "owner": tags.get(engine.OWNER, ""),
        "environment": tags.get(engine.ENVIRONMENT, ""),
        "status": int(tags.get(engine.STATUS, "0") or 0),
        "state": tags.get(review.STATE, ""),
        "requestedAt": engine.epoch(tags.get(review.REQUESTED_AT)),
        "deadline": engine.epoch(tags.get(review.DEADLINE)),
        "decidedBy": tags.get(review.DECIDED_BY) or None,
        "decidedAt": engine.epoch(tags.get(review.DECIDED_AT)),
        "reason": tags.get(review.REASON) or None,
        "runId": run["runId"],
    }


@review_app.command("list")
def review_list(
    all_states: Annotated[bool, typer.Option("--all", help="Also the jobs already decided.")] = False,
    dagster_url: DagsterUrlOption = None,
    home: HomeOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """The jobs awaiting review, oldest first (with --all, decided ones too)."""
    json_output = wants_json(json_output, output)
    try:
        dagster = _engine(dagster_url, home)
        try:
            states = ["awaiting", "approved", "rejected", "expired"] if all_states else ["awaiting"]
            runs = [run for state in states for run in dagster.runs(engine.JOB_NAME, {review.STATE: state})]
        finally:
            dagster.close()
    except AdminError as error:
        raise _fail(error) from None
    rows = sorted(
        (_review_row(run) for run in runs if engine.job_run(run["tags"])), key=lambda r: r["requestedAt"] or 0
    )
    if json_output:
        print_json(rows)
        return
    if not rows:
        out.print("no job is awaiting review" if not all_states else "no job was held for review")
        return
    table = Table(box=box.SIMPLE)
    for column in ("job", "state", "owner", "environment", "held since", "deadline", "decided by"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["jobId"],
            row["state"],
            row["owner"],
            row["environment"],
            _when(str(row["requestedAt"])),
            _when(str(row["deadline"])) if row["deadline"] else "none",
            row["decidedBy"] or "-",
        )
    out.print(table)


@review_app.command("show")
def review_show(
    job_id: JobArgument,
    dagster_url: DagsterUrlOption = None,
    home: HomeOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """One job's review and the manifest of its held results (names, sizes, sha256)."""
    json_output = wants_json(json_output, output)
    try:
        dagster = _engine(dagster_url, home)
        try:
            run = dagster.job(job_id)
        finally:
            dagster.close()
        row = _review_row(run)
        held: list[dict[str, Any]] | str = []
        if row["state"] == "awaiting":
            try:
                held = [_public(entry) for entry in held_manifest(_store(home), job_id)]
            except (AdminError, OSError, ValueError) as error:
                held = f"the held results cannot be read here: {error}"
    except AdminError as error:
        raise _fail(error) from None
    document = {**row, "held": held}
    if json_output:
        print_json(document)
        return
    for key in ("jobId", "state", "owner", "environment", "status", "decidedBy", "reason"):
        if document.get(key) not in (None, ""):
            out.print(f"[bold]{key}[/bold] {document[key]}")
    out.print(f"[bold]held since[/bold] {_when(str(row['requestedAt']))}")
    if row["deadline"]:
        out.print(f"[bold]deadline[/bold] {_when(str(row['deadline']))}")
    if isinstance(held, str):
        out.print(held)
    elif held:
        table = Table(box=box.SIMPLE)
        for column in ("index", "filename", "type", "filesize", "sha256"):
            table.add_column(column)
        for entry in held:
            table.add_row(
                *(str(entry.get(key, "")) for key in ("index", "filename", "type", "filesize", "sha256"))
            )
        out.print(table)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "location"}


@review_app.command("download")
def review_download(
    job_id: JobArgument,
    index: Annotated[
        list[int] | None, typer.Argument(help="Indexes to fetch (default: all held results).")
    ] = None,
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Where to write them.")] = Path("."),
    home: HomeOption = None,
) -> None:
    """Fetch a held job's results from the result store (operator access, no consumer key), checking
    each sha256."""
    import hashlib

    try:
        store = _store(home)
        entries = held_manifest(store, job_id)
    except (AdminError, OSError, ValueError) as error:
        raise _fail(error) from None
    wanted = entries if not index else [entry for entry in entries if entry.get("index") in set(index)]
    if index and len(wanted) != len(set(index)):
        raise _fail(AdminError(f"job {job_id} holds results 0..{len(entries) - 1}"))
    target = directory / job_id
    target.mkdir(parents=True, exist_ok=True)
    for entry in wanted:
        name = Path(str(entry["filename"])).name
        digest = hashlib.sha256()
        with store.open(str(entry["location"])) as source, (target / name).open("wb") as sink:
            for chunk in iter(lambda: source.read(1024 * 1024), b""):
                digest.update(chunk)
                sink.write(chunk)
        if digest.hexdigest() != entry.get("sha256"):
            raise _fail(AdminError(f"{name}: its sha256 differs from the held manifest's"))
        out.print(f"{target / name} ({entry.get('filesize')} bytes, {entry.get('type')})")


def _decide(
    job_id: str,
    decision: str,
    reviewer: str | None,
    reason: str,
    release_logs: bool,
    wait: bool,
    dagster_url: str | None,
    home: Path | None,
    json_output: bool,
) -> None:
    who = (reviewer or "").strip() or getpass.getuser()
    try:
        dagster = _engine(dagster_url, home)
        try:
            run_id = dagster.launch_review(job_id, decision, who, reason, release_logs)
            review_run: dict[str, Any] = {"runId": run_id, "status": "QUEUED", "tags": {}}
            deadline = time.monotonic() + 300
            while wait and review_run["status"] not in ENDED and time.monotonic() < deadline:
                time.sleep(0.5)
                review_run = dagster.run(run_id)
            job = _review_row(dagster.job(job_id)) if wait else None
        finally:
            dagster.close()
    except AdminError as error:
        raise _fail(error) from None
    refused = review_run["tags"].get(review.REVIEW_REFUSED)
    document = {"reviewRun": run_id, "runStatus": review_run["status"], "refused": refused, "job": job}
    if json_output:
        print_json(document)
    elif not wait:
        out.print(f"review_job run {run_id} launched ({decision} job {job_id} as {who})")
    elif refused:
        typer.echo(f"refused: {refused}", err=True)
    elif review_run["status"] != "SUCCESS":
        typer.echo(
            f"review_job run {run_id} ended {review_run['status']}: see it in the Dagster UI", err=True
        )
    else:
        assert job is not None
        out.print(f"job {job_id}: {job['state']} by {job['decidedBy']}; status {job['status']}")
    if wait and (refused or review_run["status"] != "SUCCESS"):
        raise typer.Exit(1)


@review_app.command("approve")
def review_approve(
    job_id: JobArgument,
    reason: Annotated[str, typer.Option(help="An optional note kept with the decision.")] = "",
    reviewer: ReviewerOption = None,
    wait: Annotated[bool, typer.Option(help="Wait for review_job's outcome.")] = True,
    dagster_url: DagsterUrlOption = None,
    home: HomeOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """Release the held results: the job ends as it would have without review (70, usually)."""
    _decide(
        job_id, "approve", reviewer, reason, True, wait, dagster_url, home, wants_json(json_output, output)
    )


@review_app.command("reject")
def review_reject(
    job_id: JobArgument,
    reason: Annotated[str, typer.Option(help="Why (required): the consumer reads it in statusDetail.")],
    withhold_logs: Annotated[bool, typer.Option(help="Release no logs either.")] = False,
    reviewer: ReviewerOption = None,
    wait: Annotated[bool, typer.Option(help="Wait for review_job's outcome.")] = True,
    dagster_url: DagsterUrlOption = None,
    home: HomeOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """Delete the held outputs: the job ends 56 with your reason (its logs released unless withheld)."""
    if not reason.strip():
        raise typer.BadParameter("give the reason the consumer will read", param_hint="'--reason'")
    _decide(
        job_id,
        "reject",
        reviewer,
        reason,
        not withhold_logs,
        wait,
        dagster_url,
        home,
        wants_json(json_output, output),
    )
