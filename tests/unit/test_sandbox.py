"""The local sandbox with real bubblewrap: what a pod can reach, what bounds it, and how it ends.

No mocks: each test prepares a job volume, runs an algorithm-like pod through `LocalPodRunner.run`
and looks at the host afterwards. Needs root and bwrap (skipped otherwise); every pod has a short
deadline and every test a timeout.
"""

from __future__ import annotations

import _thread
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import c2d_core
from c2d_core.environments import Environment, Environments
from c2d_defs.pod_runner import Mount, PodResult, PodSpec
from c2d_defs.pods import layout
from c2d_defs.sandbox import (
    HostBind,
    LocalPodRunner,
    SandboxLaunch,
    SandboxPlan,
    host_root_layout,
    image_repository,
    in_mount_order,
    processes_of_uid,
    rootfs_layout,
    sandbox_command,
)
from c2d_defs.sandbox.command import stage_table

MIB = 1024**2
# Not the engine's default range (61000): a developer's running engine keeps its uids.
UID_BASE = 64100
SLOTS = 8
SECRET = b"provider-key-" + uuid.uuid4().hex.encode()
ENVIRONMENT = Environment.model_validate(
    {
        "id": "local-test",
        "imageMap": [{"image": "python:3.11*", "rootfs": "/", "aliases": {"python": "/usr/bin/python3"}}],
    }
)
ALGORITHM_MOUNTS = [
    Mount(mount_path="/data/inputs", sub_path=layout.INPUTS, read_only=True),
    Mount(mount_path="/data/transformations", sub_path=layout.TRANSFORMATIONS, read_only=True),
    Mount(mount_path="/data/outputs", sub_path=layout.OUTPUTS, read_only=False),
    Mount(mount_path="/data/logs", sub_path=layout.LOGS, read_only=False),
]
# Lets a test find which uid a pod ran as, even when the pod is killed later.
RECORD_UID = "import os\nopen('/data/outputs/uid', 'w').write(str(os.getuid()))\n"

sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None, reason="the local sandbox needs root and bwrap"
)


def _runner(tmp_path: Path, **options: object) -> LocalPodRunner:
    key = tmp_path / "provider-key"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    return LocalPodRunner(
        tmp_path / "work",
        Environments([ENVIRONMENT]),
        secrets={"provider-key": key},
        uid_base=UID_BASE,
        slots=SLOTS,
        poll_interval=0.05,
        disk_check_interval=0.1,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def runner(tmp_path: Path) -> LocalPodRunner:
    return _runner(tmp_path)


@pytest.fixture(params=["host cgroups", "no cgroups"])
def any_runner(request: pytest.FixtureRequest, tmp_path: Path) -> LocalPodRunner:
    """The runner with this host's cgroups, and as on a host without writable ones (rlimits only)."""
    if request.param == "host cgroups":
        return _runner(tmp_path)
    return _runner(tmp_path, cgroup_root=tmp_path / "no-cgroups")


def _job(runner: LocalPodRunner, code: str) -> str:
    job_id = uuid.uuid4().hex
    runner.prepare_volume(job_id, 100 * MIB)
    runner.write_file(job_id, "data/transformations/algorithm", code.encode())
    return job_id


def _spec(job_id: str, **overrides: object) -> PodSpec:
    fields: dict[str, object] = {
        "job_id": job_id,
        "component": "algorithm",
        "environment_id": ENVIRONMENT.id,
        "image": "python:3.11",
        "command": ["python", layout.ALGORITHM_PATH],
        "env": {"OUTPUTS": "/data/outputs"},
        "mounts": ALGORITHM_MOUNTS,
        "memory_bytes": 256 * MIB,
        "disk_bytes": 64 * MIB,
        "max_processes": 64,
        "deadline_seconds": 10,
        "log_sub_path": layout.ALGORITHM_LOG,
    }
    return PodSpec.model_validate({**fields, **overrides})


def _run(runner: LocalPodRunner, code: str, **overrides: object) -> tuple[str, PodResult]:
    job_id = _job(runner, code)
    return job_id, runner.run(_spec(job_id, **overrides))


def _outputs(runner: LocalPodRunner, job_id: str) -> Path:
    return runner.volume_path(job_id) / layout.OUTPUTS


def _report(runner: LocalPodRunner, job_id: str) -> dict:
    return json.loads((_outputs(runner, job_id) / "report.json").read_text())


def _assert_no_process_left(runner: LocalPodRunner, job_id: str) -> None:
    uid = int((_outputs(runner, job_id) / "uid").read_text())
    assert UID_BASE <= uid < UID_BASE + SLOTS
    left = processes_of_uid(uid, include_zombies=True)
    assert left == [], [Path(f"/proc/{pid}/status").read_text() for pid in left]


# --- The command line, without running it --------------------------------------------------------------


def _plan(network: bool = False) -> SandboxPlan:
    return SandboxPlan(
        command=("python", "/data/transformations/algorithm"),
        env=(("PATH", "/usr/bin"), ("DIDS", "[]")),
        workdir="/data",
        network=network,
        hostname="algorithm",
        binds=(
            HostBind("/usr", "/usr"),
            HostBind("/w/job/data/inputs", "/data/inputs"),
            HostBind("/w/job/data/outputs", "/data/outputs", writable=True),
        ),
        symlinks=(("usr/bin", "/bin"),),
        files=("/etc/passwd",),
        tmp_bytes=MIB,
        shm_bytes=MIB,
    )


LAUNCH = SandboxLaunch(
    uid=61003,
    stage_dir="/run/c2d-sandbox/stage/x",
    termination_log="/run/c2d-sandbox/stage/x/termination-log",
    cgroup_procs=("/sys/fs/cgroup/memory/c2d/j/cgroup.procs",),
    rlimits=(("nproc", 34), ("fsize", MIB)),
    status_fd=7,
    file_fds=(8,),
)


def test_command_drops_to_the_slot_uid_before_bwrap_and_binds_only_staged_paths() -> None:
    command = sandbox_command(_plan(), LAUNCH)
    setpriv, bwrap = command.index("setpriv"), command.index("bwrap")
    assert command.index("prlimit") < setpriv < bwrap
    assert "--reuid=61003" in command[setpriv:bwrap] and "--no-new-privs" in command[setpriv:bwrap]
    assert "--nproc=34" in command and "--fsize=1048576" in command
    sandbox_args = command[bwrap:]
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in sandbox_args
    assert sandbox_args[sandbox_args.index("--cap-drop") + 1] == "ALL"
    assert "--share-net" not in sandbox_args
    assert sandbox_args[sandbox_args.index("--chdir") + 1] == "/data"
    # Every host path reaches bwrap through the stage; read-only unless the bind says otherwise.
    binds = [
        tuple(sandbox_args[i : i + 3]) for i, a in enumerate(sandbox_args) if a in {"--bind", "--ro-bind"}
    ]
    assert binds == [
        ("--ro-bind", "/run/c2d-sandbox/stage/x/0", "/usr"),
        ("--ro-bind", "/run/c2d-sandbox/stage/x/1", "/data/inputs"),
        ("--bind", "/run/c2d-sandbox/stage/x/2", "/data/outputs"),
        ("--bind", "/run/c2d-sandbox/stage/x/termination-log", "/dev/termination-log"),
    ]
    # Root stages every bind in the launch's own mount namespace, with one mount process over the
    # stage's table (the host side writes it there, `stage_table`).
    script = command[command.index("-c") + 1]
    assert "mount --all --fstab /run/c2d-sandbox/stage/x/mounts" in script
    assert stage_table(_plan(), LAUNCH.stage_dir).splitlines() == [
        "/usr /run/c2d-sandbox/stage/x/0 none bind 0 0",
        "/w/job/data/inputs /run/c2d-sandbox/stage/x/1 none bind 0 0",
        "/w/job/data/outputs /run/c2d-sandbox/stage/x/2 none bind 0 0",
    ]
    assert "/sys/fs/cgroup/memory/c2d/j/cgroup.procs" in script
    assert command[-2:] == ["python", "/data/transformations/algorithm"]


def test_stage_table_escapes_what_would_split_a_field(tmp_path: Path) -> None:
    """A source path with a space, tab, newline or backslash stays one field, and `mount` reads it
    back as that path: bound for real in a private mount namespace."""
    odd = tmp_path / "a dir\twith\\odd\nname"
    odd.mkdir()
    (odd / "marker").write_text("found")
    plan = dataclasses.replace(_plan(), binds=(HostBind(str(odd), "/odd"),))
    stage = tmp_path / "stage"
    (stage / "0").mkdir(parents=True)
    table = stage_table(plan, str(stage))
    assert len(table.splitlines()) == 1 and len(table.split()) == 6
    (stage / "mounts").write_text(table)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("binding needs root and unshare")
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            f"mount --all --fstab {stage}/mounts && cat {stage}/0/marker",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout == "found", done.stderr


def test_command_shares_the_network_only_when_asked() -> None:
    assert "--share-net" in sandbox_command(_plan(network=True), LAUNCH)


def test_mount_order_puts_parents_first_and_image_names_compare_by_repository() -> None:
    binds = [HostBind("/a", "/data/outputs"), HostBind("/b", "/data"), HostBind("/c", "/results/x/y")]
    assert [b.dest for b in in_mount_order(binds)] == ["/data", "/data/outputs", "/results/x/y"]
    assert image_repository("c2d-pod:latest") == image_repository("c2d-pod:1.2@sha256:ab") == "c2d-pod"
    assert image_repository("registry:5000/c2d-pod:9") == "registry:5000/c2d-pod"


def test_runtime_layouts_bind_only_what_a_runtime_needs(tmp_path: Path) -> None:
    closed = host_root_layout(network=False, aliases={"python": "/usr/bin/python3"})
    dests = {bind.dest for bind in closed.binds} | {link for _, link in closed.symlinks}
    assert "/usr" in dests and "/opt/c2d/bin/python" in dests
    assert not dests & {"/etc/passwd", "/etc/shadow", "/etc/resolv.conf", "/root", "/home", "/tmp"}
    assert all(bind.dest.startswith(("/usr", "/etc/", "/bin", "/sbin", "/lib")) for bind in closed.binds)
    assert not any(bind.writable for bind in closed.binds)
    if Path("/etc/resolv.conf").exists():
        assert "/etc/resolv.conf" in {bind.dest for bind in host_root_layout(network=True).binds}

    # An unpacked image: its entries at /, but /proc, /dev, /sys and /tmp are the sandbox's own.
    rootfs = tmp_path / "rootfs"
    for name in ("usr", "etc", "proc", "tmp"):
        (rootfs / name).mkdir(parents=True)
    (rootfs / "bin").symlink_to("usr/bin")
    image = rootfs_layout(str(rootfs))
    assert [(bind.source, bind.dest) for bind in image.binds] == [
        (str(rootfs / "etc"), "/etc"),
        (str(rootfs / "usr"), "/usr"),
    ]
    assert image.symlinks == (("usr/bin", "/bin"),) and not image.identity_files


def test_volume_paths_cannot_leave_the_work_dir(runner: LocalPodRunner) -> None:
    with pytest.raises(ValueError, match="32 lowercase hex"):
        runner.prepare_volume("../../etc", MIB)
    job_id = uuid.uuid4().hex
    runner.prepare_volume(job_id, MIB)
    runner.prepare_volume(job_id, MIB)  # idempotent
    with pytest.raises(ValueError, match="relative"):
        runner.write_file(job_id, "../escape", b"x")
    with pytest.raises(ValueError, match="outside"):
        os.symlink("/etc", runner.volume_path(job_id) / "data" / "link")
        runner.write_file(job_id, "data/link/passwd", b"x")
    runner.release_volume(job_id)
    assert not runner.volume_path(job_id).exists()


# --- Real pods ------------------------------------------------------------------------------------------


@sandbox
@pytest.mark.timeout(30)
def test_happy_path_writes_outputs_and_logs(runner: LocalPodRunner) -> None:
    code = "print('hello from the pod', flush=True)\nopen('/data/outputs/result.txt', 'w').write('42')\n"
    job_id, result = _run(runner, code)
    assert result.termination == "Completed", result
    assert result.exit_code == 0 and result.succeeded
    assert (_outputs(runner, job_id) / "result.txt").read_text() == "42"
    log = (runner.volume_path(job_id) / layout.ALGORITHM_LOG).read_text()
    assert "hello from the pod" in log and "hello from the pod" in result.log_tail
    assert 0 < result.duration < 10


@sandbox
@pytest.mark.timeout(30)
def test_non_zero_exit_is_an_error_with_its_code(runner: LocalPodRunner) -> None:
    _, result = _run(runner, "raise SystemExit(7)\n")
    assert (result.termination, result.exit_code) == ("Error", 7)
    assert "code 7" in result.message


class _Listener:
    """A TCP listener on the host's loopback that records whatever connects to it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                self.received.append(connection.recv(100))

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self.server.close()


@sandbox
@pytest.mark.timeout(30)
def test_network_is_closed_unless_the_spec_opens_it(runner: LocalPodRunner) -> None:
    listener = _Listener()
    try:
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {listener.port}), timeout=3)\n"
            "s.sendall(b'leak')\ns.close()\n"
        )
        _, closed = _run(runner, code)
        assert closed.termination == "Error", closed
        assert "ConnectionRefusedError" in closed.log_tail
        assert listener.received == []
        # The same pod with network: the listener hears it, so the first half could have failed.
        _, opened = _run(runner, code, network=True)
        assert opened.termination == "Completed", opened
        deadline = time.monotonic() + 5
        while not listener.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.received == [b"leak"]
    finally:
        listener.close()


@sandbox
@pytest.mark.timeout(30)
def test_inputs_code_and_runtime_are_read_only(runner: LocalPodRunner) -> None:
    code = (
        "import json\n"
        "results = {}\n"
        "for path in ['/data/inputs/x', '/data/transformations/x', '/x', '/usr/x', '/etc/x', '/dev/x']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        results[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        results[path] = exc.strerror\n"
        "open('/tmp/scratch', 'w').write('tmp is writable')\n"
        "json.dump(results, open('/data/outputs/report.json', 'w'))\n"
    )
    job_id, result = _run(runner, code)
    assert result.termination == "Completed", result
    report = _report(runner, job_id)
    assert set(report.values()) == {"Read-only file system"}, report
    assert list((runner.volume_path(job_id) / layout.INPUTS).iterdir()) == []


@sandbox
@pytest.mark.timeout(30)
def test_host_home_project_state_shadow_and_secrets_are_invisible(
    runner: LocalPodRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_state = tmp_path / "project" / ".c2d"
    project_state.mkdir(parents=True)
    (project_state / "secret-test").write_text("state")
    monkeypatch.setenv("C2D_TEST_SECRET", "must-not-leak")
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line}
    probes = [
        "/root",
        "/root/.bashrc",
        "/etc/shadow",
        str(project_state / "secret-test"),
        str(Path(c2d_core.__file__).resolve().parent.parent / "pyproject.toml"),
        str(runner.work_dir),
        str(tmp_path / "provider-key"),
        "/home",
        "/run",
        "/sys/fs/cgroup",
    ]
    code = (
        "import json, os\n"
        "seen = {}\n"
        f"for path in {probes!r}:\n"
        "    try:\n"
        "        seen[path] = os.listdir(path) if os.path.isdir(path) else open(path).read()[:20]\n"
        "    except OSError as exc:\n"
        "        seen[path] = None\n"
        "report = {'seen': seen, 'env': dict(os.environ), 'tmp': os.listdir('/tmp'),\n"
        "          'passwd': open('/etc/passwd').read(), 'uid': os.getuid()}\n"
        "json.dump(report, open('/data/outputs/report.json', 'w'))\n"
    )
    job_id, result = _run(runner, code)
    assert result.termination == "Completed", result
    report = _report(runner, job_id)
    assert report["seen"] == dict.fromkeys(probes), report["seen"]
    assert set(report["env"]) <= {"PATH", "HOME", "LANG", "PWD", "OUTPUTS"}, report["env"]
    assert "must-not-leak" not in json.dumps(report)
    assert report["tmp"] == []  # its own tmpfs, not the host's /tmp
    sandbox_users = {line.split(":")[0] for line in report["passwd"].splitlines()}
    assert sandbox_users == {"root", "c2d", "nobody"} and host_users - sandbox_users
    assert report["uid"] >= UID_BASE


@sandbox
@pytest.mark.timeout(30)
def test_deadline_kills_the_whole_pod(runner: LocalPodRunner) -> None:
    code = RECORD_UID + (
        "import subprocess, time\n"
        "subprocess.Popen(['sleep', '60'], start_new_session=True)\n"  # a grandchild in its own session
        "time.sleep(60)\n"
    )
    job_id, result = _run(runner, code, deadline_seconds=2)
    assert result.termination == "DeadlineExceeded", result
    assert result.exit_code is None and "2 s" in result.message
    assert result.duration < 5
    _assert_no_process_left(runner, job_id)


@sandbox
@pytest.mark.timeout(30)
def test_memory_over_the_limit_is_oom_killed(any_runner: LocalPodRunner) -> None:
    runner = any_runner
    mechanism = runner.memory_limit_mechanism()
    print(f"memory limits on this host: {mechanism}")
    code = "blob = bytearray(b'x') * (512 * 1024 * 1024)\nprint('allocated', len(blob))\n"
    _, result = _run(runner, code, memory_bytes=64 * MIB)
    if mechanism == "cgroup":
        assert result.termination == "OOMKilled", result
        assert result.exit_code == 137 and "64 MiB" in result.message
    else:
        assert result.termination == "Error", result
        assert "RLIMIT_AS" in result.message and "MemoryError" in result.log_tail
    assert "allocated" not in result.log_tail


@sandbox
@pytest.mark.timeout(30)
def test_fork_bomb_is_contained(any_runner: LocalPodRunner) -> None:
    runner = any_runner
    code = RECORD_UID + (
        "import os, time\n"
        "refused = False\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError as exc:\n"
        "        if not refused:\n"
        "            print('fork refused:', exc.strerror, flush=True)\n"
        "        refused = True\n"
        "        time.sleep(0.05)\n"
    )
    job_id, result = _run(runner, code, max_processes=32, deadline_seconds=3)
    assert result.termination in {"DeadlineExceeded", "Error"}, result
    assert "fork refused: Resource temporarily unavailable" in result.log_tail
    _assert_no_process_left(runner, job_id)
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork


@sandbox
@pytest.mark.timeout(30)
def test_writing_past_the_disk_limit_is_stopped(runner: LocalPodRunner) -> None:
    code = (
        "with open('/data/outputs/big', 'wb') as f:\n"
        "    for _ in range(50):\n"
        "        f.write(b'\\0' * (1024 * 1024))\n"
        "        f.flush()\n"
    )
    job_id, result = _run(runner, code, disk_bytes=10 * MIB)
    assert result.termination == "DiskQuotaExceeded", result
    assert "10 MiB" in result.message
    assert (_outputs(runner, job_id) / "big").stat().st_size <= 10 * MIB


@sandbox
@pytest.mark.timeout(30)
def test_unmapped_image_is_not_found_without_starting(runner: LocalPodRunner) -> None:
    job_id, result = _run(runner, "print(1)\n", image="python:2.7")
    assert result.termination == "ImageNotFound" and result.exit_code is None
    assert "python:2.7" in result.message and "python:3.11*" in result.message
    assert not (runner.volume_path(job_id) / layout.ALGORITHM_LOG).exists()


@sandbox
@pytest.mark.timeout(30)
def test_pod_image_runs_the_project_runtime_without_the_checkout(runner: LocalPodRunner) -> None:
    project = Path(c2d_core.__file__).resolve().parent.parent
    check = (
        "import os, sys, c2d_core.status, c2d_defs.pods.layout, httpx\n"
        f"assert sys.prefix == {sys.prefix!r}, sys.prefix\n"
        f"assert set(os.listdir({str(project)!r})) <= {{'.venv', 'c2d_core', 'c2d_defs'}}\n"
        f"assert not os.path.exists({str(project / '.c2d')!r})\n"
        f"assert not os.path.exists({str(project / 'pyproject.toml')!r})\n"
        "assert not os.path.exists('/root/.bashrc')\n"
        "print('ok')\n"
    )
    job_id = _job(runner, "")
    spec = _spec(
        job_id,
        component="configure",
        image="c2d-pod:latest",
        command=["python", "-c", check],
        mounts=[Mount(mount_path="/data", sub_path=layout.DATA, read_only=False)],
        log_sub_path=layout.CONFIGURE_LOG,
    )
    result = runner.run(spec)
    assert result.termination == "Completed", result
    assert "ok" in result.log_tail


@sandbox
@pytest.mark.timeout(30)
def test_an_algorithm_naming_the_pod_image_does_not_get_the_project_runtime(runner: LocalPodRunner) -> None:
    job_id = _job(runner, "")
    spec = _spec(job_id, component="algorithm", image="c2d-pod:latest", command=["python", "-c", "print(1)"])
    result = runner.run(spec)
    assert result.termination == "ImageNotFound", result
    assert "c2d-pod:latest" in result.message


@sandbox
@pytest.mark.timeout(30)
def test_publish_like_pod_writes_into_a_nested_and_a_host_folder(
    runner: LocalPodRunner, tmp_path: Path
) -> None:
    job_id = _job(runner, "")
    runner.write_file(job_id, "data/outputs/out.txt", b"result")
    results = tmp_path / "results" / job_id
    results.mkdir(parents=True)
    code = (
        "import shutil\n"
        f"shutil.copy('/data/outputs/out.txt', '/results/{job_id}/out.txt')\n"
        "open('/data/adminlogs/note', 'w').write('published')\n"
        "try:\n"
        "    open('/data/outputs/late', 'w')\n"
        "except OSError as exc:\n"
        "    print('outputs:', exc.strerror)\n"
    )
    spec = _spec(
        job_id,
        component="publish",
        image="c2d-pod:1.0",
        command=["python", "-c", code],
        mounts=[
            Mount(mount_path="/data", sub_path=layout.DATA, read_only=True),
            Mount(mount_path=layout.ADMINLOGS_PATH, sub_path=layout.ADMINLOGS, read_only=False),
            Mount(mount_path=f"{layout.RESULTS_PATH}/{job_id}", host_path=str(results), read_only=False),
        ],
        log_sub_path=layout.PUBLISH_LOG,
    )
    result = runner.run(spec)
    assert result.termination == "Completed", result
    assert (results / "out.txt").read_bytes() == b"result"
    assert (runner.volume_path(job_id) / layout.ADMINLOGS / "note").read_text() == "published"
    assert "outputs: Read-only file system" in result.log_tail


@sandbox
@pytest.mark.timeout(30)
def test_termination_message_comes_back(runner: LocalPodRunner) -> None:
    code = "open('/dev/termination-log', 'w').write('custom reason: 42')\nraise SystemExit(3)\n"
    _, result = _run(runner, code)
    assert (result.termination, result.exit_code) == ("Error", 3)
    assert result.termination_message == "custom reason: 42"


@sandbox
@pytest.mark.timeout(30)
def test_secret_is_readable_in_the_pod_only(runner: LocalPodRunner, tmp_path: Path) -> None:
    code = (
        "import hashlib, json, os\n"
        "data = open('/secrets/provider-key', 'rb').read()\n"
        "info = os.stat('/secrets/provider-key')\n"
        "json.dump({'sha256': hashlib.sha256(data).hexdigest(), 'mode': oct(info.st_mode & 0o777)},\n"
        "          open('/data/outputs/report.json', 'w'))\n"
    )
    job_id, result = _run(runner, code, secrets={"provider-key": layout.PROVIDER_KEY_PATH})
    assert result.termination == "Completed", result
    assert _report(runner, job_id) == {"sha256": hashlib.sha256(SECRET).hexdigest(), "mode": "0o400"}
    # No copy left behind: not in the volume, not in the launch's stage.
    for path in runner.work_dir.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_bytes(), path
    assert not [p for p in runner.stage_root.iterdir() if p.name.startswith(job_id)]
    # And an unknown secret name is refused before anything starts.
    unknown = runner.run(_spec(job_id, secrets={"other": "/secrets/other"}))
    assert unknown.termination == "StartError" and "'other'" in unknown.message


@sandbox
@pytest.mark.timeout(30)
def test_concurrent_pods_get_different_uids(runner: LocalPodRunner) -> None:
    code = RECORD_UID + "import time\ntime.sleep(1)\n"
    jobs = [_job(runner, code) for _ in range(2)]
    results: dict[str, PodResult] = {}

    def run(job_id: str) -> None:
        results[job_id] = runner.run(_spec(job_id))

    threads = [threading.Thread(target=run, args=(job_id,)) for job_id in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = (results[job_id] for job_id in jobs)
    assert first.termination == second.termination == "Completed"
    assert first.started_at < second.finished_at and second.started_at < first.finished_at  # overlapped
    uids = {int((_outputs(runner, job_id) / "uid").read_text()) for job_id in jobs}
    assert len(uids) == 2


@sandbox
@pytest.mark.timeout(30)
def test_stop_and_interrupt_kill_the_pod(runner: LocalPodRunner) -> None:
    code = RECORD_UID + "import time\ntime.sleep(60)\n"
    job_id = _job(runner, code)
    threading.Timer(1.0, runner.stop, args=(job_id,)).start()
    result = runner.run(_spec(job_id))
    assert result.termination == "Stopped" and result.duration < 5
    _assert_no_process_left(runner, job_id)

    # A Dagster run termination arrives as an exception in the waiting thread. Python's own SIGINT
    # handler raises it; a session started in the background (`cmd &` in a script) inherits SIGINT
    # ignored, and then interrupt_main does nothing.
    job_id = _job(runner, code)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(1.0, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            runner.run(_spec(job_id))
    finally:
        signal.signal(signal.SIGINT, previous)
    _assert_no_process_left(runner, job_id)
