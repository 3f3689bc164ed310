"""The Provider's Dagster instance holds the engine's storage and nothing else of its instance file.

The engine's instance file (the dagster chart's on Kubernetes) names classes only the engine's image
has: the K8s run launcher, our run coordinator in c2d_defs, S3 compute logs. The Provider mounts that
file as it is (docs/deploy-kubernetes.md), so `storage_instance` must build the storage it names and
Dagster's own defaults for everything else, whatever code path later touches the instance. Here
those classes live in modules that do not exist at all: anything that tried to load them would fail.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef

from c2d_core import engine
from provider_api.dagster_jobs import DagsterJobs, storage_instance

MISSING = "c2d_not_installed_anywhere"


def _engine_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster"
    home.mkdir()
    base = str(tmp_path / "storage")
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                # Explicit SQLite storage (as dagster-postgres's would be on Kubernetes), elsewhere
                # than the home folder, which the Provider mounts read-only.
                "storage": {"sqlite": {"base_dir": base}},
                "run_launcher": {"module": f"{MISSING}.k8s", "class": "K8sRunLauncher", "config": {}},
                "run_coordinator": {"module": f"{MISSING}.coordinator", "class": "Immediate", "config": {}},
                "compute_logs": {"module": f"{MISSING}.logs", "class": "S3ComputeLogManager", "config": {}},
                "scheduler": {"module": f"{MISSING}.scheduler", "class": "Scheduler", "config": {}},
                "telemetry": {"enabled": True},
            }
        )
    )
    return home


def test_only_the_storage_of_the_instance_file_is_built(tmp_path: Path) -> None:
    home = _engine_home(tmp_path)
    with storage_instance(home) as instance:
        assert type(instance.run_launcher).__module__.startswith("dagster.")
        assert type(instance.run_coordinator).__module__.startswith("dagster.")
        assert type(instance.compute_log_manager).__name__ == "NoOpComputeLogManager"
        assert instance.scheduler is None
        assert instance.get_settings("telemetry") == {"enabled": False}
        assert instance.get_run_records(limit=1) == []
    # The engine's own full instance must load them (its scheduler at once): the file really names
    # what is missing here, and a Provider building the whole instance would fail on it.
    with pytest.raises(Exception, match=MISSING):
        DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()
    assert sorted(path.name for path in home.iterdir()) == ["dagster.yaml"], "nothing written at home"


def test_the_provider_reads_and_stops_a_run_through_the_storage_only_instance(tmp_path: Path) -> None:
    home = _engine_home(tmp_path)
    job_id = uuid.uuid4().hex
    run_id = str(uuid.uuid4())
    with storage_instance(home) as writer:
        tags = {engine.JOB_ID: job_id, engine.OWNER: "0x" + "cd" * 20, engine.STATUS: "40"}
        writer.add_run(
            DagsterRun(job_name=engine.JOB_NAME, run_id=run_id, status=DagsterRunStatus.STARTED, tags=tags)
        )
    with DagsterJobs("http://127.0.0.1:9/graphql", dagster_home=home) as jobs:
        record = jobs.job(job_id, fresh=True)
        assert record is not None and record.run_id == run_id and record.run_status == "STARTED"
        # The consumer's stop record is the one write into run storage: tags and an engine event.
        jobs._record_stop(record, "0x" + "cd" * 20)
        again = jobs.job(job_id, fresh=True)
        assert again is not None and again.tags[engine.STOPPED_BY] == "0x" + "cd" * 20
