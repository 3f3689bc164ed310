"""Runtimes: what of the host an image stands for in the sandbox (the environment's image map).

An image never runs as such: the environment maps it to a local runtime, either the host's own root
(`/usr` and a few `/etc` entries) or an unpacked rootfs; the engine's own pods get this project's
interpreter and packages. An unmapped image is refused (ImageNotFound), never run on a fallback.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from c2d_core.environments import Environments, ImageRuntime, UnknownEnvironmentError
from c2d_core.settings import engine_settings
from c2d_defs.pod_runner import PodSpec
from c2d_defs.sandbox.command import ALIAS_DIR, SYSTEM_PATH, HostBind, StartRefused, outermost

# The host's top-level dirs a runtime on "/" needs besides /usr (symlinks into /usr on merged-usr hosts).
_HOST_LIB_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The few /etc entries such a runtime reads; name resolution and CA certificates only with network.
_ETC_ALWAYS = ("ld.so.cache", "localtime", "alternatives", "os-release")
_ETC_NETWORK = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "ssl/certs")
# Top-level entries of a custom rootfs that the sandbox provides itself.
_ROOTFS_OWN = frozenset({"proc", "dev", "sys", "tmp"})


@dataclass(frozen=True)
class RuntimeLayout:
    """What makes up an image's filesystem in the sandbox: host binds, symlinks, and PATH."""

    binds: tuple[HostBind, ...]
    symlinks: tuple[tuple[str, str], ...]  # (target, path in the pod)
    path: str
    # A runtime on the host's root gets a minimal passwd/group; a rootfs brings its own.
    identity_files: bool


def runtime_for_spec(spec: PodSpec, environments: Environments, pod_image: str) -> RuntimeLayout:
    """The runtime the spec's image maps to, or a refusal naming the environment's image map."""
    # The project's own runtime (its venv and sources) is for the engine's configure and publish
    # pods only; an algorithm naming the pod image gets the image map like any other image.
    if spec.component != "algorithm" and image_repository(spec.image) == image_repository(pod_image):
        return project_layout(spec.network)
    try:
        environment = environments.get(spec.environment_id)
    except UnknownEnvironmentError as exc:
        raise StartRefused("StartError", str(exc)) from None
    runtime: ImageRuntime | None = environment.runtime_for(spec.image)
    if runtime is None:
        image_map = ", ".join(f"{e.image} -> {e.rootfs}" for e in environment.image_map) or "empty"
        raise StartRefused(
            "ImageNotFound",
            f"image {spec.image} has no local runtime in environment {environment.id} "
            f"(image map: {image_map})",
        )
    if runtime.rootfs == "/":
        return host_root_layout(spec.network, runtime.aliases)
    return rootfs_layout(runtime.rootfs, runtime.aliases)


def image_repository(reference: str) -> str:
    """`registry:5000/c2d-pod:1.2@sha256:..` -> `registry:5000/c2d-pod`."""
    name = reference.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    return name


def host_root_layout(network: bool, aliases: Mapping[str, str] | None = None) -> RuntimeLayout:
    """A runtime on the host's own root: /usr, the lib dirs, and only the /etc entries it reads."""
    binds = [HostBind("/usr", "/usr")]
    symlinks: list[tuple[str, str]] = []
    for name in _HOST_LIB_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            symlinks.append((os.readlink(path), path))
        elif os.path.isdir(path):
            binds.append(HostBind(path, path))
    for name in (*_ETC_ALWAYS, *(_ETC_NETWORK if network else ())):
        path = f"/etc/{name}"
        # Bound by their resolved path: /etc/resolv.conf may point into /run, which is not bound.
        if os.path.exists(path):
            binds.append(HostBind(os.path.realpath(path), path))
    symlinks += _alias_links(aliases or {})
    return RuntimeLayout(tuple(binds), tuple(symlinks), f"{ALIAS_DIR}:{SYSTEM_PATH}", identity_files=True)


def rootfs_layout(rootfs: str, aliases: Mapping[str, str] | None = None) -> RuntimeLayout:
    """A runtime in an unpacked image: every top-level entry of `rootfs` bound read-only at `/`.

    Entries rather than the dir itself, so the sandbox can still create its mount points (/data,
    /proc, /tmp) on its own tmpfs root where the image lacks them.
    """
    root = os.path.realpath(rootfs)
    if not os.path.isdir(root):
        raise StartRefused("ImageNotFound", f"rootfs {rootfs} is not a directory")
    binds: list[HostBind] = []
    symlinks: list[tuple[str, str]] = []
    for name in sorted(os.listdir(root)):
        if name in _ROOTFS_OWN:
            continue
        path = os.path.join(root, name)
        if os.path.islink(path):
            symlinks.append((os.readlink(path), f"/{name}"))
        else:
            binds.append(HostBind(path, f"/{name}"))
    symlinks += _alias_links(aliases or {})
    return RuntimeLayout(tuple(binds), tuple(symlinks), f"{ALIAS_DIR}:{SYSTEM_PATH}", identity_files=False)


def project_layout(network: bool) -> RuntimeLayout:
    """The pod image: this project's interpreter, venv and packages, at their host paths.

    Only the base interpreter, the venv, the packages' own source dirs and the extension folders
    (C2D_EXTENSIONS_PATH) are bound, never the project checkout, so `.c2d/` state and everything else
    in it stay invisible. The venv's bin dir goes first on PATH: its `python` must be run from there
    (a symlink elsewhere would lose the venv).
    """
    base = host_root_layout(network)
    sources = [sys.base_prefix, sys.prefix]
    for package in ("c2d_core", "c2d_defs"):
        spec = importlib.util.find_spec(package)
        sources += list(spec.submodule_search_locations or []) if spec else []
    sources += _extension_folders()
    binds = [HostBind(path, path) for path in outermost(os.path.realpath(p) for p in sources)]
    return RuntimeLayout(base.binds + tuple(binds), base.symlinks, f"{sys.prefix}/bin:{SYSTEM_PATH}", True)


def _extension_folders() -> list[str]:
    """C2D_EXTENSIONS_PATH's folders, refused when one overlaps a folder of the engine's state."""
    settings = engine_settings()
    protected = engine_state_folders(
        home=settings.home,
        provider_key_file=settings.resolved_provider_key_file,
        dagster_home=os.environ.get("DAGSTER_HOME") or None,
        work_dir=settings.resolved_work_dir,
        results_dir=settings.resolved_results_dir,
    )
    folders = []
    for folder in settings.extensions_path:
        problem = extension_folder_problem(folder, protected)
        if problem is not None:
            raise StartRefused("StartError", problem)
        real = os.path.realpath(folder)
        if os.path.isdir(real):
            folders.append(real)
    return folders


def engine_state_folders(
    *,
    home: str | os.PathLike[str],
    provider_key_file: str | os.PathLike[str],
    dagster_home: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
) -> dict[str, str]:
    """What an engine pod must never see through an extension folder, by what it is: the engine's
    home, the Provider key's folder, Dagster's home (run storage), the job volumes (every job's inputs)
    and the local result store (every job's results). Resolved, so a symlink cannot hide an overlap."""
    folders = {
        "the engine's state folder (C2D_HOME)": home,
        "the Provider key's folder": os.path.dirname(os.path.realpath(provider_key_file)),
        "the job volumes' folder (C2D_WORK_DIR)": work_dir,
        "the local results folder (C2D_RESULTS_DIR)": results_dir,
    }
    if dagster_home:
        folders["Dagster's home (DAGSTER_HOME)"] = dagster_home
    return {name: os.path.realpath(path) for name, path in folders.items()}


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def extension_folder_problem(folder: str, protected: Mapping[str, str]) -> str | None:
    """Why `folder` of C2D_EXTENSIONS_PATH may not be bound into the engine's pods, or None.

    Refused when it overlaps any of `protected` (engine_state_folders) either way: a folder that holds
    one would show it to the pod, and a folder inside one would show part of it (`/` holds them all;
    a folder under C2D_WORK_DIR shows other jobs' inputs)."""
    real = os.path.realpath(folder)
    for what, path in protected.items():
        if _within(path, real):
            return f"C2D_EXTENSIONS_PATH folder {folder} holds {what} {path}"
        if _within(real, path):
            return f"C2D_EXTENSIONS_PATH folder {folder} is inside {what} {path}"
    return None


def _alias_links(aliases: Mapping[str, str]) -> list[tuple[str, str]]:
    links = []
    for name, target in sorted(aliases.items()):
        if not name or "/" in name or name in {".", ".."}:
            raise StartRefused("StartError", f"image alias {name!r} must be a plain command name")
        links.append((target, f"{ALIAS_DIR}/{name}"))
    return links


def passwd_and_group(uid: int) -> dict[str, bytes]:
    """A passwd and group naming only root, the pod's uid and nobody (the host's stay unseen)."""
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"c2d:x:{uid}:{uid}:c2d sandbox:/tmp:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nc2d:x:{uid}:\nnogroup:x:65534:\n"
    return {"/etc/passwd": passwd.encode(), "/etc/group": group.encode()}
