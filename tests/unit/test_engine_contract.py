"""The engine's contract in c2d_core: run config built and read back by one pair of functions, the typed
view of a run's tags, the stages with their failure codes and deadlines."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from c2d_core import engine
from c2d_core.environments import Environment, stage_deadline
from c2d_core.settings import EngineSettings
from c2d_core.status import ALGORITHM_FAILURES, JobStatus, Stage
from c2d_core.workflow import Workflow


def _workflow() -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": uuid.uuid4().hex,
            "owner": "0x" + "1" * 40,
            "environment": "e1",
            "inputs": [
                {"did": "did:op:" + "a" * 64, "serviceId": "compute", "files": {"encryptedFiles": "0x00"}}
            ],
            "algorithm": {
                "rawcode": "print(1)",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )


def test_the_code_location_is_named_as_the_contract_says() -> None:
    # The Provider launches runs by these names; the workspace file cannot import them, so check it.
    workspace = yaml.safe_load((Path(__file__).resolve().parents[2] / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    assert entry["python_module"]["location_name"] == engine.LOCATION
    from c2d_defs.definitions import defs

    assert defs.resolve_job_def(engine.JOB_NAME).name == "compute_job"


def test_the_run_config_reads_back_as_the_workflow_it_was_built_from() -> None:
    workflow = _workflow()
    raw = engine.run_config(workflow)
    assert raw["ops"]["configure"]["config"]["workflow"]["jobId"] == workflow.job_id
    assert engine.workflow_from_run_config(raw) == workflow
    # A raw document (what a test or an old run carries) passes through untouched.
    assert engine.run_config({"jobId": "x"}) == {
        "ops": {"configure": {"config": {"workflow": {"jobId": "x"}}}}
    }


@pytest.mark.parametrize("raw", [None, {}, {"ops": {}}, {"ops": {"configure": {"config": {}}}}, "text"])
def test_a_run_config_without_a_workflow_is_a_value_error(raw: object) -> None:
    with pytest.raises(ValueError, match="no workflow"):
        engine.workflow_from_run_config(raw)


def test_a_malformed_workflow_in_the_run_config_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        engine.workflow_from_run_config(engine.run_config({"jobId": "x"}))


def test_the_typed_view_of_a_runs_tags() -> None:
    tags = engine.JobTags.from_tags(
        {
            engine.JOB_ID: "j1",
            engine.STATUS: "41",
            engine.DATE_FINISHED: "12.5",
            engine.STOP_REQUESTED: "1",
            engine.ALGORITHM_EXIT_CODE: "3",
            engine.RESULTS: '[{"index": 0}]',
            engine.phase_tag(Stage.CONFIGURE, "started"): "1.0",
            engine.phase_tag("configure", "finished"): "2.0",
        }
    )
    assert (tags.job_id, tags.status, tags.date_finished, tags.finished) == (
        "j1",
        JobStatus.ALGORITHM_FAILED,
        12.5,
        True,
    )
    assert tags.stop_requested and not tags.results_expired and tags.watchdog is None
    assert tags.algorithm_exit_code == 3 and tags.results == [{"index": 0}]
    assert tags.phases[Stage.CONFIGURE] == (1.0, 2.0) and tags.phases[Stage.PUBLISH] == (None, None)
    empty = engine.JobTags.from_tags(None)
    assert (empty.status, empty.date_finished, empty.finished, empty.results) == (None, None, False, None)
    assert engine.JobTags.from_tags({engine.STATUS: "999", engine.RESULTS: "{"}).status is None


@pytest.mark.parametrize(
    ("value", "seconds"), [("1.5", 1.5), (2, 2.0), (None, None), ("", None), ("soon", None), ([], None)]
)
def test_epoch_reads_tag_and_job_json_times(value: object, seconds: float | None) -> None:
    assert engine.epoch(value) == seconds


def test_phase_tags_name_only_known_stages_and_edges() -> None:
    assert engine.phase_tag(Stage.PUBLISH, "finished") == ".dagster/c2d/phase/publish/finished"
    with pytest.raises(ValueError):
        engine.phase_tag("filtering", "started")
    with pytest.raises(ValueError):
        engine.phase_tag(Stage.PUBLISH, "paused")


def test_stages_in_order_with_their_failure_codes() -> None:
    assert [str(stage) for stage in Stage] == ["configure", "algorithm", "filter", "publish"]
    assert [stage.failure for stage in Stage] == [
        JobStatus.DATA_PROVISIONING_FAILED,
        JobStatus.ALGORITHM_FAILED,
        JobStatus.RESULTS_FETCH_FAILED,  # outputs an output stage refused (issue 15)
        JobStatus.RESULTS_UPLOAD_FAILED,
    ]
    assert [stage.next for stage in Stage] == [Stage.ALGORITHM, Stage.PUBLISH, Stage.PUBLISH, Stage.PUBLISH]
    assert "Stopped" not in ALGORITHM_FAILURES and "Error" in ALGORITHM_FAILURES


def test_each_stage_deadline_comes_from_the_environment_or_the_engine() -> None:
    env = Environment.model_validate({"id": "e1", "maxJobDuration": 100})
    settings = EngineSettings(configure_deadline=30, publish_deadline=20, watchdog_grace=5)
    # No output stages: the moment between algorithm and publish counts against publish's deadline,
    # and the job's whole deadline is the three stages' as before the filter stage existed.
    assert [env.stage_deadline(stage, settings) for stage in Stage] == [30, 100, 20, 20]
    assert env.max_runtime(settings) == 155
    filtered = Environment.model_validate(
        {"id": "e2", "maxJobDuration": 100, "outputStages": [{"name": "leak_filter", "deadline": 40}]}
    )
    assert filtered.stage_deadline(Stage.FILTER, settings) == 40
    assert filtered.max_runtime(settings) == 195
    # A job of an unknown environment fails its configure stage: its algorithm stage gets that deadline.
    assert stage_deadline(Stage.ALGORITHM, None, settings) == 30


def test_submitted_runs_say_who_launched_them_and_carry_the_providers_stamp() -> None:
    """Issue 16 items 2 and 3: "Launched by" names the Provider and the consumer, and the stamp is an
    HMAC of the run config's workflow that a changed workflow or another key does not match."""
    from dagster._core.storage.tags import HIDDEN_TAG_PREFIX, USER_TAG

    from c2d_core import run_stamp

    workflow = _workflow()
    key = run_stamp.stamp_key("0x" + "ab" * 32)
    tags = engine.submission_tags(workflow, stamp_key=key)
    assert engine.LAUNCHED_BY == USER_TAG
    assert tags[USER_TAG] == f"the Provider, for {workflow.owner}"
    # The stamp is kept in run storage but hidden from the runs list.
    assert engine.STAMP.startswith(HIDDEN_TAG_PREFIX)
    document = engine.run_config(workflow)["ops"]["configure"]["config"]["workflow"]
    assert run_stamp.stamp_problem(key, tags[engine.STAMP], document) is None
    changed = {**document, "environment": "e2"}
    assert "does not match" in (run_stamp.stamp_problem(key, tags[engine.STAMP], changed) or "")
    other = run_stamp.stamp_key("0x" + "cd" * 32)
    assert "does not match" in (run_stamp.stamp_problem(other, tags[engine.STAMP], document) or "")
    assert "no Provider stamp" in (run_stamp.stamp_problem(key, None, document) or "")
    assert engine.STAMP not in engine.submission_tags(workflow)
    # A re-execution and a refused run are not their job's run.
    assert engine.job_run(tags)
    assert not engine.job_run({**tags, run_stamp.PARENT_RUN_ID: "r1"})
    assert not engine.job_run({**tags, engine.REFUSED: "why"})
