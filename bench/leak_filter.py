"""Benchmark: the leak filter pod program on a 100 MiB input and a 100 MiB output.

Two cases, each in a temporary job volume and a fresh `python -m c2d_defs.pods.leak_filter`: random bytes
(weights-like, no text to decode) and CSV-like text (digits, commas, dates). The output differs from the
input, so every byte is fingerprinted and every byte scanned (a copy would end its scan early). Reports
the MiB/s of fingerprinting inputs and of scanning outputs from the filter's own report, the overall
MiB/s, and the child's peak RSS (ru_maxrss).

    .venv/bin/python bench/leak_filter.py [--size-mib 100] [--case random|csv|all]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.pop(0)  # run as a script: keep bench/ off the import path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(rng.randbytes(MIB))


def write_csv(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    cities = ["Lisbon", "Berlin", "Oslo", "Madrid", "Rome", "Paris", "Vienna", "Prague"]
    written = 0
    with path.open("wb") as out:
        out.write(b"id,date,city,temp_c,rain_mm,count\n")
        row = 0
        while written < size:
            lines = []
            for _ in range(20_000):
                row += 1
                lines.append(
                    f"{row},2026-{1 + row % 12:02d}-{1 + row % 28:02d},{cities[row % 8]},"
                    f"{rng.uniform(-10, 35):.2f},{rng.uniform(0, 40):.1f},{rng.randrange(100_000)}\n"
                )
            chunk = "".join(lines).encode()
            out.write(chunk)
            written += len(chunk)


def run_case(case: str, size: int) -> dict[str, float]:
    make = write_random if case == "random" else write_csv
    with tempfile.TemporaryDirectory(prefix="leak-bench-") as folder:
        volume = Path(folder) / "data"
        (volume / "inputs" / ("ab" * 32)).mkdir(parents=True)
        (volume / "outputs").mkdir()
        make(volume / "inputs" / ("ab" * 32) / "0", size, seed=1)
        make(volume / "outputs" / "result.bin", size, seed=2)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "VOLUME": str(volume),
            "C2D_LEAK_FILTER_REPORT": str(Path(folder) / "report.json"),
            "TERMINATION_LOG": str(Path(folder) / "termination-log"),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "c2d_defs.pods.leak_filter"], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if done.returncode != 0:
            raise SystemExit(f"filter failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        report = json.loads((Path(folder) / "report.json").read_text())
    timings = report["timings"]
    inputs_mib = report["inputs"]["bytes_scanned"] / MIB
    outputs_mib = sum(output["bytes_scanned"] for output in report["outputs"]) / MIB
    return {
        "verdict_pass": float(report["verdict"] == "pass"),
        "fingerprint_mib_s": inputs_mib / timings["fingerprint_seconds"],
        "scan_mib_s": outputs_mib / timings["scan_seconds"],
        "overall_mib_s": (inputs_mib + outputs_mib) / timings["total_seconds"],
        "filter_seconds": timings["total_seconds"],
        "process_seconds": wall,
        # ru_maxrss of children is the largest child so far: meaningful as an upper bound per case.
        "peak_rss_mib": max(peak, before) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--case", choices=["random", "csv", "all"], default="all")
    args = parser.parse_args()
    cases = ["random", "csv"] if args.case == "all" else [args.case]
    for case in cases:
        figures = run_case(case, args.size_mib * MIB)
        shown = ", ".join(f"{name} {value:.1f}" for name, value in figures.items())
        print(f"{case}: {args.size_mib} MiB input + {args.size_mib} MiB output: {shown}", flush=True)


if __name__ == "__main__":
    main()
