"""Loading a deployment's extensions: the modules that register file sources, result stores and stages.

`C2D_EXTENSIONS` names modules (comma-separated, e.g. `acme_c2d.sources,acme_c2d.stores`) and
`C2D_EXTENSIONS_PATH` optional folders to import them from. Every process that needs what they register
imports them: the code location, the configure and publish pods (which get both variables in their pod
spec), and the Provider. Importing is what registers, so the registries call `load_extensions()` before
each lookup; it imports each module once per process.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Iterable, Mapping

EXTENSIONS_VARIABLE = "C2D_EXTENSIONS"
EXTENSIONS_PATH_VARIABLE = "C2D_EXTENSIONS_PATH"

_lock = threading.RLock()  # an extension may look something up while it loads
_loaded: set[str] = set()


class ExtensionError(ImportError):
    """An extension module named in C2D_EXTENSIONS could not be imported."""


def split_names(value: str | Iterable[str] | None) -> list[str]:
    """`"a, b,,c"` -> `["a", "b", "c"]`; a list is cleaned the same way."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item and item.strip()]


def extension_modules(environ: Mapping[str, str] | None = None) -> list[str]:
    return split_names((os.environ if environ is None else environ).get(EXTENSIONS_VARIABLE))


def extension_paths(environ: Mapping[str, str] | None = None) -> list[str]:
    return split_names((os.environ if environ is None else environ).get(EXTENSIONS_PATH_VARIABLE))


def load_extensions(environ: Mapping[str, str] | None = None) -> list[str]:
    """Import the modules `C2D_EXTENSIONS` names (from `C2D_EXTENSIONS_PATH` first); returns them.

    A module that fails to import raises ExtensionError naming it: a deployment that asked for an
    extension must not run without it (a missing result store would lose results, a missing stage
    would skip a check).
    """
    modules = extension_modules(environ)
    if not modules:
        return []
    with _lock:
        for folder in reversed(extension_paths(environ)):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        for name in modules:
            if name in _loaded:
                continue
            try:
                importlib.import_module(name)
            except Exception as error:
                raise ExtensionError(
                    f"{EXTENSIONS_VARIABLE}: cannot import extension module {name!r} "
                    f"({type(error).__name__}: {error})"
                ) from error
            _loaded.add(name)
    return modules


def extension_env(modules: Iterable[str], paths: Iterable[str]) -> dict[str, str]:
    """The variables that make an engine pod (configure, publish, an output stage) load the same
    extensions as the code location; empty when there are none, so pod specs stay as they were."""
    names, folders = split_names(modules), split_names(paths)
    if not names:
        return {}
    env = {EXTENSIONS_VARIABLE: ",".join(names)}
    if folders:
        env[EXTENSIONS_PATH_VARIABLE] = ",".join(folders)
    return env
