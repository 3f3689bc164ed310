"""A real IPFS node on 127.0.0.1: js-ipfs (`ipfs-core` + `ipfs-http-server` from npm, tests/ipfs_node),
offline, serving the kubo-compatible RPC API (`/api/v0/...`). One per test session.

`npm ci --prefix tests/ipfs_node` installs it (the Makefile's test target does); without node the
fixture fails rather than skips, so a missing node cannot pass for a tested store.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

NODE_DIR = Path(__file__).resolve().parent / "ipfs_node"
START_TIMEOUT = 45.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def ipfs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "ipfs-core").is_dir():
        pytest.fail(
            f"the test IPFS node is not installed: run `npm ci --prefix {NODE_DIR}` (needs node >= 20)"
        )
    repo = tmp_path_factory.mktemp("ipfs") / "repo"
    port = _free_port()
    log = (repo.parent / "node.log").open("w")
    process = subprocess.Popen(
        [node, str(NODE_DIR / "server.mjs"), str(repo), str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the IPFS node exited: {(repo.parent / 'node.log').read_text()[-2000:]}")
            try:
                if httpx.post(f"{api}/api/v0/version", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the IPFS node did not answer within {START_TIMEOUT:.0f} s")
            time.sleep(0.2)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
