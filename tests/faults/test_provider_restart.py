"""kill -9 of the Provider during a job loses nothing: the job keeps running in Dagster, and the
restarted Provider serves its status again (same nonce/claim database, same port) until it finishes.

The Provider holds no job state of its own: a job is a Dagster run found by its tags, and the nonce
store and agreement claims are in the Provider's database, which survives the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import pytest

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_cli.processes import alive, stop_group
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.operator import Operator

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALGORITHM = "import time; time.sleep(6); open('/data/outputs/out.txt', 'w').write('survived')"


def _status(provider_url: str, workflow: Workflow) -> dict | None:
    try:
        response = httpx.get(
            f"{provider_url}/api/services/compute",
            params={"consumerAddress": workflow.owner, "jobId": workflow.job_id},
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    response.raise_for_status()
    return response.json()[0]


def _restart_provider(running: stack.Stack, port: int) -> int:
    """Start the Provider again the way `stack.up` does (same home, chain, Dagster, port)."""
    home = Path(running.home)
    env = {
        **os.environ,
        "C2D_HOME": str(home),
        "DAGSTER_HOME": str(home),
        "PROVIDER_ENVIRONMENT": "development",
        "PROVIDER_PRIVATE_KEY": EngineSettings(home=home).resolved_provider_key_file.read_text().strip(),
        "PROVIDER_RPC_URL": running.rpc_url,
        "PROVIDER_CHAIN_ID": str(running.chain_id),
        "PROVIDER_ADDRESSES_FILE": running.addresses_file,
        "PROVIDER_GRAPHQL_URL": f"{running.webserver_url}/graphql",
        "PROVIDER_URL": running.provider_url,
        "PROVIDER_ALLOW_NON_PUBLIC_IP": "true",
    }
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    command = [
        uvicorn,
        "--factory",
        "provider_api.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with (home / "stack-logs" / "provider-restarted.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=stack.PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # `c2d dev down` (the fixture's teardown) stops what stack.json names: record the new Provider.
    stack.stack_file(home).write_text(
        json.dumps(asdict(replace(running, provider_pid=process.pid)), indent=2)
    )
    return process.pid


def test_provider_killed_mid_job_comes_back_and_the_job_finishes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("provider_restart") / ".c2d"
    running, _ = stack.up(home, port=stack._free_port())
    new_pid = 0
    try:
        port = int(running.provider_url.rsplit(":", 1)[1])
        key_file = EngineSettings(home=home).resolved_provider_key_file
        with LocalOrigin(EXAMPLES) as origin, Operator(f"{running.webserver_url}/graphql") as operator:
            raw = demo_workflow(origin.url, key_file).model_dump(
                by_alias=True, mode="json", exclude_none=True
            )
            raw = {**raw, "jobId": uuid.uuid4().hex, "agreementId": "0x" + uuid.uuid4().hex * 2}
            raw["algorithm"] = {**raw["algorithm"], "rawcode": ALGORITHM}
            workflow = Workflow.model_validate(raw)
            operator.submit(workflow)

            deadline = time.monotonic() + 25
            while (_status(running.provider_url, workflow) or {}).get("status") != 40:
                assert time.monotonic() < deadline, _status(running.provider_url, workflow)
                time.sleep(0.2)

            os.killpg(running.provider_pid, signal.SIGKILL)  # the Provider and nothing else
            deadline = time.monotonic() + 5
            while alive(running.provider_pid):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert _status(running.provider_url, workflow) is None  # nobody answers

            new_pid = _restart_provider(running, port)
            deadline = time.monotonic() + 20
            job = None
            while job is None:
                assert time.monotonic() < deadline, "the restarted Provider did not answer"
                time.sleep(0.2)
                job = _status(running.provider_url, workflow)
            assert job["status"] in (40, 60, 70) and job["jobId"] == workflow.job_id

            deadline = time.monotonic() + 25
            # Status 70 is tagged just before the run itself ends: wait for both.
            while job["status"] != 70 or job["runStatus"] != "SUCCESS":
                assert time.monotonic() < deadline, job
                time.sleep(0.3)
                job = _status(running.provider_url, workflow)
                assert job is not None
            assert job["runStatus"] == "SUCCESS" and job["stopreq"] == 0
            assert "out.txt" in [entry["filename"] for entry in job["results"]]
    finally:
        stack.down(home)
        if new_pid:
            stop_group(new_pid)
