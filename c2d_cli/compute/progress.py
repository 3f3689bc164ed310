"""Following a job: its phases (queued, provisioning, running, publishing) with their state and duration,
shown live on a terminal or one line per status change elsewhere."""

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
from c2d_cli.compute.outcome import failure_of
from c2d_cli.consumer import POLL_SECONDS, PollTimeout, wait_for_status
from c2d_core.engine import epoch
from c2d_core.status import JobStatus as S
from c2d_core.status import Stage

if TYPE_CHECKING:
    from c2d_cli.provider_client import ProviderClient

# Which phase a failure status belongs to.
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
}
# The user's phases and the engine's stage each one is (None: waiting for a slot).
PHASES: tuple[tuple[str, Stage | None], ...] = (
    ("queued", None),
    ("provisioning", Stage.CONFIGURE),
    ("running", Stage.ALGORITHM),
    ("publishing", Stage.PUBLISH),
)
STATUS_PHASE: dict[int, str] = {
    S.WARMING_UP: "queued",
    **dict.fromkeys((S.JOB_STARTED, S.CONFIGURING_VOLUMES, S.PROVISIONING_SUCCESS), "provisioning"),
    S.RUNNING_ALGORITHM: "running",
    **dict.fromkeys((S.FILTERING_RESULTS, S.PUBLISHING_RESULTS), "publishing"),
}
ICONS = {
    "waiting": "[dim]·[/]",
    "active": "[cyan]▶[/]",
    "done": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[dim]-[/]",
}


@dataclass
class PhaseRow:
    name: str
    state: str  # waiting | active | done | failed | skipped
    elapsed: float | None


@dataclass
class PhaseClock:
    """When this client first saw each phase: the fallback for Providers that send no phase times."""

    seen: dict[str, float] = field(default_factory=dict)

    def observe(self, job: dict[str, Any], now: float) -> None:
        phase = STATUS_PHASE.get(int(job.get("status", 0)))
        if phase and phase not in self.seen:
            self.seen[phase] = now


def phase_rows(job: dict[str, Any], now: float, clock: PhaseClock | None = None) -> list[PhaseRow]:
    """The job's phases with their state and duration, from the job JSON's `phases` times (server clock).

    A phase has started when its stage has (queued starts at dateCreated); it is done when the next has
    started or its own finish is recorded. A failure status marks the phase it belongs to.
    """
    clock = clock or PhaseClock()
    phases = job.get("phases") or {}
    created = epoch(job.get("dateCreated"))
    finished_at = epoch(job.get("dateFinished"))
    starts: list[float | None] = []
    ends: list[float | None] = []
    for name, stage in PHASES:
        times = (phases.get(stage) or {}) if stage else {}
        start = created if stage is None else epoch(times.get("started"))
        starts.append(start if start is not None else clock.seen.get(name))
        ends.append(None if stage is None else epoch(times.get("finished")))
    for index in range(len(PHASES)):
        later = [s for s in starts[index + 1 :] if s is not None]
        if ends[index] is None and later:
            ends[index] = later[0]
    status = int(job.get("status", 0))
    failed_phase = FAILED_IN.get(status)
    if failed_phase is None and job.get("dateFinished") and failure_of(job):
        failed_phase = "running"
    rows = []
    for index, (name, _stage) in enumerate(PHASES):
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
        if name == failed_phase:
            state = "failed"
        rows.append(PhaseRow(name, state, elapsed))
    return rows


def progress_view(job: dict[str, Any], now: float, clock: PhaseClock) -> Group:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(width=2)
    table.add_column(min_width=13)
    table.add_column(justify="right", min_width=9)
    for row in phase_rows(job, now, clock):
        elapsed = f"{row.elapsed:.1f} s" if row.elapsed is not None else ""
        style = "bold" if row.state == "active" else ("dim" if row.state in ("waiting", "skipped") else "")
        table.add_row(ICONS[row.state], Text(row.name, style=style), elapsed)
    created = epoch(job.get("dateCreated"))
    total = (epoch(job.get("dateFinished")) or now) - created if created else 0.0
    header = Text.from_markup(
        f"job [bold]{escape(str(job['jobId']))}[/] · status {job['status']} "
        f"{escape(str(job['statusText']).strip())} · {max(total, 0.0):.1f} s"
    )
    return Group(header, table)


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
    """Poll the job until it finishes; a live phase display on a terminal, one line per change elsewhere."""
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
