"""The IPFS result store against a real IPFS node's RPC API on loopback (js-ipfs, tests/ipfs_node):
add + pin + MFS link, cat with offsets, the publish pod writing there, and unpinning on expiry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from c2d_core.result_stores import IpfsResultStore, ResultStores
from c2d_core.results import LocalResultStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "aabbccddeeff00112233445566778899"
CONTENT = bytes(range(256)) * 2048 + b"end"  # ~512 KiB: several blocks


def _pins(api: str) -> set[str]:
    response = httpx.post(f"{api}/api/v0/pin/ls", params={"type": "recursive"}, timeout=10)
    return set(response.json().get("Keys", {}))


def test_put_pins_and_reads_back_then_delete_unpins(ipfs_api: str) -> None:
    store = IpfsResultStore(ipfs_api, root="/c2d-test")
    stored = store.put(JOB_ID, "out.bin", io.BytesIO(CONTENT))
    assert stored.location.startswith("ipfs://")
    assert (stored.size, stored.sha256) == (len(CONTENT), hashlib.sha256(CONTENT).hexdigest())
    cid = stored.location.removeprefix("ipfs://")
    assert cid in _pins(ipfs_api)
    with store.open(stored.location) as handle:
        assert handle.read() == CONTENT
    with store.open(f"{JOB_ID}/out.bin") as handle:  # through the MFS link
        assert handle.read() == CONTENT
    assert b"".join(store.read_range(stored.location, 1000, 300_000)) == CONTENT[1000:301_000]
    assert b"".join(store.read_range(f"{JOB_ID}/out.bin", 5, 10)) == CONTENT[5:15]
    store.put(JOB_ID, "out.bin", io.BytesIO(CONTENT))  # a retried put replaces the link
    store.delete_job(JOB_ID)
    store.delete_job(JOB_ID)  # idempotent
    assert cid not in _pins(ipfs_api)
    with pytest.raises(FileNotFoundError):
        store.open(f"{JOB_ID}/out.bin").read()
    stores = ResultStores(LocalResultStore(Path("/nonexistent")), ipfs=store)
    assert stores.for_location(stored.location) is store


def test_publish_pod_writes_to_ipfs(ipfs_api: str, tmp_path: Path) -> None:
    (tmp_path / "data" / "outputs").mkdir(parents=True)
    (tmp_path / "adminlogs").mkdir()
    (tmp_path / "data" / "outputs" / "result.bin").write_bytes(CONTENT)
    env = {
        "PATH": os.environ["PATH"],
        "VOLUME": str(tmp_path / "data"),
        "ADMINLOGS": str(tmp_path / "adminlogs"),
        "WORKFLOWID": JOB_ID,
        "TERMINATION_LOG": str(tmp_path / "termination-log"),
        "C2D_RESULT_STORE": "ipfs",
        "C2D_IPFS_API_URL": ipfs_api,
        "C2D_PUBLISH_OUTPUTS": "true",
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
    report = json.loads((tmp_path / "termination-log").read_bytes())
    assert report["status"] == 70 and report["manifest"].startswith("ipfs://")
    store = IpfsResultStore(ipfs_api)
    with store.open(report["manifest"]) as handle:
        manifest = json.load(handle)
    assert [entry["filename"] for entry in manifest] == ["result.bin", "publish.log"]
    with store.open(manifest[0]["location"]) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == manifest[0]["sha256"]
    store.delete_job(JOB_ID)
