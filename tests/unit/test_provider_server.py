"""The Provider as it is deployed: `uvicorn --factory provider_api.main:create_app` on a free port,
spoken to over real HTTP (discovery, docs, an error envelope, encrypt's 201)."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from c2d_core.crypto import decrypt_with
from provider_api.settings import PROVIDER_DEV_ACCOUNT_INDEX, anvil_dev_key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def provider_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "C2D_HOME": str(tmp_path / "home"),
        "PROVIDER_ENVIRONMENT": "development",
        "PROVIDER_NONCE_DB_URL": f"sqlite:///{tmp_path / 'nonces.db'}",
    }
    env.pop("PROVIDER_PRIVATE_KEY", None)
    command = [sys.executable, "-m", "uvicorn", "--factory", "provider_api.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    pytest.fail("uvicorn did not start:\n" + (tmp_path / "uvicorn.log").read_text())
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def test_uvicorn_serves_discovery_docs_and_errors(provider_url: str) -> None:
    with httpx.Client(base_url=provider_url, timeout=10) as http:
        root = http.get("/")
        assert root.status_code == 200
        body = root.json()
        assert body["chainIds"] == [8996]
        assert body["providerAddresses"] == {"8996": "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"}
        assert body["serviceEndpoints"]["nonce"] == ["GET", "/api/services/nonce"]

        docs = http.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        paths = http.get("/openapi.json").json()["paths"]
        for method, path in body["serviceEndpoints"].values():
            assert method.lower() in paths[path]

        missing = http.get("/api/services/nope")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
        head = http.head("/api/services/nonce")
        assert head.status_code == 405

        encrypted = http.post(
            "/api/services/encrypt",
            params={"chainId": 8996},
            content=b"hello",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert encrypted.status_code == 201
        assert decrypt_with(anvil_dev_key(PROVIDER_DEV_ACCOUNT_INDEX), encrypted.text) == b"hello"


def test_several_server_processes_keep_no_unfinished_job_between_requests() -> None:
    """Each process has its own cache: with several, a job one has seen finish must not be answered
    as running by another, so unfinished jobs are read each time (unless the operator says otherwise)."""
    from provider_api.server import several_workers_env
    from provider_api.settings import ProviderSettings

    environ: dict[str, str] = {}
    several_workers_env(environ)
    assert environ["PROVIDER_STATUS_CACHE_SECONDS"] == "0"
    explicit = {"PROVIDER_STATUS_CACHE_SECONDS": "2.5"}
    several_workers_env(explicit)
    assert explicit["PROVIDER_STATUS_CACHE_SECONDS"] == "2.5"
    assert ProviderSettings.model_fields["status_cache_seconds"].default == 1.0  # one process: 1 s
