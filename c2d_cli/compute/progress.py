"""Following a job: its phases (queued, provisioning, running, filtering, publishing, review) with their
state and duration, shown live on a terminal or one line per status change elsewhere.

`filtering` (Ocean's status 50: the environment's output stages, e.g. the leak filter) is shown only
for a job that entered it (the job JSON's `phases.filter`), `review` only for a job held for an
operator's review (55 "Awaiting review") or ended by one (56, 57). A job at 55 has not finished, but
nothing more happens to it until an operator acts, which may take hours: `--wait` stops following
there and says so (exit code 6) instead of polling until its timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from c2d_cli.cli_output import EXIT_TIMEOUT, CliError
from c2d_cli.compute.outcome import awaiting_review, failure_of
from c2d_cli.consumer import POLL_SECONDS, PollTimeout, finished, wait_for_status
from c2d_core.engine import epoch
from c2d_core.status import JobStatus as S
from c2d_core.status import Stage

if TYPE_CHECKING:
    from c2d_cli.provider_client import ProviderClient

# Which phase a failure status belongs to (61 is the filter's when the job entered it: see failed_phase).
FAILED_IN: dict[int, str] = {
    S.QUEUE_EXPIRED: "queued",
    **dict.fromkeys(
        (
            S.PULL_IMAGE_FAILED,
            S.VOLUME_CREATION_FAILED,
            S.CONTAINER_CREATION_FAILED,
            S.DATA_PROVISIONING_FAILED,
            S.ALGORITHM_PROVISIONING_FAILED,
            S.DATA_UPLOAD_FAILED,
        ),
        "provisioning",
    ),
    **dict.fromkeys((S.ALGORITHM_FAILED, S.DISK_QUOTA_EXCEEDED), "running"),
    **dict.fromkeys((S.RESULTS_FETCH_FAILED, S.RESULTS_UPLOAD_FAILED), "publishing"),
    **dict.fromkeys((S.REVIEW_REJECTED, S.REVIEW_EXPIRED), "review"),
}
# The user's phases and the engine's stage each one is (None: no stage of its own: waiting for a slot,
# or for an operator's review after publish).
PHASES: tuple[tuple[str, Stage | None], ...] = (
    ("queued", None),
    ("provisioning", Stage.CONFIGURE),
    ("running", Stage.ALGORITHM),
    ("filtering", Stage.FILTER),
    ("publishing", Stage.PUBLISH),
    ("review", None),
)
# Shown only for the jobs that enter them (the others' rows would read "skipped" on every job).
OPTIONAL_PHASES = frozenset({"filtering", "review"})
REVIEW_STATUSES = frozenset({S.AWAITING_REVIEW, S.REVIEW_REJECTED, S.REVIEW_EXPIRED})
STATUS_PHASE: dict[int, str] = {
    S.WARMING_UP: "queued",
    **dict.fromkeys((S.JOB_STARTED, S.CONFIGURING_VOLUMES, S.PROVISIONING_SUCCESS), "provisioning"),
    S.RUNNING_ALGORITHM: "running",
    S.FILTERING_RESULTS: "filtering",
    S.PUBLISHING_RESULTS: "publishing",
    S.AWAITING_REVIEW: "review",
}
ICONS = {
    "waiting": "[dim]·[/]",
    "active": "[cyan]▶[/]",
    "done": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[dim]-[/]",
    "held": "[yellow]‖[/]",
}


@dataclass
class PhaseRow:
    name: str
    state: str  # waiting | active | done | failed | skipped | held (review: waiting for an operator)
    elapsed: float | None


@dataclass
class PhaseClock:
    """When this client first saw each phase: the fallback for Providers that send no phase times."""

    seen: dict[str, float] = field(default_factory=dict)

    def observe(self, job: dict[str, Any], now: float) -> None:
        phase = STATUS_PHASE.get(int(job.get("status", 0)))
        if phase and phase not in self.seen:
            self.seen[phase] = now


def shown_phases(job: dict[str, Any], clock: PhaseClock | None = None) -> list[tuple[str, Stage | None]]:
    """The phases to show for `job`: every phase but `filtering` and `review`, and those two only when
    the job entered them (its JSON's `phases.filter`, a review status, or a status this client saw)."""
    seen = clock.seen if clock is not None else {}
    phases = job.get("phases") or {}
    status = int(job.get("status", 0))
    entered = {
        "filtering": Stage.FILTER.value in phases or status == S.FILTERING_RESULTS or "filtering" in seen,
        "review": status in REVIEW_STATUSES or "review" in seen,
    }
    return [(name, stage) for name, stage in PHASES if name not in OPTIONAL_PHASES or entered[name]]


def failed_phase(job: dict[str, Any], shown: list[tuple[str, Stage | None]]) -> str | None:
    """The phase a finished job failed in, or None. 61 is an output stage's refusal when the job went
    through the filter phase (publish then ran, storing only the logs), else publish's own failure."""
    status = int(job.get("status", 0))
    if status == S.RESULTS_FETCH_FAILED and any(name == "filtering" for name, _stage in shown):
        return "filtering"
    phase = FAILED_IN.get(status)
    if phase is None and job.get("dateFinished") and failure_of(job):
        phase = "running"
    return phase


def phase_rows(job: dict[str, Any], now: float, clock: PhaseClock | None = None) -> list[PhaseRow]:
    """The job's phases with their state and duration, from the job JSON's `phases` times (server clock).

    A phase has started when its stage has (queued starts at dateCreated, review when publish
    finished); it is done when the next has started or its own finish is recorded. A failure status
    marks the phase it belongs to; a job held at 55 shows its review as `held`.
    """
    clock = clock or PhaseClock()
    shown = shown_phases(job, clock)
    phases = job.get("phases") or {}
    created = epoch(job.get("dateCreated"))
    finished_at = epoch(job.get("dateFinished"))
    publish_done = epoch((phases.get(Stage.PUBLISH) or {}).get("finished"))
    starts: list[float | None] = []
    ends: list[float | None] = []
    for name, stage in shown:
        times = (phases.get(stage) or {}) if stage else {}
        if name == "queued":
            start = created
        elif name == "review":
            start = publish_done
        else:
            start = epoch(times.get("started"))
        starts.append(start if start is not None else clock.seen.get(name))
        ends.append(None if stage is None else epoch(times.get("finished")))
    for index in range(len(shown)):
        later = [s for s in starts[index + 1 :] if s is not None]
        if ends[index] is None and later:
            ends[index] = later[0]
    failed = failed_phase(job, shown)
    held = awaiting_review(job)
    rows = []
    for index, (name, _stage) in enumerate(shown):
        start, end = starts[index], ends[index]
        if start is None:
            state = "skipped" if finished_at is not None else "waiting"
            elapsed = None
        elif end is not None:
            state, elapsed = "done", max(end - start, 0.0)
        elif finished_at is not None:
            state, elapsed = "done", max(finished_at - start, 0.0)
        else:
            state, elapsed = "active", max(now - start, 0.0)
        if name == failed:
            state = "failed"
        elif name == "review" and held:
            state = "held"
        rows.append(PhaseRow(name, state, elapsed))
    return rows


def progress_view(job: dict[str, Any], now: float, clock: PhaseClock) -> Group:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(width=2)
    table.add_column(min_width=13)
    table.add_column(justify="right", min_width=9)
    for row in phase_rows(job, now, clock):
        elapsed = f"{row.elapsed:.1f} s" if row.elapsed is not None else ""
        style = (
            "bold"
            if row.state in ("active", "held")
            else ("dim" if row.state in ("waiting", "skipped") else "")
        )
        table.add_row(ICONS[row.state], Text(row.name, style=style), elapsed)
    created = epoch(job.get("dateCreated"))
    total = (epoch(job.get("dateFinished")) or now) - created if created else 0.0
    header = Text.from_markup(
        f"job [bold]{escape(str(job['jobId']))}[/] · status {job['status']} "
        f"{escape(str(job['statusText']).strip())} · {max(total, 0.0):.1f} s"
    )
    return Group(header, table)


def finished_or_held(job: dict[str, Any]) -> bool:
    """Where following a job stops: it finished, or it waits for an operator's review."""
    return finished(job) or awaiting_review(job)


@dataclass
class LiveProgress:
    """Re-rendered by rich's Live at each refresh, so the running phase's clock ticks between polls."""

    job: dict[str, Any]
    clock: PhaseClock

    def __rich__(self) -> Group:
        return progress_view(self.job, time.time(), self.clock)


def follow_job(
    provider: ProviderClient,
    consumer: str,
    job: dict[str, Any],
    *,
    timeout: float,
    console: Console,
    live: bool,
) -> dict[str, Any]:
    """Poll the job until it finishes or is held for an operator's review (55: nothing more happens
    until an operator acts); a live phase display on a terminal, one line per change elsewhere."""
    clock = PhaseClock()
    job_id = job["jobId"]

    def wait(show: LiveProgress | None = None) -> dict[str, Any]:
        def seen(current: dict[str, Any]) -> None:
            clock.observe(current, time.time())
            if show is not None:
                show.job = current

        started = time.monotonic()

        def changed(current: dict[str, Any]) -> None:
            console.print(
                f"  {time.monotonic() - started:6.1f} s  status {current['status']:>2} "
                f"{escape(str(current['statusText']).strip())}"
            )

        try:
            return wait_for_status(
                provider,
                consumer,
                job_id,
                job=job,
                until=finished_or_held,
                timeout=timeout,
                interval=POLL_SECONDS,
                on_poll=seen,
                on_change=None if show is not None else changed,
            )
        except PollTimeout as timed_out:
            raise CliError(
                f"the job {job_id} is still at status {timed_out.last['status']} after {timeout:.0f} s",
                f"it keeps running: follow it with `c2d compute status {job_id}`, or stop it with "
                f"`c2d compute stop {job_id}`",
                exit_code=EXIT_TIMEOUT,
            ) from None

    if live:
        view = LiveProgress(job, clock)
        with Live(view, console=console, refresh_per_second=8):
            return wait(view)
    final = wait()
    console.print(progress_view(final, time.time(), clock))
    return final
