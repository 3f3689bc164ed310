"""Benchmark: the Provider's status route under load, and where a compute start's time goes.

Starts the whole embedded stack (anvil with the Ocean contracts, Dagster webserver and daemon, the
Provider under uvicorn), publishes a dataset and a trusted algorithm once, then measures:

1. Status throughput. With 1,000 and then 10,000 compute jobs in Dagster run storage, a bounded number
   of `GET /api/services/compute?consumerAddress=X&jobId=Y` requests (the Provider's status route, over
   real HTTP on loopback, from 1, 20 and 200 concurrent clients: asyncio tasks on raw kept-alive
   sockets, connected one after another, each polling its own share of the jobs over and over as a
   consumer polls its own), for 2,000 jobs that every Provider server process has read before
   (cached: the steady state of consumers that keep polling) and for jobs never read (each a storage
   read): requests/s, p50/p99 latency, errors, and how the Provider's caches answered (hits, storage
   reads, requests per server process: bench/cache_probe counts them inside the Provider's
   processes). Before the reads are timed, storage is settled (Postgres ANALYZE, SQLite WAL
   checkpoint; --no-settle skips it) and the 2,000 jobs are read once by each server process.
   Also the listing by owner (`consumerAddress` only) for an owner with 10 jobs, and for an owner with
   thousands (the Provider answers with the newest 100).
   The jobs are synthetic runs in the same storage: launching 10,000 real jobs would take hours, so
   they are written straight into the stack's run storage (the DagsterInstance of its DAGSTER_HOME,
   with Dagster's own tables and run serialisation, in batches) as SUCCESS runs of `compute_job` that
   carry the tags a finished job has (c2d_core.engine: job id, owner among a few distinct owners,
   environment, agreement, DIDs, status 70, phase times, exit code, results) and the run config of a
   real job launched just before. The Provider reads nothing but run storage (through Dagster's
   storage API), so it cannot tell them from real ones.
   Storage is SQLite, the embedded default. With `--postgres` the stack's Dagster storage is
   dagster-postgres instead (`scheme: postgresql+psycopg2`) on 127.0.0.1:5432, user postgres, in a
   throwaway database that this script creates and drops; the Provider's nonce store stays SQLite.

2. Start latency split. N real starts through the Ocean flow: per start, initializeCompute and the two
   startOrder transactions happen outside the timing. The Provider's start route is then replayed in
   this process, with the same inputs against the stack's chain, nonce store and Dagster GraphQL, timing
   each part: signature + nonce check (`verify_request`, request parsing included), asset resolution
   + compute policy, order validation (`validate_order` for the dataset and the algorithm), the
   workflow build, and the Dagster submit (`DagsterJobs.submit`, which launches the run, after looking
   up the job id and the agreement in run storage). Then another start, with fresh orders,
   goes to the uvicorn Provider as `POST /api/services/compute`: its wall time end to end. Every job
   is waited for until it finishes, outside the timing, so no start competes with a running job. One
   warm-up start of each kind is not counted; these starts run with the 10,000 runs of part 1 in
   storage.

Every process shares the machine's CPUs, so the load average is printed with the figures. The run
takes about 3 to 4 minutes, most of it waiting for the 2 (N + 1) real jobs to finish.

    .venv/bin/python bench/provider_api.py [-n 10] [--requests 2000] [--clients 1,20,200]
        [--sizes 1000,10000] [--postgres] [--no-settle] [--no-probe]

`-n 0` measures the status route only (part 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and the file's own name would then
# shadow the `provider_api` package it benchmarks.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import SecretStr

from c2d_cli import consumer as consumer_flow
from c2d_cli import stack
from c2d_cli.origin import LocalOrigin
from c2d_cli.provider_client import ProviderClient
from c2d_cli.publisher import SAMPLE_CONTAINER, PublishedAsset, mint_to, publish_asset
from c2d_core import engine
from c2d_core.chain import Chain, dev_accounts
from c2d_core.environments import Environments
from c2d_core.ocean.signing import compute_start_message, sign_request
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from provider_api.assets import Assets
from provider_api.auth import verify_request
from provider_api.compute import ComputeService
from provider_api.dagster_jobs import JOBS_LIMIT, DagsterJobs
from provider_api.fees import ProviderFees
from provider_api.jobs import JobRecord
from provider_api.nonces import NonceStore
from provider_api.orders import validate_order
from provider_api.params import parse_params
from provider_api.schemas import ComputeStartBody
from provider_api.settings import ProviderSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
HEAVY_OWNERS = 4  # owners among whom nearly all synthetic jobs are spread
LIGHT_OWNER_JOBS = 10  # the owner whose listing is measured
JOB_TIMEOUT = 120.0
PARTS = ("signature + nonce", "assets + policy", "order validation", "workflow build", "Dagster submit")
LOOKUPS = "  of which run-storage lookups (job id, agreement, read back)"
LAUNCH = "  of which GraphQL launch (submit_job_execution)"
POLLED_JOBS = 2000  # the jobs the cached rows poll, each read before by every server process
WARM_CLIENTS = 40  # connections per warm-up pass: enough that every server process accepts some
WARM_PER_PROCESS = 4  # connections per server process that warm its cache (with the probe)
WARM_MAX_CONNECTIONS = 100  # opened one by one until every process has WARM_PER_PROCESS
WARM_PASSES = 6  # without the probe: shuffled passes over WARM_CLIENTS fresh connections
PROBE = Path(__file__).resolve().parent / "cache_probe"  # its sitecustomize.py counts cache answers
PROBE_PERIOD = 0.05  # how often the probe writes its counters (cache_probe/sitecustomize.py PERIOD)
T = TypeVar("T")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def address(seed: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address("0x" + hashlib.sha256(seed.encode()).hexdigest()[:40]))


# -- the stack ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_storage(enabled: bool) -> Iterator[str | None]:
    """A throwaway database for the stack's Dagster storage, set into the instance file `stack.up`
    renders; dropped afterwards. Yields its name, or None for SQLite."""
    if not enabled:
        yield None
        return
    import sqlalchemy

    name = f"c2d_bench_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    original = stack.render_instance

    def render(home: Path, environments: Environments, *args: Any, **kwargs: Any) -> Path:
        import yaml

        target = original(home, environments, *args, **kwargs)
        config = yaml.safe_load(target.read_text())
        config["storage"] = {
            "postgres": {
                "postgres_db": {
                    "username": "postgres",
                    "password": "",
                    "hostname": "127.0.0.1",
                    "port": 5432,
                    "db_name": name,
                    "scheme": "postgresql+psycopg2",
                }
            }
        }
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    stack.render_instance = render  # read by stack.up when it writes $DAGSTER_HOME/dagster.yaml
    try:
        yield name
    finally:
        stack.render_instance = original
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


@dataclass
class Published:
    chain: Chain
    provider: ProviderClient
    publisher: Any
    consumer: Any
    dataset: PublishedAsset
    algorithm: PublishedAsset
    env: dict[str, Any]


def publish(running: stack.Stack, origin_url: str, starts: int) -> Published:
    """A dataset whose compute service trusts one published algorithm, as the e2e tests publish them."""
    from c2d_core.ocean.checksums import trusted_algorithm_entry

    chain = Chain.connect(running.rpc_url, Path(running.addresses_file))
    provider = ProviderClient(running.provider_url)
    accounts = dev_accounts(10)
    publisher, consumer = accounts[1], accounts[2]
    algorithm_bytes = (EXAMPLES / "algorithms" / "summary.py").read_bytes()
    algorithm = publish_asset(
        chain,
        publisher,
        provider,
        name="Summary",
        files=[{"type": "url", "url": f"{origin_url}/algorithms/summary.py", "method": "GET"}],
        asset_type="algorithm",
        service_type="access",
        container=SAMPLE_CONTAINER,
    )
    entry = trusted_algorithm_entry(
        algorithm.did, hashlib.sha256(algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
    )
    dataset = publish_asset(
        chain,
        publisher,
        provider,
        name="Weather",
        files=[{"type": "url", "url": f"{origin_url}/data/weather.csv", "method": "GET"}],
        asset_type="dataset",
        service_type="compute",
        compute={
            "allowRawAlgorithm": False,
            "allowNetworkAccess": False,
            "publisherTrustedAlgorithms": [entry],
            "publisherTrustedAlgorithmPublishers": [],
        },
    )
    for asset in (dataset, algorithm):
        mint_to(chain, publisher, asset, consumer.address, starts + 2)
    env = provider.environments(chain.chain_id)[0]
    return Published(chain, provider, publisher, consumer, dataset, algorithm, env)


# -- part 1: synthetic runs and the status route ------------------------------------------------------


@dataclass
class Population:
    heavy: list[str]
    light: str
    jobs: dict[str, list[str]]  # owner -> job ids
    count: int = 0
    asked: set[str] = field(default_factory=set)  # job ids a measurement has polled (cached since)


def synthetic_tags(owner: str, env_id: str, created: float, rng: random.Random) -> dict[str, str]:
    """The tags of a compute job that finished with status 70 and four results, as the ops leave them."""
    did = "did:op:" + rng.randbytes(32).hex()
    algo_did = "did:op:" + rng.randbytes(32).hex()
    phases = {"configure": (created + 1.2, created + 1.9), "algorithm": (created + 2.0, created + 2.6)}
    phases["publish"] = (created + 2.7, created + 3.3)
    results = [
        {"index": i, "filename": name, "filesize": rng.randrange(100, 5000), "type": kind}
        | {"sha256": rng.randbytes(32).hex()}
        for i, (name, kind) in enumerate(
            [
                ("summary.json", "output"),
                ("algorithm.log", "algorithmLog"),
                ("configure.log", "configurationLog"),
                ("publish.log", "publishLog"),
            ]
        )
    ]
    tags = {
        engine.JOB_ID: uuid.UUID(int=rng.getrandbits(128)).hex,
        engine.OWNER: owner,
        engine.ENVIRONMENT: env_id,
        engine.AGREEMENT_ID: "0x" + rng.randbytes(32).hex(),
        engine.DID: did,
        engine.INPUT_DIDS: json.dumps([did]),
        engine.ALGO_DID: algo_did,
        engine.STATUS: str(int(JobStatus.JOB_FINISHED)),
        engine.STATUS_TEXT: JobStatus.JOB_FINISHED.text,
        engine.ALGORITHM_EXIT_CODE: "0",
        engine.ALGORITHM_TERMINATION: "Completed",
        engine.RESULTS: json.dumps(results, separators=(",", ":")),
        engine.DATE_FINISHED: f"{created + 3.4:.3f}",
    }
    for phase, (started, finished) in phases.items():
        tags[engine.phase_tag(phase, "started")] = f"{started:.3f}"
        tags[engine.phase_tag(phase, "finished")] = f"{finished:.3f}"
    return tags


def populate(
    instance: Any, population: Population, target: int, template: Any, env_id: str, rng: random.Random
) -> float:
    """Add SUCCESS `compute_job` runs until run storage holds `target` synthetic ones; seconds taken.

    Rows are built by Dagster's own run storage (its insertion values and run serialisation) plus the
    start and end times its run events set, and inserted in batches: one `add_historical_run` per run
    (a transaction each) takes ~9 ms on SQLite.
    """
    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.storage.runs.schema import RunsTable, RunTagsTable

    storage = instance.run_storage
    t0 = time.monotonic()
    now = datetime.now(UTC)
    # The light owner's jobs are spread evenly over the first thousand.
    light_at = {round(i * 1000 / LIGHT_OWNER_JOBS) + 7 for i in range(LIGHT_OWNER_JOBS)}
    batch: list[tuple[dict[str, Any], dict[str, str]]] = []

    def flush() -> None:
        with storage.connect() as conn:
            conn.execute(RunsTable.insert(), [values for values, _ in batch])
            conn.execute(
                RunTagsTable.insert(),
                [
                    {"run_id": values["run_id"], "key": key, "value": value}
                    for values, tags in batch
                    for key, value in tags.items()
                ],
            )
        batch.clear()

    def add_one() -> None:
        i = population.count
        owner = population.light if i in light_at else population.heavy[i % len(population.heavy)]
        # Spread over the last 6 days: within every environment's storageExpiry (7 days), as a Provider
        # sees finished jobs whose results are still kept (the expiry job tags older ones expired).
        created = now - timedelta(seconds=50 * (11_000 - i))
        tags = {**template.tags, **synthetic_tags(owner, env_id, created.timestamp(), rng)}
        run = DagsterRun(
            job_name=template.job_name,
            run_id=str(uuid.UUID(int=rng.getrandbits(128))),
            run_config=template.run_config,
            status=DagsterRunStatus.SUCCESS,
            tags=tags,
        )
        values = storage._get_run_insertion_values(run, created)
        # What Dagster writes from a real run's start and success events. Without an end_time, GraphQL's
        # `endTime` of a finished run falls back to one event-log query per run.
        values.update(start_time=created.timestamp() + 1.0, end_time=created.timestamp() + 3.5)
        values["update_timestamp"] = created + timedelta(seconds=3.5)
        batch.append((values, dict(run.tags_for_storage())))
        population.jobs.setdefault(owner, []).append(tags[engine.JOB_ID])
        population.count += 1
        if len(batch) == 500:
            flush()

    # Dagster reflects the runs table's columns for every run it inserts (`has_backfill_id_column`, a
    # schema query on a new connection: ~20 ms each on Postgres here); ask once for the whole batch.
    backfill_column = storage.has_backfill_id_column()
    with mock.patch.object(storage, "has_backfill_id_column", return_value=backfill_column):
        while population.count < target:
            add_one()
    if batch:
        flush()
    return time.monotonic() - t0


@dataclass
class Row:
    """One status measurement: what, runs in storage, clients, requests, req/s, latencies, errors, and
    how the Provider's caches answered the timed requests (None without the probe)."""

    what: str
    runs: int
    clients: int
    requests: int
    rps: float
    latencies: list[float]
    errors: int
    cache: CacheCounts | None = None


@dataclass
class CacheCounts:
    """Cache answers during one measurement, summed over the Provider's server processes, and the
    timed requests each process served (hits + loads + joined: one cache lookup per status request)."""

    hits: int
    loads: int  # misses: one run-storage read each
    joined: int  # misses that waited for another request's read of the same job
    per_process: list[int]

    def spread(self) -> str:
        return "/".join(str(count) for count in sorted(self.per_process, reverse=True))


class CacheProbe:
    """The counters bench/cache_probe/sitecustomize.py writes for each Provider server process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def read(self) -> dict[str, dict[str, int]]:
        # The files are rewritten every PROBE_PERIOD: wait for a write that follows the last request.
        time.sleep(3 * PROBE_PERIOD)
        counts = {}
        for path in self.folder.glob("*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                counts[path.stem] = json.loads(path.read_text())
        return counts

    @staticmethod
    def difference(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> CacheCounts:
        zero = {"hits": 0, "loads": 0, "joined": 0}
        delta = {
            pid: {key: now[key] - before.get(pid, zero)[key] for key in zero} for pid, now in after.items()
        }
        return CacheCounts(
            hits=sum(d["hits"] for d in delta.values()),
            loads=sum(d["loads"] for d in delta.values()),
            joined=sum(d["joined"] for d in delta.values()),
            per_process=[sum(d.values()) for d in delta.values()],
        )


def settle(instance: Any) -> str:
    """Bring run storage to the state a storage that grew over days is in, before its reads are
    timed: Postgres has statistics for the rows just written (autovacuum would analyze them on its
    own within a minute, changing the query plans in the middle of a measurement), and SQLite's
    write-ahead log is folded back into the database file (readers otherwise look pages up in a log
    that the bulk insert grew). Returns what was done."""
    storage = instance.run_storage
    with storage.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE runs")
            conn.exec_driver_sql("ANALYZE run_tags")
            return "ANALYZE"
    if "sqlite" in type(storage).__name__.lower():
        import sqlite3

        # Outside SQLAlchemy's transaction: a checkpoint cannot run inside one.
        path = Path(instance.root_directory) / "history" / "runs.db"
        with contextlib.closing(sqlite3.connect(path)) as db:
            busy, log_pages, moved = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return f"WAL checkpoint ({moved}/{log_pages} pages{', busy' if busy else ''})"
    return "nothing"


def hammer(
    url: str,
    queries: list[list[dict[str, str]]],
    expect: Callable[[bytes], bool],
    probe: CacheProbe | None = None,
) -> tuple[float, list[float], list[str], CacheCounts | None]:
    """GET `url` from one concurrent client per list in `queries`, each on its own kept-alive
    connection, asking its own queries in order, one request at a time (a poller waits for its
    answer before asking again).

    The clients are asyncio tasks on raw sockets in this process: a Python HTTP client library
    would spend more CPU per request than the Provider does and measure itself. Each client opens
    its connection with a request for the Provider's root before the clock starts (not timed, reads
    no job).
    Returns (requests/s, latencies in seconds, failures, the caches' answers to the timed requests)."""
    return asyncio.run(_hammer(url, queries, expect, probe))


def request_bytes(url: str, query: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    return f"GET {parts.path}?{urlencode(query)} HTTP/1.1\r\nHost: {parts.hostname}\r\n\r\n".encode()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """One request on a kept-alive connection; the body of its 200 answer (anything else raises)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    body = await reader.readexactly(int(match.group(1)) if match else 0)
    if head[9:12] != b"200":
        raise ValueError(head[9:12].decode() + " " + body[:200].decode(errors="replace"))
    return body


async def _hammer(
    url: str,
    queries: list[list[dict[str, str]]],
    expect: Callable[[bytes], bool],
    probe: CacheProbe | None,
) -> tuple[float, list[float], list[str], CacheCounts | None]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    failures: list[str] = []
    go = asyncio.Event()

    async def client(mine: list[bytes], opened: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            await exchange(reader, writer, opening)  # the connection is open before the clock starts
        finally:
            opened.set()  # (failed or not: the next client connects)
        try:
            await go.wait()
            for request in mine:
                t0 = time.perf_counter()
                try:
                    body = await exchange(reader, writer, request)
                except (OSError, ValueError, asyncio.IncompleteReadError) as error:
                    failures.append(f"{type(error).__name__}: {error}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - t0)
                if not expect(body):
                    failures.append(f"unexpected answer {body[:200]!r}")
        finally:
            writer.close()

    lists = [[request_bytes(url, query) for query in mine] for mine in queries if mine]
    # Consumers connect one after another, not in one burst: the server processes share the port,
    # and asyncio accepts every connection already waiting at once, so a burst would all go to the
    # process that woke first (half the Provider idle). The opening request is the Provider's root
    # (no job read, nothing cached): the timed ones are all of `queries`.
    opening = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    tasks = []
    for mine in lists:
        opened = asyncio.Event()
        tasks.append(asyncio.create_task(client(mine, opened)))
        await opened.wait()
    if any(task.done() for task in tasks):  # a client could not connect: its error ends the bench
        go.set()
        await asyncio.gather(*tasks)
    before = probe.read() if probe else None  # (the clients wait meanwhile: nothing is in flight)
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    counts = CacheProbe.difference(before, probe.read()) if probe and before is not None else None
    return len(latencies) / wall, latencies, failures, counts


def deal(items: list[T], clients: int, count: int) -> list[list[T]]:
    """`count` requests for `clients` pollers: each poller gets its own share of `items` and asks for
    them in turn, over and over (a consumer polls its own jobs), the shares as even as they can be."""
    shares = [items[i::clients] for i in range(clients)]
    per_client = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    return [
        [share[k % len(share)] for k in range(n)]
        for share, n in zip(shares, per_client, strict=True)
        if share
    ]


def warm(
    url: str, polled: list[dict[str, str]], probe: CacheProbe | None, processes: int, rng: random.Random
) -> str:
    """Have every Provider server process read each job in `polled` once (its cache then holds it),
    as a Provider whose consumers have been polling their jobs for a while; says what was done.

    A connection stays with the server process that accepted it, and which one accepts is the
    kernel's and asyncio's choice (often the same process many times in a row). With the probe,
    connections are opened one at a time until each process holds WARM_PER_PROCESS of them (the
    probe's counters tell which process answered each one's first request), and then each process
    is asked for every job exactly once. Without it, WARM_PASSES passes deal the jobs anew over
    fresh connections, which leaves a process that accepted few connections with some jobs unread.
    """
    if probe is None:
        for _ in range(WARM_PASSES):
            order = rng.sample(polled, len(polled))
            hammer(url, deal(order, WARM_CLIENTS, len(order)), lambda body: True)
        return f"{WARM_PASSES} passes over {len(polled):,} jobs (no probe: cache state unknown)"
    return asyncio.run(_warm_each_process(url, polled, probe, processes))


async def _warm_each_process(
    url: str, polled: list[dict[str, str]], probe: CacheProbe, processes: int
) -> str:
    parts = urlsplit(url)
    requests = [request_bytes(url, query) for query in polled]
    held: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
    opened: list[asyncio.StreamWriter] = []

    def served(counts: dict[str, int]) -> int:
        return counts["hits"] + counts["loads"] + counts["joined"]

    def enough() -> bool:
        return len(held) >= processes and all(len(mine) >= WARM_PER_PROCESS for mine in held.values())

    try:
        before = probe.read()
        while not enough() and len(opened) < WARM_MAX_CONNECTIONS:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            opened.append(writer)
            await exchange(reader, writer, requests[0])
            after = probe.read()
            grew = [
                pid
                for pid, now in after.items()
                if pid not in before or served(now) > served(before[pid])  # (a process's first answer)
            ]
            before = after
            if len(grew) == 1 and len(held.get(grew[0], [])) < WARM_PER_PROCESS:
                held.setdefault(grew[0], []).append((reader, writer))

        async def poll(
            connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], mine: list[bytes]
        ) -> None:
            for request in mine:
                await exchange(*connection, request)

        await asyncio.gather(
            *(
                poll(connection, requests[i :: len(mine)])
                for mine in held.values()
                for i, connection in enumerate(mine)
            )
        )
        counts = CacheProbe.difference(before, probe.read())
    finally:
        for writer in opened:
            writer.close()
    reached = f"{len(held)} of {processes} server processes" + ("" if enough() else " (not all reached)")
    return (
        f"{reached} each asked once for {len(polled):,} jobs over {len(opened)} connections opened "
        f"one by one: {counts.loads + counts.joined:,} storage reads, {counts.hits:,} hits"
    )


def bench_status(
    provider_url: str,
    population: Population,
    requests: int,
    client_counts: list[int],
    rng: random.Random,
    probe: CacheProbe | None,
    processes: int,
    notes: list[str],
) -> list[Row]:
    url = f"{provider_url}/api/services/compute"
    runs = population.count
    heavy_jobs = [(owner, job) for owner in population.heavy for job in population.jobs[owner]]
    # The jobs the pollers ask for: 2,000 (or all) of them, each already read by every server
    # process before the clock starts, as a Provider whose consumers have been polling (a finished
    # job stays in each process's cache until its results are due to expire).
    sample = rng.sample(heavy_jobs, min(POLLED_JOBS, len(heavy_jobs)))
    polled = [{"consumerAddress": owner, "jobId": job} for owner, job in sample]
    population.asked.update(job for _, job in sample)
    # Never polled, at this size or a smaller one before: each Provider process reads them anew.
    unread = [(owner, job) for owner, job in heavy_jobs if job not in population.asked]

    def finished_job(body: bytes) -> bool:
        return b'"status":70' in body and body.count(b'"jobId"') == 1

    def measure(what: str, queries: list[list[dict[str, str]]], expect: Callable[[bytes], bool]) -> Row:
        rps, latencies, failures, counts = hammer(url, queries, expect, probe)
        if failures:
            print(f"  {what}, {len(queries)} clients: {len(failures)} failures, e.g. {failures[0]}")
        count = sum(len(mine) for mine in queries)
        return Row(what, runs, len(queries), count, rps, latencies, len(failures), counts)

    t0 = time.monotonic()
    done = warm(url, polled, probe, processes, rng)
    notes.append(f"warm-up at {runs:,}: {done}, {time.monotonic() - t0:.0f} s")
    rows = []
    for clients in client_counts:
        count = max(requests, clients * 25)
        rows.append(measure("status by jobId (cached)", deal(polled, clients, count), finished_job))
    # Jobs never asked for before: every request is a read of run storage (a cache miss).
    cold = [
        {"consumerAddress": owner, "jobId": job}
        for owner, job in rng.sample(unread, min(requests, len(unread)))
    ]
    population.asked.update(query["jobId"] for query in cold)
    if cold:
        rows.append(measure("status by jobId (not cached)", deal(cold, 20, len(cold)), finished_job))
    light = [{"consumerAddress": population.light}]
    rows.append(
        measure(
            f"list, owner of {LIGHT_OWNER_JOBS} jobs",
            deal(light * 20, 20, requests),
            lambda body: body.count(b'"jobId"') == LIGHT_OWNER_JOBS,
        )
    )
    heavy = population.heavy[0]
    expected = min(JOBS_LIMIT, len(population.jobs[heavy]))
    big = [{"consumerAddress": heavy}]
    label = f"list, owner of {len(population.jobs[heavy]):,} jobs ({JOBS_LIMIT} sent)"
    rows.append(
        measure(label, deal(big * 20, 20, max(20, requests // 10)), lambda b: b.count(b'"jobId"') == expected)
    )
    return rows


# -- part 2: start latency ----------------------------------------------------------------------------


def place_orders(pub: Published) -> tuple[str, str]:
    """initializeCompute, then an order for each quoted fee (c2d_cli.consumer, as `c2d compute start`
    pays them): the dataset's and the algorithm's tx."""
    dataset = consumer_flow.Target.of(pub.dataset, "dataset")
    algorithm = consumer_flow.Target.of(pub.algorithm, "algorithm")
    quoted = consumer_flow.initialize(
        pub.provider, pub.chain, pub.consumer.address, pub.env, [dataset], algorithm, valid_for=3600
    )
    dataset_tx, algorithm_tx = consumer_flow.place_orders(
        pub.chain, pub.consumer, pub.env, quoted, say=lambda _text: None
    )
    return dataset_tx, algorithm_tx


def start_body(pub: Published) -> dict[str, Any]:
    """A signed start request for a fresh order, as ocean.js sends it (a microsecond-time nonce)."""
    dataset_tx, algorithm_tx = place_orders(pub)
    nonce = str(time.time_ns() // 1000)
    consumer = pub.consumer
    return {
        "consumerAddress": consumer.address,
        "signature": sign_request(consumer, compute_start_message(consumer.address, pub.dataset.did), nonce),
        "nonce": int(nonce),
        "environment": pub.env["id"],
        "dataset": {
            "documentId": pub.dataset.did,
            "serviceId": pub.dataset.service_id,
            "transferTxId": dataset_tx,
        },
        "algorithm": {
            "documentId": pub.algorithm.did,
            "serviceId": pub.algorithm.service_id,
            "transferTxId": algorithm_tx,
        },
        "additionalDatasets": [],
    }


class TimedDagsterJobs(DagsterJobs):
    """The Provider's DagsterJobs, adding up the time of its run-storage lookups and of the GraphQL
    launch (submit_job_execution) separately."""

    lookups = 0.0
    launch = 0.0

    def _read_runs(self, tags: dict[str, str], limit: int = JOBS_LIMIT) -> list[JobRecord]:
        t0 = time.perf_counter()
        try:
            return super()._read_runs(tags, limit)
        finally:
            self.lookups += time.perf_counter() - t0

    def _launch(self, workflow: Any) -> JobRecord:
        t0, before = time.perf_counter(), self.lookups
        try:
            return super()._launch(workflow)
        finally:
            # The launch minus the run read back from storage after it.
            self.launch += time.perf_counter() - t0 - (self.lookups - before)


def provider_pieces(running: stack.Stack, home: Path) -> tuple[ComputeService, NonceStore, TimedDagsterJobs]:
    """The Provider's objects built as its routes build them, with the settings the stack gives it."""
    from c2d_core.crypto import decrypt_with
    from provider_api.assets import ChainDdoResolver

    engine = EngineSettings(home=home)
    settings = ProviderSettings(
        environment="development",
        private_key=SecretStr(engine.resolved_provider_key_file.read_text().strip()),
        rpc_url=running.rpc_url,
        chain_id=running.chain_id,
        addresses_file=Path(running.addresses_file),
        graphql_url=f"{running.webserver_url}/graphql",
        nonce_db_url=f"sqlite:///{home / 'provider.db'}",  # the uvicorn Provider's own nonce store
        environments_file=engine.environments_file,
        results_dir=engine.resolved_results_dir,
        url=running.provider_url,
        allow_non_public_ip=True,
    )
    chain = Chain.connect(settings.rpc_url, settings.addresses_file, settings.chain_id)
    key = settings.private_key_hex
    resolver = ChainDdoResolver(chain, lambda data: decrypt_with(key, data.hex()))
    service = ComputeService(
        settings,
        Environments.load(settings.environments_file),
        Assets(resolver, key),
        ProviderFees(settings, chain),
        chain,
    )
    jobs = TimedDagsterJobs(
        settings.graphql_url, dagster_home=home, environments_file=settings.environments_file
    )
    return service, NonceStore(settings.nonce_db_url), jobs


def start_in_process(
    service: ComputeService, nonces: NonceStore, operator: TimedDagsterJobs, body: dict[str, Any]
) -> tuple[dict[str, float], JobRecord]:
    """The steps of `POST /api/services/compute` (provider_api.compute: ComputeService.start), each timed."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    request = parse_params(ComputeStartBody, body, shape="text")
    consumer = request.consumer_address
    message = compute_start_message(consumer, request.dataset.document_id)
    verify_request(nonces, consumer, message, request.nonce, request.signature)
    t1 = time.perf_counter()
    times["signature + nonce"] = t1 - t0
    env = service.environment(request.environment)
    allowed = {consumer.lower(), service.consumer_address_of(env).lower()}
    inputs = [service.check_input(request.dataset, "dataset", consumer, main=True)]
    algorithm = service.check_algorithm(request.algorithm, inputs, consumer)
    t2 = time.perf_counter()
    times["assets + policy"] = t2 - t1
    orders = []
    for item, tx_id, environment in (
        (inputs[0], request.dataset.transfer_tx_id, env.id),
        (algorithm, request.algorithm.transfer_tx_id, None),
    ):
        assert item.asset is not None and item.service is not None and item.service_index is not None
        orders.append(
            validate_order(
                service.chain,
                tx_id=str(tx_id),
                datatoken=str(item.service.get("datatokenAddress", "")),
                nft=item.asset.nft_address,
                service_id=str(item.service.get("id")),
                service_index=item.service_index,
                service_timeout=int(item.service.get("timeout") or 0),
                consumer=consumer,
                provider_address=service.settings.address,
                environment=environment,
                allowed_consumers=allowed,
                did=item.asset.did,
            )
        )
    service.fees.ensure_paid(env, orders)
    t3 = time.perf_counter()
    times["order validation"] = t3 - t2
    workflow = service.build_workflow(request, env, inputs, algorithm, service.chain.chain_id)
    t4 = time.perf_counter()
    times["workflow build"] = t4 - t3
    operator.lookups = operator.launch = 0.0
    record = operator.submit(workflow)
    times["Dagster submit"] = time.perf_counter() - t4
    times[LOOKUPS] = operator.lookups
    times[LAUNCH] = operator.launch
    return times, record


def start_over_http(provider_url: str, body: dict[str, Any]) -> tuple[float, str]:
    with httpx.Client(timeout=60) as client:
        client.get(f"{provider_url}/")  # connect first: time the request, not the TCP handshake
        t0 = time.perf_counter()
        response = client.post(f"{provider_url}/api/services/compute", json=body)
        elapsed = time.perf_counter() - t0
    if response.status_code != 200:
        raise SystemExit(f"POST compute answered {response.status_code}: {response.text[:300]}")
    return elapsed, str(response.json()[0]["jobId"])


def wait_finished(operator: DagsterJobs, job_id: str) -> JobRecord:
    """Wait for the job's run to end: its worker is gone and publish's last tags are written."""
    try:
        record = consumer_flow.poll_until(
            lambda: operator.job(job_id, fresh=True),
            # Not `record.finished`: publish tags `c2d/date_finished` a moment before the final status.
            lambda found: found is not None and found.run_ended,
            timeout=JOB_TIMEOUT,
            interval=0.2,
        )
    except consumer_flow.PollTimeout:
        raise SystemExit(f"job {job_id} did not finish in {JOB_TIMEOUT:.0f} s") from None
    assert record is not None
    return record


# -- main ---------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="starts to time, of each kind (after a warm-up)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="status requests per measurement (at least 25 per client)"
    )
    parser.add_argument(
        "--clients", default="1,20,200", help="concurrent status clients, comma-separated (default 1,20,200)"
    )
    parser.add_argument(
        "--sizes",
        default="1000,10000",
        help="runs in storage at which the status route is measured, ascending (default 1000,10000)",
    )
    parser.add_argument("--postgres", action="store_true", help="Dagster storage on the local Postgres")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="time reads right after the synthetic runs are written (no ANALYZE / WAL checkpoint first)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="no cache counters from the Provider's processes (bench/cache_probe off)",
    )
    args = parser.parse_args()
    rng = random.Random(20240607)
    client_counts = [int(item) for item in args.clients.split(",") if item.strip()]
    sizes = sorted(int(item) for item in args.sizes.split(",") if item.strip())
    status_rows: list[Row] = []
    parts: dict[str, list[float]] = {part: [] for part in (*PARTS, LOOKUPS, LAUNCH)}
    http_times: list[float] = []
    notes: list[str] = []
    began = time.monotonic()
    # Everything shares this machine's CPUs: a busy machine shows in the figures, so say how busy.
    notes.append(f"load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="c2d-bench-") as tmp, postgres_storage(args.postgres) as pg:
        home = (Path(tmp) / ".c2d").resolve()
        try:
            t0 = time.monotonic()
            # The data origin is on loopback: let the engine's fetches reach it, as a developer would.
            env = {"C2D_FETCH_ALLOW": "127.0.0.0/8"}
            probe = None if args.no_probe else CacheProbe(Path(tmp) / "cache-counts")
            if probe:
                # Every process of the stack imports the probe; only the Provider's use a status cache.
                probe.folder.mkdir()
                env["C2D_BENCH_CACHE_PROBE"] = str(probe.folder)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
            with mock.patch.dict(os.environ, env):
                running, _ = stack.up(home, port=stack._free_port())
            notes.append(f"stack up {time.monotonic() - t0:.0f} s")
            from dagster import DagsterInstance

            instance = DagsterInstance.from_config(str(home))
            storage_name = type(instance.run_storage).__name__
            with LocalOrigin(EXAMPLES) as origin:
                pub = publish(running, origin.url, 2 * (args.n + 1))
                service, nonces, operator = provider_pieces(running, home)
                finished: list[JobRecord] = []
                # Warm-ups, one of each kind; the in-process one's run is the synthetic runs' template.
                _, record = start_in_process(service, nonces, operator, start_body(pub))
                finished.append(wait_finished(operator, record.job_id))
                template = instance.get_run_by_id(record.run_id)
                _, job_id = start_over_http(running.provider_url, start_body(pub))
                finished.append(wait_finished(operator, job_id))

                population = Population(
                    heavy=[address(f"heavy-{i}") for i in range(HEAVY_OWNERS)],
                    light=address("light"),
                    jobs={},
                )
                # The server processes the stack's Provider runs (`--workers auto`: one per CPU).
                from provider_api.server import worker_count

                asked = stack._provider_command(0)[-1]
                processes = worker_count(0 if asked == "auto" else int(asked))
                for target in sizes:
                    took = populate(instance, population, target, template, pub.env["id"], rng)
                    notes.append(f"{target:,} synthetic runs written in {took:.1f} s")
                    if not args.no_settle:
                        t0 = time.monotonic()
                        done = settle(instance)
                        notes.append(f"storage settled at {target:,}: {done}, {time.monotonic() - t0:.1f} s")
                    notes.append(f"load average before the reads at {target:,}: {os.getloadavg()[0]:.2f}")
                    t0 = time.monotonic()
                    status_rows += bench_status(
                        running.provider_url,
                        population,
                        args.requests,
                        client_counts,
                        rng,
                        probe,
                        processes,
                        notes,
                    )
                    notes.append(f"status requests at {target:,} took {time.monotonic() - t0:.0f} s")

                t0 = time.monotonic()
                for _ in range(args.n):
                    times, record = start_in_process(service, nonces, operator, start_body(pub))
                    for part, seconds in times.items():
                        parts[part].append(seconds)
                    finished.append(wait_finished(operator, record.job_id))
                    elapsed, job_id = start_over_http(running.provider_url, start_body(pub))
                    http_times.append(elapsed)
                    finished.append(wait_finished(operator, job_id))
                notes.append(f"timed starts and their jobs took {time.monotonic() - t0:.0f} s")
                operator.close()
                nonces.dispose()
                pub.provider.close()
            ok = sum(1 for record in finished if record.tags.get(engine.STATUS) == "70")
            notes.append(f"real jobs that ended at status 70: {ok}/{len(finished)}")
            notes += sorted(
                {
                    f"a job ended at status {r.tags.get(engine.STATUS)} (run {r.run_status}) "
                    + r.tags.get(engine.STATUS_DETAIL, "")
                    for r in finished
                    if r.tags.get(engine.STATUS) != "70"
                }
            )
        finally:
            stack.down(home)
    notes.append(f"load average at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    notes.append(f"total {time.monotonic() - began:.0f} s")

    where = f"Postgres (db {pg})" if pg else "SQLite"
    workers = stack._provider_command(0)[-1]
    print(
        f"\nstatus route over HTTP, run storage {storage_name} ({where}), Provider --workers {workers}"
        f" ({processes} processes)"
    )
    print(
        f"{'request':<40}{'runs':>8}{'clients':>8}{'reqs':>7}{'req/s':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}{'hits':>7}{'reads':>7}  per process"
    )
    for row in status_rows:
        latencies = row.latencies
        p50, p99 = (ms(pct(latencies, 0.5)), ms(pct(latencies, 0.99))) if latencies else ("-", "-")
        # reads: run-storage reads (cache misses, and misses that joined another's read of the job)
        counts = row.cache
        cache = (
            f"{counts.hits:>7}{counts.loads + counts.joined:>7}  {counts.spread()}"
            if counts
            else f"{'-':>7}{'-':>7}"
        )
        print(
            f"{row.what:<40}{row.runs:>8,}{row.clients:>8}{row.requests:>7}{row.rps:>9.1f}{p50}{p99}"
            f"{row.errors:>7}{cache}"
        )
    if not args.n:
        print("; ".join(notes))
        return
    print(f"\nstart latency (n={args.n} of each kind, {population.count:,} runs in storage)")
    print(f"{'part':<44}{'p50 ms':>9}{'p95 ms':>9}")
    for part, values in parts.items():
        print(f"  {part:<42}{ms(pct(values, 0.5))}{ms(pct(values, 0.95))}")
    sums = [sum(values) for values in zip(*(parts[part] for part in PARTS), strict=True)]
    print(f"  {'sum of the parts (in process)':<42}{ms(pct(sums, 0.5))}{ms(pct(sums, 0.95))}")
    http = f"{ms(pct(http_times, 0.5))}{ms(pct(http_times, 0.95))}"
    print(f"{'POST /api/services/compute over HTTP':<44}{http}")
    print("; ".join(notes))


if __name__ == "__main__":
    main()
