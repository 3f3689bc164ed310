"""Workflow, environments and status codes: Ocean's wire values, and bad input refused clearly."""

import hashlib

import pytest
from pydantic import ValidationError

from c2d_core.environments import Environments, UnknownEnvironmentError
from c2d_core.status import JobStatus
from c2d_core.workflow import Workflow

DID = "did:op:" + hashlib.sha256(b"x").hexdigest()


def _workflow(**overrides: object) -> dict:
    base = {
        "jobId": "a" * 32,
        "owner": "0x" + "1" * 40,
        "environment": "ocean-compute",
        "inputs": [{"did": DID, "serviceId": "compute", "files": {"encryptedFiles": "0xabcdef"}}],
        "algorithm": {
            "rawcode": "print(1)",
            "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11"},
        },
    }
    base.update(overrides)
    return base


def test_status_codes_and_texts_match_ocean() -> None:
    expected = {
        1: "Warming up",
        10: "Job started",
        20: "Configuring volumes",
        30: "Provisioning success",
        31: "Data provisioning failed",
        32: "Algorithm provisioning failed",
        40: "Running algorithm ",
        50: "Filtering results",
        60: "Publishing results",
        70: "Job finished",
    }
    for code, text in expected.items():
        assert JobStatus(code).text == text
    assert JobStatus(41).is_failure and JobStatus(42).is_failure and JobStatus(62).is_failure
    assert not JobStatus(70).is_failure and JobStatus(70).is_terminal


def test_valid_workflow_parses_with_ocean_names() -> None:
    workflow = Workflow.model_validate(_workflow())
    assert workflow.inputs[0].did_hash == DID.removeprefix("did:op:")
    assert workflow.algorithm.container.reference == "python:3.11"
    assert workflow.allow_network is False


def test_digest_checksum_wins_over_tag() -> None:
    algorithm = {
        "rawcode": "x",
        "container": {
            "entrypoint": "python $ALGO",
            "image": "python",
            "tag": "3.11",
            "checksum": "sha256:" + "0" * 64,
        },
    }
    assert Workflow.model_validate(_workflow(algorithm=algorithm)).algorithm.container.reference.startswith(
        "python@sha256:"
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"jobId": "../../etc"}, "jobId"),
        ({"owner": "alice"}, "owner"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"did": "did:op:zz", "serviceId": "s", "files": {"encryptedFiles": "00"}}]}, "did"),
        ({"inputs": [{"did": DID, "serviceId": "s", "files": {}}]}, "exactly one"),
        ({"inputs": [{"did": DID, "serviceId": "s", "files": {"files": [{"type": "url"}]}}]}, "url"),
        ({"algorithm": {"container": {"entrypoint": "python $ALGO", "image": "python"}}}, "published"),
        ({"algorithm": {"rawcode": "x", "container": {"entrypoint": " ", "image": "python"}}}, "entrypoint"),
        ({"algorithm": {"rawcode": "x", "container": {"entrypoint": "x", "image": "py;rm -rf"}}}, "image"),
        ({"environment": "a b"}, "environment"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_bad_workflows_are_refused_with_the_field_named(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as error:
        Workflow.model_validate(_workflow(**overrides))
    assert fragment in str(error.value)


def test_environments_file_and_image_map(tmp_path) -> None:
    path = tmp_path / "envs.yaml"
    path.write_text(
        "environments:\n"
        "  - id: small\n    ramGB: 0.5\n    maxJobs: 3\n"
        "    imageMap:\n      - image: 'python:3.11*'\n        aliases: {python: /usr/bin/python3}\n"
    )
    envs = Environments.load(path)
    small = envs.get("small")
    assert small.max_jobs == 3 and small.memory_bytes == 512 * 1024**2
    assert small.runtime_for("python:3.11-slim") is not None
    assert small.runtime_for("node:20") is None
    with pytest.raises(UnknownEnvironmentError, match="known: small"):
        envs.get("big")


def test_environment_ids_must_be_unique(tmp_path) -> None:
    path = tmp_path / "envs.yaml"
    path.write_text("environments:\n  - id: a\n  - id: a\n")
    with pytest.raises(ValidationError, match="unique"):
        Environments.load(path)


def test_shipped_environments_file_loads() -> None:
    from c2d_core.settings import EngineSettings

    envs = Environments.load(EngineSettings().environments_file)
    assert envs.get("ocean-compute").runtime_for("python:3.11-slim") is not None
