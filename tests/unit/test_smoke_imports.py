"""The Dagster family must import as one matched set (an unpinned install silently breaks this)."""

import importlib

import dagster
import pytest


@pytest.mark.parametrize(
    "module", ["dagster_webserver", "dagster_graphql", "dagster_k8s", "dagster_postgres", "dagster_aws.s3"]
)
def test_dagster_library_imports_against_pinned_core(module: str) -> None:
    imported = importlib.import_module(module.split(".")[0])
    assert dagster.__version__ == "1.13.27"
    version = getattr(imported, "__version__", None)
    assert version in ("1.13.27", "0.29.27"), f"{module} is {version}, not the matched set"
    importlib.import_module(module)


def test_code_location_loads_and_resolves_compute_job() -> None:
    from c2d_defs.definitions import defs

    job = defs.resolve_job_def("compute_job")
    # The built-in output stage's op sits between the algorithm and publish (a no-op where the
    # environment configures no output stages; c2d_defs/jobs/compute.py).
    assert [node.name for node in job.graph.nodes_in_topological_order] == [
        "configure",
        "run_algorithm",
        "leak_filter",
        "publish",
    ]
    # The in-process executor, with publish allowed to run after a failed stage (c2d_defs/jobs/compute.py).
    assert job.executor_def.name == "c2d_in_process"
