"""The review gate holds across a dead run (security review, items 2 and 3), on the real sandbox and pod
programs: the salvage of a job whose environment requires review publishes under its held key and
parks it at 55, never under its own key; salvage refuses a job awaiting review and a run that has not
ended, touching nothing; a held job's publish cut short records no results and no finish date, and
its salvage then holds it for review."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError
from engine_kit import (
    dataset_input,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    serve_origin,
)

from c2d_cli.origin import LocalOrigin
from c2d_core import engine, review
from c2d_core.environments import Environments
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from c2d_defs.jobs import salvage_job
from c2d_defs.ops.compute import publish_job
from c2d_defs.ops.recorder import JobRecorder, JobState
from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource
from c2d_defs.stage_watchdog import find_stuck_jobs, record_verdict

pytestmark = pytest.mark.integration

DID = "did:op:" + hashlib.sha256(b"review-salvage").hexdigest()
ENVIRONMENTS = """
environments:
  - id: review-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxProcesses: 64
    review: {required: true, deadlineSeconds: 3600}
    imageMap: [{image: "python:3.11*", aliases: {python: /usr/bin/python3}}]
"""
ALGORITHM = """
import os
total = sum(int(line) for line in open(os.path.join("/data/inputs", os.listdir("/data/inputs")[0], "0")))
open("/data/outputs/total.txt", "w").write(str(total))
print("summed", total)
"""


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[LocalOrigin]:
    with serve_origin(tmp_path / "origin", {"numbers.txt": "1\n2\n3\n"}) as server:
        yield server


def _resources() -> dict[str, Any]:
    return {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": LocalResultStoreResource(),
        "environments": ComputeEnvironments(),
    }


def _runner() -> Any:
    return LocalPodRunnerResource().create_resource(dg.build_init_resource_context())


def _results(home: Path) -> Path:
    return EngineSettings(home=home).resolved_results_dir


def _phases(*stages: str, running: str | None = None) -> dict[str, str]:
    """Phase tags of the stages that finished, and of the one that was running when the run died."""
    tags = {}
    for at, stage in enumerate(stages):
        tags[engine.phase_tag(stage, "started")] = f"{1_000 + 2 * at:.3f}"
        tags[engine.phase_tag(stage, "finished")] = f"{1_001 + 2 * at:.3f}"
    if running:
        tags[engine.phase_tag(running, "started")] = f"{1_100:.3f}"
    return tags


def _dead_job(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus, tags: dict[str, str]
) -> tuple[str, str]:
    """A compute run of review-env that ended (or not) with `tags`, and its job's volume as the
    algorithm left it: an output and the algorithm's log, beside the configure log."""
    job_id = uuid.uuid4().hex
    runner = _runner()
    runner.prepare_volume(job_id, 50 * 1024 * 1024)
    runner.write_file(job_id, "data/outputs/total.txt", b"6")
    runner.write_file(job_id, "data/logs/algorithm.log", b"summed 6\n")
    runner.write_file(job_id, "adminlogs/configure.log", b"fetched 1 file\n")
    run = dg.DagsterRun(
        job_name=engine.JOB_NAME,
        run_id=str(uuid.uuid4()),
        status=status,
        tags={engine.JOB_ID: job_id, engine.ENVIRONMENT: "review-env", **tags},
    )
    instance.add_run(run)
    return run.run_id, job_id


def _salvage(instance: dg.DagsterInstance, run_id: str) -> dg.ExecuteInProcessResult:
    return salvage_job.execute_in_process(
        run_config={"ops": {"salvage": {"config": {"run_id": run_id}}}},
        instance=instance,
        resources=_resources(),
        raise_on_error=False,
    )


def _tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return dict(run.tags)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [event] = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    data = event.step_failure_data
    assert data is not None and data.user_failure_data is not None
    return data.user_failure_data.description or ""


def _assert_held(home: Path, tags: dict[str, str], job_id: str) -> None:
    """Parked at 55 with its results under the held key; nothing under its own key, nothing served."""
    assert tags[engine.STATUS] == "55" and tags[review.STATE] == "awaiting", tags.get(engine.STATUS_DETAIL)
    assert engine.DATE_FINISHED not in tags and engine.RESULTS not in tags
    held = [entry["filename"] for entry in review.ReviewView(tags).held]
    assert held[:2] == ["total.txt", "algorithm.log"], held
    assert (_results(home) / review.held_key(job_id) / "total.txt").read_text() == "6"
    own = _results(home) / job_id
    assert not own.exists() or not any(own.iterdir()), list(own.iterdir())


def test_the_salvage_of_a_dead_review_job_holds_its_results(c2d_home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    died_in_publish = _phases("configure", "algorithm", running="publish")
    run_id, job_id = _dead_job(instance, dg.DagsterRunStatus.FAILURE, died_in_publish)
    # What the stage watchdog does: the verdict (62 for the publish stage), then the salvage run.
    environments = Environments.load(EngineSettings().environments_file)
    [verdict] = find_stuck_jobs(instance, environments, EngineSettings(), time.time())
    assert verdict.run_id == run_id and verdict.salvage
    assert record_verdict(instance, verdict)
    assert _salvage(instance, run_id).success
    tags = _tags(instance, run_id)
    _assert_held(c2d_home, tags, job_id)
    # Approval ends it as the salvage would have without the gate (its failure status), and only
    # then do the results reach the job's own key.
    assert json.loads(tags[review.OUTCOME])["status"] == 62
    assert not _runner().has_volume(job_id)
    # The watchdog leaves a parked job alone from now on.
    assert find_stuck_jobs(instance, environments, EngineSettings(), time.time()) == []


def test_salvage_refuses_a_job_awaiting_review_and_touches_nothing(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    workflow = raw_workflow(
        job_id=uuid.uuid4().hex,
        environment="review-env",
        inputs=[dataset_input(c2d_home, DID, [f"{origin.url}/numbers.txt"])],
        algorithm=python_algorithm(ALGORITHM),
    )
    compute = run_compute_job(workflow, instance)
    assert compute.success
    before = _tags(instance, compute.run_id)
    assert before[engine.STATUS] == "55" and before[review.STATE] == "awaiting"
    # Launched by hand from the launchpad: refused with the reason, the job still awaits its review.
    salvaged = _salvage(instance, compute.run_id)
    assert not salvaged.success
    assert "is awaiting an operator's review" in _failure(salvaged)
    assert _tags(instance, compute.run_id) == before
    _assert_held(c2d_home, before, workflow["jobId"])


def test_salvage_refuses_a_run_that_has_not_ended_and_touches_nothing(c2d_home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    in_algorithm = _phases("configure", running="algorithm")
    run_id, job_id = _dead_job(instance, dg.DagsterRunStatus.STARTED, in_algorithm)
    before = _tags(instance, run_id)
    salvaged = _salvage(instance, run_id)
    assert not salvaged.success
    assert "has not ended (it is STARTED)" in _failure(salvaged)
    assert _tags(instance, run_id) == before
    # Its volume is as the algorithm left it, and nothing was stored anywhere.
    assert _runner().has_volume(job_id)
    results = _results(c2d_home)
    assert not results.exists() or not any(results.iterdir())


@dataclass(frozen=True)
class _StoppedAfterTheManifest(JobRecorder):
    """A stop that reaches publish once the publish pod stored everything and its manifest was read."""

    def tags(self, tags: dict[str, str]) -> None:
        super().tags(tags)
        if engine.MANIFEST in tags:
            raise DagsterExecutionInterruptedError("stopped")


def test_a_held_job_whose_publish_is_cut_short_records_no_results_until_salvage_holds_it(
    c2d_home: Path,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    publishing = _phases("configure", "algorithm")
    run_id, job_id = _dead_job(instance, dg.DagsterRunStatus.CANCELED, publishing)
    environments = Environments.load(EngineSettings().environments_file)
    state = JobState(
        job_id=job_id,
        status=JobStatus.RUNNING_ALGORITHM,
        environment=environments.get("review-env"),
        algorithm_ran=True,
    )
    recorder = _StoppedAfterTheManifest(instance, run_id, dg.get_dagster_logger())
    store = LocalResultStoreResource().create_resource(dg.build_init_resource_context())
    with pytest.raises(DagsterExecutionInterruptedError):
        publish_job(recorder, state, _runner(), store)
    tags = _tags(instance, run_id)
    # Stored under the held key, but nothing the Provider would serve and no end.
    assert (_results(c2d_home) / review.held_key(job_id) / "total.txt").read_text() == "6"
    assert engine.RESULTS not in tags and engine.DATE_FINISHED not in tags
    assert review.STATE not in tags
    assert _runner().has_volume(job_id)  # kept for the salvage
    # The stage watchdog takes it from there, once a worker that might still be publishing would
    # be past the publish deadline and the grace: salvaged, it is held for review.
    later = time.time() + EngineSettings().publish_deadline + EngineSettings().watchdog_grace + 1
    [verdict] = find_stuck_jobs(instance, environments, EngineSettings(), later)
    assert verdict.run_id == run_id and verdict.salvage
    assert record_verdict(instance, verdict)
    assert _salvage(instance, run_id).success
    _assert_held(c2d_home, _tags(instance, run_id), job_id)


def test_results_expiry_deletes_the_held_key_too(tmp_path: Path) -> None:
    # What a salvage or a decision cut short may leave under the held key goes with the job's results.
    from c2d_core.results import LocalResultStore
    from c2d_defs.expiry import expire_results

    instance = dg.DagsterInstance.ephemeral()
    store = LocalResultStore(tmp_path / "results")
    job_id = uuid.uuid4().hex
    for key in (job_id, review.held_key(job_id)):
        store.put(key, "total.txt", io.BytesIO(b"6"))
    run = dg.DagsterRun(
        job_name=engine.JOB_NAME,
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.SUCCESS,
        tags={engine.JOB_ID: job_id, engine.ENVIRONMENT: "review-env", engine.DATE_FINISHED: "1000.000"},
    )
    instance.add_run(run)
    assert expire_results(instance, store, lambda _env: 60, now=2000.0) == [job_id]
    assert not (tmp_path / "results" / job_id).exists()
    assert not (tmp_path / "results" / review.held_key(job_id)).exists()
    assert _tags(instance, run.run_id)[engine.RESULTS_EXPIRED] == "1"
