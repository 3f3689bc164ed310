"""The job JSON's `phases` (issue 15): the filter phase shows for a job that entered it, never otherwise."""

from c2d_core import engine
from provider_api.jobs import JobRecord, ocean_job_json


def _job(**tags: str) -> dict:
    base = {engine.JOB_ID: "a" * 32, engine.STATUS: "50"}
    return ocean_job_json(
        JobRecord(
            run_id="r", run_status="STARTED", tags={**base, **tags}, created=1.0, started=2.0, ended=None
        )
    )


def test_a_job_without_output_stages_has_the_three_phases_it_always_had() -> None:
    assert list(_job(**{engine.STATUS: "40"})["phases"]) == ["configure", "algorithm", "publish"]


def test_a_filtered_job_shows_its_filter_phase_times_while_at_status_50() -> None:
    job = _job(
        **{
            engine.phase_tag("algorithm", "finished"): "10.5",
            engine.phase_tag("filter", "started"): "10.6",
        }
    )
    assert (job["status"], job["statusText"]) == (50, "Filtering results")
    assert list(job["phases"]) == ["configure", "algorithm", "filter", "publish"]
    assert job["phases"]["filter"]["started"] is not None and job["phases"]["filter"]["finished"] is None
