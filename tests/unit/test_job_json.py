"""The Provider's job JSON for jobs the engine ended: a job the stage watchdog is still salvaging, a
stop told apart from the engine's own terminations, and a statusDetail that never carries a URL."""

from __future__ import annotations

import pytest

from c2d_core import engine
from provider_api.errors import OceanHTTPError
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.result_files import ensure_results_published

PUBLISHING = {engine.phase_tag("publish", "started"): "90.0"}


def record(
    run_status: str, *, started: float | None = 10.0, ended: float | None = 100.0, **tags: str
) -> JobRecord:
    base = {engine.JOB_ID: "a" * 32, engine.STATUS: "40", engine.MAX_RUNTIME: "1000"}
    return JobRecord(
        run_id="r", run_status=run_status, tags={**base, **tags}, created=1.0, started=started, ended=ended
    )


def test_a_job_the_watchdog_is_salvaging_is_still_publishing_until_its_finish_date() -> None:
    verdict = "the job's run worker died during its algorithm stage (run FAILURE)"
    salvaging = record("FAILURE", **PUBLISHING, **{engine.STATUS: "41", engine.WATCHDOG: verdict})
    job = ocean_job_json(salvaging)
    # Not final yet: a client keeps polling and then finds the logs the salvage run publishes.
    assert (job["status"], job["dateFinished"], job["statusDetail"]) == (60, None, verdict)
    assert not salvaging.finished
    with pytest.raises(OceanHTTPError) as refused:
        ensure_results_published(salvaging)
    assert refused.value.status_code == 409
    salvaged = record(
        "FAILURE",
        **{
            engine.STATUS: "41",
            engine.WATCHDOG: verdict,
            engine.DATE_FINISHED: "120.5",
            engine.RESULTS: "[]",
        },
    )
    job = ocean_job_json(salvaged)
    assert (job["status"], job["dateFinished"]) == (41, "120.5")


def test_only_a_stop_is_stopreq_1_not_the_engine_ending_a_run() -> None:
    assert ocean_job_json(record("CANCELED", **{engine.STOP_REQUESTED: "1"}))["stopreq"] == 1
    # Stopped while queued or between ops: only the run's state says so.
    assert ocean_job_json(record("CANCELED", started=None))["stopreq"] == 1
    # The stage watchdog, and run monitoring at the run's max_runtime (started 10, limit 1000).
    assert ocean_job_json(record("CANCELED", **{engine.WATCHDOG: "stuck"}))["stopreq"] == 0
    assert ocean_job_json(record("CANCELING", ended=None, started=-2000.0))["stopreq"] == 0
    assert ocean_job_json(record("CANCELED", ended=1010.0))["stopreq"] == 0
    assert ocean_job_json(record("FAILURE"))["stopreq"] == 0


def test_status_detail_never_carries_a_url() -> None:
    detail = "publish: could not reach https://s3.internal.example:9000/c2d-results?X-Amz=secret"
    job = ocean_job_json(record("FAILURE", **{engine.STATUS: "62", engine.STATUS_DETAIL: detail}))
    assert "s3.internal.example" not in job["statusDetail"] and "://" not in job["statusDetail"]
    assert job["statusDetail"].startswith("publish: could not reach ")


def test_a_run_that_just_died_awaits_the_watchdog_then_counts_as_ended() -> None:
    import time

    configured = {engine.phase_tag("configure", "started"): "50.0", engine.STATUS: "20"}
    # Dead a moment ago, not judged yet: the watchdog's next tick takes it over, so no client is told
    # "finished" before the logs are published.
    fresh = record("FAILURE", ended=time.time() - 1, **configured)
    job = ocean_job_json(fresh)
    assert (job["status"], job["dateFinished"]) == (60, None) and not fresh.finished
    with pytest.raises(OceanHTTPError) as refused:
        ensure_results_published(fresh)
    assert refused.value.status_code == 409
    # Long past any watchdog tick (the daemon down, say): reported ended, with a failure status.
    stale = record("FAILURE", ended=100.0, **configured)
    assert ocean_job_json(stale)["status"] == 31 and stale.finished
    # Stopped while queued: no stage ran, nothing for the watchdog to publish.
    queued = record("CANCELED", ended=time.time() - 1, started=None, **{engine.STATUS: "1"})
    assert queued.finished and ocean_job_json(queued)["dateFinished"] is not None
