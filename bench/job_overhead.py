"""Benchmark: what the engine adds to an algorithm's own run time.

Submits N trivial jobs (one small CSV input, a one-line raw algorithm) over Dagster's GraphQL API (the
Provider's operator, no Provider in front) to the embedded stack, one after another, and measures
submit -> status 70. Then runs the same algorithm N times bare in the sandbox (LocalPodRunner, no
Dagster). Prints p50/p95 of both, side by side, and where the job's time goes (from the phase tags).

    .venv/bin/python bench/job_overhead.py [-n 10]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/provider_api.py would then
# shadow the `provider_api` package whose operator submits the jobs.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import statistics
import tempfile
import time
from functools import partial

from c2d_cli import stack
from c2d_cli.consumer import poll_until
from c2d_cli.demo import EXAMPLES, demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.environments import Environments
from c2d_core.settings import EngineSettings
from c2d_defs.sandbox import LocalPodRunner
from c2d_defs.stage_pods import algorithm_spec
from provider_api.dagster_jobs import DagsterJobs

TRIVIAL = "print('hello from the sandbox')"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_jobs(n: int, home: Path) -> tuple[list[float], dict[str, list[float]]]:
    running, _ = stack.up(home, port=stack._free_port())
    settings = EngineSettings(home=home)
    totals: list[float] = []
    phases: dict[str, list[float]] = {"queue+launch": [], "configure": [], "algorithm": [], "publish": []}
    operator = DagsterJobs(f"{running.webserver_url}/graphql")
    with operator, LocalOrigin(EXAMPLES) as origin:
        for i in range(n + 1):  # job 0 warms the code servers up and is not counted
            workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
            workflow = workflow.model_copy(
                update={"algorithm": workflow.algorithm.model_copy(update={"rawcode": TRIVIAL})}
            )
            submitted = time.time()
            t0 = time.monotonic()
            operator.submit(workflow)
            record = poll_until(
                partial(operator.job, workflow.job_id),
                lambda found: found is not None and found.run_ended,
                timeout=120,
                interval=0.05,
            )
            assert record is not None
            elapsed = time.monotonic() - t0
            tags = record.tags
            if tags.get(engine.STATUS) != "70":
                raise SystemExit(
                    f"job ended at status {tags.get(engine.STATUS)}: {tags.get(engine.STATUS_DETAIL, '')}"
                )
            if i > 0:
                totals.append(elapsed)

                def edge(phase: str, which: str, tags: dict[str, str] = tags) -> float:
                    return float(tags[engine.phase_tag(phase, which)])

                phases["queue+launch"].append(edge("configure", "started") - submitted)
                for phase in ("configure", "algorithm", "publish"):
                    phases[phase].append(edge(phase, "finished") - edge(phase, "started"))
    return totals, phases


def bench_bare(n: int, home: Path) -> list[float]:
    settings = EngineSettings(home=home)
    envs = Environments.load(settings.environments_file)
    runner = LocalPodRunner(work_dir=home / "bare", environments=envs, uid_base=settings.sandbox.uid_base)
    with LocalOrigin(EXAMPLES) as origin:
        workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
    workflow = workflow.model_copy(
        update={"algorithm": workflow.algorithm.model_copy(update={"rawcode": TRIVIAL})}
    )
    spec = algorithm_spec(workflow, envs.get(workflow.environment))
    runner.prepare_volume(workflow.job_id, spec.disk_bytes)
    runner.write_file(workflow.job_id, "data/transformations/algorithm", TRIVIAL.encode())
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        result = runner.run(spec)
        times.append(time.monotonic() - t0)
        assert result.succeeded, result
    runner.release_volume(workflow.job_id)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="jobs to time (after one warm-up job)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="c2d-bench-") as tmp:
        home = Path(tmp) / ".c2d"
        try:
            totals, phases = bench_jobs(args.n, home)
            bare = bench_bare(args.n, home)
        finally:
            stack.down(home)
    print(f"\n{'measure (n=' + str(args.n) + ')':<34}{'p50 s':>8}{'p95 s':>8}")
    print(f"{'job: submit -> status 70':<34}{pct(totals, 0.5):>8.2f}{pct(totals, 0.95):>8.2f}")
    print(f"{'bare sandbox run of the algorithm':<34}{pct(bare, 0.5):>8.2f}{pct(bare, 0.95):>8.2f}")
    print(f"{'overhead (p50 job - p50 bare)':<34}{pct(totals, 0.5) - pct(bare, 0.5):>8.2f}")
    print("where a job's time goes (p50):")
    for name, values in phases.items():
        print(f"  {name:<32}{statistics.median(values):>8.2f}")


if __name__ == "__main__":
    main()
