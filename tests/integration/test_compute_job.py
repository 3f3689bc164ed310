"""compute_job executed in process against the real sandbox, pod programs and a local HTTP origin.

Every path a job can take ends in a clear Ocean status with a detail on the run, and publish always
runs so logs come back. (The same job through the real webserver and daemon: test_stack_e2e.py.)
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest
from engine_kit import (
    dataset_input,
    encrypted_files,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    serve_origin,
)
from eth_account import Account

from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.attestation import iso_time, verify_attestation, verify_files
from c2d_core.live_logs import LIVE_LOG_NAME
from c2d_core.results import MANIFEST_NAME
from c2d_core.settings import EngineSettings

DID_A = "did:op:" + hashlib.sha256(b"dataset-a").hexdigest()
DID_B = "did:op:" + hashlib.sha256(b"dataset-b").hexdigest()
ENVIRONMENTS = """
environments:
  - id: test-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 4
    maxJobs: 2
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""

SUM_ALGORITHM = """
import json, os
dids = json.loads(os.environ["DIDS"])
total = 0
for did in dids:
    for name in sorted(os.listdir(f"/data/inputs/{did}")):
        total += sum(int(line) for line in open(f"/data/inputs/{did}/{name}") if line.strip())
custom = json.load(open("/data/inputs/algoCustomData.json"))
os.makedirs("/data/outputs/deep/er", exist_ok=True)
open("/data/outputs/total.txt", "w").write(str(total * custom.get("factor", 1)))
open("/data/outputs/deep/er/note.txt", "w").write("nested")
os.symlink("/etc/passwd", "/data/outputs/leak")
print("sum done", total)
"""


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


@pytest.fixture
def origin(tmp_path: Path):
    with serve_origin(tmp_path / "origin", {"a.txt": "1\n2\n3\n", "b.txt": "10\n20\n"}) as server:
        yield server


def _workflow(home: Path, origin: LocalOrigin, **overrides) -> dict:
    workflow = raw_workflow(
        job_id=hashlib.md5(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest(),
        environment="test-env",
        inputs=[
            dataset_input(home, DID_A, [f"{origin.url}/a.txt"]),
            dataset_input(home, DID_B, [f"{origin.url}/b.txt"]),
        ],
        algorithm=python_algorithm(SUM_ALGORITHM, algocustomdata={"factor": 2}),
    )
    workflow.update(overrides)
    return workflow


def _run(workflow: dict):
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance)
    tags = instance.get_run_by_id(result.run_id).tags
    logs = "\n".join(event.message or "" for event in instance.all_logs(result.run_id) if event.message)
    return result, tags, logs


def _manifest(tags) -> list[dict]:
    return json.loads(tags[engine.RESULTS])


def test_job_runs_end_to_end_with_ocean_layout_and_results(c2d_home: Path, origin: LocalOrigin) -> None:
    workflow = _workflow(c2d_home, origin)
    result, tags, logs = _run(workflow)
    assert result.success, tags.get(engine.STATUS_DETAIL)
    assert tags[engine.STATUS] == "70" and tags[engine.STATUS_TEXT] == "Job finished"
    assert tags[engine.ALGORITHM_EXIT_CODE] == "0"
    for phase in ("configure", "algorithm", "publish"):
        started = float(tags[engine.phase_tag(phase, "started")])
        assert float(tags[engine.phase_tag(phase, "finished")]) >= started
    manifest = _manifest(tags)
    assert [(e["index"], e["filename"], e["type"]) for e in manifest] == [
        (0, "deep_er_note.txt", "output"),
        (1, "total.txt", "output"),
        (2, "algorithm.log", "algorithmLog"),
        (3, "configure.log", "configurationLog"),
        (4, "publish.log", "publishLog"),
        (5, "attestation.json", "attestation"),
    ]
    results = EngineSettings().resolved_results_dir / workflow["jobId"]
    assert (results / "total.txt").read_text() == str((6 + 30) * 2)
    assert hashlib.sha256((results / "total.txt").read_bytes()).hexdigest() == manifest[1]["sha256"]
    assert "sum done 36" in (results / "algorithm.log").read_text()
    assert not (results / "leak").exists()
    # The attestation, signed by the Provider's key in the run worker, vouches for every other result.
    provider = Account.from_key((c2d_home / "secrets" / "provider-key").read_text().strip())
    attested = verify_attestation((results / "attestation.json").read_bytes(), provider.address)
    # The live copy of the algorithm log (computeStreamableLogs' source) sits beside the results.
    checks = verify_files(attested, results, ignore=("attestation.json", MANIFEST_NAME, LIVE_LOG_NAME))
    assert [(c.filename, c.outcome) for c in checks] == [(e["filename"], "ok") for e in manifest[:5]]
    assert [f.sha256 for f in attested.inputs[0].files] == [hashlib.sha256(b"1\n2\n3\n").hexdigest()]
    assert [f.sha256 for f in attested.inputs[1].files] == [hashlib.sha256(b"10\n20\n").hexdigest()]
    assert attested.algorithm.rawcode_sha256 == hashlib.sha256(SUM_ALGORITHM.encode()).hexdigest()
    assert (attested.status, attested.algorithm_termination, attested.algorithm_exit_code) == (
        70,
        "Completed",
        0,
    )
    assert attested.date_finished == iso_time(float(tags[engine.DATE_FINISHED]))
    # Dataset locations never appear in the run's tags, its event log, or anything published.
    published = "".join(p.read_text(errors="replace") for p in results.iterdir())
    for text in (json.dumps(dict(tags)), logs, published):
        assert origin.url.split("//")[1] not in text
    # The job volume is released after publish.
    assert not (EngineSettings().resolved_work_dir / workflow["jobId"]).exists()


def test_missing_input_ends_31_skips_algorithm_and_still_publishes_logs(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    workflow = _workflow(c2d_home, origin)
    workflow["inputs"][1] = dataset_input(c2d_home, DID_B, [f"{origin.url}/missing.txt"])
    result, tags, _ = _run(workflow)
    assert not result.success
    assert tags[engine.STATUS] == "31" and tags[engine.STATUS_TEXT] == "Data provisioning failed"
    assert "404" in tags[engine.STATUS_DETAIL]
    assert engine.ALGORITHM_EXIT_CODE not in tags
    assert [e["type"] for e in _manifest(tags)] == ["configurationLog", "publishLog", "attestation"]


def test_algorithm_exiting_non_zero_finishes_with_its_exit_code(c2d_home: Path, origin: LocalOrigin) -> None:
    algorithm = python_algorithm("import sys; print('bad'); sys.exit(3)", tag="3.11")
    _result, tags, _ = _run(_workflow(c2d_home, origin, algorithm=algorithm))
    assert tags[engine.STATUS] == "70"
    assert tags[engine.ALGORITHM_EXIT_CODE] == "3" and tags[engine.ALGORITHM_TERMINATION] == "Error"
    assert tags[engine.STATUS_DETAIL] == "algorithm exited with code 3"
    assert "algorithmLog" in [e["type"] for e in _manifest(tags)]


def test_algorithm_past_deadline_is_killed_and_recorded(c2d_home: Path, origin: LocalOrigin) -> None:
    algorithm = python_algorithm(
        "import time\nopen('/data/outputs/partial.txt','w').write('p')\ntime.sleep(60)", tag="3.11"
    )
    _result, tags, _ = _run(_workflow(c2d_home, origin, algorithm=algorithm))
    assert tags[engine.ALGORITHM_TERMINATION] == "DeadlineExceeded"
    assert "maxJobDuration (4 s)" in tags[engine.STATUS_DETAIL]
    assert "partial.txt" in [e["filename"] for e in _manifest(tags)]


def test_unmapped_image_fails_41_without_fallback(c2d_home: Path, origin: LocalOrigin) -> None:
    algorithm = {
        "rawcode": "print(1)",
        "container": {"entrypoint": "node $ALGO", "image": "node", "tag": "20"},
    }
    result, tags, _ = _run(_workflow(c2d_home, origin, algorithm=algorithm))
    assert not result.success
    assert tags[engine.STATUS] == "41"
    assert "node:20" in tags[engine.STATUS_DETAIL]


def test_disk_quota_is_status_42(c2d_home: Path, origin: LocalOrigin) -> None:
    algorithm = python_algorithm(
        "f=open('/data/outputs/big','wb')\nfor _ in range(200): f.write(b'x'*1048576)\n", tag="3.11"
    )
    result, tags, _ = _run(_workflow(c2d_home, origin, algorithm=algorithm))
    assert not result.success
    assert tags[engine.STATUS] == "42", tags.get(engine.STATUS_DETAIL)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [({"environment": "nowhere"}, "unknown compute environment 'nowhere'"), ({"owner": "bob"}, "owner")],
)
def test_bad_workflow_ends_with_clear_status(
    c2d_home: Path, origin: LocalOrigin, overrides, fragment
) -> None:
    result, tags, _ = _run(_workflow(c2d_home, origin, **overrides))
    assert not result.success
    assert tags[engine.STATUS] == "31"
    assert fragment in tags[engine.STATUS_DETAIL]
    assert tags[engine.DATE_FINISHED]


def test_plain_file_objects_are_refused_unless_enabled(
    c2d_home: Path, origin: LocalOrigin, monkeypatch
) -> None:
    workflow = _workflow(c2d_home, origin)
    workflow["inputs"] = [
        {
            "did": DID_A,
            "serviceId": "compute",
            "files": {"files": [{"type": "url", "url": f"{origin.url}/a.txt"}]},
        }
    ]
    _, tags, _ = _run(workflow)
    assert tags[engine.STATUS] == "31" and "C2D_ALLOW_PLAIN_FILES" in tags[engine.STATUS_DETAIL]
    monkeypatch.setenv("C2D_ALLOW_PLAIN_FILES", "true")
    _result, tags, _ = _run({**workflow, "jobId": "f" * 32})
    assert tags[engine.STATUS] == "70", tags.get(engine.STATUS_DETAIL)


def _steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Each step's outcome as Dagster recorded it (what the run's page colours)."""
    return {stat.step_key: stat.status.value for stat in instance.get_run_step_stats(run_id) if stat.status}


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return {
        record.event_log_entry.step_key: record.event_log_entry.dagster_event.step_failure_data
        for record in records
    }


@pytest.mark.parametrize(
    ("case", "failing_step", "status", "sentence", "termination"),
    [
        ("exit", "run_algorithm", 70, "The algorithm failed: algorithm exited with code 3", "Error"),
        (
            "deadline",
            "run_algorithm",
            70,
            "The algorithm failed: algorithm stopped at the environment's",
            None,
        ),
        ("image", "run_algorithm", 41, "Failed to run algorithm: ", "ImageNotFound"),
        ("missing", "configure", 31, "Data provisioning failed: input 1 file 0: HTTP 404", None),
    ],
)
def test_failed_job_is_a_failed_run_with_its_failing_stage_red_and_publish_green(
    c2d_home: Path, origin: LocalOrigin, case, failing_step, status, sentence, termination
) -> None:
    """Issue 16 item 1: the run's and each step's outcome match the job's, read from Dagster's records."""
    workflow = _workflow(c2d_home, origin)
    container = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11"}
    if case == "exit":
        workflow["algorithm"] = {"rawcode": "import sys; print('bad'); sys.exit(3)", "container": container}
    elif case == "deadline":
        workflow["algorithm"] = {"rawcode": "import time; time.sleep(60)", "container": container}
    elif case == "image":
        workflow["algorithm"] = {"rawcode": "print(1)", "container": {**container, "image": "node"}}
    else:
        workflow["inputs"][1]["files"] = encrypted_files(c2d_home, [f"{origin.url}/missing.txt"])
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance)
    run = instance.get_run_by_id(result.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    # The Ocean job JSON's inputs are unchanged: Ocean's status, and the logs published.
    assert run.tags[engine.STATUS] == str(status)
    assert "publishLog" in [e["type"] for e in json.loads(run.tags[engine.RESULTS])]
    steps = _steps(instance, result.run_id)
    assert steps[failing_step] == "FAILURE" and steps["publish"] == "SUCCESS"
    assert [key for key, outcome in steps.items() if outcome == "FAILURE"] == [failing_step]
    failure = _step_failures(instance, result.run_id)[failing_step]
    assert failure.user_failure_data is not None and failure.user_failure_data.description.startswith(
        sentence
    )
    metadata = {key: value.value for key, value in failure.user_failure_data.metadata.items()}
    assert metadata["ocean_status"] == status
    if termination:
        assert metadata["termination"] == termination
    if case == "exit":
        assert metadata["exit_code"] == 3
    # No stack trace of ours: the failure is the job's sentence, not a wrapped error with host paths.
    assert failure.error.cause is None and str(c2d_home) not in failure.error.message
    publish_log = "\n".join(
        entry.message
        for entry in instance.all_logs(result.run_id)
        if entry.step_key == "publish" and entry.message and not entry.dagster_event
    )
    assert "status 70" not in publish_log and "Job finished" not in publish_log


def test_finished_job_is_a_green_run(c2d_home: Path, origin: LocalOrigin) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(_workflow(c2d_home, origin, jobId="e" * 32), instance)
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    # The environment lists no output stages: the leak_filter op hands the job on (issue 15).
    assert _steps(instance, result.run_id) == {
        "configure": "SUCCESS",
        "run_algorithm": "SUCCESS",
        "leak_filter": "SUCCESS",
        "publish": "SUCCESS",
    }


def test_out_of_memory_fails_the_algorithm_step_and_keeps_status_70() -> None:
    """OOMKilled needs a memory cgroup this host may lack: the verdict itself, on the tags it reads."""
    from c2d_core.status import JobStatus, Stage
    from c2d_defs.ops.recorder import JobState
    from c2d_defs.ops.stages import stage_failure

    state = JobState(
        job_id="a" * 32, status=JobStatus.RUNNING_ALGORITHM, detail="algorithm killed: out of memory"
    )
    tags = engine.JobTags.from_tags(
        {engine.ALGORITHM_TERMINATION: "OOMKilled", engine.ALGORITHM_EXIT_CODE: "137"}
    )
    failure = stage_failure(Stage.ALGORITHM, state, tags, failed_before=False)
    assert (
        failure is not None and failure.description == "The algorithm failed: algorithm killed: out of memory"
    )
    assert {k: v.value for k, v in failure.metadata.items()} == {
        "ocean_status": 70,
        "ocean_status_text": "Job finished",
        "stage": "algorithm",
        "exit_code": 137,
        "termination": "OOMKilled",
    }
    assert stage_failure(Stage.ALGORITHM, state, tags, failed_before=True) is None
    assert stage_failure(Stage.PUBLISH, state, tags, failed_before=False) is None


def test_each_stage_attaches_metadata_and_the_first_line_names_the_job(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    """Issue 16 item 4: what each stage did, as metadata the UI renders; never a location."""
    instance = dg.DagsterInstance.ephemeral()
    workflow = _workflow(c2d_home, origin, jobId="d" * 32)
    result = run_compute_job(workflow, instance)
    records = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records
    metadata = {
        r.event_log_entry.step_key: r.event_log_entry.dagster_event.step_output_data.metadata for r in records
    }
    configure, algorithm, publish = metadata["configure"], metadata["run_algorithm"], metadata["publish"]
    files = configure["files"].value.records
    assert [(row.data["asset"], row.data["did"], row.data["size"]) for row in files][:2] == [
        ("input", DID_A, 6),
        ("input", DID_B, 6),
    ]
    assert files[0].data["sha256"] == hashlib.sha256(b"1\n2\n3\n").hexdigest()
    assert configure["algorithm_image"].value == "python:3.11-slim"
    assert (algorithm["exit_code"].value, algorithm["termination"].value) == (0, "Completed")
    assert all(m["duration_s"].value >= 0 for m in (configure, algorithm, publish))
    manifest = publish["manifest"].value.records
    assert [row.data["filename"] for row in manifest][:2] == ["deep_er_note.txt", "total.txt"]
    assert (
        publish["result_store"].value == "LocalResultStore"
        and publish["ocean_status"].value == "70 Job finished"
    )
    shown = json.dumps([str(value) for step in metadata.values() for value in step.values()])
    assert origin.url.split("//")[1] not in shown and str(c2d_home) not in shown
    first = next(e.message for e in instance.all_logs(result.run_id) if e.message and not e.dagster_event)
    assert first == (
        f"job {'d' * 32} for consumer {'0x' + '1' * 40}: dataset(s) {DID_A}, {DID_B}; "
        "algorithm raw code in python:3.11-slim; environment test-env"
    )
