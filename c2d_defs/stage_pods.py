"""Builders of the three stages' pod specs from a workflow and its environment.

Pure functions, shared by every runner: the Kubernetes runner turns the same specs into Jobs. Limits
come from the environment (never from the request); the configure and publish pods get the engine's
own stage deadlines, which Ocean's engine lacks.
"""

from __future__ import annotations

import json
import shlex

from c2d_core.environments import Environment
from c2d_core.extensions import extension_env
from c2d_core.settings import MIB, EngineSettings
from c2d_core.status import Stage
from c2d_core.workflow import Workflow
from c2d_defs.pod_runner import Mount, PodSpec
from c2d_defs.pods import layout

# The configure and publish programs are small Python processes; this is their memory ceiling.
POD_PROGRAM_MEMORY = 1024 * MIB
POD_PROGRAM_PROCESSES = 64
# How the engine's pod programs start: `-I`, isolated mode: no PYTHON* variable of the image, no user
# site folder, and neither the working directory (/data, the job volume) nor a script's folder on
# sys.path, so nothing in the volume can shadow a module the program imports.
POD_PROGRAM_INTERPRETER = ("python", "-I")


def _labels(workflow_job_id: str, stage: Stage, env: Environment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "c2d",
        "app.kubernetes.io/component": stage.value,
        "c2d/job-id": workflow_job_id,
        "c2d/component": stage.value,
        "c2d/environment": env.id,
    }


def configure_spec(workflow: Workflow, env: Environment, settings: EngineSettings) -> PodSpec:
    uses_encrypted = (
        any(item.files.encrypted_files for item in workflow.inputs)
        or bool(workflow.algorithm.files and workflow.algorithm.files.encrypted_files)
        # The raw code and custom data the Provider sealed (c2d_core.sealed) open with the same key.
        or workflow.algorithm.encrypted_secrets is not None
    )
    return PodSpec(
        job_id=workflow.job_id,
        component=Stage.CONFIGURE,
        environment_id=env.id,
        image=settings.pod_image,
        command=[*POD_PROGRAM_INTERPRETER, "-m", "c2d_defs.pods.configure"],
        env={
            "WORKFLOW": layout.WORKFLOW_PATH,
            "WORKFLOWID": workflow.job_id,
            "VOLUME": layout.VOLUME_PATH,
            "ADMINLOGS": layout.ADMINLOGS_PATH,
            "PROVIDER_KEY_FILE": layout.PROVIDER_KEY_PATH,
            "C2D_MAX_INPUT_BYTES": str(min(settings.max_input_bytes, env.disk_bytes)),
            "C2D_CONNECT_TIMEOUT": str(settings.connect_timeout),
            "C2D_READ_TIMEOUT": str(settings.read_timeout),
            "C2D_FETCH_RETRIES": str(settings.fetch_retries),
            # Leave the pod a little time to write its report before the runner's hard deadline.
            "C2D_FETCH_DEADLINE": str(max(1, settings.configure_deadline - 5)),
            "C2D_FETCH_ALLOW": ",".join(settings.fetch_allow),
            "C2D_IPFS_GATEWAY": settings.ipfs_gateway,
            "C2D_ARWEAVE_GATEWAY": settings.arweave_gateway,
            # The file sources an extension registers are looked up in this pod (docs/extending.md).
            **extension_env(settings.extensions, settings.extensions_path),
        },
        mounts=[
            Mount(mount_path=layout.VOLUME_PATH, sub_path=layout.DATA, read_only=False),
            Mount(mount_path=layout.ADMINLOGS_PATH, sub_path=layout.ADMINLOGS, read_only=False),
            Mount(mount_path=layout.WORKFLOW_PATH, sub_path=layout.WORKFLOW_DOC, read_only=True),
        ],
        secrets={"provider-key": layout.PROVIDER_KEY_PATH} if uses_encrypted else {},
        cpu=1.0,
        memory_bytes=POD_PROGRAM_MEMORY,
        disk_bytes=env.disk_bytes,
        max_processes=POD_PROGRAM_PROCESSES,
        network=True,
        deadline_seconds=settings.configure_deadline,
        log_sub_path=layout.CONFIGURE_LOG,
        labels=_labels(workflow.job_id, Stage.CONFIGURE, env),
    )


def algorithm_command(entrypoint: str) -> list[str]:
    """Ocean's entrypoint (e.g. `python $ALGO`) as an argv, `$ALGO` pointing at the fetched code."""
    return shlex.split(entrypoint.replace("$ALGO", layout.ALGORITHM_PATH))


def algorithm_spec(workflow: Workflow, env: Environment) -> PodSpec:
    algorithm = workflow.algorithm
    return PodSpec(
        job_id=workflow.job_id,
        component=Stage.ALGORITHM,
        environment_id=env.id,
        image=algorithm.container.reference,
        command=algorithm_command(algorithm.container.entrypoint),
        # Ocean's variables and nothing else: no key, token or stack address reaches the algorithm.
        env={
            "DIDS": json.dumps([item.did_hash for item in workflow.inputs]),
            "TRANSFORMATION_DID": algorithm.did_hash,
            "VOLUME": layout.VOLUME_PATH,
            "INPUTS": f"{layout.VOLUME_PATH}/inputs",
            "OUTPUTS": f"{layout.VOLUME_PATH}/outputs",
            "LOGS": f"{layout.VOLUME_PATH}/logs",
        },
        mounts=[
            Mount(mount_path=layout.VOLUME_PATH, sub_path=layout.DATA, read_only=True),
            Mount(mount_path="/data/inputs", sub_path=layout.INPUTS, read_only=True),
            Mount(mount_path="/data/transformations", sub_path=layout.TRANSFORMATIONS, read_only=True),
            Mount(mount_path="/data/ddos", sub_path=layout.DDOS, read_only=True),
            Mount(mount_path="/data/outputs", sub_path=layout.OUTPUTS, read_only=False),
            Mount(mount_path="/data/logs", sub_path=layout.LOGS, read_only=False),
        ],
        cpu=float(env.cpu_number),
        memory_bytes=env.memory_bytes,
        disk_bytes=env.disk_bytes,
        max_processes=env.max_processes,
        # Both must agree: the datasets' allowNetworkAccess (carried by the workflow) and the environment.
        network=env.allow_network and workflow.allow_network,
        deadline_seconds=env.max_job_duration,
        log_sub_path=layout.ALGORITHM_LOG,
        labels=_labels(workflow.job_id, Stage.ALGORITHM, env),
    )


def publish_spec(
    job_id: str,
    env: Environment,
    settings: EngineSettings,
    store_mounts: list[Mount],
    store_env: dict[str, str],
    store_secrets: dict[str, str] | None = None,
    store_network: bool = False,
    outputs: bool = True,
) -> PodSpec:
    """The publish pod; `outputs` False withholds the outputs (an output stage did not accept them):
    the pod then stores only the logs and the manifest."""
    return PodSpec(
        job_id=job_id,
        component=Stage.PUBLISH,
        environment_id=env.id,
        image=settings.pod_image,
        command=[*POD_PROGRAM_INTERPRETER, "-m", "c2d_defs.pods.publish"],
        env={
            "WORKFLOWID": job_id,
            "VOLUME": layout.VOLUME_PATH,
            "ADMINLOGS": layout.ADMINLOGS_PATH,
            "C2D_MAX_OUTPUT_FILES": str(settings.max_output_files),
            # A result store an extension registers is built in this pod.
            **extension_env(settings.extensions, settings.extensions_path),
            **store_env,
            # Set last, so no store variable can override it: withheld outputs are never stored.
            "C2D_PUBLISH_OUTPUTS": "true" if outputs else "false",
        },
        mounts=[
            Mount(mount_path=layout.VOLUME_PATH, sub_path=layout.DATA, read_only=True),
            Mount(mount_path=layout.ADMINLOGS_PATH, sub_path=layout.ADMINLOGS, read_only=False),
            *store_mounts,
        ],
        secrets=dict(store_secrets or {}),
        cpu=1.0,
        memory_bytes=POD_PROGRAM_MEMORY,
        disk_bytes=env.disk_bytes,
        max_processes=POD_PROGRAM_PROCESSES,
        # Only a remote result store (S3, IPFS) needs the network; a mounted folder does not.
        network=store_network,
        deadline_seconds=settings.publish_deadline,
        log_sub_path=layout.PUBLISH_LOG,
        labels=_labels(job_id, Stage.PUBLISH, env),
    )


def output_stage_spec(
    job_id: str,
    env: Environment,
    settings: EngineSettings,
    *,
    command: list[str],
    pod_env: dict[str, str] | None = None,
    deadline_seconds: int,
    image: str | None = None,
    memory_bytes: int = POD_PROGRAM_MEMORY,
    cpu: float = 1.0,
    log_sub_path: str,
) -> PodSpec:
    """An output stage's pod (Ocean's status 50): the job's /data read-only (inputs, outputs, logs),
    /data/adminlogs writable for its report, no network, no secret, the engine's pod image by default.

    What a stage's pod can read is what publish would store and what the algorithm read; what it can
    write is only its own report beside the configure and publish logs, which the algorithm never sees
    and publish never stores.
    """
    return PodSpec(
        job_id=job_id,
        component=Stage.FILTER,
        environment_id=env.id,
        image=image or settings.pod_image,
        command=command,
        env={
            "WORKFLOWID": job_id,
            "VOLUME": layout.VOLUME_PATH,
            "ADMINLOGS": layout.ADMINLOGS_PATH,
            **(pod_env or {}),
        },
        mounts=[
            Mount(mount_path=layout.VOLUME_PATH, sub_path=layout.DATA, read_only=True),
            Mount(mount_path=layout.ADMINLOGS_PATH, sub_path=layout.ADMINLOGS, read_only=False),
        ],
        cpu=cpu,
        memory_bytes=memory_bytes,
        disk_bytes=env.disk_bytes,
        max_processes=POD_PROGRAM_PROCESSES,
        network=False,
        deadline_seconds=deadline_seconds,
        log_sub_path=log_sub_path,
        labels=_labels(job_id, Stage.FILTER, env),
    )
