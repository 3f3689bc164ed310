"""How long the `c2d` command takes to start: wall time of `c2d --help`, `c2d compute --help` and
`c2d compute start --help` over N runs each, and the import time of `c2d_cli.main` with the heaviest
modules it pulls in (`python -X importtime`).

    .venv/bin/python bench/cli_startup.py [--runs 10] [--source DIR]

`--source DIR` measures another checkout's c2d_cli and c2d_core (e.g. `git archive REV c2d_cli c2d_core`
unpacked in DIR) with this venv, to compare before and after under the same load.

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


def _python(source: str | None, code: str) -> list[str]:
    """A python command running `code`, importing c2d_cli and c2d_core from `source` when given (the
    venv's editable install would otherwise win: its finder comes before sys.path)."""
    if source is None:
        return [sys.executable, "-c", code]
    prelude = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
        f"sys.path.insert(0, {source!r}); "
    )
    return [sys.executable, "-c", prelude + code]


def wall_times(args: list[str], runs: int, source: str | None = None) -> dict[str, float]:
    command = [C2D] if source is None else _python(source, "import sys; from c2d_cli.main import app; app()")
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*command, *args], capture_output=True, check=True)
        seconds.append(time.perf_counter() - started)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def import_profile(
    module: str = "c2d_cli.main", top: int = 12, source: str | None = None
) -> dict[str, object]:
    """`-X importtime` of `module`: its cumulative time, the costliest imports, which heavy ones load."""
    python = _python(source, f"import {module}; print({module}.__file__)")
    result = subprocess.run(
        [python[0], "-X", "importtime", *python[1:]],
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
        "file": result.stdout.strip(),
        "cumulative_ms": round(total / 1000, 1),
        "costliest_ms": {name.strip(): round(us / 1000, 1) for us, name in costliest},
        "heavy_loaded": sorted(h for h in HEAVY if h in loaded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--source", help="a checkout holding c2d_cli/ and c2d_core/ to measure instead")
    args = parser.parse_args()
    report = {
        "runs": args.runs,
        "source": args.source or "the installed package",
        "wall": {
            "c2d " + " ".join(command): wall_times(command, args.runs, args.source) for command in COMMANDS
        },
        "imports": import_profile(source=args.source),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
