"""`c2d dev demo`: the whole Ocean Compute-to-Data flow on the embedded stack, narrated as it goes.

A publisher puts a sample dataset (a CSV served by the stack's data origin, a process started and
stopped with the stack, so the DIDs stay usable after the demo) and a sample algorithm on the
local chain, trusting that algorithm for compute; a consumer orders both with the Provider's signed
fees, starts the job with a signed request, follows it and downloads every result. The dataset's
location is encrypted for the Provider and never appears in run config, tags, logs or responses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from c2d_cli import stack
from c2d_cli.origin import LocalOrigin
from c2d_core.status import JobStatus
from c2d_core.workflow import Workflow

EXAMPLES = stack.PROJECT_ROOT / "examples"
DEMO_OWNER = "0x" + "d" * 40
DEMO_AUTHOR = "c2d demo"
DEMO_DESCRIPTION = "Sample data for the c2d demo: {what} (published by the c2d demo)"


def demo_workflow(origin_url: str, provider_key_file: Path) -> Workflow:
    """A workflow submitted to the engine directly (no chain): used by the engine's own tests and bench."""
    import uuid

    from c2d_core.crypto import encrypt_for, public_key_of

    public_key = public_key_of(provider_key_file.read_text().strip())
    files_document = {
        "nftAddress": "0x" + "0" * 40,
        "datatokenAddress": "0x" + "0" * 40,
        "files": [{"type": "url", "url": f"{origin_url}/data/weather.csv", "method": "GET"}],
    }
    did = "did:op:" + hashlib.sha256(b"c2d-demo-weather-dataset").hexdigest()
    return Workflow.model_validate(
        {
            "jobId": uuid.uuid4().hex,
            "owner": DEMO_OWNER,
            "environment": "ocean-compute",
            "inputs": [
                {
                    "did": did,
                    "serviceId": "compute",
                    "files": {"encryptedFiles": encrypt_for(public_key, json.dumps(files_document).encode())},
                }
            ],
            "algorithm": {
                "rawcode": (EXAMPLES / "algorithms" / "summary.py").read_text(),
                "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim"},
                "algocustomdata": {"column": "temp_c"},
            },
        }
    )


# The job's Dagster run, found by its job-id tag, for a link into the Dagster UI.
_RUN_OF_JOB = """
query($filter: RunsFilter!) { runsOrError(filter: $filter, limit: 1) { ... on Runs { results { runId } } } }
"""


def dagster_run_id(webserver_url: str, job_id: str) -> str | None:
    """The run that is the job, asked of Dagster's GraphQL API (the CLI has no business with the
    Provider's own operator module); None if Dagster does not answer with one."""
    import httpx

    from c2d_core import engine

    run_filter = {"pipelineName": engine.JOB_NAME, "tags": [{"key": engine.JOB_ID, "value": job_id}]}
    try:
        answer = httpx.post(
            f"{webserver_url}/graphql",
            json={"query": _RUN_OF_JOB, "variables": {"filter": run_filter}},
            timeout=10,
        ).json()
        runs = answer["data"]["runsOrError"]["results"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return str(runs[0]["runId"]) if runs else None


@contextlib.contextmanager
def demo_origin(running: stack.Stack) -> Iterator[tuple[str, bool]]:
    """The URL the demo's files are served at, and whether it outlives the demo: the stack's data
    origin; a thread of this process for a stack started before the stack had one."""
    if running.origin_url:
        yield running.origin_url, True
        return
    with LocalOrigin(EXAMPLES) as origin:
        yield origin.url, False


def run_demo(home: Path, console: Console, timeout: float = 300.0) -> int:
    from c2d_cli.consumer import download_results, order_and_start, wait_for_status
    from c2d_cli.provider_client import ProviderClient
    from c2d_cli.publisher import SAMPLE_CONTAINER, mint_to, publish_asset
    from c2d_core.chain import Chain, dev_accounts
    from c2d_core.ocean.checksums import trusted_algorithm_entry

    started = time.monotonic()
    console.print("[bold]1/5[/] starting the embedded stack: anvil + Ocean contracts, Dagster, the Provider…")
    running, reused = stack.up(home)
    console.print(
        f"    {'reusing the running stack' if reused else 'stack up'}: Provider {running.provider_url}, "
        f"Dagster UI {running.webserver_url}, chain {running.rpc_url} (id {running.chain_id})"
    )
    chain = Chain.connect(running.rpc_url, Path(running.addresses_file))
    accounts = dev_accounts(3)
    publisher, consumer = accounts[1], accounts[2]
    provider = ProviderClient(running.provider_url)
    try:
        with demo_origin(running) as (origin_url, lasting):
            console.print("[bold]2/5[/] publishing (as the publisher, anvil account 1):")
            algorithm_bytes = (EXAMPLES / "algorithms" / "summary.py").read_bytes()
            algorithm = publish_asset(
                chain,
                publisher,
                provider,
                name="Weather summary",
                asset_type="algorithm",
                service_type="access",
                container=SAMPLE_CONTAINER,
                description=DEMO_DESCRIPTION.format(what="a summary of a CSV column"),
                author=DEMO_AUTHOR,
                files=[{"type": "url", "url": f"{origin_url}/algorithms/summary.py", "method": "GET"}],
            )
            console.print(f"    algorithm {algorithm.did}")
            trusted = trusted_algorithm_entry(
                algorithm.did, hashlib.sha256(algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
            )
            dataset = publish_asset(
                chain,
                publisher,
                provider,
                name="Weather 2026-11",
                asset_type="dataset",
                service_type="compute",
                description=DEMO_DESCRIPTION.format(what="hourly weather readings"),
                author=DEMO_AUTHOR,
                compute={
                    "allowRawAlgorithm": False,
                    "allowNetworkAccess": False,
                    "publisherTrustedAlgorithms": [trusted],
                    "publisherTrustedAlgorithmPublishers": [],
                },
                files=[{"type": "url", "url": f"{origin_url}/data/weather.csv", "method": "GET"}],
            )
            console.print(f"    dataset   {dataset.did} (compute only, trusts the algorithm above)")
            for asset in (dataset, algorithm):
                mint_to(chain, publisher, asset, consumer.address)
            console.print(f"    minted datatokens of both to the consumer {consumer.address}")
            console.print(
                "[bold]3/5[/] ordering and starting (as the consumer, anvil account 2): "
                "initializeCompute → startOrder with the signed fees → signed POST compute"
            )
            env = provider.environments(chain.chain_id)[0]
            job = order_and_start(
                chain, consumer, provider, dataset, algorithm, env, algocustomdata={"column": "temp_c"}
            )
            console.print(f"    job {job['jobId']} accepted: status {job['status']} {job['statusText']}")
            console.print("[bold]4/5[/] following the job through the Provider:")
            submitted = time.monotonic()
            final = wait_for_status(
                provider,
                consumer.address,
                job["jobId"],
                timeout=timeout,
                on_change=lambda j: console.print(
                    f"    {time.monotonic() - submitted:6.2f} s  status {j['status']:>2} "
                    f"{j['statusText'].strip()}"
                ),
            )
        out_dir = home / "demo-results" / final["jobId"]
        console.print(f"[bold]5/5[/] downloading every result through computeResult into {out_dir}")
        for saved in download_results(provider, consumer, final, out_dir):
            console.print(f"    {saved.path.name:<16} {saved.filesize:>6} B")
    finally:
        provider.close()
    console.print("    final job JSON:")
    console.print_json(json.dumps(final))
    summary = out_dir / "summary.json"
    if summary.exists():
        console.print("    summary.json (the algorithm's output):")
        console.print(summary.read_text(), highlight=False)
    if lasting:
        console.print(
            f"    the data stays served by the stack's origin ({origin_url}) until `c2d dev down`: run your "
            f"own job with c2d compute start --dataset {dataset.did} --algorithm {algorithm.did}"
        )
    else:
        console.print(
            "    [yellow]this stack has no data origin: the demo's files were served by the demo itself[/], "
            "so jobs on these DIDs fail from now on; restart the stack (`c2d dev down && c2d dev up`) "
            "and run the demo again"
        )
    run_id = dagster_run_id(running.webserver_url, final["jobId"])
    console.print(f"    results in {out_dir}")
    if (out_dir / "attestation.json").exists():
        console.print(
            f"    check them against the Provider's signed attestation: "
            f"[bold].venv/bin/c2d compute verify {final['jobId']} --dir {out_dir}[/]"
        )
    if run_id is not None:
        console.print(f"    the run in the Dagster UI: {running.webserver_url}/runs/{run_id}")
    elapsed = time.monotonic() - started
    console.print(f"    done in {elapsed:.1f} s. Stop the stack with: [bold].venv/bin/c2d dev down[/]")
    return 0 if final["status"] == JobStatus.JOB_FINISHED else 1
