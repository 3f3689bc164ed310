"""Queue wait limits per environment (`maxQueueWait`), on the real embedded stack.

Two environments run one job at a time: `strict` lets a job wait 4 s, `patient` sets no limit of
its own and C2D_MAX_QUEUE_WAIT is 0 (none). computeEnvironments shows each one's limit; a job
waiting behind a busy `strict` job ends with status 2 after 4 s, one waiting in `patient` stays
queued.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_cli.provider_client import ProviderClient
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.dagster_jobs import DagsterJobs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
STRICT_WAIT = 4
SLOW = "import time; time.sleep(60)"


@pytest.fixture
def two_queues(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[stack.Stack]:
    home = tmp_path_factory.mktemp("queue_wait") / ".c2d"
    config = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    base = {**config["environments"][0], "maxJobs": 1}
    config["environments"] = [
        {**base, "id": "strict", "maxQueueWait": STRICT_WAIT},
        {**base, "id": "patient"},
    ]
    envs_file = home.parent / "environments.yaml"
    envs_file.write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("C2D_ENVIRONMENTS_FILE", str(envs_file))
    monkeypatch.setenv("C2D_MAX_QUEUE_WAIT", "0")
    monkeypatch.setenv("C2D_WATCHDOG_INTERVAL", "1")
    running, _ = stack.up(home, port=stack._free_port())
    try:
        yield running
    finally:
        stack.down(home)


def _job(running: stack.Stack, workflow: Workflow) -> dict:
    response = httpx.get(
        f"{running.provider_url}/api/services/compute",
        params={"consumerAddress": workflow.owner, "jobId": workflow.job_id},
        timeout=10,
    )
    response.raise_for_status()
    return dict(response.json()[0])


def test_each_environment_has_its_own_queue_wait_limit(two_queues: stack.Stack) -> None:
    provider = ProviderClient(two_queues.provider_url)
    try:
        shown = {env["id"]: env["maxQueueWait"] for env in provider.environments(two_queues.chain_id)}
    finally:
        provider.close()
    assert shown == {"strict": STRICT_WAIT, "patient": 0}

    key_file = EngineSettings(home=Path(two_queues.home)).resolved_provider_key_file
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(f"{two_queues.webserver_url}/graphql", dagster_home=two_queues.dagster_home) as operator,
    ):
        base = demo_workflow(origin.url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)

        def workflow(env_id: str) -> Workflow:
            raw = {**base, "jobId": uuid.uuid4().hex, "agreementId": "0x" + uuid.uuid4().hex * 2}
            raw["environment"] = env_id
            raw["algorithm"] = {**base["algorithm"], "rawcode": SLOW}
            return Workflow.model_validate(raw)

        busy = [workflow("strict"), workflow("patient")]
        waiting = {env_id: workflow(env_id) for env_id in ("strict", "patient")}
        for item in [*busy, *waiting.values()]:
            operator.submit(item)
        try:
            deadline = time.monotonic() + 60
            strict = _job(two_queues, waiting["strict"])
            while strict["status"] == 1:
                assert time.monotonic() < deadline, strict
                time.sleep(0.5)
                strict = _job(two_queues, waiting["strict"])
            assert (strict["status"], strict["runStatus"]) == (2, "CANCELED"), strict
            assert (
                f"more than {STRICT_WAIT} s" in strict["statusDetail"] and "strict" in strict["statusDetail"]
            )
            assert float(strict["dateFinished"]) - float(strict["dateCreated"]) >= STRICT_WAIT

            # The patient one waited as long, and longer: it is still queued, first in line.
            time.sleep(2)
            patient = _job(two_queues, waiting["patient"])
            assert (patient["status"], patient["runStatus"], patient["queuePosition"]) == (1, "QUEUED", 1), (
                patient
            )
            assert patient["dateFinished"] is None
        finally:
            for item in [*busy, waiting["patient"]]:
                operator.stop(item.job_id)
