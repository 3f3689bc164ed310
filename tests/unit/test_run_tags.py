"""Readable runs (issue 16, item 3): which of a compute run's tags the Dagster UI shows, how a job's
outcome reads, and how runs written with the old tag names are read and upgraded."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from dagster._core.storage.tags import HIDDEN_TAG_PREFIX, TagType, get_tag_type

from c2d_core import engine
from c2d_core.status import JobStatus, Stage
from c2d_core.workflow import Workflow
from c2d_defs.tag_upgrade import upgrade_legacy_tags

OPERATOR_TAGS = {
    "c2d/job_id",
    "c2d/owner",
    "c2d/did",
    "c2d/environment",
    "c2d/status",
    "c2d/status_text",
    "c2d/outcome",
}


def _state_names() -> list[str]:
    names = [
        value
        for name, value in vars(engine).items()
        if name.isupper()
        and not name.endswith("PREFIX")
        and isinstance(value, str)
        and value.startswith(("c2d/", ".dagster/c2d/"))
    ]
    return names + [engine.phase_tag(stage, edge) for stage in Stage for edge in ("started", "finished")]


def test_only_the_operator_tags_are_visible_and_dagster_hides_the_rest() -> None:
    assert engine.HIDDEN_PREFIX == HIDDEN_TAG_PREFIX
    names = _state_names()
    visible = {name for name in names if get_tag_type(name) is not TagType.HIDDEN}
    assert visible == OPERATOR_TAGS == engine.VISIBLE
    # Everything else (agreement, dates, phases, results JSON, locations...) is under the hidden prefix.
    for name in (engine.AGREEMENT_ID, engine.DATE_FINISHED, engine.RESULTS, engine.MANIFEST, engine.REFUSED):
        assert get_tag_type(name) is TagType.HIDDEN


def test_submission_tags_show_readable_values_only() -> None:
    workflow = Workflow.model_validate(
        {
            "jobId": uuid.uuid4().hex,
            "owner": "0x" + "1" * 40,
            "environment": "e1",
            "agreementId": "0x" + "ab" * 32,
            "inputs": [
                {"did": "did:op:" + "a" * 64, "serviceId": "c", "files": {"encryptedFiles": "0x00"}},
                {"did": "did:op:" + "b" * 64, "serviceId": "c", "files": {"encryptedFiles": "0x00"}},
            ],
            "algorithm": {
                "rawcode": "print(1)",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )
    tags = engine.submission_tags(workflow, max_runtime_seconds=60, stamp_key=b"k" * 32)
    shown = {key: value for key, value in tags.items() if not key.startswith(HIDDEN_TAG_PREFIX)}
    assert {key for key in shown if key.startswith("c2d/")} <= OPERATOR_TAGS
    assert shown[engine.DID] == "did:op:" + "a" * 64 and shown[engine.STATUS_TEXT] == "Warming up"
    # No JSON shown: the DID list and the agreement are kept, hidden.
    assert not any(value.startswith(("[", "{")) for value in shown.values())
    assert tags[engine.INPUT_DIDS] == f'["did:op:{"a" * 64}", "did:op:{"b" * 64}"]'
    assert tags[engine.AGREEMENT_ID] == "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("status", "termination", "stopped", "said"),
    [
        (JobStatus.JOB_FINISHED, "Completed", False, "succeeded"),
        (JobStatus.JOB_FINISHED, None, False, "succeeded"),
        (JobStatus.JOB_FINISHED, "Error", False, "algorithm failed"),
        (JobStatus.JOB_FINISHED, "OOMKilled", False, "algorithm out of memory"),
        (JobStatus.JOB_FINISHED, "DeadlineExceeded", False, "algorithm timed out"),
        (JobStatus.JOB_FINISHED, "Stopped", False, "stopped"),
        (JobStatus.DATA_PROVISIONING_FAILED, None, True, "stopped"),
        (JobStatus.DATA_PROVISIONING_FAILED, None, False, "data provisioning failed"),
        (JobStatus.QUEUE_EXPIRED, None, False, "job expired in queue"),
        (JobStatus.ALGORITHM_FAILED, "ImageNotFound", False, "failed to run algorithm"),
    ],
)
def test_the_outcome_says_how_the_job_ended(
    status: JobStatus, termination: str | None, stopped: bool, said: str
) -> None:
    assert engine.outcome(status, termination, stopped) == said
    tags = {
        **({engine.ALGORITHM_TERMINATION: termination} if termination else {}),
        **({engine.STOP_REQUESTED: "1"} if stopped else {}),
    }
    assert engine.finish_tags(status, 12.5, tags) == {engine.DATE_FINISHED: "12.500", engine.OUTCOME: said}


def _legacy_tags(job_id: str) -> dict[str, str]:
    """What a run written before the upgrade carries: every state tag visible, as `c2d/<name>`."""
    return {
        "c2d/job_id": job_id,
        "c2d/owner": "0x" + "1" * 40,
        "c2d/agreement_id": "0x" + "cd" * 32,
        "c2d/status": "70",
        "c2d/status_text": "Job finished",
        "c2d/date_finished": "1700000000.500",
        "c2d/results": '[{"filename": "out.txt", "index": 0}]',
        "c2d/phase/configure/started": "1699999990.000",
        "c2d/algorithm/exit_code": "0",
    }


def test_a_run_written_with_the_old_names_reads_as_today() -> None:
    legacy = _legacy_tags("j1")
    job = engine.JobTags.from_tags(legacy)
    assert job.finished and job.date_finished == 1700000000.5
    assert job.results == [{"filename": "out.txt", "index": 0}] and job.algorithm_exit_code == 0
    assert job.phase(Stage.CONFIGURE, "started") == 1699999990.0
    current = engine.current_tags(legacy)
    assert current[engine.AGREEMENT_ID] == legacy["c2d/agreement_id"]
    # A value written under the new name wins over an old one.
    assert engine.current_tags({**legacy, engine.DATE_FINISHED: "5"})[engine.DATE_FINISHED] == "5"
    assert engine.legacy_upgrade({engine.DATE_FINISHED: "5"}) == {}
    assert not engine.job_run({"c2d/refused": "a re-execution"})


def test_the_upgrade_copies_old_runs_tags_once_so_filters_find_them() -> None:
    with dg.instance_for_test() as instance:
        old = [
            instance.create_run_for_job(
                dg.GraphDefinition(name="g", node_defs=[]).to_job(name=engine.JOB_NAME),
                tags=_legacy_tags(uuid.uuid4().hex),
            )
            for _ in range(3)
        ]
        agreement = _legacy_tags("x")["c2d/agreement_id"]

        def by_agreement() -> set[str]:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={engine.AGREEMENT_ID: agreement}))
            return {run.run_id for run in runs}

        assert by_agreement() == set()
        # Two runs per call: the upgrade goes on where it stopped, then says it is done.
        assert upgrade_legacy_tags(instance, max_runs=2) == (2, False)
        assert by_agreement() == {run.run_id for run in old[1:]}  # newest first
        assert upgrade_legacy_tags(instance, max_runs=2) == (1, True)
        assert by_agreement() == {run.run_id for run in old}
        # A hidden tag filters like any other, and done is done: no more pages are read.
        instance.add_run_tags(old[0].run_id, {"c2d/results_expired": "1"})
        assert upgrade_legacy_tags(instance) == (0, True)
        run = instance.get_run_by_id(old[1].run_id)
        assert run is not None and run.tags[engine.DATE_FINISHED] == "1700000000.500"


def test_the_provider_reads_a_job_from_before_the_upgrade_as_it_did() -> None:
    from provider_api.dagster_jobs import _record
    from provider_api.jobs import ocean_job_json

    with dg.instance_for_test() as instance:
        job = dg.GraphDefinition(name="g", node_defs=[]).to_job(name=engine.JOB_NAME)
        run = instance.create_run_for_job(job, tags=_legacy_tags("0" * 32))
        (record,) = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run.run_id]))
        answer = ocean_job_json(_record(record))
    assert answer["agreementId"] == "0x" + "cd" * 32 and answer["dateFinished"] == "1700000000.5"
    assert answer["results"] == [{"filename": "out.txt", "index": 0}]
    assert answer["phases"]["configure"]["started"] == "1699999990.0"
