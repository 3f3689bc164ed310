"""The custom output stage of docs/extending.md end to end: examples/extensions/sensitive_location.py's
compute_job (the default stages plus `sensitive_columns`) in process, with the real sandbox and pod
programs, the stage's module loaded through C2D_EXTENSIONS / C2D_EXTENSIONS_PATH as a deployment
loads it, and the dataset's DDO naming its sensitive column in metadata.additionalInformation.

A CSV output with that column: 61 with the stage's sentence, the stage's step red, no output stored or
listed, the configure and publish logs published (not the algorithm's). A CSV without it: 70 and the
output listed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from engine_kit import (
    dataset_input,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    serve_origin,
)
from extension_kit import EXAMPLES

from c2d_cli.origin import LocalOrigin
from c2d_core import engine, environments, extensions
from c2d_defs.ops import compute as compute_ops
from c2d_defs.ops.compute import output_stage_tag

DID = "did:op:" + hashlib.sha256(b"patients").hexdigest()
ENVIRONMENTS = """
environments:
  - id: guarded
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 20
    maxProcesses: 64
    outputStages:
      - name: sensitive_columns
        deadline: 60
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""
PATIENTS = "name,ssn,age,visits\nAda,123-45-6789,36,4\nAlan,987-65-4321,41,2\nGrace,555-12-3456,36,7\n"
# Both algorithms read the dataset's one file; one keeps the SSN column, one aggregates by age.
READ = """
import csv, json, os
did = json.loads(os.environ["DIDS"])[0]
rows = list(csv.DictReader(open(f"/data/inputs/{did}/0")))
print("read", len(rows), "rows")
"""
KEEPS_SSN = (
    READ
    + """
with open("/data/outputs/by_patient.csv", "w") as out:
    out.write("SSN,visits\\n" + "".join(f"{r['ssn']},{r['visits']}\\n" for r in rows))
"""
)
BY_AGE = (
    READ
    + """
ages = {}
for r in rows:
    ages[r["age"]] = ages.get(r["age"], 0) + int(r["visits"])
with open("/data/outputs/by_age.csv", "w") as out:
    out.write("age,visits\\n" + "".join(f"{age},{n}\\n" for age, n in sorted(ages.items())))
"""
)


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


@pytest.fixture
def stage_loaded(c2d_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """C2D_EXTENSIONS=sensitive_columns from examples/extensions, loaded as the Provider and the code
    location load it; afterwards the registries and modules are as before."""
    parsers = dict(environments._SETTINGS_PARSERS)
    kinds, stage_parsers = dict(compute_ops._OUTPUT_STAGE_KINDS), dict(compute_ops._OUTPUT_STAGE_PARSERS)
    monkeypatch.setenv("C2D_EXTENSIONS", "sensitive_columns")
    monkeypatch.setenv("C2D_EXTENSIONS_PATH", str(EXAMPLES))
    try:
        extensions.load_extensions()
        yield
    finally:
        environments._SETTINGS_PARSERS.clear()
        environments._SETTINGS_PARSERS.update(parsers)
        compute_ops._OUTPUT_STAGE_KINDS.clear()
        compute_ops._OUTPUT_STAGE_KINDS.update(kinds)
        compute_ops._OUTPUT_STAGE_PARSERS.clear()
        compute_ops._OUTPUT_STAGE_PARSERS.update(stage_parsers)
        extensions._loaded.discard("sensitive_columns")
        for name in ("sensitive_columns", "sensitive_columns_pod", "sensitive_location"):
            sys.modules.pop(name, None)
        if str(EXAMPLES) in sys.path:
            sys.path.remove(str(EXAMPLES))


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrigin]:
    with serve_origin(tmp_path_factory.mktemp("origin"), {"patients.csv": PATIENTS}) as server:
        yield server


def _workflow(home: Path, origin: LocalOrigin, rawcode: str) -> dict[str, Any]:
    ddo = {
        "id": DID,
        "version": "4.1.0",
        "metadata": {
            "type": "dataset",
            "name": "Patients",
            "additionalInformation": {"sensitiveColumns": ["ssn", "name"]},
        },
        "services": [{"id": "compute", "type": "compute", "files": "0x00"}],
    }
    return raw_workflow(
        job_id=hashlib.md5(rawcode.encode()).hexdigest(),
        owner="0x" + "3" * 40,
        environment="guarded",
        inputs=[dataset_input(home, DID, [f"{origin.url}/patients.csv"], ddo=ddo)],
        algorithm=python_algorithm(rawcode),
    )


def location_compute_job() -> dg.JobDefinition:
    """The example code location's compute_job with the embedded resources of this test's settings,
    for `dg.reconstructable` (its `defs` built its resources at import, under other settings)."""
    import sensitive_location

    from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource

    resources = {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": LocalResultStoreResource(),
        "environments": ComputeEnvironments(),
        "io_manager": dg.mem_io_manager,
    }
    job = sensitive_location.compute_job
    return dg.Definitions(jobs=[job], resources=resources).get_job_def(job.name)


def _run(workflow: dict[str, Any]) -> tuple[dg.DagsterInstance, str, dict[str, str]]:
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance, job_def=location_compute_job)
    return instance, result.run_id, engine.current_tags(instance.get_run_by_id(result.run_id).tags)


def _steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    return {stat.step_key: stat.status.value for stat in instance.get_run_step_stats(run_id) if stat.status}


def _stored(home: Path) -> set[str]:
    return {path.name for path in home.rglob("*") if path.is_file() and "results" in path.parts}


def test_the_code_location_runs_the_default_stages_and_the_new_one(stage_loaded: None) -> None:
    import sensitive_location

    from c2d_defs.ops.compute import job_output_stages

    job = sensitive_location.defs.get_job_def("compute_job")
    assert job_output_stages(job) == ["leak_filter", "sensitive_columns"]
    # The rest of the engine's code location is there, unchanged.
    names = {job.name for job in sensitive_location.defs.jobs or []}
    assert {"salvage_job", "review_job", "results_expiry_job"} <= names
    assert {sensor.name for sensor in sensitive_location.defs.sensors or []} >= {"stage_watchdog"}
    # The settings are checked wherever environments load (the Provider too), naming the field.
    bad = environments.OutputStageConfig(name="sensitive_columns", settings={"colums": ["x"]})
    with pytest.raises(environments.OutputStageError, match="colums"):
        bad.parsed_settings()


def test_a_csv_with_a_sensitive_column_is_refused_with_61(
    stage_loaded: None, c2d_home: Path, origin: LocalOrigin
) -> None:
    instance, run_id, tags = _run(_workflow(c2d_home, origin, KEEPS_SSN))
    assert tags[engine.STATUS] == "61", tags.get(engine.STATUS_DETAIL)
    assert tags[engine.STATUS_DETAIL] == (
        "outputs withheld by the sensitive_columns stage: outputs/by_patient.csv has the column 'ssn', "
        "which the dataset's metadata marks as sensitive"
    )
    assert tags[output_stage_tag("sensitive_columns", "verdict")] == "rejected"
    said = [e.message for e in instance.all_logs(run_id) if e.message and e.step_key == "sensitive_columns"]
    assert any(message.startswith("status 50 Filtering results") for message in said)
    # The pod's own log reached the step's logs (it ran through the PodRunner).
    assert any("outputs/by_patient.csv: 2 column(s) checked" in message for message in said), said
    # Outputs and the algorithm's log withheld: neither listed nor stored; the engine's logs are.
    results = json.loads(tags.get(engine.RESULTS) or "[]")
    kinds = {entry["type"] for entry in results}
    assert not {"output", "algorithmLog"} & kinds and {"configurationLog", "publishLog"} <= kinds
    # The algorithm's log goes with the outputs: it is the algorithm's writing too.
    assert "by_patient.csv" not in _stored(c2d_home) and "algorithm.log" not in _stored(c2d_home)
    steps = _steps(instance, run_id)
    assert steps["sensitive_columns"] == "FAILURE" and steps["publish"] == "SUCCESS"
    assert steps["leak_filter"] == "SUCCESS"  # not configured here: it handed the job on
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_csv_without_one_is_published(stage_loaded: None, c2d_home: Path, origin: LocalOrigin) -> None:
    instance, run_id, tags = _run(_workflow(c2d_home, origin, BY_AGE))
    assert tags[engine.STATUS] == "70", tags.get(engine.STATUS_DETAIL)
    assert tags[output_stage_tag("sensitive_columns", "verdict")] == "accepted"
    assert tags.get(engine.phase_tag("filter", "finished")) is not None
    results = json.loads(tags.get(engine.RESULTS) or "[]")
    assert [entry["filename"] for entry in results if entry["type"] == "output"] == ["by_age.csv"]
    assert "by_age.csv" in _stored(c2d_home)
    assert _steps(instance, run_id)["sensitive_columns"] == "SUCCESS"
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
