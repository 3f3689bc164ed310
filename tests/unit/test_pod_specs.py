"""The stage pod specs: limits from the environment, Ocean's algorithm env, what each pod may see."""

import hashlib
import json

import pytest

from c2d_core.environments import Environment
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from c2d_defs.stage_pods import algorithm_command, algorithm_spec, configure_spec, publish_spec

DID = "did:op:" + hashlib.sha256(b"d").hexdigest()
ALGO_DID = "did:op:" + hashlib.sha256(b"a").hexdigest()
ENV = Environment.model_validate(
    {"id": "e1", "cpuNumber": 2, "ramGB": 2, "diskGB": 3, "maxJobDuration": 77, "maxProcesses": 99}
)


def _workflow(**algorithm) -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": "b" * 32,
            "owner": "0x" + "2" * 40,
            "environment": "e1",
            "inputs": [{"did": DID, "serviceId": "c", "files": {"encryptedFiles": "0x00"}}],
            "algorithm": algorithm
            or {
                "did": ALGO_DID,
                "files": {"encryptedFiles": "0x01"},
                "container": {
                    "entrypoint": "python3 -u $ALGO --flag 'a b'",
                    "image": "python",
                    "tag": "3.11",
                },
            },
        }
    )


def test_algorithm_pod_takes_limits_from_the_environment_and_sees_no_secrets() -> None:
    spec = algorithm_spec(_workflow(), ENV)
    assert (spec.cpu, spec.memory_bytes, spec.disk_bytes) == (2.0, 2 * 1024**3, 3 * 1024**3)
    assert spec.deadline_seconds == 77 and spec.max_processes == 99
    assert spec.network is False and spec.secrets == {}
    assert spec.image == "python:3.11"
    assert spec.command == ["python3", "-u", "/data/transformations/algorithm", "--flag", "a b"]
    assert json.loads(spec.env["DIDS"]) == [DID.removeprefix("did:op:")]
    assert spec.env["TRANSFORMATION_DID"] == ALGO_DID.removeprefix("did:op:")
    assert set(spec.env) == {"DIDS", "TRANSFORMATION_DID", "VOLUME", "INPUTS", "OUTPUTS", "LOGS"}
    writable = {m.mount_path for m in spec.mounts if not m.read_only}
    assert writable == {"/data/outputs", "/data/logs"}
    assert all(not m.sub_path.startswith(("adminlogs", "pod")) for m in spec.mounts)
    assert spec.labels["c2d/component"] == "algorithm" and spec.labels["c2d/job-id"] == "b" * 32


def test_network_needs_both_the_datasets_and_the_environment() -> None:
    open_env = ENV.model_copy(update={"allow_network": True})
    consenting = _workflow().model_copy(update={"allow_network": True})
    assert algorithm_spec(consenting, open_env).network is True
    assert algorithm_spec(_workflow(), open_env).network is False
    assert algorithm_spec(consenting, ENV).network is False


def test_configure_pod_gets_the_key_only_for_encrypted_files_and_its_own_deadline() -> None:
    settings = EngineSettings(configure_deadline=123)
    spec = configure_spec(_workflow(), ENV, settings)
    assert spec.secrets == {"provider-key": "/secrets/provider-key"}
    assert spec.network is True and spec.deadline_seconds == 123
    assert "/workflow.json" in {m.mount_path for m in spec.mounts}
    raw = Workflow.model_validate(
        {
            **_workflow().model_dump(by_alias=True),
            "inputs": [
                {"did": DID, "serviceId": "c", "files": {"files": [{"type": "url", "url": "http://x/y"}]}}
            ],
            "algorithm": {
                "rawcode": "print(1)",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )
    assert configure_spec(raw, ENV, settings).secrets == {}


def test_publish_pod_reads_data_read_only_and_has_its_own_deadline() -> None:
    settings = EngineSettings(publish_deadline=45)
    spec = publish_spec("c" * 32, ENV, settings, [], {"C2D_RESULT_STORE": "local"})
    assert spec.deadline_seconds == 45 and spec.network is False
    data = next(m for m in spec.mounts if m.mount_path == "/data")
    assert data.read_only
    assert spec.env["C2D_RESULT_STORE"] == "local"


@pytest.mark.parametrize("outputs", [True, False])
def test_the_engine_always_tells_the_publish_pod_whether_outputs_go_out(outputs: bool) -> None:
    # The pod withholds on anything but "true": the engine must say "true" or "false" every time, and
    # no store variable may say it instead.
    store_env = {"C2D_RESULT_STORE": "local", "C2D_PUBLISH_OUTPUTS": "true"}
    spec = publish_spec("c" * 32, ENV, EngineSettings(), [], store_env, outputs=outputs)
    assert spec.env["C2D_PUBLISH_OUTPUTS"] == ("true" if outputs else "false")


def test_entrypoint_without_algo_placeholder_is_kept() -> None:
    assert algorithm_command("node /app/run.js") == ["node", "/app/run.js"]
