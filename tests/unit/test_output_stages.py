"""The output-stage extension point (issue 15, items 1a and 1d): environments' outputStages, the job
factory's checks, and the default verdict protocol a stage's pod speaks."""

import json
from typing import Any

import pytest
from pydantic import BaseModel

from c2d_core.environments import Environment, OutputStageError, check_output_stages
from c2d_core.status import JobStatus
from c2d_defs.jobs.compute import (
    CONFIGURE,
    PUBLISH,
    RUN_ALGORITHM,
    build_compute_job,
    default_stages,
)
from c2d_defs.ops.compute import job_output_stages
from c2d_defs.output_stages import OutputStage, StageContext, verdict_from_pod
from c2d_defs.output_stages.leak_filter import LEAK_FILTER
from c2d_defs.pod_runner import PodResult, PodSpec


class MaxRows(BaseModel):
    max_rows: int


class RowCap(OutputStage[MaxRows]):
    name = "row_cap"
    settings_model = MaxRows

    def pod(self, ctx: StageContext, settings: MaxRows) -> PodSpec:
        return ctx.pod_spec(command=["python", "-c", "pass"], pod_env={"MAX_ROWS": str(settings.max_rows)})


def _env(*stages: dict[str, Any]) -> Environment:
    return Environment.model_validate({"id": "e", "outputStages": list(stages)})


def test_an_environment_lists_its_stages_with_settings_and_deadlines() -> None:
    env = _env(
        {"name": "leak_filter", "settings": {"window_bytes": 8192}}, {"name": "row_cap", "deadline": 30}
    )
    assert [(s.name, s.deadline) for s in env.output_stages] == [("leak_filter", 600), ("row_cap", 30)]
    assert _env().output_stages == []


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (
            [{"name": "leak_filter", "settings": {"window_bytes": 1}}],
            "output stage 'leak_filter': bad settings",
        ),
        ([{"name": "leak_filter", "settings": {"colour": "red"}}], "unknown leak filter setting"),
        ([{"name": "leak_filter"}, {"name": "leak_filter"}], "each stage may appear once"),
        ([{"name": "Leak Filter"}], "String should match pattern"),
        ([{"name": "leak_filter", "deadline": 0}], "greater than or equal to 1"),
        ([{"name": "leak_filter", "when": "always"}], "Extra inputs are not permitted"),
    ],
)
def test_bad_output_stages_are_refused_where_environments_load(stages: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _env(*stages)


def test_the_code_location_checks_names_order_and_settings_against_its_job() -> None:
    parsers = {"leak_filter": LEAK_FILTER.parse_settings, "row_cap": RowCap().parse_settings}
    known = ["leak_filter", "row_cap"]
    settings = check_output_stages(_env({"name": "row_cap", "settings": {"max_rows": 5}}), known, parsers)
    assert settings == {"row_cap": MaxRows(max_rows=5)}
    with pytest.raises(
        OutputStageError, match="configures the output stage 'nope', which this code location"
    ):
        check_output_stages(_env({"name": "nope"}), known, parsers)
    with pytest.raises(OutputStageError, match="list them in that order"):
        check_output_stages(
            _env({"name": "row_cap", "settings": {"max_rows": 1}}, {"name": "leak_filter"}), known, parsers
        )
    with pytest.raises(OutputStageError, match="'row_cap': bad settings: max_rows"):
        check_output_stages(_env({"name": "row_cap", "settings": {"max_rows": "many"}}), known, parsers)


def test_the_factory_builds_the_job_in_the_stages_order() -> None:
    job = build_compute_job(default_stages(LEAK_FILTER, RowCap()), name="compute_job_with_row_cap")
    assert [node.name for node in job.graph.nodes_in_topological_order] == [
        "configure",
        "run_algorithm",
        "leak_filter",
        "row_cap",
        "publish",
    ]
    assert job_output_stages(job) == ["leak_filter", "row_cap"]
    assert job.executor_def.name == "c2d_in_process"
    plain = build_compute_job(default_stages(), name="three_stages")
    assert [node.name for node in plain.graph.nodes_in_topological_order] == [
        "configure",
        "run_algorithm",
        "publish",
    ]


@pytest.mark.parametrize(
    "stages",
    [
        [RUN_ALGORITHM, CONFIGURE, PUBLISH],
        [CONFIGURE, RUN_ALGORITHM],
        [CONFIGURE, RUN_ALGORITHM, LEAK_FILTER, LEAK_FILTER, PUBLISH],
        [CONFIGURE, RUN_ALGORITHM, PUBLISH, PUBLISH],
    ],
)
def test_the_factory_refuses_a_job_out_of_shape(stages: list) -> None:
    with pytest.raises(ValueError):
        build_compute_job(stages, name="bad")


def test_an_output_stage_may_not_take_a_builtin_ops_name() -> None:
    class Publish(RowCap):
        name = "publish"

    with pytest.raises(ValueError, match="may not be named 'publish'"):
        build_compute_job(default_stages(Publish()), name="bad_name")


def _pod(termination: str = "Completed", message: object = None, exit_code: int | None = 0) -> PodResult:
    text = message if isinstance(message, str) else json.dumps(message) if message is not None else ""
    return PodResult(
        termination=termination, exit_code=exit_code, termination_message=text, started_at=1, finished_at=2
    )


def test_the_default_verdict_protocol_fails_closed() -> None:
    accepted = verdict_from_pod("x", _pod(message={"verdict": "pass", "message": "fine"}))
    assert (accepted.accepted, accepted.reason) == (True, "fine")
    rejected = verdict_from_pod("x", _pod(message={"verdict": "reject", "message": "outputs/a is a copy"}))
    assert (rejected.accepted, rejected.reason) == (False, "outputs/a is a copy")
    for unchecked in (
        _pod(
            message={"verdict": "error", "message": "leak filter: bad settings"},
            exit_code=1,
            termination="Error",
        ),
        _pod(termination="DeadlineExceeded", exit_code=None),
        _pod(message="not json"),
        _pod(message={"verdict": "maybe"}),
        _pod(termination="Error", exit_code=2, message={"verdict": "pass"}),
    ):
        verdict = verdict_from_pod("x", unchecked)
        assert not verdict.accepted and "could not be checked" in verdict.reason, unchecked


def test_an_output_stage_defaults_to_status_50_and_ends_a_refused_job_61() -> None:
    assert (RowCap.status, RowCap.failure_status) == (
        JobStatus.FILTERING_RESULTS,
        JobStatus.RESULTS_FETCH_FAILED,
    )
    assert LEAK_FILTER.parse_settings({"window_bytes": 8192}).window_bytes == 8192
