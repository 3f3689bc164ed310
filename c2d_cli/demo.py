"""`c2d dev demo`: one compute job on the embedded stack, from a fresh clone, narrated as it goes.

A sample CSV is served by a local origin, its location is encrypted for the provider key exactly as a
DDO's `files` are, and a raw sample algorithm summarises it in the sandbox. Until the Provider exists,
the workflow is submitted to the engine directly over Dagster's GraphQL API.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

from rich.console import Console

from c2d_cli import engine, stack
from c2d_cli.origin import LocalOrigin
from c2d_core.crypto import encrypt_for, public_key_of
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from c2d_core.workflow import Workflow

EXAMPLES = stack.PROJECT_ROOT / "examples"
DEMO_OWNER = "0x" + "d" * 40


def demo_workflow(origin_url: str, provider_key_file: Path) -> Workflow:
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


def run_demo(home: Path, console: Console, timeout: float = 300.0) -> int:
    started = time.monotonic()
    console.print("[bold]1/4[/] starting the embedded stack (Dagster webserver + daemon, SQLite)…")
    running, reused = stack.up(home)
    console.print(f"    {'reusing the running stack' if reused else 'stack up'} at {running.webserver_url}")
    settings = EngineSettings(home=home)
    with LocalOrigin(EXAMPLES) as origin:
        workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
        console.print(
            "[bold]2/4[/] submitting compute_job: dataset weather.csv (location encrypted for the "
            "provider key), raw algorithm examples/algorithms/summary.py on python:3.11-slim"
        )
        run_id = engine.submit(running.webserver_host, running.webserver_port, workflow)
        console.print(f"    job {workflow.job_id} is Dagster run {run_id}")
        console.print("[bold]3/4[/] following the job:")
        submit_time = time.monotonic()

        def show(view: engine.JobView) -> None:
            console.print(
                f"    {time.monotonic() - submit_time:6.2f} s  status {view.status:>2} "
                f"{view.status_text.strip()}  [dim](run {view.run_status})[/]"
            )

        view = engine.wait_for_job(running.webserver_url, run_id, timeout=timeout, on_change=show)
    status = JobStatus(view.status)
    results_dir = settings.resolved_results_dir / workflow.job_id
    console.print(
        f"[bold]4/4[/] final status {int(status)} {status.text.strip()}"
        + (f": {view.detail}" if view.detail else "")
    )
    for entry in view.results:
        console.print(
            f"    [{entry['index']}] {entry['filename']:<20} {entry['filesize']:>7} B  {entry['type']}"
        )
    summary = results_dir / "summary.json"
    if summary.exists():
        console.print("    summary.json:")
        console.print(summary.read_text(), highlight=False)
    console.print(f"    results in {results_dir}")
    console.print(f"    inspect the run in the Dagster UI: {running.webserver_url}/runs/{run_id}")
    console.print(
        f"    done in {time.monotonic() - started:.1f} s. Stop the stack with: [bold]c2d dev down[/]"
    )
    return 0 if status is JobStatus.JOB_FINISHED else 1
