"""The stage watchdog: no compute job stays "running" once its run is dead or stuck.

Each stage has its own deadline (configure: C2D_CONFIGURE_DEADLINE, algorithm: the environment's
maxJobDuration, publish: C2D_PUBLISH_DEADLINE), which the pod runners enforce on the pods. What they
cannot catch is the run worker itself dying (kill -9, an OOM kill, a lost node) or hanging: the job's
c2d status then never moves again. The `stage_watchdog` sensor finds such jobs:

- a `compute_job` run that ended (FAILURE, CANCELED: the code server or run monitoring saw its worker
  die, or `dagster/max_runtime` fired) while the job has no `.dagster/c2d/date_finished`;
- a run still going whose current stage (from the `.dagster/c2d/phase/<p>/started` tags) is older than that
  stage's deadline plus C2D_WATCHDOG_GRACE; the sensor terminates that run first.

It records Ocean's closest failure status at once (configure: 31, algorithm: 41, publish: 62) with a
detail saying what happened, then asks for one `salvage_job` run per job (a run key makes concurrent
or repeated ticks ask only once): at once when the run's worker is gone, else (a terminated run whose
worker may still be publishing) once its current stage is past its deadline plus the grace. The
salvage op (c2d_defs.jobs.salvage) kills what is left of the job's pods, runs the publish stage on
the job volume if it still exists (the same `publish_job` the publish op runs, so the consumer gets
the configure and algorithm logs and any outputs), releases the volume and writes the job's final
status and finish date. A job that never reached its configure stage only gets its final status.
Both deployments run this: the pod runner resource hides whether pods are sandboxes or Kubernetes
Jobs. The tick itself only tags verdicts and terminates stuck runs; it never publishes or deletes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from c2d_core import engine
from c2d_core.environments import Environment, Environments, UnknownEnvironmentError, stage_deadline
from c2d_core.review import ReviewView
from c2d_core.settings import DEFAULT_WATCHDOG_INTERVAL, EngineSettings, engine_settings
from c2d_core.status import JobStatus, Stage
from c2d_defs.resources import ComputeEnvironments
from c2d_defs.tag_upgrade import upgrade_legacy_tags

SALVAGE_JOB_NAME = "salvage_job"
WATCHDOG = engine.WATCHDOG
SALVAGE_OF = "c2d/salvage_of"  # on a salvage run: the compute run it finishes
# Ended runs are looked at for this long after their last update; older ones were dealt with.
ENDED_LOOKBACK = timedelta(days=1)
RUNS_PER_TICK = 500


@dataclass(frozen=True)
class StagePosition:
    """Where a job is: the stage it is in (or waits to enter) and since when (epoch seconds)."""

    stage: Stage
    since: float


def current_stage(tags: Mapping[str, str]) -> StagePosition | None:
    """The stage a job is in from its phase tags; None before its configure stage started.

    Between two stages (one finished, the next not started) the job counts as in the next one,
    since the previous one's end: the gap is part of the next stage's deadline.
    """
    last: StagePosition | None = None
    for stage, (started, finished) in engine.JobTags.from_tags(tags).phases.items():
        if started is not None and finished is None:
            return StagePosition(stage, started)
        if finished is not None:
            last = StagePosition(stage.next, finished)
    return last


def results_stored(tags: Mapping[str, str]) -> bool:
    """The publish stage stored the job's results (and recorded them) before its run ended: only
    the results asset and the final status write were left. Nothing must be published again."""
    return engine.phase_tag(Stage.PUBLISH, "finished") in tags and engine.RESULTS in tags


def stored_outcome(tags: Mapping[str, str], stage: StagePosition | None) -> JobStatus:
    """The status of a job whose results were stored: what the publish stage was about to write
    (60 "Publishing results" becomes 70; a failure status it carried stays)."""
    current = engine.JobTags.from_tags(tags).status
    if current is None:
        return failure_status(stage)
    return JobStatus.JOB_FINISHED if current is JobStatus.PUBLISHING_RESULTS else current


def failure_status(stage: StagePosition | None) -> JobStatus:
    """Ocean's closest failure code for a job ended in `stage` (None: before configure started)."""
    return stage.stage.failure if stage else JobStatus.DATA_PROVISIONING_FAILED


@dataclass(frozen=True)
class Verdict:
    run_id: str
    job_id: str
    stage: StagePosition | None
    status: JobStatus
    detail: str
    terminate: bool  # the run is still going: terminate it first
    recorded: bool = False  # an earlier tick tagged the verdict already
    # Salvage now: the run ended and nothing of its worker can still be publishing (see `judge`).
    salvage: bool = True


def where(stage: StagePosition | None) -> str:
    return f"during its {stage.stage} stage" if stage else "before its configure stage started"


@dataclass(frozen=True)
class EndCause:
    """Why a compute run ended, as the start of a sentence, and whether its worker is gone for sure.

    A terminated run (a stop, `dagster/max_runtime`, the watchdog) is reported ended while its worker
    may still be running the stage's interrupt handler, which publishes; salvaging it then would kill
    that publish pod and publish twice. Only a worker that died, or that ended the run itself, is gone.
    """

    sentence: str
    worker_gone: bool


WORKER_DIED = EndCause("the job's run worker died", worker_gone=True)
# What Dagster writes when the worker process is gone: the code server that spawned it (local) and
# run monitoring's health check of the run pod (Kubernetes).
_WORKER_DEATH_MARKS = ("Run execution process for", "Detected run worker status")


def run_end_cause(instance: dg.DagsterInstance, run_id: str) -> EndCause:
    """Why a compute run ended without publishing, from its event log."""
    events = instance.all_logs(
        run_id,
        of_type={
            dg.DagsterEventType.STEP_FAILURE,
            dg.DagsterEventType.RUN_FAILURE,
            dg.DagsterEventType.RUN_CANCELING,
            dg.DagsterEventType.RUN_CANCELED,
            dg.DagsterEventType.ENGINE_EVENT,
        },
    )
    messages = [entry.message or "" for entry in events]
    if any(mark in message for message in messages for mark in _WORKER_DEATH_MARKS):
        return WORKER_DIED
    if any("maximum runtime" in message for message in messages):
        return EndCause(f"the job ran past its {engine.MAX_RUNTIME} and its run was ended", worker_gone=False)
    if any("seconds to cancel" in message for message in messages):
        return EndCause(
            "the job's run did not stop within run monitoring's cancel timeout", worker_gone=False
        )
    for entry in events:
        event = entry.dagster_event
        if event is not None and event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error if event.step_failure_data else None
            while error is not None and error.cause is not None:  # Dagster wraps the op's own error
                error = error.cause
            # The error's type only: its text can name an endpoint, a host path or an RPC node, and
            # this sentence reaches the consumer as statusDetail.
            reason = error.cls_name if error is not None and error.cls_name else "an error"
            return EndCause(f"the engine failed ({reason})", worker_gone=True)  # the worker ended the run
    if any(entry.dagster_event_type == dg.DagsterEventType.RUN_CANCELED for entry in events):
        return EndCause("the job was stopped but its run ended before publishing", worker_gone=True)
    return EndCause("the job's run ended", worker_gone=False)


def judge(
    run: dg.DagsterRun,
    *,
    environments: Environments,
    settings: EngineSettings,
    now: float,
    cause: EndCause = WORKER_DIED,
) -> Verdict | None:
    """What the watchdog does about one compute run: nothing (None), or end its job. `cause` is why
    an ended run ended (`run_end_cause`).

    An ended run is salvaged at once when its worker is gone. One whose worker may still be running
    an interrupt handler (terminated: a stop, max_runtime, run monitoring's cancel timeout) gets its
    verdict tagged but is salvaged only once its current stage (the handler's publish, usually) is
    past that stage's deadline plus the grace: the handler finishes the job itself before that.
    """
    tags = run.tags
    job_id = tags.get(engine.JOB_ID, "")
    if not job_id or engine.DATE_FINISHED in tags or not engine.job_run(tags) or ReviewView(tags).awaiting:
        # finished properly (publish's last write), expired in the queue, not its job's run (a
        # refused re-execution holds its parent's tags: salvaging it would publish over the job's),
        # or parked by the review gate (its run ended on purpose; review_job or expiry ends the job).
        return None
    stage = current_stage(tags)
    status = failure_status(stage)
    if WATCHDOG not in tags and results_stored(tags):
        status = stored_outcome(tags, stage)
    if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        if stage is None and run.status == dg.DagsterRunStatus.CANCELED:
            return None  # stopped (or expired) while queued: nothing ran, nothing to publish
        sentence = cause.sentence
        if cause is not WORKER_DIED and (
            tags.get(engine.STOP_REQUESTED) == "1" or run.status == dg.DagsterRunStatus.CANCELED
        ):
            sentence = "the job was stopped but its run ended before publishing"
        detail = tags.get(WATCHDOG) or f"{sentence} {where(stage)} (run {run.status.value})"
        in_time = stage is not None and now - stage.since <= _limit(stage, tags, environments, settings)
        return Verdict(
            run.run_id,
            job_id,
            stage,
            status,
            detail,
            terminate=False,
            recorded=WATCHDOG in tags,
            salvage=cause.worker_gone or not in_time,
        )
    if run.status != dg.DagsterRunStatus.STARTED or stage is None:
        return None  # queued or starting: the queue watchdog and run monitoring look after those
    limit = _limit(stage, tags, environments, settings)
    if now - stage.since <= limit:
        return None
    if WATCHDOG in tags:
        # Judged by an earlier tick whose terminate did not take (a terminated run is CANCELING, not
        # STARTED): terminate again. Run monitoring ends a run that ignores the terminate.
        return Verdict(
            run.run_id, job_id, stage, status, tags[WATCHDOG], terminate=True, recorded=True, salvage=False
        )
    detail = (
        f"the job's {stage.stage} stage made no progress for {now - stage.since:.0f} s, past its "
        f"deadline of {limit - settings.watchdog_grace} s plus a grace of {settings.watchdog_grace} s"
    )
    return Verdict(run.run_id, job_id, stage, status, detail, terminate=True, salvage=False)


def _limit(
    stage: StagePosition, tags: Mapping[str, str], environments: Environments, settings: EngineSettings
) -> int:
    """How long a job may stay in `stage`: its deadline plus the watchdog's grace."""
    try:
        environment: Environment | None = environments.get(tags.get(engine.ENVIRONMENT, ""))
    except UnknownEnvironmentError:
        environment = None
    return stage_deadline(stage.stage, environment, settings) + settings.watchdog_grace


def _current(runs: Sequence[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """The runs with their tags read as today's engine names them (engine.current_tags): a job that
    finished before the upgrade is finished, not lost."""
    return [run.with_tags(engine.current_tags(run.tags)) for run in runs]


def find_stuck_jobs(
    instance: dg.DagsterInstance, environments: Environments, settings: EngineSettings, now: float
) -> list[Verdict]:
    """Every compute job the watchdog must end now."""
    going = _current(
        instance.get_runs(
            filters=dg.RunsFilter(job_name=engine.JOB_NAME, statuses=[dg.DagsterRunStatus.STARTED]),
            limit=RUNS_PER_TICK,
        )
    )
    ended = _current(
        instance.get_runs(
            filters=dg.RunsFilter(
                job_name=engine.JOB_NAME,
                statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
                updated_after=datetime.fromtimestamp(now, UTC) - ENDED_LOOKBACK,
            ),
            limit=RUNS_PER_TICK,
        )
    )
    verdicts = []
    for run in going:
        verdict = judge(run, environments=environments, settings=settings, now=now)
        if verdict is not None:
            verdicts.append(verdict)
    for run in ended:
        if engine.DATE_FINISHED in run.tags or ReviewView(run.tags).awaiting:
            continue  # finished, or held for review: no need to read its events
        if run.status == dg.DagsterRunStatus.CANCELED and current_stage(run.tags) is None:
            continue  # stopped while queued: nothing to do (see `judge`)
        # Read each tick, even once judged: whether the worker is gone decides when to salvage.
        cause = run_end_cause(instance, run.run_id)
        verdict = judge(run, environments=environments, settings=settings, now=now, cause=cause)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


def record_verdict(instance: dg.DagsterInstance, verdict: Verdict) -> bool:
    """Tag the job's failure status (not yet its finish date: the salvage run writes that, with the
    results) and, for a run still going, terminate it. False (nothing done) when the job finished
    since it was judged: its own final status stands."""
    run = instance.get_run_by_id(verdict.run_id)
    if run is None or engine.DATE_FINISHED in run.tags:
        return False
    instance.add_run_tags(
        verdict.run_id,
        {
            engine.STATUS: str(int(verdict.status)),
            engine.STATUS_TEXT: verdict.status.text,
            engine.STATUS_DETAIL: verdict.detail[:1000],
            WATCHDOG: verdict.detail[:1000],
        },
    )
    if verdict.terminate:
        # Through the coordinator, as the Dagster UI's terminate: the run's worker is told to stop,
        # and run monitoring's cancel timeout ends a run whose worker no longer answers.
        instance.run_coordinator.cancel_run(verdict.run_id)
    return True


def salvage_request(verdict: Verdict) -> dg.RunRequest:
    return dg.RunRequest(
        # One salvage per compute run, however many ticks (or daemons) see it.
        run_key=f"salvage:{verdict.run_id}",
        run_config={"ops": {"salvage": {"config": {"run_id": verdict.run_id}}}},
        # Ahead of queued compute jobs: it finishes a job the consumer is already waiting on.
        tags={SALVAGE_OF: verdict.run_id, "dagster/priority": "10"},
    )


def _stage_watchdog_tick(
    context: dg.SensorEvaluationContext, environments: ComputeEnvironments
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    settings = engine_settings()  # at the tick, never when the code location loads
    upgraded, _ = upgrade_legacy_tags(context.instance)
    if upgraded:
        context.log.info(f"{upgraded} run(s) from before the upgrade now hold their job state's current tags")
    verdicts = find_stuck_jobs(context.instance, environments.load(), settings, time.time())
    for verdict in verdicts:
        if not verdict.recorded:
            context.log.warning(f"ending job {verdict.job_id} (run {verdict.run_id}): {verdict.detail}")
        try:
            if not verdict.recorded:
                if not record_verdict(context.instance, verdict):
                    continue
            elif verdict.terminate:
                context.log.warning(f"terminating the run {verdict.run_id} of job {verdict.job_id} again")
                context.instance.run_coordinator.cancel_run(verdict.run_id)
        except Exception as error:  # one run's trouble (a failed terminate) must not stop the others
            context.log.error(f"could not end job {verdict.job_id} (run {verdict.run_id}): {error!r}")
            continue
        if verdict.salvage:
            yield salvage_request(verdict)
        elif not verdict.terminate:
            context.log.info(
                f"job {verdict.job_id} (run {verdict.run_id}): its run was terminated and its worker may "
                f"still be publishing; salvaged if its {verdict.stage.stage if verdict.stage else 'current'} "
                "stage outlives its deadline plus the grace"
            )
    if not verdicts:
        yield dg.SkipReason("no compute job is stuck or lost its run")


def stage_watchdog_sensor(minimum_interval_seconds: int) -> dg.SensorDefinition:
    """The stage watchdog, ticking at most every `minimum_interval_seconds` (definitions.py passes
    C2D_WATCHDOG_INTERVAL when it builds the code location)."""
    return dg.sensor(
        name="stage_watchdog",
        description="End compute jobs whose run worker died or whose stage outlived its deadline plus a "
        "grace: failure status, pods killed, logs published (through salvage_job).",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        job_name=SALVAGE_JOB_NAME,
    )(_stage_watchdog_tick)


# At the default interval, for code that evaluates a tick itself; the code location builds its own.
stage_watchdog = stage_watchdog_sensor(DEFAULT_WATCHDOG_INTERVAL)
