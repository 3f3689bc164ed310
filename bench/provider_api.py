"""Benchmark: the Provider's status route under load, and where a compute start's time goes.

Starts the whole embedded stack (anvil with the Ocean contracts, Dagster webserver and daemon, the
Provider under uvicorn), publishes a dataset and a trusted algorithm once, then measures:

1. Status throughput. With 1,000 and then 10,000 compute jobs in Dagster run storage, a bounded number
   of `GET /api/services/compute?consumerAddress=X&jobId=Y` requests (the Provider's status route, over
   real HTTP on loopback, from 1, 20 and 200 concurrent clients: asyncio tasks on raw kept-alive
   sockets), for 2,000 jobs read once before (cached) and for jobs never read (each a storage read):
   requests/s, p50/p99 latency and errors.
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

    .venv/bin/python bench/provider_api.py [-n 10] [--requests 2000] [--clients 1,20,200] [--postgres]

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import urlencode, urlsplit

import httpx

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
        batch.append((values, run.tags_for_storage()))
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


def hammer(
    url: str, queries: list[dict[str, str]], clients: int, expect: Callable[[bytes], bool]
) -> tuple[float, list[float], list[str]]:
    """GET `url` once per query from `clients` concurrent clients, each on its own kept-alive
    connection, one request at a time (a poller waits for its answer before asking again).

    The clients are asyncio tasks on raw sockets in this process: a Python HTTP client library
    would spend more CPU per request than the Provider does and measure itself. Returns
    (requests/s, latencies in seconds, failures)."""
    return asyncio.run(_hammer(url, queries, clients, expect))


async def _hammer(
    url: str, queries: list[dict[str, str]], clients: int, expect: Callable[[bytes], bool]
) -> tuple[float, list[float], list[str]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [
        f"GET {parts.path}?{urlencode(query)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for query in queries
    ]
    latencies: list[float] = []
    failures: list[str] = []
    go = asyncio.Event()

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length:\s*(\d+)", head)
        body = await reader.readexactly(int(match.group(1)) if match else 0)
        if head[9:12] != b"200":
            raise ValueError(head[9:12].decode() + " " + body[:200].decode(errors="replace"))
        return body

    async def client(mine: list[bytes]) -> None:
        if not mine:
            return
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await exchange(reader, writer, mine[0])  # the connection is open before the clock starts
            ready.append(1)
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

    ready: list[int] = []
    tasks = [asyncio.create_task(client(requests[i::clients])) for i in range(clients)]
    while len(ready) < min(clients, len(requests)) and not any(task.done() for task in tasks):
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return len(latencies) / wall, latencies, failures


def bench_status(
    provider_url: str,
    population: Population,
    requests: int,
    client_counts: list[int],
    rng: random.Random,
) -> list[tuple[str, int, int, int, float, list[float], int]]:
    """Rows (what, runs in storage, clients, requests, req/s, latencies, failures)."""
    url = f"{provider_url}/api/services/compute"
    heavy_jobs = [(owner, job) for owner in population.heavy for job in population.jobs[owner]]
    # The jobs the pollers ask for: 2,000 (or all) of them, read once before the clock starts, as
    # a Provider whose consumers poll has read each job before (each worker process has its cache).
    polled = [
        {"consumerAddress": owner, "jobId": job}
        for owner, job in rng.sample(heavy_jobs, min(2000, len(heavy_jobs)))
    ]
    unread = [job for job in heavy_jobs if {"consumerAddress": job[0], "jobId": job[1]} not in polled]

    def finished_job(body: bytes) -> bool:
        return b'"status":70' in body and body.count(b'"jobId"') == 1

    hammer(url, polled * 3, 20, lambda body: True)
    rows = []
    for clients in client_counts:
        count = max(requests, clients * 25)
        queries = (polled * (count // len(polled) + 1))[:count]
        rps, latencies, failures = hammer(url, queries, clients, finished_job)
        rows.append(
            ("status by jobId (cached)", population.count, clients, count, rps, latencies, len(failures))
        )
        if failures:
            print(f"  {clients} clients: {len(failures)} failures, e.g. {failures[0]}")
    # Jobs never asked for before: every request is a read of run storage (a cache miss).
    cold = [
        {"consumerAddress": owner, "jobId": job}
        for owner, job in rng.sample(unread, min(requests, len(unread)))
    ]
    if cold:
        rps, latencies, failures = hammer(url, cold, 20, finished_job)
        rows.append(
            ("status by jobId (not cached)", population.count, 20, len(cold), rps, latencies, len(failures))
        )
    light = [{"consumerAddress": population.light}] * requests
    rps, latencies, failures = hammer(url, light, 20, lambda body: body.count(b'"jobId"') == LIGHT_OWNER_JOBS)
    rows.append(
        (
            f"list, owner of {LIGHT_OWNER_JOBS} jobs",
            population.count,
            20,
            len(light),
            rps,
            latencies,
            len(failures),
        )
    )
    heavy = population.heavy[0]
    expected = min(JOBS_LIMIT, len(population.jobs[heavy]))
    big = [{"consumerAddress": heavy}] * max(20, requests // 10)
    rps, latencies, failures = hammer(url, big, 20, lambda body: body.count(b'"jobId"') == expected)
    label = f"list, owner of {len(population.jobs[heavy]):,} jobs ({JOBS_LIMIT} sent)"
    rows.append((label, population.count, 20, len(big), rps, latencies, len(failures)))
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
        private_key=engine.resolved_provider_key_file.read_text().strip(),
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
    parser.add_argument("--postgres", action="store_true", help="Dagster storage on the local Postgres")
    args = parser.parse_args()
    rng = random.Random(20240607)
    client_counts = [int(item) for item in args.clients.split(",") if item.strip()]
    status_rows: list[tuple[str, int, int, int, float, list[float], int]] = []
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
            with mock.patch.dict(os.environ, {"C2D_FETCH_ALLOW": "127.0.0.0/8"}):
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
                for target in (1_000, 10_000):
                    took = populate(instance, population, target, template, pub.env["id"], rng)
                    notes.append(f"{target:,} synthetic runs written in {took:.1f} s")
                    t0 = time.monotonic()
                    status_rows += bench_status(
                        running.provider_url, population, args.requests, client_counts, rng
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
    print(f"\nstatus route over HTTP, run storage {storage_name} ({where}), Provider --workers {workers}")
    print(
        f"{'request':<40}{'runs':>8}{'clients':>8}{'reqs':>7}{'req/s':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
    )
    for label, runs, clients, count, rps, latencies, errors in status_rows:
        p50, p99 = (ms(pct(latencies, 0.5)), ms(pct(latencies, 0.99))) if latencies else ("-", "-")
        print(f"{label:<40}{runs:>8,}{clients:>8}{count:>7}{rps:>9.1f}{p50}{p99}{errors:>7}")
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
