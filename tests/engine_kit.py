"""Running the real `compute_job` in process, with the embedded deployment's resources (the bubblewrap
sandbox, the local result store, the environments file), for tests that read its run back; and running
the job a sensor's `RunRequest` asks for, as the daemon would launch it.

Also what such a test sets up before it runs a job: a C2D home with a Provider key and an environments
file (`make_c2d_home`), a loopback origin serving the datasets' files (`serve_origin`), and the raw
workflow the configure pod reads, its inputs' files encrypted to that key (`raw_workflow`,
`dataset_input`, `encrypted_files`, `python_algorithm`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from eth_account import Account

from c2d_cli.origin import LocalOrigin
from c2d_core import engine, run_stamp
from c2d_core.crypto import encrypt_for, public_key_of
from c2d_core.settings import engine_settings
from c2d_defs.jobs import compute_job
from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource


def compute_job_with_local_resources() -> dg.JobDefinition:
    """compute_job with the embedded deployment's resources, for `dg.reconstructable`."""
    resources = {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": LocalResultStoreResource(),
        "environments": ComputeEnvironments(),
        # Stage outputs carry the workflow: they stay in memory, as in the code location.
        "io_manager": dg.mem_io_manager,
    }
    return dg.Definitions(jobs=[compute_job], resources=resources).get_job_def(compute_job.name)


def run_compute_job(
    workflow: dict[str, Any],
    instance: dg.DagsterInstance,
    *,
    job_def: Callable[[], dg.JobDefinition] = compute_job_with_local_resources,
    **options: Any,
) -> dg.ExecutionResult:
    """Run `workflow` as compute_job on `instance`; failures are results, not exceptions.

    `job_def` builds the job (a module-level function, for `dg.reconstructable`): by default
    compute_job with the embedded resources; a test of another code location's job, or of other
    resources, names its own. Through `dg.execute_job`, not `execute_in_process`: the latter swaps the
    job's executor for its own, and compute_job's executor is part of how it behaves (a failed stage
    does not skip publish).
    """
    job = dg.reconstructable(job_def)
    # Dagster keeps the last definition it loaded; the resources read this test's settings, so load anew.
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    return dg.execute_job(
        job,
        instance=instance,
        run_config=engine.run_config(workflow),
        tags={**provider_tags(workflow), **options.pop("tags", {})},
        raise_on_error=False,
        **options,
    )


def provider_tags(workflow: dict[str, Any]) -> dict[str, str]:
    """What the Provider tags every run with that the engine checks: the job id and its stamp
    (under this test's Provider key, when it has one)."""
    key = run_stamp.stamp_key_from_file(engine_settings().resolved_provider_key_file)
    stamp = {engine.STAMP: run_stamp.stamp(key, workflow)} if key is not None else {}
    return {engine.JOB_ID: str(workflow.get("jobId", "")), **stamp}


def run_requested_job(
    request: dg.RunRequest,
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
) -> dg.ExecuteInProcessResult:
    """Run what a sensor tick asked for (`request`, of `job`), with its config and tags, on `instance`."""
    return job.execute_in_process(
        run_config=dict(request.run_config),
        instance=instance,
        resources=resources,
        tags=dict(request.tags),
        raise_on_error=False,
    )


# What a test of the engine sets up before it runs a job.

NO_ADDRESS = "0x" + "0" * 40
OWNER = "0x" + "1" * 40


def make_c2d_home(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environments: str,
    *,
    home: Path | None = None,
    configure_deadline: int | None = 30,
    provider_key: str | None = None,
) -> Path:
    """A C2D home for the engine of this process (C2D_HOME): a Provider key (`provider_key`, or a new
    one) in its secrets; `environments` (YAML) is written to tmp_path/environments.yaml, the
    C2D_ENVIRONMENTS_FILE.

    Fetches are tried once, and loopback is allow-listed: the tests' origins are there, and the SSRF
    guard refuses it otherwise. `configure_deadline` is C2D_CONFIGURE_DEADLINE in seconds (None: the
    default). `home` is where the home goes when tmp_path/home will not do.
    """
    home = tmp_path / "home" if home is None else home
    (home / "secrets").mkdir(parents=True)
    environments_file = tmp_path / "environments.yaml"
    environments_file.write_text(environments)
    monkeypatch.setenv("C2D_HOME", str(home))
    monkeypatch.setenv("C2D_ENVIRONMENTS_FILE", str(environments_file))
    if configure_deadline is not None:
        monkeypatch.setenv("C2D_CONFIGURE_DEADLINE", str(configure_deadline))
    monkeypatch.setenv("C2D_FETCH_RETRIES", "0")
    monkeypatch.setenv("C2D_FETCH_ALLOW", "127.0.0.1/32")
    key = Account.create().key.hex() if provider_key is None else provider_key
    (home / "secrets" / "provider-key").write_text(key)
    return home


def provider_key_of(home: Path) -> str:
    """The Provider's private key (hex) that `make_c2d_home` wrote into `home`."""
    return (home / "secrets" / "provider-key").read_text().strip()


@contextmanager
def serve_origin(folder: Path, files: Mapping[str, str]) -> Iterator[LocalOrigin]:
    """A loopback HTTP origin serving `files` (name: text), written into `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    with LocalOrigin(folder) as server:
        yield server


def encrypted_files(home: Path, files: Sequence[str | Mapping[str, Any]]) -> dict[str, str]:
    """An input's `files` as the Provider hands them on: the asset's files document encrypted to the
    Provider key of `home`. A string in `files` is a URL, fetched with GET; a mapping is a file object
    as it stands."""
    objects = [
        {"type": "url", "url": file, "method": "GET"} if isinstance(file, str) else dict(file)
        for file in files
    ]
    document = {"nftAddress": NO_ADDRESS, "datatokenAddress": NO_ADDRESS, "files": objects}
    public_key = public_key_of(provider_key_of(home))
    return {"encryptedFiles": encrypt_for(public_key, json.dumps(document).encode())}


def dataset_input(
    home: Path, did: str, files: Sequence[str | Mapping[str, Any]], **fields: Any
) -> dict[str, Any]:
    """One of a workflow's inputs: dataset `did`'s compute service with `files` (see `encrypted_files`);
    `fields` (a ddo, userdata) are added as they are."""
    return {"did": did, "serviceId": "compute", **fields, "files": encrypted_files(home, files)}


def python_algorithm(rawcode: str, *, tag: str = "3.11-slim", **fields: Any) -> dict[str, Any]:
    """A raw-code algorithm run as `python $ALGO` in python:`tag`; `fields` (algocustomdata, ...) are
    added as they are."""
    container = {"entrypoint": "python $ALGO", "image": "python", "tag": tag}
    return {"rawcode": rawcode, "container": container, **fields}


def raw_workflow(
    *,
    job_id: str,
    environment: str,
    inputs: list[dict[str, Any]],
    algorithm: dict[str, Any],
    owner: str = OWNER,
    **fields: Any,
) -> dict[str, Any]:
    """The workflow document the configure pod reads (what the Provider puts in the run config);
    `fields` (agreementId, chainId, ...) are added as they are."""
    return {
        "jobId": job_id,
        "owner": owner,
        "environment": environment,
        **fields,
        "inputs": inputs,
        "algorithm": algorithm,
    }
