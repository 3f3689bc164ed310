"""Each stage edge of a compute job is one write to run storage (issue 14, item 3).

The real compute_job runs in process (the bubblewrap sandbox, the pod programs, a loopback origin) on a
real instance whose `add_run_tags` is wrapped to record what each call wrote; the job then ends as
before (70, phases in order), and each phase tag arrived in the same write as the status or the
termination that edge records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from engine_kit import (
    dataset_input,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    serve_origin,
)

from c2d_cli.origin import LocalOrigin
from c2d_core import engine

DID = "did:op:" + "d" * 64
ENVIRONMENTS = """
environments:
  - id: test-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxJobs: 2
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS, configure_deadline=None)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[LocalOrigin]:
    with serve_origin(tmp_path / "origin", {"a.txt": "1\n2\n"}) as server:
        yield server


def test_each_stage_edge_is_one_write(
    home: Path, origin: LocalOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = raw_workflow(
        job_id="e" * 32,
        environment="test-env",
        inputs=[dataset_input(home, DID, [f"{origin.url}/a.txt"])],
        algorithm=python_algorithm("print('ok')\n"),
    )
    writes: list[dict[str, str]] = []
    real = dg.DagsterInstance.add_run_tags

    def recording(self: dg.DagsterInstance, run_id: str, new_tags: dict[str, Any]) -> None:
        writes.append(dict(new_tags))
        real(self, run_id, new_tags)

    monkeypatch.setattr(dg.DagsterInstance, "add_run_tags", recording)
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and result.success, run.tags if run else None
    assert run.tags[engine.STATUS] == "70"

    def write_of(stage: str, edge: str) -> dict[str, str]:
        (found,) = [w for w in writes if engine.phase_tag(stage, edge) in w]
        return found

    assert write_of("configure", "started")[engine.STATUS] == "20"
    assert write_of("configure", "finished")[engine.STATUS] == "30"
    assert write_of("algorithm", "started")[engine.STATUS] == "40"
    ended = write_of("algorithm", "finished")
    assert ended[engine.ALGORITHM_TERMINATION] == "Completed" and ended[engine.ALGORITHM_EXIT_CODE] == "0"
    assert write_of("publish", "started")[engine.STATUS] == "60"
    assert json.loads(write_of("publish", "finished")[engine.RESULTS])[-1]["filename"] == "attestation.json"
    times = [
        float(run.tags[engine.phase_tag(stage, edge)])
        for stage in ("configure", "algorithm", "publish")
        for edge in ("started", "finished")
    ]
    assert times == sorted(times)
    # Nothing else writes a status apart from the edges and the final one.
    statuses = [w[engine.STATUS] for w in writes if engine.STATUS in w]
    assert statuses == ["20", "30", "40", "60", "70"]
