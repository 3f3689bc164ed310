"""The examples of docs/extending.md, end to end: compute_job in process with the real sandbox and pod
programs, the extensions loaded the way a deployment loads them (C2D_EXTENSIONS, C2D_EXTENSIONS_PATH),
and loopback servers only (a GraphQL origin, a WebDAV folder)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from engine_kit import dataset_input, make_c2d_home, python_algorithm, raw_workflow, run_compute_job
from extension_kit import EXAMPLES, SECRET_PATH, dav_server, extensions_loaded, graphql_origin

from c2d_core import engine
from c2d_core.result_stores import ResultStores
from c2d_core.results import LocalResultStore

DID = "did:op:" + hashlib.sha256(b"sales-by-city").hexdigest()
ENVIRONMENTS = """
environments:
  - id: test-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxJobs: 2
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""
# Reads the GraphQL answer the configure pod stored as the dataset's file 0.
TOTAL_ALGORITHM = """
import json, os
did = json.loads(os.environ["DIDS"])[0]
answer = json.load(open(f"/data/inputs/{did}/0"))
total = sum(row["sales"] for row in answer["data"]["rows"])
open("/data/outputs/total.json", "w").write(json.dumps({"total": total}))
print("total", total)
"""


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


def _workflow(home: Path, graphql_url: str, job_id: str) -> dict[str, Any]:
    file_object = {"type": "graphql", "url": graphql_url, "query": "query { rows { city sales } }"}
    return raw_workflow(
        job_id=job_id,
        environment="test-env",
        inputs=[dataset_input(home, DID, [file_object], userdata={"limit": 2})],
        algorithm=python_algorithm(TOTAL_ALGORITHM),
    )


def compute_job_with_configured_store() -> dg.JobDefinition:
    """compute_job with the sandbox and the result store C2D_RESULT_STORE names (as definitions.py
    builds it), for `dg.reconstructable`."""
    from c2d_defs.jobs import compute_job
    from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, result_store_resource

    resources = {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": result_store_resource(engine_settings_store()),
        "environments": ComputeEnvironments(),
        "io_manager": dg.mem_io_manager,
    }
    return dg.Definitions(jobs=[compute_job], resources=resources).get_job_def(compute_job.name)


def engine_settings_store() -> str:
    from c2d_core.settings import engine_settings

    return engine_settings().result_store


def _run(workflow: dict[str, Any]) -> tuple[dg.ExecutionResult, dict[str, str], str]:
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance, job_def=compute_job_with_configured_store)
    tags = engine.current_tags(instance.get_run_by_id(result.run_id).tags)
    logs = "\n".join(event.message or "" for event in instance.all_logs(result.run_id) if event.message)
    return result, tags, logs


def _manifest(tags: dict[str, str]) -> list[dict[str, Any]]:
    return json.loads(tags[engine.RESULTS])


def test_a_graphql_dataset_and_a_webdav_result_store_end_to_end(
    c2d_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        extensions_loaded("graphql_source", "webdav_store"),
        graphql_origin() as origin,
        dav_server(tmp_path / "dav") as dav,
    ):
        monkeypatch.setenv("C2D_RESULT_STORE", "webdav")
        monkeypatch.setenv("C2D_WEBDAV_URL", dav.url)
        job_id = "a" * 32
        result, tags, logs = _run(_workflow(c2d_home, origin.url, job_id))
        assert result.success, tags.get(engine.STATUS_DETAIL)
        assert tags[engine.STATUS] == "70", tags.get(engine.STATUS_DETAIL)

        # (a) The configure pod served the new type: one POST with the query and the userdata.
        assert origin.bodies == [{"query": "query { rows { city sales } }", "variables": {"limit": 2}}]
        # (b) The publish pod stored every result in the WebDAV folder, under the store's scheme.
        manifest = _manifest(tags)
        outputs = [entry for entry in manifest if entry["type"] == "output"]
        assert [entry["filename"] for entry in outputs] == ["total.json"]
        assert json.loads((dav.root / job_id / "total.json").read_bytes()) == {"total": 42}
        assert (dav.root / job_id / "algorithm.log").exists()
        # The Provider's read path: a result's location finds its store again.
        stores = ResultStores(LocalResultStore(tmp_path / "unused"))
        full = json.loads(b"".join(_read(stores, f"webdav://{job_id}/.manifest.json")))
        by_name = {entry["filename"]: entry for entry in full}
        assert by_name["total.json"]["location"] == f"webdav://{job_id}/total.json"
        assert json.loads(b"".join(_read(stores, by_name["total.json"]["location"]))) == {"total": 42}
        # No log, tag or result names the dataset's location.
        everything = logs + json.dumps(tags) + (dav.root / job_id / "configure.log").read_text()
        assert SECRET_PATH not in everything and "s3cr3t" not in everything


def _read(stores: ResultStores, location: str) -> list[bytes]:
    store = stores.for_location(location)
    with store.open(location) as handle:
        return [handle.read()]


def test_without_the_extension_the_type_fails_provisioning_by_name(c2d_home: Path, tmp_path: Path) -> None:
    assert EXAMPLES.is_dir()
    with graphql_origin() as origin:
        _result, tags, _logs = _run(_workflow(c2d_home, origin.url, "b" * 32))
    assert tags[engine.STATUS] == "31"
    assert "files of type 'graphql' are not supported" in tags[engine.STATUS_DETAIL]
    assert origin.bodies == []
