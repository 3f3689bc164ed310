"""bench/cache_probe: the counters bench/provider_api.py reads from each Provider server process.

A real Python process started as the bench starts the stack's (the probe folder first on PYTHONPATH,
C2D_BENCH_CACHE_PROBE set): its status cache answers are written to <folder>/<pid>.json. Without the
variable the probe does nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parents[2] / "bench" / "cache_probe"

# Two loads and three hits on one cache, one load on another; then wait for the probe to write.
SCRIPT = """
import os, sys, time
from provider_api.status_cache import ReadCache
first, second = ReadCache(10), ReadCache(10)
for key in ("a", "b", "a", "a", "b"):
    first.get(key, lambda: 1, lambda _: 60)
second.get("c", lambda: 2, lambda _: 60)
print("probe", "sitecustomize" in sys.modules, os.getpid())
time.sleep(0.5)
"""


def run(tmp_path: Path, probe: bool) -> tuple[bool, int]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")])),
    }
    env.pop("C2D_BENCH_CACHE_PROBE", None)
    if probe:
        env["C2D_BENCH_CACHE_PROBE"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    _, loaded, pid = done.stdout.split()
    return loaded == "True", int(pid)


def test_the_probe_writes_each_process_cache_counters(tmp_path: Path) -> None:
    loaded, pid = run(tmp_path, probe=True)
    assert loaded
    counts = json.loads((tmp_path / f"{pid}.json").read_text())
    assert counts == {"hits": 3, "loads": 3, "joined": 0, "entries": 3}


def test_without_the_variable_the_probe_writes_nothing(tmp_path: Path) -> None:
    loaded, _ = run(tmp_path, probe=False)
    assert loaded  # imported, as in every process of the stack, and idle
    assert list(tmp_path.iterdir()) == []
