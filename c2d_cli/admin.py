"""`c2d admin review list|show|download|approve|reject`: an operator's side of the review gate.

Operator credentials, never a consumer's key: the Dagster webserver's GraphQL API the operator can
reach (`--dagster-url`, env C2D_DAGSTER_URL, else the embedded stack's), the operator's identity
(`--reviewer`, env C2D_REVIEWER, else the login name), and, to read held results, the result store as
the engine's settings configure it (C2D_RESULTS_DIR, C2D_S3_*, C2D_IPFS_API_URL; the embedded stack's
folder by default). Approving or rejecting launches `review_job` (c2d_defs.jobs.review) and waits for
its outcome; the engine checks the job again there, so these commands decide nothing themselves.

What the commands know of a job is what the webserver's GraphQL API shows of its run: the visible
tags only (Dagster leaves out every tag under `.dagster/`, where most of the job's state lives). That
is a choice: an operator may have a webserver URL and nothing else (no run storage credentials, no
dagster.yaml), and the commands must say the same thing whichever way they are pointed. So they read
only what is visible on purpose: the review's tags (`c2d/review/...`, the outcome approval gives
included), the job's status and `c2d/outcome` (written with the finish date; "refused" on a run the
engine refused), and the held files from the result store's held manifest, never from a tag.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from c2d_cli.cli_output import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    CliError,
    JsonOption,
    OutputOption,
    print_error,
    print_json,
    stderr_console,
    stdout_console,
    wants_json,
)
from c2d_cli.stack_paths import find_stack_home, read_stack_json
from c2d_core import engine, review
from c2d_core.workflow import JOB_ID_PATTERN

admin_app = typer.Typer(
    help="Operator commands (Dagster credentials, not a consumer's key).", no_args_is_help=True
)
review_app = typer.Typer(
    help="Jobs held for review (status 55): list, inspect, download, approve, reject.", no_args_is_help=True
)
admin_app.add_typer(review_app, name="review")
out = stdout_console()
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
# How long approve/reject wait for review_job (it copies the held results: seconds, usually).
DECISION_WAIT_SECONDS = 300.0
URL_HINT = (
    "point at the Dagster webserver with --dagster-url URL or C2D_DAGSTER_URL=URL (e.g. "
    "http://127.0.0.1:3000), or start the embedded stack with `c2d dev up`"
)

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


def _job_id(value: str) -> str:
    job_id = value.strip().lower()
    if not JOB_ID_PATTERN.match(job_id):
        raise typer.BadParameter(f"{value[:80]!r} is not a job id: the Provider's jobId is 32 hex characters")
    return job_id


JobArgument = Annotated[
    str, typer.Argument(metavar="JOB", help="The job id (the Provider's jobId).", callback=_job_id)
]

_RUNS = """
query C2dReviewRuns($filter: RunsFilter!, $cursor: String, $limit: Int) {
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
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


class AdminError(CliError):
    """A failure an operator can act on: what went wrong, then what to do."""


# The runs of one query come in pages of this many (Dagster's GraphQL API pages by run id).
PAGE = 200


class Engine:
    """The Dagster webserver an operator reaches, over its GraphQL API."""

    def __init__(self, url: str, source: str, timeout: float = 30) -> None:
        import httpx  # here, not at the top: `c2d --help` must not pay for it

        self.url = url.rstrip("/")
        self.source = source
        self.timeout = timeout
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _unusable(self, what: str) -> AdminError:
        return AdminError(what, f"the URL came from {self.source}; {URL_HINT}")

    def query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            answer = self.http.post(f"{self.url}/graphql", json={"query": query, "variables": variables})
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise self._unusable(f"{self.url!r} is not an http(s) URL of a Dagster webserver") from None
        except httpx.TimeoutException:
            raise self._unusable(
                f"the Dagster webserver at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError:
            raise self._unusable(f"cannot reach the Dagster webserver at {self.url}") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not (body.get("errors") or answer.status_code == 200):
            raise self._unusable(
                f"{self.url}/graphql answered HTTP {answer.status_code}"
                + (", not JSON" if answer.status_code == 200 else "")
                + ": it is not a Dagster webserver's GraphQL API"
            )
        if body.get("errors"):
            message = str(body["errors"][0].get("message", body["errors"][0]))[:300]
            raise AdminError(
                f"the Dagster webserver at {self.url} refused the query: {message}",
                "is it the webserver of this deployment's Dagster (the version c2d is built with)?",
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise self._unusable(f"{self.url}/graphql answered without data: not a Dagster GraphQL API")
        return data

    def runs(self, job_name: str, tags: dict[str, str]) -> list[dict[str, Any]]:
        run_filter = {"pipelineName": job_name, "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            variables = {"filter": run_filter, "cursor": cursor, "limit": PAGE}
            result = self.query(_RUNS, variables)["runsOrError"]
            if result.get("__typename") != "Runs":
                raise AdminError(f"the Dagster webserver could not list runs: {result.get('message')}")
            page = [_run(item) for item in result["results"]]
            found.extend(page)
            if len(page) < PAGE:
                return found
            cursor = page[-1]["runId"]

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's own compute run (the first of its id; re-executions and refused runs skipped)."""
        runs = [run for run in self.runs(engine.JOB_NAME, {engine.JOB_ID: job_id}) if own_run(run["tags"])]
        if not runs:
            raise AdminError(
                f"no compute job {job_id} on the Dagster webserver at {self.url}",
                "check the id (the Provider's jobId), and that this is the webserver of the Provider that "
                f"ran it (the URL came from {self.source}); `c2d admin review list --all` lists held jobs",
            )
        return min(runs, key=lambda run: run["creationTime"])

    def run(self, run_id: str) -> dict[str, Any]:
        result = self.query(_RUN, {"runId": run_id})["runOrError"]
        if result.get("__typename") != "Run":
            raise AdminError(f"reading run {run_id} failed: {result.get('message') or result['__typename']}")
        return _run(result)

    def launch_review(
        self,
        job_id: str,
        decision: str,
        reviewer: str,
        reason: str,
        release_logs: bool,
        release_algorithm_log: bool = False,
    ) -> str:
        config: dict[str, Any] = {
            "job_id": job_id,
            "decision": decision,
            "reviewer": reviewer,
            "reason": reason,
            "release_logs": release_logs,
            "release_algorithm_log": release_algorithm_log,
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
        kind = result.get("__typename")
        if kind != "LaunchRunSuccess":
            errors = "; ".join(item["message"] for item in result.get("errors") or [])
            hint = (
                f"the webserver has no {review.REVIEW_JOB_NAME} in code location {engine.LOCATION}: "
                "deploy this version of c2d_defs there"
                if kind in ("PipelineNotFoundError", "RepositoryLocationNotFound", "RepositoryNotFoundError")
                else ""
            )
            raise AdminError(
                f"the Dagster webserver did not launch {review.REVIEW_JOB_NAME}: "
                + (errors or str(result.get("message") or kind)),
                hint,
            )
        return str(result["run"]["runId"])


def _run(raw: dict[str, Any]) -> dict[str, Any]:
    # current_tags: a run written before the state tags were hidden shows them under their old
    # visible names; read those as today's.
    tags = {str(item["key"]): str(item["value"]) for item in raw.get("tags") or []}
    return {**raw, "tags": engine.current_tags(tags)}


def own_run(tags: dict[str, str]) -> bool:
    """engine.job_run on the tags GraphQL shows: the REFUSED tag is hidden from it, the visible outcome
    a refused run gets with it ("refused") is not. A launchpad copy of a held run carries the job's
    visible tags, its review state included, and is refused: without this it would be listed as the
    job a second time."""
    return engine.job_run(tags) and tags.get(engine.OUTCOME) != engine.REFUSED_OUTCOME


def _stack(home: Path | None) -> tuple[Path, dict[str, Any] | None]:
    found = find_stack_home(home)[0].resolve()
    return found, read_stack_json(found)


def _engine(url: str | None, home: Path | None) -> Engine:
    if url:
        return Engine(url, "--dagster-url / C2D_DAGSTER_URL")
    found, recorded = _stack(home)
    if not recorded or not recorded.get("webserver_url"):
        raise AdminError(f"no Dagster webserver to ask: no embedded stack runs at {found}", URL_HINT)
    return Engine(str(recorded["webserver_url"]), f"the embedded stack's stack.json in {found}")


STORE_HINT = (
    "held results are read from the result store the engine's settings configure: --home DIR (the "
    "embedded stack's folder), or C2D_RESULT_STORE with C2D_RESULTS_DIR, C2D_S3_* or C2D_IPFS_API_URL"
)


def _store(home: Path | None) -> tuple[Any, str]:
    """The result store and a description of it for messages: --home's stack when given, else the
    store this shell's settings configure (C2D_HOME / C2D_RESULTS_DIR), else the stack found."""
    from c2d_core.result_stores import result_store_from_settings, store_options
    from c2d_core.settings import EngineSettings, engine_settings

    settings = engine_settings()
    if home is not None or not (os.environ.get("C2D_HOME") or os.environ.get("C2D_RESULTS_DIR")):
        found, recorded = _stack(home)
        if home is not None or recorded is not None:
            settings = EngineSettings(home=found)
    kind = (os.environ.get("C2D_RESULT_STORE") or "local").strip() or "local"
    try:
        store = result_store_from_settings(kind, **store_options(settings))
    except Exception as error:  # a registered store may fail in its own way: say it, no traceback
        raise AdminError(f"the {kind} result store cannot be opened: {error}", STORE_HINT) from None
    if kind == "local":
        return store, f"the local result store at {settings.resolved_results_dir}"
    if kind == "s3":
        return store, f"the S3 result store (bucket {settings.s3.bucket})"
    return store, f"the {kind} result store"


def held_manifest(store: Any, where: str, job_id: str) -> list[dict[str, Any]]:
    """The held results' manifest (with store locations: for this process only, never printed)."""
    from c2d_core.results import MANIFEST_NAME

    try:
        with store.open(f"{review.held_key(job_id)}/{MANIFEST_NAME}") as handle:
            entries = json.load(handle)
    except FileNotFoundError:
        raise AdminError(
            f"job {job_id} holds no results for review in {where}",
            "only a job awaiting review (status 55, `c2d admin review list`) has held results; a decision "
            f"deletes them (approved results are the consumer's, through the Provider); {STORE_HINT}",
        ) from None
    except Exception as error:  # any store's read error (S3, IPFS, a registered one): a sentence
        raise AdminError(
            f"the held manifest of job {job_id} cannot be read from {where}: {error}", STORE_HINT
        ) from None
    if not isinstance(entries, list):
        raise AdminError(f"the held manifest of job {job_id} in {where} is not a list of results")
    return [entry for entry in entries if isinstance(entry, dict)]


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """An AdminError becomes one message on stderr (the problem, then what to do) and its exit code."""
    try:
        yield
    except CliError as error:
        print_error(stderr_console(), error)
        raise typer.Exit(error.exit_code) from None


def _when(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value is not None else "-"


def _age(seconds: float) -> str:
    """A duration as an operator reads it at a glance: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _until(deadline: float | None, now: float) -> str:
    if deadline is None:
        return "none"
    return f"in {_age(deadline - now)}" if deadline > now else "passed"


def _short_address(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


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
    with _reported():
        dagster = _engine(dagster_url, home)
        try:
            states = ["awaiting", "approved", "rejected", "expired"] if all_states else ["awaiting"]
            runs = [run for state in states for run in dagster.runs(engine.JOB_NAME, {review.STATE: state})]
        finally:
            dagster.close()
    # One row per job, its own (oldest) run: a launchpad copy still queued carries the job's visible
    # tags and is refused only once its configure op runs. Without --all, only jobs still awaiting: a
    # job that ended undecided keeps state=awaiting, but approve would refuse it.
    jobs: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda run: run["creationTime"]):
        if own_run(run["tags"]) and (all_states or review.ReviewView(run["tags"]).awaiting):
            jobs.setdefault(run["tags"].get(engine.JOB_ID, run["runId"]), run)
    rows = sorted((_review_row(run) for run in jobs.values()), key=lambda r: r["requestedAt"] or 0)
    if json_output:
        print_json(rows)
        return
    if not rows:
        out.print("no job is awaiting review" if not all_states else "no job was held for review")
        return
    now = time.time()
    table = Table(box=box.SIMPLE, pad_edge=False)
    # The job id is what an operator copies into the next command: never folded or cut. Times are
    # ages (exact ones: show, -o json); the state and who decided only with --all (the queue has
    # neither), so the queue fits 80 columns.
    table.add_column("job", no_wrap=True, min_width=32)
    if all_states:
        table.add_column("state", no_wrap=True)
    table.add_column("owner", no_wrap=True)
    table.add_column("environment", overflow="fold", min_width=8)
    table.add_column("held", no_wrap=True, justify="right")
    table.add_column("decided by" if all_states else "deadline", overflow="fold", min_width=6)
    for row in rows:
        last = row["decidedBy"] or "-" if all_states else _until(row["deadline"], now)
        table.add_row(
            row["jobId"],
            *([row["state"]] if all_states else []),
            _short_address(row["owner"]),
            row["environment"],
            _age(now - row["requestedAt"]) if row["requestedAt"] else "-",
            last,
        )
    out.print(table)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "location"}


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
    with _reported():
        dagster = _engine(dagster_url, home)
        try:
            run = dagster.job(job_id)
        finally:
            dagster.close()
    row = _review_row(run)
    view = review.ReviewView(run["tags"])
    outcome = None
    held: list[dict[str, Any]] = []
    notes: list[str] = []
    if view.awaiting:
        if review.OUTCOME in run["tags"]:
            outcome = view.summary()["outcomeIfApproved"]
        else:
            # Parked before the outcome was a visible tag: unknown here, and not to be guessed as 70.
            notes.append(
                "the outcome approval gives is not shown by this webserver (the job was held before it "
                "was recorded visibly): approval ends the job as it would have ended without review"
            )
        try:
            store, where = _store(home)
            held = [_public(entry) for entry in held_manifest(store, where, job_id)]
        except AdminError as error:
            # The held list is the store's manifest (the run's copy of it is a hidden tag): without
            # the store, say so; the Dagster UI's publish step metadata lists the held files too.
            notes.append(
                f"the held results cannot be read here: {error.message} (the publish step's output "
                "metadata in the Dagster UI lists them)"
            )
    elif view.state == "awaiting":
        notes.append(f"job {job_id} has ended without a decision: it is no longer awaiting review")
    elif not view.state:
        notes.append(
            f"job {job_id} is not held for review (its environment does not require review, or it ended "
            "before its results were stored)"
        )
    note = "; ".join(notes)
    document = {**row, "outcomeIfApproved": outcome, "held": held, "note": note or None}
    if json_output:
        print_json(document)
        return
    for key in ("jobId", "state", "owner", "environment", "status", "decidedBy", "reason"):
        if document.get(key) not in (None, ""):
            out.print(f"[bold]{key}[/bold] {document[key]}", highlight=False)
    if row["requestedAt"] is not None:
        out.print(f"[bold]held since[/bold] {_when(row['requestedAt'])}")
    if row["deadline"]:
        out.print(f"[bold]deadline[/bold] {_when(row['deadline'])}")
    if row["decidedAt"]:
        out.print(f"[bold]decided at[/bold] {_when(row['decidedAt'])}")
    if outcome is not None:
        detail = f": {outcome['detail']}" if outcome["detail"] else ""
        out.print(f"[bold]if approved[/bold] {outcome['status']} {outcome['statusText'].strip()}{detail}")
    if note:
        out.print(note, highlight=False)
    if held:
        table = Table(box=box.SIMPLE)
        table.add_column("index", justify="right")
        for column in ("filename", "type"):
            table.add_column(column, overflow="fold")
        table.add_column("filesize", justify="right")
        table.add_column("sha256", no_wrap=True)
        # A narrow terminal gets the digests' first 16 digits (-o json and download have them whole).
        whole = out.width >= 130
        for entry in held:
            digest = str(entry.get("sha256", ""))
            table.add_row(
                *(str(entry.get(key, "")) for key in ("index", "filename", "type", "filesize")),
                digest if whole else f"{digest[:16]}…",
            )
        out.print(table)


def _download_one(store: Any, where: str, job_id: str, entry: dict[str, Any], target: Path) -> dict[str, Any]:
    """Copy one held result into `target` through a partial file, renamed into place only when its
    sha256 and size match the held manifest's."""
    import hashlib

    index = entry.get("index")
    name = Path(str(entry.get("filename") or "")).name
    if name in ("", ".", ".."):
        name = f"result-{index}"
    path = target / name
    partial = target / f".{name}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with store.open(str(entry["location"])) as source, partial.open("wb") as sink:
            for chunk in iter(lambda: source.read(1024 * 1024), b""):
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
    except Exception as error:  # the store's or the disk's: one sentence, nothing half-written kept
        partial.unlink(missing_ok=True)
        raise AdminError(
            f"held result {index} ({name}) of job {job_id} could not be copied: {error}"
        ) from None
    if digest.hexdigest() != entry.get("sha256") or size != entry.get("filesize"):
        partial.unlink(missing_ok=True)
        raise AdminError(
            f"held result {index} ({name}) in {where} does not match the held manifest (sha256 or size "
            "differs): it was not written",
            "the held copy changed after publish stored it: do not approve the job; reject it and look "
            "at the store",
        )
    partial.replace(path)
    return {**_public(entry), "path": str(path)}


@review_app.command("download")
def review_download(
    job_id: JobArgument,
    index: Annotated[
        list[int] | None, typer.Argument(help="Indexes to fetch (default: all held results).")
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Where to write them (into DIR/JOB/).")
    ] = Path("."),
    home: HomeOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """Fetch a held job's results from the result store (no consumer key), each sha256 checked."""
    json_output = wants_json(json_output, output)
    with _reported():
        store, where = _store(home)
        entries = held_manifest(store, where, job_id)
        indexes = set(index or [])
        wanted = [entry for entry in entries if not indexes or entry.get("index") in indexes]
        if indexes and len(wanted) != len(indexes):
            missing = sorted(indexes - {entry.get("index") for entry in wanted})
            raise AdminError(
                f"job {job_id} holds no result {', '.join(map(str, missing))}: its held results are "
                f"0..{len(entries) - 1}",
                f"`c2d admin review show {job_id}` lists them",
            )
        target = directory / job_id
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AdminError(f"cannot create {target}: {error.strerror}") from None
        saved = []
        for entry in wanted:
            saved.append(_download_one(store, where, job_id, entry, target))
            if not json_output:
                out.print(
                    f"{saved[-1]['path']} ({entry.get('filesize')} bytes, {entry.get('type')}, sha256 ok)",
                    highlight=False,
                )
    if json_output:
        print_json(saved)


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
    release_algorithm_log: bool = False,
) -> None:
    who = (reviewer or "").strip() or getpass.getuser()
    with _reported():
        dagster = _engine(dagster_url, home)
        try:
            # Checked here first so a typo or a decided job does not leave a failed review run; the
            # engine checks again (a race with another reviewer or the deadline is decided there).
            problem = review.decision_problem(dagster.job(job_id)["tags"], decision, time.time())
            if problem:
                raise AdminError(f"refused: {problem}", f"`c2d admin review show {job_id}` shows its review")
            run_id = dagster.launch_review(job_id, decision, who, reason, release_logs, release_algorithm_log)
            review_run: dict[str, Any] = {"runId": run_id, "status": "QUEUED", "tags": {}}
            deadline = time.monotonic() + DECISION_WAIT_SECONDS
            while wait and review_run["status"] not in ENDED and time.monotonic() < deadline:
                time.sleep(0.5)
                review_run = dagster.run(run_id)
            if wait and review_run["status"] not in ENDED:
                raise AdminError(
                    f"review_job run {run_id} has not ended after {DECISION_WAIT_SECONDS:g} s "
                    f"(it is {review_run['status']})",
                    f"it goes on: follow it in the Dagster UI (Runs), or `c2d admin review show {job_id}`",
                    exit_code=EXIT_TIMEOUT,
                )
            job = _review_row(dagster.job(job_id)) if wait else None
        finally:
            dagster.close()
    refused = review_run["tags"].get(review.REVIEW_REFUSED)
    document = {"reviewRun": run_id, "runStatus": review_run["status"], "refused": refused, "job": job}
    if json_output:
        print_json(document)
    elif not wait:
        out.print(f"review_job run {run_id} launched ({decision} job {job_id} as {who})", highlight=False)
    elif refused:
        print_error(stderr_console(), AdminError(f"refused by review_job: {refused}"))
    elif review_run["status"] != "SUCCESS":
        print_error(
            stderr_console(),
            AdminError(
                f"review_job run {run_id} ended {review_run['status']}",
                "its logs in the Dagster UI (Runs) say why; the job still awaits review",
            ),
        )
    else:
        assert job is not None
        out.print(
            f"job {job_id}: {job['state']} by {job['decidedBy']}; status {job['status']}", highlight=False
        )
    if wait and (refused or review_run["status"] != "SUCCESS"):
        raise typer.Exit(EXIT_FAILED)


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
    release_algorithm_log: Annotated[
        bool,
        typer.Option(help="Release the algorithm's log too (read it first: it may hold what you reject)."),
    ] = False,
    reviewer: ReviewerOption = None,
    wait: Annotated[bool, typer.Option(help="Wait for review_job's outcome.")] = True,
    dagster_url: DagsterUrlOption = None,
    home: HomeOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """Delete the held outputs: the job ends 56 with your reason; the engine's logs are released unless
    withheld, the algorithm's log only with --release-algorithm-log."""
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
        release_algorithm_log,
    )
