"""The result store (S3) down during publish: the publish pod retries each upload with backoff; a
short outage costs nothing (70), a lasting one ends the job with 62 and a detail, and the job's
volume (outputs, logs) is kept so an operator can publish it again.

The S3 API is moto's server behind a gate that resets connections, as a store that is down looks to
its clients; it refuses from the job's submission, so the first S3 request of all, the publish
pod's, meets the outage. Tries per request are C2D_S3_MAX_ATTEMPTS (3 here, 5 by default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultkit import TcpGate, dagster_instance, demo_job, finished_job, run_of, s3_gated_stack
from fixtures_s3 import S3Server

from c2d_cli import stack
from c2d_core import engine
from c2d_core.settings import EngineSettings
from provider_api.dagster_jobs import DagsterJobs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

TRIES = 3
BUCKET = "c2d-store-down"
ALGORITHM = "open('/data/outputs/out.txt', 'w').write('kept for a retry')"


@dataclass
class StoreStack:
    running: stack.Stack
    home: Path
    origin: TcpGate
    s3: TcpGate
    server: S3Server  # moto itself, not through the gate

    @property
    def key_file(self) -> Path:
        return EngineSettings(home=self.home).resolved_provider_key_file


@pytest.fixture(scope="module")
def store_stack(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[StoreStack]:
    home = tmp_path_factory.mktemp("store_down") / ".c2d"
    extra = {"C2D_S3_MAX_ATTEMPTS": str(TRIES), "C2D_S3_TIMEOUT": "10"}
    with s3_gated_stack(home, moto_endpoint, BUCKET, **extra) as (running, origin_gate, s3_gate):
        yield StoreStack(running, home, origin_gate, s3_gate, S3Server(moto_endpoint, BUCKET))


def _keys(server: S3Server, job_id: str) -> set[str]:
    listed = server.client().list_objects_v2(Bucket=server.bucket, Prefix=f"{job_id}/")
    return {item["Key"].split("/", 1)[1] for item in listed.get("Contents", [])}


def test_store_down_briefly_the_upload_is_retried_and_the_job_finishes(store_stack: StoreStack) -> None:
    s = store_stack
    workflow = demo_job(s.origin.url, s.key_file, ALGORITHM)
    refused_before = s.s3.refused
    s.s3.set_mode("refuse", count=TRIES - 1)  # every try but the last of the first request fails
    with DagsterJobs(f"{s.running.webserver_url}/graphql", dagster_home=s.running.dagster_home) as operator:
        operator.submit(workflow)
        job = finished_job(s.running.provider_url, workflow, 60)
    assert s.s3.refused - refused_before == TRIES - 1
    assert job["status"] == 70 and job["runStatus"] == "SUCCESS", job
    assert "out.txt" in [entry["filename"] for entry in job["results"]]
    assert {"out.txt", "algorithm.log", "publish.log"} <= _keys(s.server, workflow.job_id)
    # Published: the volume is released as usual.
    assert not (EngineSettings(home=s.home).resolved_work_dir / workflow.job_id).exists()


def test_store_down_through_publish_ends_62_and_keeps_the_outputs(store_stack: StoreStack) -> None:
    s = store_stack
    workflow = demo_job(s.origin.url, s.key_file, ALGORITHM)
    refused_before = s.s3.refused
    s.s3.set_mode("refuse")
    try:
        with DagsterJobs(
            f"{s.running.webserver_url}/graphql", dagster_home=s.running.dagster_home
        ) as operator:
            operator.submit(workflow)
            job = finished_job(s.running.provider_url, workflow, 60)
    finally:
        s.s3.set_mode("open")
    # Every upload was tried TRIES times before the pod gave up on it.
    assert s.s3.refused - refused_before >= TRIES
    assert job["status"] == 62 and job["runStatus"] == "FAILURE", job
    assert job["statusText"] == "Failed to upload results", job
    assert "S3 upload failed" in job["statusDetail"] and f"{TRIES} tries" in job["statusDetail"], job
    assert job["results"] in ("", []) and _keys(s.server, workflow.job_id) == set()

    # The volume is kept, tagged for operators, with the algorithm's outputs and log in it.
    volume = EngineSettings(home=s.home).resolved_work_dir / workflow.job_id
    assert (volume / "data" / "outputs" / "out.txt").read_text() == "kept for a retry"
    assert (volume / "data" / "logs" / "algorithm.log").exists()
    with dagster_instance(s.home) as instance:
        assert run_of(instance, workflow.job_id).tags[engine.VOLUME_KEPT] == "1"

    # An operator's retry (docs/operations.md): the publish program, run by hand on the kept volume.
    termination = volume.parent / f"{workflow.job_id}.termination"
    env = {
        **os.environ,
        **S3Server(s.s3.url, BUCKET).env(),
        "AWS_SHARED_CREDENTIALS_FILE": str(s.home / "secrets" / "s3-credentials"),
        "WORKFLOWID": workflow.job_id,
        "VOLUME": str(volume / "data"),
        "ADMINLOGS": str(volume / "adminlogs"),
        "TERMINATION_LOG": str(termination),
        # The job's environment has no output stages: its outputs and log were never in question.
        "C2D_PUBLISH_OUTPUTS": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "c2d_defs.pods.publish"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(termination.read_text())["status"] == 70
    assert {"out.txt", "algorithm.log", "publish.log"} <= _keys(s.server, workflow.job_id)
