"""Load: the embedded stack on Postgres under concurrent starts and status polls, then a burst of jobs.

Starts the whole embedded stack on loopback with Dagster's instance on Postgres (deploy/dagster-postgres.yaml,
127.0.0.1:5432, user postgres, a throwaway database created and dropped here) and the Provider's
database (nonces, agreement claims) in the same database, publishes a dataset and a trusted algorithm,
and gives each of 20 consumers datatokens and gas. Then:

1. For a minute (`--seconds`): 20 consumer threads (`--starters`) each run Ocean's whole start loop
   (initializeCompute, two startOrder transactions, signed `POST /api/services/compute`), while 200
   concurrent pollers (`--pollers`, asyncio, a connection each) read the status of the jobs started so
   far (`GET /api/services/compute?consumerAddress&jobId`). Reported: answers that were not 200 (target
   0), latency percentiles of the start route and the status route, jobs started, and jobs that
   completed (status 70) within the minute. The jobs still queued afterwards are stopped.
2. A burst: 100 jobs (`--burst`) submitted at once (one thread each, straight to Dagster's GraphQL API
   as the Provider does) into an environment with `maxJobs` 3. The environment's running count is
   sampled throughout (never above maxJobs, target); every job must end at status 70 within the
   timeout. Reported: the largest running count seen, time to drain, jobs finished.

Everything is on 127.0.0.1. The machine's CPUs are shared with every process of the stack, so the load
average is printed with the figures. Takes about 6 to 10 minutes.

    .venv/bin/python bench/load.py [--seconds 60] [--starters 20] [--pollers 200] [--burst 100]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/provider_api.py would then
# shadow the `provider_api` package.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import yaml

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_cli.provider_client import ProviderClient
from c2d_cli.publisher import mint_to
from c2d_core import engine
from c2d_core.chain import Chain, dev_account
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.dagster_jobs import JOBS_LIMIT, DagsterJobs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
LOAD_ENV = "load"  # the environment of part 1 (the first in the file: the one bench_provider_api uses)
BURST_ENV = "burst"
BURST_MAX_JOBS = 3
FIRST_CONSUMER = 10  # anvil's mnemonic accounts 10.. (funded here): away from the deployer and provider
TRIVIAL = "print('load')"


def _bench_provider_api() -> Any:
    """bench/provider_api.py (publishing and signed starts), loaded under a name that shadows nothing."""
    spec = importlib.util.spec_from_file_location(
        "bench_provider_api", Path(__file__).with_name("provider_api.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:>9.0f}"


# -- the stack on Postgres ----------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway database, dropped afterwards; yields its name."""
    import sqlalchemy

    name = f"c2d_load_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


def environments_file(folder: Path) -> Path:
    config = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    base = config["environments"][0]
    config["environments"] = [
        {**base, "id": LOAD_ENV, "maxJobs": 2},
        {**base, "id": BURST_ENV, "maxJobs": BURST_MAX_JOBS},
    ]
    path = folder / "environments.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def stack_env(database: str, envs_file: Path) -> dict[str, str]:
    """What the stack's processes inherit: Postgres for Dagster and the Provider, the environments."""
    return {
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": database,
        "PROVIDER_NONCE_DB_URL": f"{POSTGRES_SERVER}/{database}",
        "C2D_ENVIRONMENTS_FILE": str(envs_file),
        "C2D_FETCH_ALLOW": "127.0.0.0/8",
    }


# -- part 1: starts and status polls ------------------------------------------------------------------


@dataclasses.dataclass
class Part1:
    start_latencies: list[float] = dataclasses.field(default_factory=list)
    start_errors: list[str] = dataclasses.field(default_factory=list)
    prep_errors: list[str] = dataclasses.field(default_factory=list)
    poll_latencies: list[float] = dataclasses.field(default_factory=list)
    poll_errors: list[str] = dataclasses.field(default_factory=list)
    jobs: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (owner, job id)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def starter(bp: Any, pub: Any, consumer: Any, running: stack.Stack, until: float, out: Part1) -> None:
    """One consumer's start loop: order (not timed), then the signed start (timed)."""
    provider_url = running.provider_url
    # A chain connection and a Provider client of its own: nothing shared between the consumers.
    chain = Chain.connect(running.rpc_url, Path(running.addresses_file))
    provider = ProviderClient(provider_url, timeout=120)
    mine = dataclasses.replace(pub, chain=chain, provider=provider, consumer=consumer)
    try:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < until:
                try:
                    body = bp.start_body(mine)
                except Exception as error:  # an order or a fee quote failed: counted, not timed
                    with out.lock:
                        out.prep_errors.append(f"{type(error).__name__}: {str(error)[:200]}")
                    continue
                t0 = time.perf_counter()
                try:
                    response = client.post(f"{provider_url}/api/services/compute", json=body)
                except httpx.HTTPError as error:
                    with out.lock:
                        out.start_errors.append(f"{type(error).__name__}")
                    continue
                elapsed = time.perf_counter() - t0
                with out.lock:
                    out.start_latencies.append(elapsed)
                    if response.status_code == 200:
                        out.jobs.append((consumer.address, str(response.json()[0]["jobId"])))
                    else:
                        out.start_errors.append(f"{response.status_code} {response.text[:200]}")
    finally:
        provider.close()


async def pollers(provider_url: str, count: int, until: float, out: Part1) -> None:
    url = f"{provider_url}/api/services/compute"
    rng = random.Random(7)

    async def poll(client: httpx.AsyncClient) -> None:
        while time.monotonic() < until:
            with out.lock:
                job = rng.choice(out.jobs) if out.jobs else None
            if job is None:
                await asyncio.sleep(0.2)
                continue
            t0 = time.perf_counter()
            try:
                response = await client.get(url, params={"consumerAddress": job[0], "jobId": job[1]})
            except httpx.HTTPError as error:
                out.poll_errors.append(type(error).__name__)
                continue
            elapsed = time.perf_counter() - t0
            out.poll_latencies.append(elapsed)
            if response.status_code != 200 or response.json()[0]["jobId"] != job[1]:
                out.poll_errors.append(f"{response.status_code} {response.text[:200]}")

    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(poll(client) for _ in range(count)))


def run_part1(
    bp: Any, pub: Any, consumers: list[Any], running: stack.Stack, args: argparse.Namespace
) -> Part1:
    out = Part1()
    until = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=starter, args=(bp, pub, consumer, running, until, out), daemon=True)
        for consumer in consumers
    ]
    for thread in threads:
        thread.start()
    asyncio.run(pollers(running.provider_url, args.pollers, until, out))
    for thread in threads:
        thread.join(timeout=180)
    return out


# -- part 2: a burst of jobs --------------------------------------------------------------------------


def burst_workflows(n: int, origin_url: str, key_file: Path) -> list[Workflow]:
    """`n` trivial jobs of one owner of their own (so one listing by owner reads them all)."""
    base = demo_workflow(origin_url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)
    owner = "0x" + uuid.uuid4().hex[:20] * 2
    workflows = []
    for _ in range(n):
        raw = {**base, "jobId": uuid.uuid4().hex, "agreementId": "0x" + uuid.uuid4().hex * 2, "owner": owner}
        raw["environment"] = BURST_ENV
        raw["algorithm"] = {**base["algorithm"], "rawcode": TRIVIAL}
        workflows.append(Workflow.model_validate(raw))
    return workflows


def run_burst(operator: DagsterJobs, workflows: list[Workflow], timeout: float) -> dict[str, Any]:
    """Submit every workflow at once, sample the environment's running count until all ended."""
    errors: list[str] = []
    barrier = threading.Barrier(len(workflows))

    def submit(workflow: Workflow) -> None:
        barrier.wait()
        try:
            operator.submit(workflow)
        except Exception as error:  # counted: the target is none
            errors.append(f"{type(error).__name__}: {str(error)[:200]}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=submit, args=(w,)) for w in workflows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = time.monotonic() - t0
    most_running = 0
    samples = 0
    ended: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    ids = {w.job_id for w in workflows}
    while time.monotonic() < deadline:
        running, _ = operator.current_jobs(BURST_ENV)
        most_running = max(most_running, running)
        samples += 1
        for record in operator.jobs(owner=workflows[0].owner):
            if record.job_id in ids and record.run_ended:
                ended[record.job_id] = record.tags.get(engine.STATUS, "?")
        if len(ended) == len(ids):
            break
        time.sleep(0.5)
    return {
        "submit_seconds": submitted,
        "submit_errors": errors,
        "drain_seconds": time.monotonic() - t0,
        "most_running": most_running,
        "samples": samples,
        "ended": len(ended),
        "status_70": sum(1 for status in ended.values() if status == "70"),
        "other_statuses": sorted({status for status in ended.values() if status != "70"}),
    }


# -- main ---------------------------------------------------------------------------------------------


def fund(chain: Chain, pub: Any, consumers: list[Any], tokens: int) -> None:
    for consumer in consumers:
        chain.rpc("anvil_setBalance", consumer.address, hex(1000 * 10**18))
        for asset in (pub.dataset, pub.algorithm):
            mint_to(chain, pub.publisher, asset, consumer.address, tokens)


def stop_leftovers(operator: DagsterJobs, jobs: list[tuple[str, str]]) -> tuple[int, int]:
    """Stop part 1's unfinished jobs (they would hold the queue for minutes); (completed, stopped)."""
    completed = stopped = 0
    for _, job_id in jobs:
        record = operator.job(job_id)
        if record is None:
            continue
        if record.tags.get(engine.STATUS) == "70":
            completed += 1
        elif not record.finished:
            with contextlib.suppress(Exception):
                operator.stop(job_id, starting_wait=30)
                stopped += 1
    return completed, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="duration of part 1")
    parser.add_argument("--starters", type=int, default=20, help="concurrent consumers starting jobs")
    parser.add_argument("--pollers", type=int, default=200, help="concurrent status pollers")
    parser.add_argument("--burst", type=int, default=100, help="jobs submitted at once in part 2")
    parser.add_argument("--burst-timeout", type=float, default=900, help="seconds for the burst to drain")
    args = parser.parse_args()
    if not 0 < args.burst <= JOBS_LIMIT:
        parser.error(f"--burst must be 1..{JOBS_LIMIT} (the burst is read back with one listing)")
    bp = _bench_provider_api()
    notes = [f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="c2d-load-") as tmp, postgres_database() as database:
        home = (Path(tmp) / ".c2d").resolve()
        home.parent.mkdir(parents=True, exist_ok=True)
        envs_file = environments_file(Path(tmp))
        try:
            os.environ.update(stack_env(database, envs_file))
            t0 = time.monotonic()
            running, _ = stack.up(
                home, port=stack._free_port(), instance_template=ROOT / "deploy" / "dagster-postgres.yaml"
            )
            notes.append(f"stack up on Postgres (db {database}) in {time.monotonic() - t0:.0f} s")
            from dagster import DagsterInstance

            with DagsterInstance.from_config(str(home)) as instance:
                storage = type(instance.run_storage).__name__
            with (
                LocalOrigin(EXAMPLES) as origin,
                DagsterJobs(
                    f"{running.webserver_url}/graphql", dagster_home=running.dagster_home
                ) as operator,
            ):
                pub = bp.publish(running, origin.url, 0)
                assert pub.env["id"] == LOAD_ENV, pub.env["id"]
                consumers = [dev_account(FIRST_CONSUMER + i) for i in range(args.starters)]
                t0 = time.monotonic()
                fund(pub.chain, pub, consumers, tokens=200)
                notes.append(f"{len(consumers)} consumers funded in {time.monotonic() - t0:.0f} s")

                part1 = run_part1(bp, pub, consumers, running, args)
                completed, stopped = stop_leftovers(operator, part1.jobs)
                pub.provider.close()

                key_file = EngineSettings(home=home).resolved_provider_key_file
                burst = run_burst(
                    operator, burst_workflows(args.burst, origin.url, key_file), args.burst_timeout
                )
        finally:
            stack.down(home)
    notes.append(f"load average at end {os.getloadavg()[0]:.2f}; total {time.monotonic() - began:.0f} s")

    print(
        f"\npart 1: {args.seconds:.0f} s, {args.starters} consumers starting, "
        f"{args.pollers} pollers; run storage {storage}"
    )
    print(f"{'route':<36}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for label, latencies, errors in (
        ("POST /api/services/compute (start)", part1.start_latencies, part1.start_errors),
        ("GET /api/services/compute (status)", part1.poll_latencies, part1.poll_errors),
    ):
        row = f"{ms(pct(latencies, 0.5))}{ms(pct(latencies, 0.95))}{ms(pct(latencies, 0.99))}"
        print(f"{label:<36}{len(latencies):>9}{len(errors):>8}{row}{ms(max(latencies, default=0))}")
    rate = len(part1.poll_latencies) / args.seconds
    print(f"jobs started {len(part1.jobs)}; completed (status 70) {completed}; stopped afterwards {stopped}")
    print(f"status polls {rate:.0f}/s; order preparation failures {len(part1.prep_errors)}")
    for kind, errors in (
        ("start", part1.start_errors),
        ("status", part1.poll_errors),
        ("order", part1.prep_errors),
    ):
        for sample in sorted(set(errors))[:3]:
            print(f"  {kind} error: {sample}")
    print(f"\npart 2: {args.burst} jobs submitted at once into {BURST_ENV} (maxJobs {BURST_MAX_JOBS})")
    print(
        f"submitted in {burst['submit_seconds']:.1f} s ({len(burst['submit_errors'])} errors); "
        f"all ended in {burst['drain_seconds']:.0f} s: {burst['ended']}/{args.burst} ended, "
        f"{burst['status_70']} at status 70 {burst['other_statuses'] or ''}"
    )
    print(
        f"most running at once {burst['most_running']} (maxJobs {BURST_MAX_JOBS}; {burst['samples']} samples)"
    )
    for sample in burst["submit_errors"][:3]:
        print(f"  submit error: {sample}")
    print("; ".join(notes))


if __name__ == "__main__":
    main()
