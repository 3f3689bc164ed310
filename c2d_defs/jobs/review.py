"""`review_job` and `review_expiry_job`: an operator's decision on a job held for review, and the end of
one nobody decided on in time (the gate itself: c2d_defs.review_gate; its contract: c2d_core.review).

`review_job` is launched from the Dagster UI's launchpad (config: job id, decision, reviewer, reason)
or by `c2d admin review approve|reject` over the GraphQL API. It needs no Provider stamp: it runs no
algorithm and fetches no data, it only releases (or deletes) what the job's own paid run already
produced, and it refuses any job that is not parked at 55 and undecided, a job past its review
deadline, and a second decision on the same job. The review_expiry sensor (c2d_defs.expiry) asks
`review_expiry_job` to end the jobs past their environment's review deadline.
"""

# No `from __future__ import annotations`: Dagster reads the ops' config annotations as types.
import time

import dagster as dg
from pydantic import Field

from c2d_core import engine, review
from c2d_core.settings import engine_settings
from c2d_defs.expiry import REVIEW_EXPIRY_JOB_NAME, REVIEW_EXPIRY_OP
from c2d_defs.maintenance import RETRY_POLICY, MaintenanceConfig, act_on_each
from c2d_defs.resources import ResultStorage
from c2d_defs.review_gate import ReviewRefused, decide, earlier_decider, job_run


class ReviewConfig(dg.Config):
    """One decision on one held job."""

    job_id: str = Field(description="the compute job's id (32 hex characters, the Provider's jobId)")
    decision: str = Field(description="approve or reject")
    reviewer: str = Field(description="who decides: kept with the job as the decision's author")
    reason: str = Field(default="", description="why; required to reject, shown to the consumer")
    release_logs: bool = Field(
        default=True,
        description="on reject: release the engine's logs (configure, publish), never the outputs",
    )
    release_algorithm_log: bool = Field(
        default=False,
        description="on reject: release the algorithm's log too (it may carry what was held back)",
    )


def _refuse(context: dg.OpExecutionContext, sentence: str) -> dg.Failure:
    context.instance.add_run_tags(context.run_id, {review.REVIEW_REFUSED: sentence[:1000]})
    context.log.error(f"review refused: {sentence}")
    return dg.Failure(
        description=f"Review refused: {sentence}", metadata={"refused": sentence}, allow_retries=False
    )


@dg.op(
    name=review.REVIEW_OP,
    description="Approve (release the held results, the job ends as it would have) or reject (delete "
    "the outputs, the job fails with the reason) a job awaiting review (status 55).",
)
def review_op(
    context: dg.OpExecutionContext, config: ReviewConfig, result_store: dg.ResourceParam[ResultStorage]
) -> dg.Output[dict]:
    job_id = config.job_id.strip().lower()
    # Tagged first, so a racing second review run of the job sees this one (earlier_decider).
    context.instance.add_run_tags(context.run_id, {review.REVIEW_JOB_ID: job_id})
    reviewer = config.reviewer.strip()
    if not reviewer:
        raise _refuse(context, "name the reviewer (config.reviewer): the decision is kept with its author")
    if config.decision == "reject" and not config.reason.strip():
        raise _refuse(context, "a rejection needs a reason (config.reason): the consumer is told it")
    run = job_run(context.instance, job_id)
    if run is None:
        raise _refuse(context, f"no compute job {job_id}")
    problem = review.decision_problem(run.tags, config.decision, time.time())
    if problem:
        raise _refuse(context, problem)
    earlier = earlier_decider(context.instance, job_id, context.run_id)
    if earlier is not None:
        raise _refuse(context, f"the review run {earlier} decides (or decided) on job {job_id}")
    try:
        decided = decide(
            context.instance,
            run.run_id,
            "approve" if config.decision == "approve" else "reject",
            reviewer=reviewer,
            reason=config.reason.strip(),
            store=result_store.store,
            settings=engine_settings(),
            log=context.log,
            decision_run=context.run_id,
            release_logs=config.release_logs,
            release_algorithm_log=config.release_algorithm_log,
        )
    except ReviewRefused as error:
        raise _refuse(context, str(error)) from None
    summary = {
        "job_id": job_id,
        "decision": config.decision,
        "reviewer": reviewer,
        "status": int(decided.status),
        "status_text": decided.status.text.strip(),
        "released": [entry.filename for entry in decided.released],
    }
    return dg.Output(
        summary,
        metadata={
            "job_id": job_id,
            "compute_run": dg.MetadataValue.dagster_run(run.run_id),
            "decision": config.decision,
            "reviewer": reviewer,
            "ocean_status": f"{int(decided.status)} {decided.status.text.strip()}",
            "released": len(decided.released),
        },
    )


@dg.job(
    name=review.REVIEW_JOB_NAME,
    description="An operator's decision on a compute job awaiting review (status 55): approve or reject.",
    executor_def=dg.in_process_executor,
    tags={"c2d/kind": "review"},
)
def review_job() -> None:
    review_op()


@dg.op(
    name=REVIEW_EXPIRY_OP,
    description="End the jobs awaiting review past their environment's review deadline: status 57, "
    "the held outputs deleted, the logs released.",
    retry_policy=RETRY_POLICY,
)
def expire_reviews(
    context: dg.OpExecutionContext, config: MaintenanceConfig, result_store: dg.ResourceParam[ResultStorage]
) -> None:
    settings = engine_settings()

    def expire(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        if run is None:
            return False
        view = review.ReviewView(run.tags)
        job_id = run.tags.get(engine.JOB_ID, "")
        if not view.awaiting or not view.expired(time.time()):
            return False  # decided since the tick
        if earlier_decider(context.instance, job_id, context.run_id) is not None:
            return False  # an operator's review run got there first
        decide(
            context.instance,
            run_id,
            "expire",
            reviewer="review deadline",
            reason="",
            store=result_store.store,
            settings=settings,
            log=context.log,
            decision_run=context.run_id,
        )
        return True

    done = act_on_each(config.targets, expire, lambda run_id: f"compute run {run_id}", context.log)
    context.log.info(f"expired the review of {len(done)} of {len(config.targets)} job(s)")


@dg.job(
    name=REVIEW_EXPIRY_JOB_NAME,
    description="Ends compute jobs whose review deadline passed undecided, for the review expiry sensor.",
    executor_def=dg.in_process_executor,
    tags={"c2d/kind": "maintenance"},
)
def review_expiry_job() -> None:
    expire_reviews()
