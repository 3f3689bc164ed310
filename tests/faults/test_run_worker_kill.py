"""kill -9 of a job's run worker, in each stage: the job ends with a clear failure status, its logs
published, its sandbox gone, and the Provider reports it finished; it never stays "running".

The run worker is the process running the whole `compute_job` in process: the warm run worker's child
for the run (the embedded default's launcher), or with Dagster's default launcher the multiprocessing
child a code server spawns. It is found as the parent of the `tail -F` processes that capture the
run's compute logs. After the kill, whoever started it (the warm worker, or the code server) sees its
child gone and fails the run; the stage watchdog (C2D_WATCHDOG_INTERVAL=1 here) then tags the failure
status, and its salvage run kills what is left of the sandbox, publishes the job volume and writes
the finish date.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_cli.processes import alive
from c2d_cli.provider_client import ProviderClient
from c2d_core import engine
from c2d_core.chain import dev_accounts
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from c2d_defs.pods import layout
from provider_api.dagster_jobs import DagsterJobs
from provider_api.jobs import JobRecord

T = TypeVar("T")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
STAGE_ROOT = Path("/run/c2d-sandbox/stage")
OWNER = dev_accounts(3)[2]
SLEEPER = "import time; print('algorithm started', flush=True); time.sleep(60)"
# A sparse output big enough that publishing it (hash and copy) keeps the publish pod busy a while.
BIG_OUTPUT = (
    "print('algorithm wrote its output', flush=True)\n"
    "with open('/data/outputs/big.bin', 'wb') as f: f.truncate(300 * 1024 * 1024)\n"
)


class _TrickleHandler(BaseHTTPRequestHandler):
    """Answers every GET with a body sent one byte a second: the configure pod stays busy fetching."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"1")
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass  # the fetching pod was killed

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def trickle_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TrickleHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class KillStack:
    running: stack.Stack
    operator: DagsterJobs
    provider: ProviderClient
    origin_url: str
    key_file: Path


@pytest.fixture(scope="module")
def kill_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillStack]:
    home = tmp_path_factory.mktemp("worker_kill") / ".c2d"
    envs = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    envs["environments"][0]["maxJobDuration"] = 90
    envs_file = home.parent / "environments.yaml"
    envs_file.write_text(yaml.safe_dump(envs))
    with pytest.MonkeyPatch.context() as patch:
        # Read by the webserver, the daemon and its code server, which inherit them at start.
        patch.setenv("C2D_ENVIRONMENTS_FILE", str(envs_file))
        patch.setenv("C2D_WATCHDOG_INTERVAL", "1")
        patch.setenv("C2D_RUN_MONITORING_INTERVAL", "2")
        running, _ = stack.up(home, port=stack._free_port())
    try:
        provider = ProviderClient(running.provider_url)
        with (
            LocalOrigin(EXAMPLES) as origin,
            DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=running.dagster_home) as operator,
        ):
            key_file = EngineSettings(home=home).resolved_provider_key_file
            yield KillStack(running, operator, provider, origin.url, key_file)
        provider.close()
    finally:
        stack.down(home)


def _workflow(kill_stack: KillStack, code: str, origin_url: str | None = None) -> Workflow:
    raw = demo_workflow(origin_url or kill_stack.origin_url, kill_stack.key_file).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    raw = {
        **raw,
        "jobId": uuid.uuid4().hex,
        "agreementId": "0x" + uuid.uuid4().hex * 2,
        "owner": OWNER.address,
    }
    raw["algorithm"] = {**raw["algorithm"], "rawcode": code}
    return Workflow.model_validate(raw)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[1])


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def run_worker(run_id: str, launchers: tuple[int, ...]) -> int:
    """The run worker of `run_id`: parent of the run's compute-log capture, a descendant of the process
    that launched it (the webserver, when the run coordinator launched it at submit; else the daemon)."""
    marker = f"/storage/{run_id}/compute_logs/"
    parents = {
        _parent(pid) for pid in _pids() if _cmdline(pid).startswith("tail ") and marker in _cmdline(pid)
    }
    # Spawned by a code server (Dagster's default launcher), or forked by the warm run worker
    # (c2d_defs/warm_launcher), whose children keep its command line.
    workers = [
        pid
        for pid in parents
        if "multiprocessing" in _cmdline(pid) or "c2d_defs.warm_launcher.worker" in _cmdline(pid)
    ]
    assert len(workers) == 1, (run_id, parents)
    ancestor = workers[0]
    while ancestor > 1 and ancestor not in launchers:
        ancestor = _parent(ancestor)
    assert ancestor in launchers, "the run worker is neither the webserver's nor the daemon's"
    return workers[0]


def sandbox_processes(job_id: str) -> list[int]:
    """Processes of the job's sandboxes: their command lines name the job's stage dirs."""
    marker = f"{STAGE_ROOT}/{job_id}-"
    return [pid for pid in _pids() if marker in _cmdline(pid)]


def _wait(what: str, condition: Callable[[], T | None], timeout: float, poll: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def _job_json(kill_stack: KillStack, workflow: Workflow) -> dict[str, Any]:
    response = httpx.get(
        f"{kill_stack.running.provider_url}/api/services/compute",
        params={"consumerAddress": workflow.owner, "jobId": workflow.job_id},
        timeout=10,
    )
    response.raise_for_status()
    [job] = response.json()
    return job


def _kill_and_check(
    kill_stack: KillStack,
    workflow: Workflow,
    phase: str,
    expected_status: int,
    log_type: str,
    log_text: str,
    stage_log: str | None = None,
) -> dict[str, Any]:
    """Kill the run worker while `phase` runs (once `stage_log`, a log in the job volume, holds
    `log_text`, if given), then check the outcome: `expected_status`, the `log_type` log published
    with `log_text` in it, nothing of the job left."""
    volume = EngineSettings(home=Path(kill_stack.running.home)).resolved_work_dir / workflow.job_id
    record = kill_stack.operator.submit(workflow)
    assert int(record.tags[engine.MAX_RUNTIME]) > 0  # every compute run carries its deadline
    _wait(
        "the stage's pod to run",
        lambda: _in_stage(kill_stack.operator.job(workflow.job_id, fresh=True), phase),
        45,
        0.05,
    )
    if stage_log is not None:
        # The stage's pod has written the line the consumer must get back: the kill cannot come first.
        log = volume / stage_log
        _wait(
            "the pod's log line",
            lambda: log.exists() and log_text in log.read_text(errors="replace"),
            30,
            0.05,
        )
    running = kill_stack.running
    launchers = (
        running.webserver_pid,
        running.daemon_pid,
        *([running.worker_pid] if running.worker_pid else []),
    )
    worker = run_worker(record.run_id, launchers)
    assert sandbox_processes(workflow.job_id), "the stage's sandbox should be running"
    os.kill(worker, signal.SIGKILL)
    _wait("the run worker to die", lambda: not alive(worker), 5)

    job = _wait(
        "the job to finish with its logs published",
        lambda: (
            j if (j := _job_json(kill_stack, workflow)).get("dateFinished") and j.get("results") else None
        ),
        60,
        poll=0.3,
    )
    assert job["status"] == expected_status, job
    assert job["runStatus"] == "FAILURE" and job["stopreq"] == 0, job
    assert "run worker died" in job["statusDetail"] and "published" in job["statusDetail"], job
    # The Provider's answer is final: the status does not move any more.
    assert _job_json(kill_stack, workflow)["status"] == expected_status

    [entry] = [item for item in job["results"] if item["type"] == log_type]
    response = kill_stack.provider.result(OWNER, workflow.job_id, entry["index"])
    assert response.status_code == 200, response.text
    assert log_text in response.text

    # Nothing of the job is left on the host: sandbox processes, stage dirs, the job volume.
    assert sandbox_processes(workflow.job_id) == []
    assert list(STAGE_ROOT.glob(f"{workflow.job_id}-*")) == []
    assert not volume.exists()
    return job


def _in_stage(record: JobRecord | None, phase: str) -> bool:
    """The job is in `phase` (started, not finished) and that stage's pod is running."""
    tags = record.tags if record else {}
    started = engine.phase_tag(phase, "started") in tags
    return (
        started and engine.phase_tag(phase, "finished") not in tags and bool(sandbox_processes(record.job_id))
    )


@pytest.mark.timeout(120)
def test_worker_killed_while_configuring(kill_stack: KillStack, trickle_origin: str) -> None:
    workflow = _workflow(kill_stack, SLEEPER, origin_url=trickle_origin)
    job = _kill_and_check(
        kill_stack, workflow, "configure", 31, "configurationLog", "input 0", stage_log=layout.CONFIGURE_LOG
    )
    assert "configure stage" in job["statusDetail"]


@pytest.mark.timeout(120)
def test_worker_killed_while_the_algorithm_runs(kill_stack: KillStack) -> None:
    workflow = _workflow(kill_stack, SLEEPER)
    job = _kill_and_check(
        kill_stack,
        workflow,
        "algorithm",
        41,
        "algorithmLog",
        "algorithm started",
        stage_log=layout.ALGORITHM_LOG,
    )
    assert "algorithm stage" in job["statusDetail"]


@pytest.mark.timeout(120)
def test_worker_killed_while_publishing(kill_stack: KillStack) -> None:
    workflow = _workflow(kill_stack, BIG_OUTPUT)
    job = _kill_and_check(kill_stack, workflow, "publish", 62, "algorithmLog", "algorithm wrote its output")
    assert "publish stage" in job["statusDetail"]
    # The outputs come back too: the watchdog's publish is a whole publish stage.
    assert "big.bin" in [item["filename"] for item in job["results"]]
