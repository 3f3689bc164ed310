"""Benchmark: input staging — the configure pod program fetching a large file vs `curl -o`.

Serves a file of SIZE bytes (default 1 GiB) from a loopback HTTP server (Python's threading
server, the same for both clients), then, in one run and alternating, downloads it N times with
`curl -o` and N times with `python -m c2d_defs.pods.configure` (streaming, sha256 on the fly, the
SSRF guard with a loopback allow-list, size cap). Reports each one's throughput, the ratio
pod/curl, and the pod program's peak RSS (ru_maxrss of the child).

    .venv/bin/python bench/staging.py [--size-mib 1024] [-n 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.pop(0)  # run as a script: keep bench/ off the import path

from c2d_cli.origin import LocalOrigin

CHUNK = 8 * 1024 * 1024


def make_source(folder: Path, size: int) -> Path:
    path = folder / "big.bin"
    block = hashlib.sha256(b"c2d").digest() * (CHUNK // 32)
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(CHUNK, left)])
            left -= CHUNK
    return path


def workflow(url: str) -> dict[str, object]:
    did = "did:op:" + hashlib.sha256(b"staging-bench").hexdigest()
    return {
        "jobId": uuid.uuid4().hex,
        "owner": "0x" + "1" * 40,
        "environment": "bench",
        "inputs": [{"did": did, "serviceId": "compute", "files": {"files": [{"type": "url", "url": url}]}}],
        "algorithm": {"rawcode": "print(1)", "container": {"entrypoint": "python $ALGO", "image": "python"}},
    }


def run_pod(url: str, work: Path, size: int) -> tuple[float, int]:
    """Seconds and the pod program's peak RSS in bytes (fresh child each time)."""
    data = work / "data"
    data.mkdir(parents=True)
    doc = work / "workflow.json"
    doc.write_text(json.dumps(workflow(url)))
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.update(
        WORKFLOW=str(doc),
        VOLUME=str(data),
        TERMINATION_LOG=str(work / "termination-log"),
        C2D_MAX_INPUT_BYTES=str(size + 1),
        C2D_FETCH_DEADLINE="900",
        C2D_FETCH_ALLOW="127.0.0.1/32",
    )
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "c2d_defs.pods.configure"], env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    report = json.loads((work / "termination-log").read_text())
    if os.waitstatus_to_exitcode(status) != 0 or report.get("status") != 30:
        raise SystemExit(f"configure failed: {report}")
    return elapsed, usage.ru_maxrss * 1024


def run_curl(url: str, work: Path) -> float:
    started = time.monotonic()
    subprocess.run(["curl", "-s", "-f", "-o", str(work / "curl.bin"), url], check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("-n", type=int, default=2, help="downloads per client")
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    pod_times: list[float] = []
    curl_times: list[float] = []
    rss: list[int] = []
    with tempfile.TemporaryDirectory(prefix="c2d-staging-") as tmp:
        root = Path(tmp)
        (root / "origin").mkdir()
        make_source(root / "origin", size)
        with LocalOrigin(root / "origin") as origin:
            url = f"{origin.url}/big.bin"
            for i in range(args.n):
                work = root / f"curl-{i}"
                work.mkdir()
                curl_times.append(run_curl(url, work))
                (work / "curl.bin").unlink()
                seconds, peak = run_pod(url, root / f"pod-{i}", size)
                pod_times.append(seconds)
                rss.append(peak)
                for path in (root / f"pod-{i}").rglob("*"):
                    if path.is_file():
                        path.unlink()
    mib = size / (1024 * 1024)
    curl_rate = mib / statistics.median(curl_times)
    pod_rate = mib / statistics.median(pod_times)
    print(f"\nfile {mib:.0f} MiB over loopback, n={args.n} each (medians)")
    print(f"{'curl -o':<34}{statistics.median(curl_times):>8.2f} s {curl_rate:>8.1f} MiB/s")
    print(f"{'configure pod program':<34}{statistics.median(pod_times):>8.2f} s {pod_rate:>8.1f} MiB/s")
    print(f"{'ratio pod / curl (throughput)':<34}{pod_rate / curl_rate:>8.2f}")
    print(f"{'pod peak RSS':<34}{max(rss) / (1024 * 1024):>8.1f} MiB")


if __name__ == "__main__":
    main()
