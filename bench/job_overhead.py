"""Benchmark: what the engine adds to an algorithm's own run time, before and after, in one run.

For each variant named (`--variants default/queued,warm/at-once`: a run launcher, Dagster's default,
whose code server spawns a process per run, or the warm run worker of c2d_defs/warm_launcher; and the
run coordinator's `launch_at_once`, off ("queued": Dagster's queue, the daemon dequeues) or on
("at-once": the submitter launches when limits allow)), starts the embedded stack with it,
submits N trivial jobs (one small CSV input, a one-line raw algorithm) over Dagster's GraphQL API (the
Provider's DagsterJobs, no Provider in front), one after another, and measures submit -> status 70
(polling run storage every 50 ms, past the Provider's status cache: the engine's time, not the cache's).
Then runs the same algorithm N times bare in the sandbox (LocalPodRunner, no Dagster). Prints p50/p95
of each, the overhead, and a per-phase table read back from run storage (run events, phase tags, the
stage logs' "<pod> pod ended ... after X s" and the pods' own "... after X s" for their work, the
rest of a pod's time being its start: sandbox, interpreter, imports).

    .venv/bin/python bench/job_overhead.py [-n 10] [--variants default/queued,warm/at-once]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/provider_api.py would then
# shadow the `provider_api` package whose operator submits the jobs.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import itertools
import os
import re
import statistics
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
from c2d_core.environments import Environments
from c2d_core.settings import EngineSettings
from c2d_defs.sandbox import LocalPodRunner
from c2d_defs.stage_pods import algorithm_spec
from provider_api.dagster_jobs import DagsterJobs

TRIVIAL = "print('hello from the sandbox')"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


STAGES = ("configure", "algorithm", "publish")
POD_ENDED = re.compile(r"^(\w+) pod ended: .* after ([0-9.]+) s")
# The pod programs' last line says how long their own work took (c2d_defs/pods: main's clock).
POD_WORKED = re.compile(r"Z (configure|publish): (?:status \d+|finished,) .* after ([0-9.]+) s$", re.M)
PHASES = (
    "queue (submit -> STARTING)",
    "launch (STARTING -> run process started)",
    "run start -> configure op (resources, step)",
    "configure pod start (sandbox, interpreter)",
    "configure pod work (decrypt, fetch, write)",
    "configure op around its pod (runner, tags)",
    "algorithm pod (sandbox + the algorithm)",
    "algorithm op around its pod (runner, tags)",
    "publish pod start (sandbox, interpreter)",
    "publish pod work (store results)",
    "publish op around its pod (attest, tags)",
    "between ops (step events, tag writes)",
    "publish finished -> run end",
    "run end -> seen by the poller",
)
# Not a time: how many events the run stored (each one a write to the event log, load-independent).
EVENTS = "events stored per run (count, not s)"


def phases_of(instance: dg.DagsterInstance, run_id: str, submitted: float, seen: float) -> dict[str, float]:
    """Where one job's time went, from run storage: run events, phase tags and the pods' log lines."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    tags = run.tags

    def edge(stage: str, which: str) -> float:
        return float(tags[engine.phase_tag(stage, which)])

    events = {
        kind: entry.timestamp
        for entry in instance.all_logs(run_id)
        if (kind := entry.dagster_event_type) is not None
    }
    pods: dict[str, float] = {}
    worked: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        if entry.message and (match := POD_ENDED.match(entry.message)):
            pods[match.group(1)] = float(match.group(2))
        if entry.message and " log (last lines):" in entry.message:
            for found in POD_WORKED.finditer(entry.message):
                worked[found.group(1)] = float(found.group(2))
    starting = events[dg.DagsterEventType.RUN_STARTING]
    worker = events[dg.DagsterEventType.RUN_START]
    ended = events[dg.DagsterEventType.RUN_SUCCESS]
    found = {
        PHASES[0]: starting - submitted,
        PHASES[1]: worker - starting,
        PHASES[2]: edge("configure", "started") - worker,
    }
    for stage in STAGES:
        wall = edge(stage, "finished") - edge(stage, "started")
        pod = pods.get(stage, 0.0)
        around = next(name for name in PHASES if name.startswith(f"{stage} op around"))
        found[around] = wall - pod
        if stage == "algorithm":
            found[PHASES[6]] = pod
        else:
            work = worked.get(stage, 0.0)
            found[f"{stage} pod start (sandbox, interpreter)"] = pod - work
            found[next(name for name in PHASES if name.startswith(f"{stage} pod work"))] = work
    found[PHASES[-3]] = sum(edge(b, "started") - edge(a, "finished") for a, b in itertools.pairwise(STAGES))
    found[PHASES[-2]] = ended - edge("publish", "finished")
    found[PHASES[-1]] = seen - ended
    found[EVENTS] = float(len(instance.all_logs(run_id)))
    return found


def instance_file(folder: Path, coordinator: str) -> Path:
    """The embedded instance file with the run coordinator's fast path on or off."""
    config = yaml.safe_load((stack.PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["launch_at_once"] = coordinator == "at-once"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dagster-template.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bench_jobs(n: int, home: Path, variant: str) -> tuple[list[float], dict[str, list[float]]]:
    launcher, coordinator = variant.split("/")
    if launcher not in ("default", "warm") or coordinator not in ("queued", "at-once"):
        raise SystemExit(f"a variant is <default|warm>/<queued|at-once>, not {variant!r}")
    template = instance_file(home.parent, coordinator)
    running, _ = stack.up(
        home,
        port=stack._free_port(),
        instance_template=template,
        run_launcher=launcher,  # type: ignore[arg-type]
    )
    settings = EngineSettings(home=home)
    totals: list[float] = []
    phases: dict[str, list[float]] = {name: [] for name in (*PHASES, EVENTS)}
    operator = DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=running.dagster_home)
    with operator, LocalOrigin(EXAMPLES) as origin, dg.DagsterInstance.from_config(str(home)) as instance:
        for i in range(n + 1):  # job 0 warms the code servers up and is not counted
            workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
            workflow = workflow.model_copy(
                update={"algorithm": workflow.algorithm.model_copy(update={"rawcode": TRIVIAL})}
            )
            submitted = time.time()
            t0 = time.monotonic()
            operator.submit(workflow)
            record = poll_until(
                partial(operator.job, workflow.job_id, fresh=True),
                lambda found: found is not None and found.run_ended,
                timeout=120,
                interval=0.05,
            )
            assert record is not None
            elapsed = time.monotonic() - t0
            seen = time.time()
            tags = record.tags
            if tags.get(engine.STATUS) != "70":
                raise SystemExit(
                    f"job ended at status {tags.get(engine.STATUS)}: {tags.get(engine.STATUS_DETAIL, '')}"
                )
            if i > 0:
                totals.append(elapsed)
                for name, value in phases_of(instance, record.run_id, submitted, seen).items():
                    phases[name].append(value)
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
    parser.add_argument("-n", type=int, default=10, help="jobs to time per variant (after one warm-up job)")
    parser.add_argument(
        "--variants", default="default/queued,warm/at-once", help="comma-separated <launcher>/<coordinator>"
    )
    args = parser.parse_args()
    launchers = [name.strip() for name in args.variants.split(",") if name.strip()]
    results: dict[str, tuple[list[float], dict[str, list[float]]]] = {}
    # The machine may be shared: the load around the measurement says how far to trust it.
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="c2d-bench-") as tmp:
        for launcher in launchers:
            home = Path(tmp) / launcher.replace("/", "-") / ".c2d"
            try:
                results[launcher] = bench_jobs(args.n, home, launcher)
            finally:
                stack.down(home)
        bare = bench_bare(args.n, Path(tmp) / launchers[0].replace("/", "-") / ".c2d")
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    print(
        f"\nload average (1/5/15 min) on {cores} cores: before "
        + "/".join(f"{value:.2f}" for value in load_before)
        + ", after "
        + "/".join(f"{value:.2f}" for value in load_after)
    )
    print(f"{'measure (n=' + str(args.n) + ')':<44}{'p50 s':>8}{'p95 s':>8}")
    for launcher, (totals, _) in results.items():
        print(
            f"{'job: submit -> status 70, ' + launcher:<44}{pct(totals, 0.5):>8.2f}{pct(totals, 0.95):>8.2f}"
        )
    print(f"{'bare sandbox run of the algorithm':<44}{pct(bare, 0.5):>8.2f}{pct(bare, 0.95):>8.2f}")
    for launcher, (totals, _) in results.items():
        overhead = [total - pct(bare, 0.5) for total in totals]
        label = "overhead (job - p50 bare), " + launcher
        print(f"{label:<44}{pct(overhead, 0.5):>8.2f}{pct(overhead, 0.95):>8.2f}")
    print("\nwhere a job's time goes (p50 s; pod = the sandboxed process, interpreter start included)")
    print(f"{'phase':<44}" + "".join(f"{name:>16}" for name in results))
    for phase in (*PHASES, EVENTS):
        print(f"{phase:<44}" + "".join(f"{statistics.median(p[phase]):>16.3f}" for _, p in results.values()))


if __name__ == "__main__":
    main()
