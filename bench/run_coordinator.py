"""Benchmark: queue latency with Dagster's QueuedRunCoordinator against ImmediateRunCoordinator, in one run.

For each coordinator mode (`launch_at_once: false`, which is Dagster's queue, then `true`), starts the
embedded stack with it, submits N trivial jobs over Dagster's GraphQL API (the Provider's DagsterJobs),
one after another with the environment idle, and reads back from run storage: submit -> STARTING (the
queue), STARTING -> run worker started (the launch), how long the submit call itself took (with the
fast path it includes the launch), and submit -> status 70.

    .venv/bin/python bench/run_coordinator.py [-n 10] [--run-launcher default|warm]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/provider_api.py would then
# shadow the `provider_api` package.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import tempfile
import time
from functools import partial

import dagster as dg
import yaml

from c2d_cli import stack
from c2d_cli.consumer import poll_until
from c2d_cli.demo import EXAMPLES, demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.settings import EngineSettings
from provider_api.dagster_jobs import DagsterJobs

TRIVIAL = "print('hello from the sandbox')"
MEASURES = ("submit -> STARTING", "STARTING -> worker started", "submit call", "submit -> status 70")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(n: int, home: Path, at_once: bool, launcher: str) -> dict[str, list[float]]:
    template = home.parent / "dagster.yaml"
    config = yaml.safe_load((stack.PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["launch_at_once"] = at_once
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(yaml.safe_dump(config, sort_keys=False))
    running, _ = stack.up(home, port=stack._free_port(), instance_template=template, run_launcher=launcher)  # type: ignore[arg-type]
    settings = EngineSettings(home=home)
    found: dict[str, list[float]] = {name: [] for name in MEASURES}
    jobs = DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=running.dagster_home)
    with jobs, LocalOrigin(EXAMPLES) as origin, dg.DagsterInstance.from_config(str(home)) as instance:
        for i in range(n + 1):  # job 0 warms the code server up and is not counted
            workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
            workflow = workflow.model_copy(
                update={"algorithm": workflow.algorithm.model_copy(update={"rawcode": TRIVIAL})}
            )
            submitted, t0 = time.time(), time.monotonic()
            jobs.submit(workflow)
            call = time.monotonic() - t0
            record = poll_until(
                partial(jobs.job, workflow.job_id),
                lambda seen: seen is not None and seen.run_ended,
                timeout=120,
                interval=0.05,
            )
            total = time.monotonic() - t0
            assert record is not None and record.tags.get(engine.STATUS) == "70", record
            if i == 0:
                continue
            events = {
                kind: entry.timestamp
                for entry in instance.all_logs(record.run_id)
                if (kind := entry.dagster_event_type) is not None
            }
            starting = events[dg.DagsterEventType.RUN_STARTING]
            found[MEASURES[0]].append(starting - submitted)
            found[MEASURES[1]].append(events[dg.DagsterEventType.RUN_START] - starting)
            found[MEASURES[2]].append(call)
            found[MEASURES[3]].append(total)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="jobs to time per mode (after one warm-up job)")
    parser.add_argument("--run-launcher", default="default", choices=["default", "warm"])
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="c2d-bench-rc-") as tmp:
        for name, at_once in (("queued", False), ("at once", True)):
            home = Path(tmp) / name.replace(" ", "-") / ".c2d"
            try:
                results[name] = bench(args.n, home, at_once, args.run_launcher)
            finally:
                stack.down(home)
    print(f"\nrun coordinator, launcher {args.run_launcher}, n={args.n} (p50 / p95 s)")
    print(f"{'measure':<32}" + "".join(f"{name:>18}" for name in results))
    for measure in MEASURES:
        cells = "".join(
            f"{pct(found[measure], 0.5):>9.3f}{pct(found[measure], 0.95):>9.3f}" for found in results.values()
        )
        print(f"{measure:<32}{cells}")


if __name__ == "__main__":
    main()
