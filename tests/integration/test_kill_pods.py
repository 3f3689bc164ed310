"""`LocalPodRunner.kill_pods` ends a pod whose runner hangs, from another process (the stage watchdog's
salvage run), with real bubblewrap: the runner is a child process, frozen with SIGSTOP while its pod
runs, so nothing of it can end the pod any more."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from c2d_core.environments import Environment, Environments
from c2d_defs.sandbox import LocalPodRunner, processes_naming

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("bwrap") is None, reason="the local sandbox needs root and bwrap"
    ),
]

# Not the engine's default range (61000) nor the sandbox tests' (64100): parallel runs keep theirs.
UID_BASE = 64300
SLOTS = 4
ENVIRONMENT = {
    "id": "kill-test",
    "imageMap": [{"image": "python:3.11*", "rootfs": "/", "aliases": {"python": "/usr/bin/python3"}}],
}
RUNNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from c2d_core.environments import Environment, Environments
    from c2d_defs.sandbox import LocalPodRunner
    from c2d_defs.pod_runner import Mount, PodSpec
    from c2d_defs.pods import layout

    work, job_id, uid_base, slots, environment = sys.argv[1:6]
    runner = LocalPodRunner(Path(work), Environments([Environment.model_validate_json(environment)]),
                            uid_base=int(uid_base), slots=int(slots), poll_interval=0.05)
    runner.prepare_volume(job_id, 64 * 1024**2)
    spec = PodSpec(job_id=job_id, component="algorithm", environment_id="kill-test", image="python:3.11",
                   command=["python", "-c", "print('pod up', flush=True); import time; time.sleep(120)"],
                   mounts=[Mount(mount_path="/data/logs", sub_path=layout.LOGS, read_only=False)],
                   memory_bytes=256 * 1024**2, disk_bytes=64 * 1024**2, deadline_seconds=100,
                   log_sub_path=layout.ALGORITHM_LOG)
    print(runner.run(spec).termination, flush=True)
    """
)


def test_a_hung_runner_s_pod_is_killed_from_another_process(tmp_path: Path) -> None:
    job_id = uuid.uuid4().hex
    work = tmp_path / "work"
    runner_process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(work), job_id, str(UID_BASE), str(SLOTS), json.dumps(ENVIRONMENT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    runner = LocalPodRunner(
        work, Environments([Environment.model_validate(ENVIRONMENT)]), uid_base=UID_BASE, slots=SLOTS
    )
    marker = f"{runner.stage_root}/{job_id}-"
    log = work / job_id / "data" / "logs" / "algorithm.log"
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "pod up" in log.read_text()):
            assert runner_process.poll() is None, runner_process.communicate()
            assert time.monotonic() < deadline, "the pod did not start"
            time.sleep(0.05)
        pods = processes_naming(marker)
        assert pods, "the pod's sandbox should be running"
        os.kill(runner_process.pid, signal.SIGSTOP)  # the runner hangs: it will never end its pod

        assert runner.has_volume(job_id)
        assert runner.kill_pods(job_id) == 1
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in pods):
            assert time.monotonic() < deadline, "the pod survived kill_pods"
            time.sleep(0.05)
        assert processes_naming(marker) == []
        assert list(runner.stage_root.glob(f"{job_id}-*")) == []
        assert runner.has_volume(job_id)  # kept: the watchdog publishes from it, then releases it
        assert runner.kill_pods(job_id) == 0  # idempotent
    finally:
        runner_process.kill()
        runner_process.wait(timeout=10)
    runner.release_volume(job_id)
    assert not runner.has_volume(job_id)


def _not_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
