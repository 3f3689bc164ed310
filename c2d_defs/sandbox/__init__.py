"""The local sandbox: runs pod specs in bubblewrap on this machine, the embedded stand-in for
Kubernetes pods (`LocalPodRunner`).

- `command`: the sandbox as data (`SandboxPlan`, `SandboxLaunch`, `HostBind`) and its command line
  (unshare → prlimit → setpriv → bwrap).
- `runtimes`: what of the host an image stands for (the environment's image map, the project's own
  runtime for the engine's pods).
- `host`: slot uids, job-volume paths, stage dirs, the hand-over walk, and sweeping a pod's processes.
- `runner`: `LocalPodRunner`, which runs one spec to its end, killing it at its limits.
- `outcome`: how a pod ended (its `PodResult`), from the launch, bwrap, the cgroups and the log.

Cgroups live in `c2d_core.sandbox_cgroups`.
"""

from c2d_defs.sandbox.command import HostBind, SandboxLaunch, SandboxPlan, in_mount_order, sandbox_command
from c2d_defs.sandbox.host import disk_usage, processes_naming, processes_of_uid
from c2d_defs.sandbox.runner import LocalPodRunner
from c2d_defs.sandbox.runtimes import (
    RuntimeLayout,
    host_root_layout,
    image_repository,
    project_layout,
    rootfs_layout,
)

__all__ = [
    "HostBind",
    "LocalPodRunner",
    "RuntimeLayout",
    "SandboxLaunch",
    "SandboxPlan",
    "disk_usage",
    "host_root_layout",
    "image_repository",
    "in_mount_order",
    "processes_naming",
    "processes_of_uid",
    "project_layout",
    "rootfs_layout",
    "sandbox_command",
]
