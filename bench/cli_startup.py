"""How long the `c2d` command takes to start: wall time of `c2d --help`, `c2d compute --help` and
`c2d compute start --help` over N runs each, and the import time of `c2d_cli.main` with the heaviest
modules it pulls in (`python -X importtime`).

    .venv/bin/python bench/cli_startup.py [--runs 10]

Prints one JSON document. A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

C2D = str(Path(sys.executable).parent / "c2d")
COMMANDS = (["--help"], ["compute", "--help"], ["compute", "start", "--help"], ["dev", "status", "--help"])
# Never loaded for help: each one costs a noticeable share of a second.
HEAVY = ("web3", "eth_account", "pydantic", "pydantic_settings", "httpx", "yaml", "rich.table", "c2d_core")


def wall_times(args: list[str], runs: int) -> dict[str, float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([C2D, *args], capture_output=True, check=True)
        seconds.append(time.perf_counter() - started)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def import_profile(module: str = "c2d_cli.main", top: int = 12) -> dict[str, object]:
    """`-X importtime` of `module`: its cumulative time, the costliest imports, which heavy ones load."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        try:
            rows.append((int(cumulative.strip()), name.rstrip()))
        except ValueError:
            continue  # the header line
    loaded = {name.strip() for _, name in rows}
    total = next((us for us, name in rows if name.strip() == module), 0)
    costliest = sorted(rows, reverse=True)[1 : top + 1]
    return {
        "module": module,
        "cumulative_ms": round(total / 1000, 1),
        "costliest_ms": {name.strip(): round(us / 1000, 1) for us, name in costliest},
        "heavy_loaded": sorted(h for h in HEAVY if h in loaded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    report = {
        "runs": args.runs,
        "wall": {"c2d " + " ".join(command): wall_times(command, args.runs) for command in COMMANDS},
        "imports": import_profile(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
