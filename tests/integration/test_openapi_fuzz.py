"""schemathesis over the OpenAPI document the Provider serves, every operation, with the embedded stack
(anvil, Dagster, the Provider under uvicorn) behind it.

The Provider fetches URLs that request bodies name, so the whole run (stack and fuzzer) happens in a
network namespace of its own with only loopback up: `unshare --net`, made here as root. Whatever a
fuzzed body names, no fetch can leave the machine. Bounded: a fixed number of examples per operation
(C2D_FUZZ_MAX_EXAMPLES), a fixed seed (C2D_FUZZ_SEED, to explore others) and a hard time limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = Path(__file__).with_name("openapi_fuzz_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIME_LIMIT = 240


def _netns_unavailable() -> str | None:
    """Why a loopback-only network namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to make a network namespace (unshare --net)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"unshare --net is refused here: {probe.stderr.strip()[:200]}"
    return None


def test_fuzz_the_served_schema(tmp_path: Path) -> None:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(f"the fuzz run needs a loopback-only network namespace: {reason}")
    report = tmp_path / "fuzz.json"
    env = {**os.environ, "C2D_FUZZ_IN_NETNS": "1", "C2D_FUZZ_REPORT": str(report)}
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(WORKER)]
    # `ip link set lo up` first: a new namespace's loopback is down. exec, so the timeout's kill
    # reaches pytest itself.
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "fuzz", *inner]
    try:
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the fuzz run took more than {TIME_LIMIT} s:\n{(error.stdout or '')[-3000:]}")
    output = run.stdout + run.stderr
    assert report.exists(), f"the fuzz run wrote no figures:\n{output[-6000:]}"
    figures = json.loads(report.read_text())
    print(f"fuzz figures: {json.dumps(figures)}")
    assert run.returncode == 0, output[-8000:]
    assert figures["server_errors"] == 0, figures
    assert figures["schema_failures"] == 0, figures
    assert figures["error_shape_failures"] == 0, figures
    # Every operation of the document was exercised, with a real number of requests.
    assert len(figures["by_operation"]) >= 15, figures["by_operation"]
    assert figures["requests"] >= 15 * 20, figures
