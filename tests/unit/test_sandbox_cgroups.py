"""The sandbox's cgroup backends (c2d_core.sandbox_cgroups): which one a host gets, what each writes,
and how the runner uses them.

Three kinds of host, exercised three ways:
- backend choice: from mount tables of v1, v2 and hybrid hosts (samples as those hosts print them);
- cgroup v2 controllers (memory.max, memory.swap.max, pids.max, cpu.max, memory.events): against a FAKE,
  a plain directory tree laid out as cgroupfs is (`_fake_cgroup2`). This machine binds memory, cpu and
  pids to v1 hierarchies, so no real cgroup2 mount here can offer them; the fake only shows which files
  the backend writes and reads, not that a kernel enforces them;
- cgroup v2 itself (a delegated subtree, joining it, `cgroup.kill`, removal) on a REAL cgroup2 mount
  made by the test (`mount -t cgroup2`, as root), with whatever controllers it offers (none here), and a
  real bubblewrap pod in it. cgroup v1 runs for real in test_sandbox.py.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from c2d_core.environments import Environment, Environments
from c2d_core.sandbox_cgroups import (
    CgroupV1,
    CgroupV2,
    NoCgroups,
    PodLimits,
    choose_backend,
    describe_limits,
    describe_sandbox,
    parse_mountinfo,
    remove_cgroup,
)
from c2d_core.settings import EngineSettings, SandboxSettings
from c2d_defs.pod_runner import Mount, PodSpec
from c2d_defs.pods import layout
from c2d_defs.sandbox import LocalPodRunner

MIB = 1024**2
LIMITS = PodLimits(memory_bytes=256 * MIB, cpu=1.5, pids=65)

# --- mount tables ------------------------------------------------------------------------------------

# Debian 12 / Ubuntu 22.04+ / Fedora: the unified hierarchy only.
V2_HOST = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec shared:7 - sysfs sysfs rw
35 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
# CentOS 7 / a v1 container host: one hierarchy per controller (cpu and cpuacct combined), no cgroup2.
V1_HOST = """\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec shared:9 - cgroup cgroup rw,xattr,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec shared:12 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec shared:13 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec shared:14 - cgroup cgroup rw,pids
"""
# systemd's hybrid mode (Ubuntu 20.04, this machine): v1 controllers plus a controller-less cgroup2.
HYBRID_HOST = V1_HOST + (
    "27 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
)
# A v2 host where some tool mounted one legacy v1 controller: memory stays on v2.
V2_WITH_LEGACY_V1 = V2_HOST + (
    "40 35 0:40 / /sys/fs/cgroup/net_cls rw,relatime shared:20 - cgroup cgroup rw,net_cls\n"
)


@pytest.mark.parametrize(
    ("table", "kind", "backend", "root"),
    [
        (V2_HOST, "v2", CgroupV2, "/sys/fs/cgroup"),
        (V1_HOST, "v1", CgroupV1, "/sys/fs/cgroup"),
        (HYBRID_HOST, "hybrid", CgroupV1, "/sys/fs/cgroup"),
        (V2_WITH_LEGACY_V1, "hybrid", CgroupV2, "/sys/fs/cgroup"),
        ("22 28 0:21 / /sys rw - sysfs sysfs rw\n", "none", NoCgroups, "/sys/fs/cgroup"),
    ],
    ids=["v2", "v1", "hybrid-systemd", "hybrid-memory-on-v2", "none"],
)
def test_backend_follows_what_the_host_mounts(
    tmp_path: Path, table: str, kind: str, backend: type, root: str
) -> None:
    assert parse_mountinfo(table).kind == kind
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(table)
    chosen = choose_backend(mountinfo=mountinfo)
    assert type(chosen) is backend
    assert chosen.root == Path(root)


def test_v1_hierarchies_come_from_the_mount_table() -> None:
    mounts = parse_mountinfo(HYBRID_HOST)
    assert mounts.v1["cpu"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert mounts.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert "name=systemd" not in mounts.v1 and "systemd" not in mounts.v1
    assert mounts.v2 == (Path("/sys/fs/cgroup/unified"),)


def test_mount_points_with_escaped_spaces_are_decoded() -> None:
    line = r"50 35 0:50 / /srv/my\040cgroups rw,relatime - cgroup2 none rw" + "\n"
    assert parse_mountinfo(line).v2 == (Path("/srv/my cgroups"),)


def test_an_explicit_version_overrides_the_host(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(HYBRID_HOST)
    chosen = choose_backend(version="v2", mountinfo=mountinfo)
    assert isinstance(chosen, CgroupV2) and chosen.root == Path("/sys/fs/cgroup/unified")
    assert isinstance(choose_backend(version="none", mountinfo=mountinfo), NoCgroups)


# --- cgroup v2 against a fake cgroupfs tree ---------------------------------------------------------


def _fake_cgroup2(root: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc") -> Path:
    """A FAKE cgroup2 root: the files the kernel shows at a cgroup2 mount's top, as plain files.

    Unlike cgroupfs, a mkdir here creates no interface files; the backend writes them (a real kernel
    would refuse a write to an absent file), and the test writes what the kernel would report.
    """
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def test_v2_enables_controllers_down_the_subtree_and_writes_the_limits(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup")
    backend = choose_backend(root, "c2d")
    assert isinstance(backend, CgroupV2)

    pod = backend.create("job-algorithm-3", LIMITS)

    # The controllers reach the pod's cgroup through each level's subtree_control.
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (root / "c2d" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    leaf = root / "c2d" / "job-algorithm-3"
    assert (leaf / "memory.max").read_text() == str(256 * MIB)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "65"
    assert (leaf / "cpu.max").read_text() == "150000 100000"  # quota and period, in microseconds
    assert pod.limited == {"memory", "cpu", "pids"}
    assert pod.procs_files() == (str(leaf / "cgroup.procs"),)


def test_v2_cpu_quota_has_the_kernel_minimum(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup")
    choose_backend(root, "c2d").create("tiny", PodLimits(64 * MIB, 0.001, 8))
    assert (root / "c2d" / "tiny" / "cpu.max").read_text() == "1000 100000"


def test_v2_oom_verdict_and_peak_are_read_from_the_memory_files(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup")
    pod = choose_backend(root, "c2d").create("job-algorithm-0", LIMITS)
    leaf = root / "c2d" / "job-algorithm-0"
    assert pod.oom_kills() == 0  # no memory.events yet: no verdict rather than an error

    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 27\noom 1\noom_kill 0\noom_group_kill 0\n")
    assert pod.oom_kills() == 0  # reaching the limit (`oom`) is not a kill
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 31\noom 2\noom_kill 1\noom_group_kill 0\n")
    (leaf / "memory.peak").write_text(f"{256 * MIB}\n")
    assert pod.oom_kills() == 1
    assert pod.peak_memory() == 256 * MIB


def test_v2_kill_all_writes_cgroup_kill(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup")
    pod = choose_backend(root, "c2d").create("job-algorithm-0", LIMITS)
    leaf = root / "c2d" / "job-algorithm-0"
    assert not (leaf / "cgroup.kill").exists()
    pod.kill_all()
    assert (leaf / "cgroup.kill").read_text() == "1"


def test_v2_uses_only_the_controllers_the_root_offers(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup", controllers="cpu io")
    backend = choose_backend(root, "c2d")
    pod = backend.create("job-algorithm-0", LIMITS)
    leaf = root / "c2d" / "job-algorithm-0"
    assert backend.controllers() == ("cpu",)
    assert pod.limited == {"cpu"}
    assert (leaf / "cpu.max").exists()
    assert not (leaf / "memory.max").exists() and not (leaf / "pids.max").exists()
    assert pod.oom_kills() == 0 and pod.peak_memory() is None


def test_v2_keeps_controllers_already_enabled(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup")
    (root / "cgroup.subtree_control").write_text("cpu io memory pids\n")  # as systemd leaves it
    choose_backend(root, "c2d").create("job-algorithm-0", LIMITS)
    assert (root / "cgroup.subtree_control").read_text() == "cpu io memory pids\n"  # not rewritten


def test_runner_on_a_v2_root_bounds_memory_by_cgroup(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup")
    runner = LocalPodRunner(tmp_path / "work", Environments([]), cgroup_root=root)
    assert isinstance(runner.cgroups, CgroupV2)
    assert runner.memory_limit_mechanism() == "cgroup"
    bare = _fake_cgroup2(tmp_path / "bare", controllers="io")
    assert LocalPodRunner(tmp_path / "work", Environments([]), cgroup_root=bare).memory_limit_mechanism() == (
        "rlimit"
    )


# --- the description `c2d dev up` prints ------------------------------------------------------------

ENV = Environment.model_validate({"id": "ocean-compute", "cpuNumber": 2, "ramGB": 1, "maxProcesses": 128})


def test_description_names_backend_and_limits(tmp_path: Path) -> None:
    v1_root = tmp_path / "v1"
    for controller in ("memory", "cpu", "pids"):
        (v1_root / controller).mkdir(parents=True)
    v1 = choose_backend(v1_root, "c2d")
    assert isinstance(v1, CgroupV1)
    assert describe_limits(v1, [ENV], parse_mountinfo(V1_HOST)).splitlines() == [
        f"sandbox limits: cgroup v1 (memory, cpu, pids) at {v1_root}; host mounts v1",
        "  ocean-compute: memory 1 GiB, cpu 2, pids 128 per pod",
    ]

    v2 = choose_backend(_fake_cgroup2(tmp_path / "v2", controllers="cpu io"), "c2d")
    assert describe_limits(v2, [ENV]).splitlines() == [
        f"sandbox limits: cgroup v2 (cpu) at {tmp_path / 'v2'}",
        "  ocean-compute: memory 1 GiB by RLIMIT_AS, cpu 2, pids 128 by RLIMIT_NPROC per pod",
    ]

    none = choose_backend(tmp_path / "absent", "c2d")
    assert isinstance(none, NoCgroups)
    assert describe_limits(none, [ENV]).splitlines() == [
        "sandbox limits: no cgroups",
        "  ocean-compute: memory 1 GiB by RLIMIT_AS, cpu unlimited (no cpu controller), "
        "pids 128 by RLIMIT_NPROC per pod",
    ]


def test_dev_up_description_reads_the_engine_settings_and_environments(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cgroup", controllers="cpu memory pids")
    # The project's config/environments.yaml.
    settings = EngineSettings(sandbox=SandboxSettings(cgroup_root=root))
    assert describe_sandbox(settings).splitlines() == [
        f"sandbox limits: cgroup v2 (memory, cpu, pids) at {root}",
        "  ocean-compute: memory 1 GiB, cpu 1, pids 128 per pod",
    ]
    none = EngineSettings(
        sandbox=SandboxSettings(cgroups="none"), environments_file=tmp_path / "missing.yaml"
    )
    head, unreadable = describe_sandbox(none).splitlines()
    assert head.startswith("sandbox limits: no cgroups; host mounts ")  # this host's kind follows
    assert unreadable.startswith("  (environments file unreadable: ")


# --- cgroup v2 on a real cgroup2 mount --------------------------------------------------------------


@dataclass(frozen=True)
class RealCgroup2:
    mount: Path
    parent: str  # the test's own subtree: the mount is the host's hierarchy, which parallel runs share


@pytest.fixture
def real_cgroup2(tmp_path: Path) -> Iterator[RealCgroup2]:
    """A real cgroup2 mount (the host's unified hierarchy, mounted again here) and a fresh subtree name;
    skipped where the kernel or the container refuses the mount. The subtree is killed and removed,
    then the mount is undone, whatever the test left."""
    if os.geteuid() != 0:
        pytest.skip("mounting cgroup2 needs root")
    mount_point = tmp_path / "cgroup2"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "cgroup2", "none", str(mount_point)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount cgroup2 here: {mounted.stderr.strip()}")
    real = RealCgroup2(mount_point, f"c2d-test-{uuid.uuid4().hex[:12]}")
    try:
        yield real
    finally:
        try:
            subtree = mount_point / real.parent
            if subtree.is_dir():
                for leaf in subtree.iterdir():
                    if leaf.is_dir():
                        remove_cgroup(leaf)
                remove_cgroup(subtree)
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.timeout(30)
def test_real_v2_kill_all_ends_every_process_of_the_cgroup(real_cgroup2: RealCgroup2) -> None:
    backend = choose_backend(real_cgroup2.mount, real_cgroup2.parent)
    assert isinstance(backend, CgroupV2)
    pod = backend.create("job-algorithm-0", LIMITS)
    (procs,) = pod.procs_files()
    leaf = Path(procs).parent
    if not (leaf / "cgroup.kill").exists():
        pytest.skip("this kernel has no cgroup.kill (< 5.14)")
    # A shell that joins the cgroup, then leaves two children in sessions of their own (what a process
    # group kill would miss).
    shell = subprocess.Popen(
        ["sh", "-c", f"echo $$ > {procs}; setsid sleep 60 & setsid sleep 60 & exec sleep 60"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while len(pod.pids()) < 3:
            assert time.monotonic() < deadline, pod.pids()
            time.sleep(0.02)
        members = pod.pids()
        pod.kill_all()
        assert shell.wait(timeout=10) == -9
        deadline = time.monotonic() + 10
        while pod.pids() or "populated 1" in (leaf / "cgroup.events").read_text():
            assert time.monotonic() < deadline, pod.pids()
            time.sleep(0.02)
        assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in members)
    finally:
        shell.kill()
        shell.wait()
    pod.remove()
    assert not leaf.exists()


ENVIRONMENT = Environment.model_validate(
    {
        "id": "cgroup2-test",
        "imageMap": [{"image": "python:3.11*", "rootfs": "/", "aliases": {"python": "/usr/bin/python3"}}],
    }
)
# Not the engine's (61000), test_sandbox's (64100) or test_kill_pods' (64300) uids.
UID_BASE = 64400
POD = (
    "import resource\n"
    "print('rlimit-as', resource.getrlimit(resource.RLIMIT_AS)[0], flush=True)\n"
    "print('pod up', flush=True)\n"
    "import time\n"
    "time.sleep(120)\n"
)


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the local sandbox needs bwrap")
def test_real_v2_pod_joins_its_cgroup_and_the_deadline_kills_all_of_it(
    tmp_path: Path, real_cgroup2: RealCgroup2
) -> None:
    """A real bubblewrap pod in a real cgroup2 subtree: its processes are in its cgroup, memory falls
    back to RLIMIT_AS where the mount offers no memory controller, and at the deadline everything in
    the cgroup dies, even a process that is in neither the pod's session nor its uid."""
    mount, parent = real_cgroup2.mount, real_cgroup2.parent
    offered = (mount / "cgroup.controllers").read_text().split()
    past_deadline = threading.Event()
    runner = LocalPodRunner(
        tmp_path / "work",
        Environments([ENVIRONMENT]),
        uid_base=UID_BASE,
        slots=2,
        poll_interval=0.05,
        cgroup_root=mount,
        cgroup_parent=parent,
        # The deadline passes when the test says so, not after a wait.
        clock=lambda: time.monotonic() + (10_000 if past_deadline.is_set() else 0),
    )
    assert isinstance(runner.cgroups, CgroupV2)
    job_id = uuid.uuid4().hex
    runner.prepare_volume(job_id, 64 * MIB)
    spec = PodSpec(
        job_id=job_id,
        component="algorithm",
        environment_id=ENVIRONMENT.id,
        image="python:3.11",
        command=["python", "-c", POD],
        mounts=[Mount(mount_path="/data/logs", sub_path=layout.LOGS, read_only=False)],
        memory_bytes=256 * MIB,
        disk_bytes=64 * MIB,
        deadline_seconds=100,
        log_sub_path=layout.ALGORITHM_LOG,
    )
    results = []
    worker = threading.Thread(target=lambda: results.append(runner.run(spec)))
    worker.start()
    log = runner.volume_path(job_id) / layout.ALGORITHM_LOG
    intruder = None
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "pod up" in log.read_text()):
            assert worker.is_alive(), results
            assert time.monotonic() < deadline, "the pod did not start"
            time.sleep(0.05)
        (leaf,) = (mount / parent).glob(f"{job_id}-algorithm-*")
        members = {int(pid) for pid in (leaf / "cgroup.procs").read_text().split()}
        assert members, "the pod's processes should be in its cgroup"
        assert {_real_uid(pid) for pid in members} <= set(range(UID_BASE, UID_BASE + 2))

        intruder = subprocess.Popen(["sleep", "60"], start_new_session=True)
        (leaf / "cgroup.procs").write_text(str(intruder.pid))
        past_deadline.set()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert intruder.wait(timeout=10) == -9  # only the cgroup reaches it
    finally:
        past_deadline.set()
        worker.join(timeout=30)
        if intruder is not None:
            intruder.kill()
            intruder.wait()
    (result,) = results
    assert result.termination == "DeadlineExceeded", result
    assert not leaf.exists()  # removed with the pod
    limit_line = next(line for line in result.log_tail.splitlines() if line.startswith("rlimit-as"))
    if "memory" in offered:
        assert runner.memory_limit_mechanism() == "cgroup"
        assert limit_line == f"rlimit-as {resource.RLIM_INFINITY}"
    else:  # this machine: memory is bound to v1, so the v2 backend bounds it by RLIMIT_AS
        assert runner.memory_limit_mechanism() == "rlimit"
        assert limit_line == f"rlimit-as {256 * MIB}"


def _real_uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
