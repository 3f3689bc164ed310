"""Pods' output while they run: compute_job in process against the real sandbox and a real instance
whose LocalComputeLogManager captures each step's stdout, as the Dagster UI shows it (issue 16, item 5),
and the live copy of the algorithm log in the local result store (item 8's source).

The algorithm prints a line, then waits for a file the test puts into its outputs folder only once that
line was read back: what was read cannot have come from the end of the job.
"""

from __future__ import annotations

import hashlib
import threading
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
from c2d_core.live_logs import LIVE_LOG_NAME, STEP_LOG_CAP
from c2d_core.settings import EngineSettings

DID = "did:op:" + hashlib.sha256(b"live-logs").hexdigest()
ENVIRONMENTS = """
environments:
  - id: test-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 60
    maxJobs: 2
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""
WAITING_ALGORITHM = """
import os, sys, time
print("first line", flush=True)
print("token at https://secret.example/path?k=v here", flush=True)
print("to stderr", file=sys.stderr, flush=True)
for _ in range(600):
    if os.path.exists("/data/outputs/go"):
        break
    time.sleep(0.1)
print("second line", flush=True)
"""


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


@pytest.fixture
def origin(tmp_path: Path):
    with serve_origin(tmp_path / "origin", {"a.txt": "1\n"}) as server:
        yield server


def _workflow(home: Path, origin: LocalOrigin, rawcode: str, job_id: str) -> dict:
    return raw_workflow(
        job_id=job_id,
        environment="test-env",
        inputs=[dataset_input(home, DID, [f"{origin.url}/a.txt"])],
        algorithm=python_algorithm(rawcode, tag="3.11"),
    )


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    """A real instance on disk: its compute log manager is a LocalComputeLogManager (an ephemeral
    instance's captures nothing)."""
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
    assert type(instance.compute_log_manager).__name__ == "LocalComputeLogManager"
    return instance


def _log_key(instance: dg.DagsterInstance, run_id: str) -> list[str] | None:
    """The key of the captured logs the UI shows for the run's steps (in-process: one for all steps)."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED):
        data = record.dagster_event.logs_captured_data if record.dagster_event else None
        if data is not None and "run_algorithm" in data.step_keys:
            return list(instance.compute_log_manager.build_log_key_for_run(run_id, data.file_key))
    return None


def _step_stdout(instance: dg.DagsterInstance, run_id: str) -> str:
    key = _log_key(instance, run_id)
    if key is None:
        return ""
    return (instance.compute_log_manager.get_log_data(key).stdout or b"").decode("utf-8", "replace")


def _running_run_id(instance: dg.DagsterInstance) -> str | None:
    runs = instance.get_runs(limit=1)
    return runs[0].run_id if runs else None


def test_pod_output_reaches_the_step_logs_while_the_pod_runs(
    c2d_home: Path, origin: LocalOrigin, tmp_path: Path
) -> None:
    instance = _instance(tmp_path)
    workflow = _workflow(c2d_home, origin, WAITING_ALGORITHM, "a" * 32)
    go = EngineSettings().resolved_work_dir / workflow["jobId"] / "data" / "outputs" / "go"
    seen: dict[str, object] = {}
    stop = threading.Event()

    def watch() -> None:
        # Reads the step's captured stdout and the run's tags as an operator's UI would, until the
        # algorithm's first line is there; only then lets the algorithm go on.
        while not stop.wait(0.1):
            run_id = _running_run_id(instance)
            if run_id is None:
                continue
            text = _step_stdout(instance, run_id)
            run = instance.get_run_by_id(run_id)
            live_at = run.tags.get(engine.LIVE_LOG) if run else None
            if "[algorithm] first line" in text and live_at:
                seen["status"] = run.tags.get(engine.STATUS) if run else None
                seen["live_tag"] = live_at
                seen["live"] = (EngineSettings().resolved_results_dir / live_at).read_text().splitlines()[0]
                seen["second_yet"] = "second line" in text
                go.write_text("")
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_compute_job(workflow, instance)
    finally:
        stop.set()
        watcher.join(timeout=10)
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[engine.STATUS] == "70", tags.get(engine.STATUS_DETAIL)
    # Read while the algorithm was still waiting: the job was running its algorithm (40).
    assert seen == {
        "status": "40",
        "live_tag": f"{workflow['jobId']}/{LIVE_LOG_NAME}",
        "live": "first line",
        "second_yet": False,
    }
    stdout = _step_stdout(instance, result.run_id)
    lines = stdout.splitlines()
    assert "[algorithm] first line" in lines and "[algorithm] second line" in lines
    assert "[algorithm] to stderr" in lines  # the pod's stderr shares its log
    # Scrubbed like every text of ours a reader may see: no URL, not even its host.
    assert "[algorithm] token at <url> here" in lines and "secret.example" not in stdout
    assert any(line.startswith("[configure] ") for line in lines)
    assert any(line.startswith("[publish] ") for line in lines)
    assert origin.url.split("//")[1] not in stdout  # the dataset's location never reaches the UI
    # The live copy is the algorithm's own log, as the owner downloads it with the results.
    results = EngineSettings().resolved_results_dir / workflow["jobId"]
    live = (results / LIVE_LOG_NAME).read_text()
    assert live == (results / "algorithm.log").read_text()
    assert live.splitlines()[0] == "first line" and "second line" in live
    # Not a result: never in the job's manifest.
    assert LIVE_LOG_NAME not in tags[engine.RESULTS]


def test_step_logs_are_cut_at_the_cap_with_a_line_saying_so(
    c2d_home: Path, origin: LocalOrigin, tmp_path: Path
) -> None:
    instance = _instance(tmp_path)
    lines = 2 * STEP_LOG_CAP // 100
    rawcode = f"for i in range({lines}):\n    print('x' * 90, i)\nprint('the end')\n"
    result = run_compute_job(_workflow(c2d_home, origin, rawcode, "b" * 32), instance)
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[engine.STATUS] == "70", tags.get(engine.STATUS_DETAIL)
    stdout = _step_stdout(instance, result.run_id).splitlines()
    algorithm = [line for line in stdout if line.startswith("[algorithm] ")]
    assert STEP_LOG_CAP - 100 <= sum(len(line) + 1 for line in algorithm) <= STEP_LOG_CAP
    cut = "[c2d] algorithm pod output cut here at 1024 KiB; the results hold the full log"
    assert stdout.count(cut) == 1 and stdout.index(cut) == stdout.index(algorithm[-1]) + 1
    assert "[algorithm] the end" not in algorithm
    # The published log is whole.
    published = (EngineSettings().resolved_results_dir / ("b" * 32) / "algorithm.log").read_text()
    assert published.endswith("the end\n")
