"""The filtering stage (Ocean's status 50) on the real sandbox: compute_job with the leak filter configured.

A raw algorithm that copies its input into an output (plain, gzipped, base64, inside a bigger JSON) is
refused: the job ends 61 with the filter's sentence in its status detail, the outputs are never stored,
the logs are, and the leak_filter step is the red one. The demo's algorithm passes the same filter.
An environment without output stages: test_compute_job.py (unchanged outcomes, the op hands on).
"""

import hashlib
import json
import random
from pathlib import Path

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

from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.live_logs import LIVE_LOG_NAME
from c2d_defs.ops.compute import output_stage_tag

ROOT = Path(__file__).resolve().parents[2]
DID = "did:op:" + hashlib.sha256(b"filtered-dataset").hexdigest()
ENVIRONMENTS = """
environments:
  - id: filtered
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 20
    maxProcesses: 64
    outputStages:
      - name: leak_filter
        settings: {window_bytes: 1024}
        deadline: 60
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
  - id: misconfigured
    diskGB: 0.05
    outputStages:
      - name: sensitive_columns
"""

# What each copying algorithm writes; every one reads the dataset's one file first.
READ = """
import base64, gzip, json, os
did = json.loads(os.environ["DIDS"])[0]
data = open(f"/data/inputs/{did}/0", "rb").read()
print("read", len(data), "bytes")
"""
COPIES = {
    "plain": 'open("/data/outputs/copy.csv", "wb").write(data)',
    "gzip": 'open("/data/outputs/copy.csv.gz", "wb").write(gzip.compress(data))',
    "base64": 'open("/data/outputs/copy.b64", "wb").write(base64.b64encode(data))',
    "json": (
        'json.dump({"mean": 12.5, "rows": 400, "note": "summary", "raw": data.decode()}, '
        'open("/data/outputs/result.json", "w"))'
    ),
}


def _weather_like() -> str:
    rng = random.Random(15)
    rows = ["date,city,temp_c,rain_mm"]
    for day in range(600):
        city = rng.choice(["Lisbon", "Berlin", "Oslo", "Rome"])
        rows.append(
            f"2024-{day % 12 + 1:02d}-{day % 28 + 1:02d},{city},"
            f"{rng.uniform(-10, 35):.2f},{rng.uniform(0, 9):.1f}"
        )
    return "\n".join(rows) + "\n"


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory):
    with serve_origin(tmp_path_factory.mktemp("origin"), {"weather.csv": _weather_like()}) as server:
        yield server


def _workflow(home: Path, origin: LocalOrigin, rawcode: str, environment: str = "filtered", **extra) -> dict:
    return raw_workflow(
        job_id=hashlib.md5((rawcode + environment).encode()).hexdigest(),
        owner="0x" + "2" * 40,
        environment=environment,
        inputs=[dataset_input(home, DID, [f"{origin.url}/weather.csv"])],
        algorithm=python_algorithm(rawcode, **extra),
    )


def _run(workflow: dict) -> tuple[dg.DagsterInstance, str, dict[str, str]]:
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance)
    run = instance.get_run_by_id(result.run_id)
    return instance, result.run_id, engine.current_tags(run.tags)


def _tag(tags: dict[str, str], name: str) -> str | None:
    return tags.get(name)


def _steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    return {stat.step_key: stat.status.value for stat in instance.get_run_step_stats(run_id) if stat.status}


def _results_root(home: Path) -> Path:
    found = [path for path in home.rglob("*") if path.is_dir() and path.name == "results"]
    assert found, "no local result store under the stack home"
    return found[0]


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_copying_algorithm_is_refused_with_status_61_and_only_its_logs_published(
    c2d_home: Path, origin: LocalOrigin, how: str
) -> None:
    instance, run_id, tags = _run(_workflow(c2d_home, origin, READ + COPIES[how]))
    status, detail = _tag(tags, engine.STATUS), _tag(tags, engine.STATUS_DETAIL) or ""
    assert status == "61", (status, detail)
    assert detail.startswith("outputs withheld by the leak_filter stage: outputs/"), detail
    assert "copied verbatim from the inputs" in detail or "exact copy of an input file" in detail
    assert origin.url.split("//")[1] not in detail
    # The filter phase ran, with its times, and the status history passed through 50.
    started = engine.epoch(_tag(tags, engine.phase_tag("filter", "started")))
    finished = engine.epoch(_tag(tags, engine.phase_tag("filter", "finished")))
    assert started is not None and finished is not None and finished >= started
    said = [e.message for e in instance.all_logs(run_id) if e.message and e.step_key == "leak_filter"]
    assert any(message.startswith("status 50 Filtering results") for message in said)
    # What the consumer may download: the engine's logs, never an output nor the algorithm's log
    # (the algorithm writes it as freely as its outputs).
    results = json.loads(_tag(tags, engine.RESULTS) or "[]")
    kinds = sorted({entry["type"] for entry in results})
    assert not {"output", "algorithmLog"} & set(kinds) and {"configurationLog", "publishLog"} <= set(kinds)
    stored = [path.name for path in _results_root(c2d_home).rglob("*") if path.is_file()]
    assert not {"copy.csv", "copy.csv.gz", "copy.b64", "result.json", "algorithm.log"} & set(stored), stored
    # A failed job is a failed run, its leak_filter step the red one; publish ran and succeeded.
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    steps = _steps(instance, run_id)
    assert steps["leak_filter"] == "FAILURE" and steps["publish"] == "SUCCESS"
    assert steps["run_algorithm"] == "SUCCESS" and steps["configure"] == "SUCCESS"
    failure = next(
        r.event_log_entry.dagster_event.step_failure_data
        for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    )
    assert failure.user_failure_data.description.startswith("Failed to fetch results: outputs withheld")
    metadata = {key: value.value for key, value in failure.user_failure_data.metadata.items()}
    assert metadata["ocean_status"] == 61 and metadata["output_stage"] == "leak_filter"


PRINTS = "import sys\nsys.stdout.write(data.decode())\nsys.stdout.flush()\n"


def test_an_algorithm_that_prints_its_input_gets_neither_its_outputs_nor_its_log_out(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    # The security review's case: the input written to stdout and copied to an output. The job is
    # refused, and the algorithm's log (which holds the whole input) is withheld with the outputs:
    # neither in the results nor anywhere in the store, and no live copy of it was ever made.
    _instance, _run_id, tags = _run(_workflow(c2d_home, origin, READ + PRINTS + COPIES["plain"]))
    assert _tag(tags, engine.STATUS) == "61", _tag(tags, engine.STATUS_DETAIL)
    results = json.loads(_tag(tags, engine.RESULTS) or "[]")
    kinds = {entry["type"] for entry in results}
    assert not {"output", "algorithmLog"} & kinds and {"configurationLog", "publishLog"} <= kinds
    assert engine.LIVE_LOG not in tags
    data = _weather_like().encode()
    stored = [path for path in _results_root(c2d_home).rglob("*") if path.is_file()]
    assert stored and not {"algorithm.log", LIVE_LOG_NAME, "copy.csv"} & {path.name for path in stored}
    for path in stored:
        assert data[:2000] not in path.read_bytes(), path.name
    said = next(path for path in stored if path.name == "publish.log").read_text()
    assert "outputs and the algorithm's log withheld" in said, said


def test_an_input_printed_to_the_log_alone_is_refused(c2d_home: Path, origin: LocalOrigin) -> None:
    # No output holds the input, only the log: the filter checks it as if it were an output.
    _instance, _run_id, tags = _run(_workflow(c2d_home, origin, READ + PRINTS))
    detail = _tag(tags, engine.STATUS_DETAIL) or ""
    assert _tag(tags, engine.STATUS) == "61", detail
    assert detail.startswith("outputs withheld by the leak_filter stage: logs/algorithm.log holds "), detail
    assert "copied verbatim from the inputs" in detail
    results = json.loads(_tag(tags, engine.RESULTS) or "[]")
    assert "algorithmLog" not in {entry["type"] for entry in results}


def test_the_demo_algorithm_passes_the_same_filter(c2d_home: Path, origin: LocalOrigin) -> None:
    rawcode = (ROOT / "examples" / "algorithms" / "summary.py").read_text()
    instance, run_id, tags = _run(_workflow(c2d_home, origin, rawcode, algocustomdata={"column": "temp_c"}))
    assert _tag(tags, engine.STATUS) == "70", _tag(tags, engine.STATUS_DETAIL)
    assert _tag(tags, output_stage_tag("leak_filter", "verdict")) == "accepted"
    results = json.loads(_tag(tags, engine.RESULTS) or "[]")
    assert [entry["filename"] for entry in results if entry["type"] == "output"] == ["summary.json"]
    assert _tag(tags, engine.phase_tag("filter", "finished")) is not None
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    assert _steps(instance, run_id)["leak_filter"] == "SUCCESS"


def test_an_environment_naming_an_unknown_stage_fails_before_fetching(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    _instance, _run_id, tags = _run(_workflow(c2d_home, origin, "print(1)", environment="misconfigured"))
    assert _tag(tags, engine.STATUS) == "31"
    assert _tag(tags, engine.STATUS_DETAIL) == (
        "environment 'misconfigured' configures the output stage 'sensitive_columns', which this code "
        "location does not define (its compute job runs: leak_filter)"
    )
    assert _tag(tags, engine.phase_tag("algorithm", "started")) is None
