"""Results in S3 against a real S3 server on loopback (moto server mode): the store, the publish pod
writing there, the Provider streaming from there (Range, owner-only, 410 once expired), the storage
expiry sensor, and `s3` input files for the configure fetcher and fileinfo.

Run storage is the one part not real here: the Provider's operator is replaced by a stand-in that
returns the job record (its tags) the engine would have written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak
from fastapi.testclient import TestClient
from fixtures_s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server

from c2d_core import engine
from c2d_core.fetch import FetchLimits, fetch_to_file
from c2d_core.netguard import NetPolicy, guarded_client
from c2d_core.result_stores import ResultStores, S3ResultStore
from c2d_core.results import LocalResultStore
from c2d_core.s3 import S3Settings, s3_client
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.main import create_app
from provider_api.settings import ProviderSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "00112233445566778899aabbccddeeff"
CONSUMER = Account.create()
STRANGER = Account.create()
OUTPUT = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, every byte value


def _store(server: S3Server, **overrides: Any) -> S3ResultStore:
    settings = S3Settings(bucket=server.bucket, endpoint_url=server.endpoint_url, region=REGION, **overrides)
    return S3ResultStore(s3_client(settings), settings)


def test_put_open_range_and_delete(s3_server: S3Server) -> None:
    store = _store(s3_server, prefix="results", sse="AES256")
    stored = store.put(JOB_ID, "out.bin", io.BytesIO(OUTPUT))
    assert stored.location == f"s3://{s3_server.bucket}/results/{JOB_ID}/out.bin"
    assert (stored.size, stored.sha256) == (len(OUTPUT), hashlib.sha256(OUTPUT).hexdigest())
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"results/{JOB_ID}/out.bin")
    assert head["ServerSideEncryption"] == "AES256"
    with store.open(stored.location) as handle:
        assert handle.read() == OUTPUT
    with store.open(f"{JOB_ID}/out.bin") as handle:  # the job-relative form reads the same object
        assert handle.read(4) == OUTPUT[:4]
    assert b"".join(store.read_range(stored.location, 1000, 300_000)) == OUTPUT[1000:301_000]
    with pytest.raises(ValueError, match="outside the result store"):
        store.open(f"s3://other-bucket/results/{JOB_ID}/out.bin")
    store.put("ffffffffffffffffffffffffffffffff", "keep.txt", io.BytesIO(b"another job"))
    store.delete_job(JOB_ID)
    store.delete_job(JOB_ID)  # idempotent
    with pytest.raises(FileNotFoundError):
        store.open(stored.location)
    keys = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=s3_server.bucket)["Contents"]]
    assert keys == ["results/ffffffffffffffffffffffffffffffff/keep.txt"]


def _run_publish_pod(tmp_path: Path, server: S3Server) -> dict[str, Any]:
    """The publish pod as the runner runs it: a subprocess with a cleared environment, S3 settings in
    env and the credentials in a shared credentials file (the `s3-credentials` secret)."""
    (tmp_path / "data" / "outputs" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "logs").mkdir()
    (tmp_path / "adminlogs").mkdir()
    (tmp_path / "data" / "outputs" / "sub" / "result.bin").write_bytes(OUTPUT)
    (tmp_path / "data" / "logs" / "algorithm.log").write_bytes(b"algorithm ran\n")
    credentials = tmp_path / "s3-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "VOLUME": str(tmp_path / "data"),
        "ADMINLOGS": str(tmp_path / "adminlogs"),
        "WORKFLOWID": JOB_ID,
        "TERMINATION_LOG": str(tmp_path / "termination-log"),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "C2D_PUBLISH_OUTPUTS": "true",
        **server.env(C2D_S3_PREFIX="jobs", C2D_S3_SSE="AES256"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "c2d_defs.pods.publish"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ACCESS_KEY not in done.stdout + done.stderr and SECRET_KEY not in done.stdout + done.stderr
    return json.loads((tmp_path / "termination-log").read_bytes())


def test_publish_pod_writes_results_and_manifest_to_s3(s3_server: S3Server, tmp_path: Path) -> None:
    report = _run_publish_pod(tmp_path, s3_server)
    assert report["status"] == 70
    assert report["manifest"] == f"s3://{s3_server.bucket}/jobs/{JOB_ID}/.manifest.json"
    store = _store(s3_server, prefix="jobs")
    with store.open(report["manifest"]) as handle:
        manifest = json.load(handle)
    assert [entry["filename"] for entry in manifest] == ["sub_result.bin", "algorithm.log", "publish.log"]
    assert all(entry["location"].startswith(f"s3://{s3_server.bucket}/jobs/{JOB_ID}/") for entry in manifest)
    assert manifest[0]["sha256"] == hashlib.sha256(OUTPUT).hexdigest()
    with store.open(manifest[0]["location"]) as handle:
        assert handle.read() == OUTPUT
    text = json.dumps(manifest)
    assert ACCESS_KEY not in text and SECRET_KEY not in text


# --- the Provider ----------------------------------------------------------------------------------


class RunStorage:
    """Stand-in for the operator: answers `jobs()` with the record the engine wrote."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record

    def jobs(self, owner: str | None = None, job_id: str | None = None, agreement_id: str | None = None):
        return [self.record] if job_id in (None, self.record.job_id) else []

    def job(self, job_id: str, *, fresh: bool = False) -> JobRecord | None:
        return self.record if job_id == self.record.job_id else None

    def close(self) -> None:
        pass


def _record(manifest_location: str, **tags: str) -> JobRecord:
    return JobRecord(
        run_id="r1",
        run_status="SUCCESS",
        tags={
            engine.JOB_ID: JOB_ID,
            engine.OWNER: CONSUMER.address,
            engine.ENVIRONMENT: "ocean-compute",
            engine.STATUS: "70",
            engine.RESULTS: "[]",
            engine.DATE_FINISHED: str(time.time()),
            engine.MANIFEST: manifest_location,
            **tags,
        },
        created=time.time(),
    )


@pytest.fixture
def provider(tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for key, value in s3_server.env(C2D_S3_PREFIX="jobs").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    settings = ProviderSettings(nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


class Signer:
    def __init__(self) -> None:
        self.nonce = int(time.time() * 1000)

    def params(self, account: Any, index: int) -> dict[str, str]:
        self.nonce += 1
        message = account.address + JOB_ID + str(index) + str(self.nonce)
        signature = account.sign_message(encode_defunct(primitive=keccak(text=message))).signature.to_0x_hex()
        return {
            "consumerAddress": account.address,
            "jobId": JOB_ID,
            "index": str(index),
            "nonce": str(self.nonce),
            "signature": signature,
        }


def test_compute_result_streams_from_s3(provider: TestClient, s3_server: S3Server, tmp_path: Path) -> None:
    report = _run_publish_pod(tmp_path, s3_server)
    provider.app.state.dagster_jobs = RunStorage(_record(report["manifest"]))  # type: ignore[attr-defined]
    signer = Signer()
    whole = provider.get("/api/services/computeResult", params=signer.params(CONSUMER, 0))
    assert whole.status_code == 200, whole.text
    assert whole.content == OUTPUT
    assert whole.headers["content-disposition"] == 'attachment; filename="sub_result.bin"'
    for header in ("s3", "127.0.0.1", s3_server.bucket):
        assert header not in " ".join(whole.headers.values())
    ranged = provider.get(
        "/api/services/computeResult", params=signer.params(CONSUMER, 0), headers={"Range": "bytes=100-65635"}
    )
    assert ranged.status_code == 206
    assert ranged.content == OUTPUT[100:65636]
    assert ranged.headers["content-range"] == f"bytes 100-65635/{len(OUTPUT)}"
    suffix = provider.get(
        "/api/services/computeResult", params=signer.params(CONSUMER, 0), headers={"Range": "bytes=-4"}
    )
    assert suffix.content == b"tail"
    log = provider.get("/api/services/computeResult", params=signer.params(CONSUMER, 1))
    assert log.content == b"algorithm ran\n"
    stranger = provider.get("/api/services/computeResult", params=signer.params(STRANGER, 0))
    assert stranger.status_code == 404


def test_expired_results_are_410_and_flagged(
    provider: TestClient, s3_server: S3Server, tmp_path: Path
) -> None:
    report = _run_publish_pod(tmp_path, s3_server)
    signer = Signer()
    record = _record(report["manifest"], **{engine.RESULTS_EXPIRED: "1"})
    provider.app.state.dagster_jobs = RunStorage(record)  # type: ignore[attr-defined]
    response = provider.get("/api/services/computeResult", params=signer.params(CONSUMER, 0))
    assert response.status_code == 410
    assert "expired" in response.json()["error"]
    assert ocean_job_json(record)["resultsExpired"] is True
    # Deleted from the store before the run was tagged: the same clear answer, not a 500.
    _store(s3_server, prefix="jobs").delete_job(JOB_ID)
    provider.app.state.dagster_jobs = RunStorage(_record(report["manifest"]))  # type: ignore[attr-defined]
    response = provider.get("/api/services/computeResult", params=signer.params(CONSUMER, 0))
    assert response.status_code == 410 and "expired" in response.json()["error"]


# --- storage expiry ---------------------------------------------------------------------------------


def test_expiry_sensor_deletes_old_results_and_tags_the_run(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine_kit import run_requested_job

    from c2d_defs.expiry import results_expiry
    from c2d_defs.jobs import results_expiry_job
    from c2d_defs.resources import ComputeEnvironments, S3ResultStoreResource

    envs = tmp_path / "environments.yaml"
    envs.write_text(
        "environments:\n"
        "  - {id: tiny, cpuNumber: 1, ramGB: 1, diskGB: 1, maxJobDuration: 60, storageExpiry: 1}\n"
        "  - {id: forever, cpuNumber: 1, ramGB: 1, diskGB: 1, maxJobDuration: 60, storageExpiry: 0}\n"
    )
    for key, value in s3_server.env(C2D_S3_PREFIX="jobs").items():
        monkeypatch.setenv(key, value)
    store = _store(s3_server, prefix="jobs")
    old, kept, fresh = JOB_ID, "1" * 32, "2" * 32
    for job_id in (old, kept, fresh):
        store.put(job_id, "out.txt", io.BytesIO(b"x"))
    now = time.time()
    instance = dg.DagsterInstance.ephemeral()
    runs = {old: ("tiny", now - 5), kept: ("forever", now - 10_000), fresh: ("tiny", now + 60)}
    for job_id, (env_id, finished) in runs.items():
        instance.add_run(
            dg.DagsterRun(
                job_name=engine.JOB_NAME,
                run_id=f"run-{job_id}",
                status=dg.DagsterRunStatus.SUCCESS,
                tags={
                    engine.JOB_ID: job_id,
                    engine.ENVIRONMENT: env_id,
                    engine.DATE_FINISHED: f"{finished:.3f}",
                },
            )
        )
    resources = {
        "result_store": S3ResultStoreResource(),
        "environments": ComputeEnvironments(environments_file=str(envs)),
    }
    context = dg.build_sensor_context(
        instance=instance, resources={"environments": resources["environments"]}
    )
    # The tick asks for a results_expiry_job run; that run deletes (as the daemon would launch it).
    request = results_expiry(context)
    assert isinstance(request, dg.RunRequest)
    result = _logged(run_requested_job(request, results_expiry_job, instance, resources), instance)
    assert "1 job(s)" in str(result.skip_message)
    assert instance.get_run_by_id(f"run-{old}").tags[engine.RESULTS_EXPIRED] == "1"
    assert engine.RESULTS_EXPIRED not in instance.get_run_by_id(f"run-{kept}").tags
    assert engine.RESULTS_EXPIRED not in instance.get_run_by_id(f"run-{fresh}").tags
    with pytest.raises(FileNotFoundError):
        store.open(f"{old}/out.txt")
    for job_id in (kept, fresh):
        with store.open(f"{job_id}/out.txt") as handle:
            assert handle.read() == b"x"
    assert "0 job(s)" in str(results_expiry(context).skip_message)  # tagged runs are not redone


class _Logged:
    """What a maintenance run logged, where the test once read what the tick said it did."""

    def __init__(self, messages: list[str]) -> None:
        self.skip_message = " | ".join(messages)


def _logged(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> _Logged:
    assert result.success
    return _Logged([entry.message or "" for entry in instance.all_logs(result.run_id)])


def test_the_expiry_tick_deletes_nothing_and_asks_once(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick only reads; a repeated tick asks for the same run, and none while that run is pending."""
    from c2d_defs.expiry import results_expiry
    from c2d_defs.maintenance import BATCH, MAINTENANCE, REASON
    from c2d_defs.resources import ComputeEnvironments

    envs = tmp_path / "environments.yaml"
    envs.write_text(
        "environments:\n"
        "  - {id: tiny, cpuNumber: 1, ramGB: 1, diskGB: 1, maxJobDuration: 60, storageExpiry: 1}\n"
    )
    for key, value in s3_server.env(C2D_S3_PREFIX="jobs").items():
        monkeypatch.setenv(key, value)
    store = _store(s3_server, prefix="jobs")
    store.put(JOB_ID, "out.txt", io.BytesIO(b"x"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_run(
        dg.DagsterRun(
            job_name=engine.JOB_NAME,
            run_id="run-old",
            status=dg.DagsterRunStatus.SUCCESS,
            tags={
                engine.JOB_ID: JOB_ID,
                engine.ENVIRONMENT: "tiny",
                engine.DATE_FINISHED: f"{time.time() - 5:.3f}",
            },
        )
    )
    context = dg.build_sensor_context(
        instance=instance, resources={"environments": ComputeEnvironments(environments_file=str(envs))}
    )
    request = results_expiry(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == {"ops": {"expire_results": {"config": {"targets": ["run-old"]}}}}
    assert request.tags[MAINTENANCE] == "results_expiry" and "1 job(s)" in request.tags[REASON]
    # Never a consumer's job nor one of an environment's maxJobs: no c2d/environment, owner or job id.
    assert not {engine.ENVIRONMENT, engine.OWNER, engine.JOB_ID, engine.AGREEMENT_ID} & set(request.tags)
    with store.open(f"{JOB_ID}/out.txt") as handle:
        assert handle.read() == b"x"  # the tick deleted nothing
    assert engine.RESULTS_EXPIRED not in instance.get_run_by_id("run-old").tags  # type: ignore[union-attr]
    # A retried tick over the same state asks for the same run key: Dagster launches it once.
    again = results_expiry(context)
    assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key
    # Once the daemon created that run (not started yet), no tick asks again while it is pending.
    instance.add_run(
        dg.DagsterRun(
            job_name="results_expiry_job",
            run_id="maintenance-1",
            status=dg.DagsterRunStatus.NOT_STARTED,
            run_config=request.run_config,
            tags=request.tags,
        )
    )
    pending = results_expiry(context)
    assert isinstance(pending, dg.SkipReason) and "none is left" in str(pending.skip_message)
    # A run that failed for good is asked for again, under a new key.
    instance.report_run_failed(instance.get_run_by_id("maintenance-1"))  # type: ignore[arg-type]
    retry = results_expiry(context)
    assert isinstance(retry, dg.RunRequest) and retry.run_key != request.run_key
    assert retry.tags[BATCH] == request.tags[BATCH]


# --- s3 input files ---------------------------------------------------------------------------------


def _s3_file(server: S3Server, key: str) -> dict[str, Any]:
    return {
        "type": "s3",
        "s3Access": {
            "endpoint": server.endpoint_url,
            "region": REGION,
            "bucket": server.bucket,
            "objectKey": key,
            "accessKeyId": ACCESS_KEY,
            "secretAccessKey": SECRET_KEY,
        },
    }


def test_s3_input_files_are_fetched_through_the_guard(s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="data/input.bin", Body=OUTPUT)
    limits = FetchLimits(connect_timeout=2, read_timeout=5, retries=0, deadline=20)
    allowed = NetPolicy.from_allow_list(["127.0.0.1/32"], allow_everything=False)
    with guarded_client(allowed) as client:
        fetched = fetch_to_file(
            _s3_file(s3_server, "data/input.bin"),
            tmp_path / "0",
            limits,
            client=client,
            url_guard=allowed.check,
        )
    assert (tmp_path / "0").read_bytes() == OUTPUT and fetched.sha256 == hashlib.sha256(OUTPUT).hexdigest()
    from c2d_core.fetch import FetchError

    with guarded_client(NetPolicy()) as client, pytest.raises(FetchError) as caught:
        fetch_to_file(_s3_file(s3_server, "data/input.bin"), tmp_path / "1", limits, client=client)
    assert caught.value.message == "file: the location is not a public address"


def test_fileinfo_for_an_s3_file(s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="data/input.bin", Body=OUTPUT)
    settings = ProviderSettings(nonce_db_url=f"sqlite:///{tmp_path / 'n.db'}", fetch_allow=["127.0.0.1/32"])
    with TestClient(create_app(settings)) as client:
        body = {**_s3_file(s3_server, "data/input.bin"), "checksum": 1}
        response = client.post("/api/services/fileinfo", json=body)
        assert response.status_code == 200
        (item,) = response.json()
        assert item["valid"] is True and item["type"] == "s3"
        assert item["contentLength"] == str(len(OUTPUT))
        assert item["checksum"] == hashlib.sha256(OUTPUT).hexdigest()
        for secret in (SECRET_KEY, ACCESS_KEY, s3_server.bucket, "127.0.0.1", "input.bin"):
            assert secret not in response.text
        missing = client.post("/api/services/fileinfo", json=_s3_file(s3_server, "data/missing.bin")).json()
        assert missing[0]["valid"] is False and missing[0]["error"] == "HTTP 404 from the data source"


def test_result_stores_route_each_location(tmp_path: Path, s3_server: S3Server) -> None:
    stores = ResultStores(LocalResultStore(tmp_path), _store(s3_server))
    assert isinstance(stores.for_location(f"s3://{s3_server.bucket}/x/y"), S3ResultStore)
    assert isinstance(stores.for_location(f"{JOB_ID}/out.txt"), LocalResultStore)
    with pytest.raises(LookupError, match="IPFS"):
        stores.for_location("ipfs://bafy")
