"""The objects the Kubernetes runner would submit, validated against Kubernetes' own OpenAPI schema.

Built with the real builders (dagster-k8s's `construct_dagster_k8s_job` underneath) from the real
stage specs, serialized as the API server would receive them, and checked with kubernetes-validate
(strict: unknown fields fail) for a pinned Kubernetes version. No cluster is involved.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import kubernetes_validate
import pytest

from c2d_core.environments import Environment
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from c2d_defs.k8s_manifests import (
    LOG_WRAPPER,
    K8sRunnerConfig,
    files_manifest,
    job_manifest,
    log_path_in_pod,
    pod_manifest,
    to_dict,
    volume_manifest,
)
from c2d_defs.pod_runner import Mount
from c2d_defs.stage_pods import algorithm_spec, configure_spec, publish_spec

# The oldest Kubernetes minor still in upstream support when this was written; the chart's
# kubeVersion says the same.
K8S_VERSION = "1.33.0"
JOB_ID = "c" * 32
DID = "did:op:" + hashlib.sha256(b"d").hexdigest()
DIGEST = "sha256:" + "ab" * 32
ENV = Environment.model_validate(
    {"id": "small", "cpuNumber": 2, "ramGB": 1.5, "diskGB": 3, "maxJobDuration": 120}
)
SETTINGS = EngineSettings(pod_image="registry.example/c2d-pod:0.1.0")
CONFIG = K8sRunnerConfig(
    namespace="c2d-jobs",
    pod_image=SETTINGS.pod_image,
    storage_class="standard-rwo",
    shared_claims={"/var/lib/c2d/results": "c2d-results"},
    image_pull_secrets=("regcred",),
)


def _workflow(checksum: str | None = None) -> Workflow:
    container = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim"}
    if checksum:
        container["checksum"] = checksum
    return Workflow.model_validate(
        {
            "jobId": JOB_ID,
            "owner": "0x" + "2" * 40,
            "environment": "small",
            "inputs": [{"did": DID, "serviceId": "c", "files": {"encryptedFiles": "0x00"}}],
            "algorithm": {"did": DID, "files": {"encryptedFiles": "0x01"}, "container": container},
        }
    )


def _specs():
    workflow = _workflow()
    store = [
        Mount(mount_path=f"/results/{JOB_ID}", host_path=f"/var/lib/c2d/results/{JOB_ID}", read_only=False)
    ]
    return {
        "configure": configure_spec(workflow, ENV, SETTINGS),
        "algorithm": algorithm_spec(workflow, ENV),
        "publish": publish_spec(JOB_ID, ENV, SETTINGS, store, {"C2D_RESULT_STORE": "local"}),
    }


def _validate(body: dict) -> None:
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)


@pytest.mark.parametrize("component", ["configure", "algorithm", "publish"])
def test_stage_jobs_and_pods_are_valid_kubernetes_objects(component: str) -> None:
    spec = _specs()[component]
    files = ["pod/workflow.json"]
    job = to_dict(job_manifest(spec, f"c2d-{JOB_ID}-{component}-abcde", CONFIG, files))
    pod = to_dict(pod_manifest(spec, f"c2d-{JOB_ID}-{component}-abcde", CONFIG, files))
    _validate(job)
    _validate(pod)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert len(job["metadata"]["name"]) <= 63


def test_volume_and_files_objects_are_valid() -> None:
    claim = to_dict(volume_manifest(JOB_ID, ENV.disk_bytes, CONFIG))
    _validate(claim)
    assert claim["spec"]["storageClassName"] == "standard-rwo"
    assert claim["spec"]["resources"]["requests"]["storage"] == "3072Mi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["labels"]["c2d/job-id"] == JOB_ID
    files = to_dict(files_manifest(JOB_ID, {"pod/workflow.json": b'{"a": 1}'}, CONFIG))
    _validate(files)
    assert list(files["binaryData"]) == ["pod--workflow.json"]


def test_an_invalid_object_is_caught_by_the_validator() -> None:
    """Guards the guard: a wrong field type must fail validation."""
    job = to_dict(job_manifest(_specs()["algorithm"], "c2d-x", CONFIG))
    job["spec"]["backoffLimit"] = "zero"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(job)


def test_every_stage_pod_is_locked_down() -> None:
    for component, spec in _specs().items():
        pod = to_dict(pod_manifest(spec, "c2d-x", CONFIG, ["pod/workflow.json"]))["spec"]
        assert pod["automountServiceAccountToken"] is False, component
        assert pod["enableServiceLinks"] is False, component
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["activeDeadlineSeconds"] == spec.deadline_seconds
        for container in pod["containers"] + pod["initContainers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], "requests = limits (Guaranteed QoS)"
        main = pod["containers"][0]
        assert main["name"] == component
        assert main["terminationMessagePath"] == "/dev/termination-log"
        assert main["terminationMessagePolicy"] == "File"
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_algorithm_pod_has_environment_limits_no_secrets_and_no_network() -> None:
    spec = _specs()["algorithm"]
    job = to_dict(job_manifest(spec, "c2d-x", CONFIG, ["pod/workflow.json"]))
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert job["spec"]["activeDeadlineSeconds"] == 120 + 300
    pod = job["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["image"] == "python:3.11-slim"
    assert main["resources"]["limits"] == {"cpu": "2000m", "memory": str(int(1.5 * 1024**3))}
    assert main["command"][:3] == ["/bin/sh", "-c", LOG_WRAPPER]
    assert main["command"][4:] == ["python", "/data/transformations/algorithm"]
    env = {item["name"]: item["value"] for item in main["env"]}
    assert set(env) == {"DIDS", "TRANSFORMATION_DID", "VOLUME", "INPUTS", "OUTPUTS", "LOGS", "C2D_LOG_FILE"}
    assert env["C2D_LOG_FILE"] == "/data/logs/algorithm.log"
    assert not any("secret" in volume for volume in pod["volumes"])
    assert not any("configMap" in volume for volume in pod["volumes"]), "the workflow stays out of reach"
    writable = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/data/outputs", "/data/logs", "/tmp"}
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["c2d/component"] == "algorithm"
    assert labels["c2d/job-id"] == JOB_ID
    assert labels["c2d/network"] == "denied"
    assert labels["app.kubernetes.io/name"] == "c2d"
    assert labels["app.kubernetes.io/instance"] == "c2d"
    assert job["metadata"]["labels"]["c2d/job-id"] == JOB_ID


def test_algorithm_image_by_digest_when_the_checksum_is_one() -> None:
    spec = algorithm_spec(_workflow(checksum=DIGEST), ENV)
    main = to_dict(pod_manifest(spec, "c2d-x", CONFIG))["spec"]["containers"][0]
    assert main["image"] == f"python@{DIGEST}"


def test_provider_key_is_mounted_only_in_the_configure_pod() -> None:
    specs = _specs()
    configure = to_dict(pod_manifest(specs["configure"], "c2d-x", CONFIG, ["pod/workflow.json"]))["spec"]
    secrets = [v for v in configure["volumes"] if "secret" in v]
    assert secrets == [
        {"name": "secret-0", "secret": {"secretName": "c2d-provider-key", "defaultMode": 0o440}}
    ]
    mounts = {m["mountPath"]: m for m in configure["containers"][0]["volumeMounts"]}
    assert mounts["/secrets/provider-key"] == {
        "name": "secret-0",
        "mountPath": "/secrets/provider-key",
        "subPath": "provider-key",
        "readOnly": True,
    }
    assert mounts["/workflow.json"]["name"] == "job-files" and mounts["/workflow.json"]["readOnly"] is True
    for other in ("algorithm", "publish"):
        pod = to_dict(pod_manifest(specs[other], "c2d-x", CONFIG, ["pod/workflow.json"]))["spec"]
        assert not any("secret" in v for v in pod["volumes"]), other


def test_publish_pod_reaches_the_result_store_through_its_shared_claim() -> None:
    pod = to_dict(pod_manifest(_specs()["publish"], "c2d-x", CONFIG))["spec"]
    assert {"name": "shared-2", "persistentVolumeClaim": {"claimName": "c2d-results"}} in pod["volumes"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[f"/results/{JOB_ID}"]["subPath"] == JOB_ID


def test_host_folders_without_a_shared_claim_are_refused() -> None:
    with pytest.raises(ValueError, match="sharedClaims"):
        job_manifest(_specs()["publish"], "c2d-x", K8sRunnerConfig())


def test_each_stage_logs_into_its_own_folder_of_the_volume() -> None:
    specs = _specs()
    assert log_path_in_pod(specs["configure"]) == "/data/adminlogs/configure.log"
    assert log_path_in_pod(specs["algorithm"]) == "/data/logs/algorithm.log"
    assert log_path_in_pod(specs["publish"]) == "/data/adminlogs/publish.log"


def test_log_wrapper_keeps_the_exit_code_and_copies_the_output(tmp_path) -> None:
    """Runs the wrapper with this machine's /bin/sh: Ocean's `cmd | tee` loses the exit code; ours not."""
    log_file = tmp_path / "algorithm.log"
    env = {"PATH": os.environ["PATH"], "C2D_LOG_FILE": str(log_file), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        ["/bin/sh", "-c", LOG_WRAPPER, "c2d-log", "sh", "-c", "echo out; echo err >&2; exit 7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 7
    assert sorted(done.stdout.split()) == ["err", "out"]
    assert sorted(log_file.read_text().split()) == ["err", "out"]
    assert list(tmp_path.iterdir()) == [log_file], "the fifo is removed"
