"""Helpers shared by the configure and publish pod programs: logging, env numbers, the termination report.

Pod programs start in a fresh interpreter for every job, so this imports only the standard library.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only the configure pod validates with pydantic; the publish pod starts without it.
    from pydantic import ValidationError

# Kubernetes reads at most 4096 bytes of /dev/termination-log; the runner in local mode does the same.
TERMINATION_MESSAGE_LIMIT = 4096
MESSAGE_LIMIT = 1000


class PodLog:
    """Timestamped lines to stdout (the runner keeps them as the stage's log), also kept in memory.

    Only ids, sizes, checksums and durations may be logged: never a URL, header or decrypted file object.
    """

    def __init__(self, component: str, clock: Any = time.time) -> None:
        self.component = component
        self.lines: list[str] = []
        self._clock = clock

    def __call__(self, text: str) -> None:
        stamp = datetime.fromtimestamp(self._clock(), tz=UTC).isoformat(timespec="milliseconds")
        line = f"{stamp.replace('+00:00', 'Z')} {self.component}: {printable(text)}"
        self.lines.append(line)
        # Bytes, not print(): a minimal image may have an ASCII stdout, and a line must never fail.
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            print(line.encode("ascii", "backslashreplace").decode("ascii"), flush=True)
            return
        sys.stdout.flush()
        buffer.write(line.encode("utf-8", "backslashreplace") + b"\n")
        buffer.flush()

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)


def printable(text: str) -> str:
    """One log line: control characters escaped (an output named "x\\nDONE" cannot forge a line), and
    undecodable file-name bytes (surrogates) shown as escapes instead of failing to encode."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Terminated(Exception):
    """SIGTERM arrived (the stage deadline or a job stop): unwind so the report still gets written."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated`; Kubernetes and the local runner send it before SIGKILL."""

    def _handler(signum: int, frame: object) -> None:
        raise Terminated("stopped by SIGTERM")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)


# Packages installed beside the pod programs' dependencies that those dependencies import when they
# find them, and that these programs never use: httpx's command line (click, rich, pygments: 35 ms at
# each pod start) and cffi, through which pycryptodome would parse C declarations with pycparser at
# import (it falls back to ctypes; coincurve needs only cffi's compiled backend, not this package).
UNUSED_OPTIONAL_PACKAGES = ("click", "rich", "pygments", "cffi", "pycparser")


def isolate_interpreter(environ: Mapping[str, str]) -> None:
    """Keep the pod's interpreter from the site packages it does not need (see
    UNUSED_OPTIONAL_PACKAGES): their imports fail at once, as if they were not installed, and each
    dependency takes its own fallback. Only a pod program's `__main__` calls this, and only when no
    extension module is loaded (an extension may use any installed package)."""
    if environ.get("C2D_EXTENSIONS", "").strip():
        return
    for name in UNUSED_OPTIONAL_PACKAGES:
        # A None entry is Python's own "not importable" marker: `import name` raises ImportError.
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    # No pydantic plugins in a pod (as PYDANTIC_DISABLE_PLUGINS=__all__ would say): pydantic looks them
    # up when it builds its first model, through importlib.metadata (the email package, zipfile...)
    # and a scan of every installed distribution's entry points, about 60 modules and a directory
    # walk at each configure pod start. Its loader is replaced by one that finds none.
    sys.modules.setdefault(PYDANTIC_PLUGIN_LOADER, _no_pydantic_plugins())


# pydantic.plugin._schema_validator imports `get_plugins` from here when it builds a model's validator.
PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def _no_pydantic_plugins() -> ModuleType:
    loader = ModuleType(PYDANTIC_PLUGIN_LOADER, "A pod's pydantic plugin loader: there are none.")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    return loader


class EnvError(ValueError):
    """An environment variable of the pod holds an unusable value."""


def load_pod_extensions(environ: Mapping[str, str]) -> None:
    """Import the modules C2D_EXTENSIONS names (c2d_core.extensions); EnvError naming the module."""
    from c2d_core.extensions import ExtensionError, load_extensions

    try:
        load_extensions(environ)
    except ExtensionError as error:
        raise EnvError(str(error)) from None


def env_int(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EnvError(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if value < minimum:
        raise EnvError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EnvError(f"{name} must be a number of seconds, got {raw[:40]!r}") from None
    if not value > 0 or value == float("inf"):
        raise EnvError(f"{name} must be a positive number of seconds, got {raw[:40]!r}")
    return value


def explain_validation(error: ValidationError, what: str) -> str:
    """Where and what is wrong, from pydantic's errors, without quoting input values (they may be URLs)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or what
        parts.append(f"{where}: {item['msg']}")
    more = len(error.errors()) - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"malformed {what}: " + "; ".join(parts) + suffix


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _longest_file_list(document: dict[str, Any]) -> list[Any] | None:
    """The longest `files` list in the report (per input or of the algorithm), to trim first."""
    candidates: list[list[Any]] = []
    for item in document.get("inputs") or []:
        if isinstance(item, dict) and isinstance(item.get("files"), list) and item["files"]:
            candidates.append(item["files"])
    algorithm = document.get("algorithm")
    if isinstance(algorithm, dict) and isinstance(algorithm.get("files"), list) and algorithm["files"]:
        candidates.append(algorithm["files"])
    return max(candidates, key=len) if candidates else None


def fit_termination_message(document: Mapping[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> bytes:
    """The report as compact JSON of at most `limit` bytes: long file lists lose their tail first.

    A trimmed report says `"truncated": true`; the status always survives.
    """
    doc: dict[str, Any] = json.loads(_encode(document))  # a deep copy we may cut
    if isinstance(doc.get("message"), str) and len(doc["message"]) > MESSAGE_LIMIT:
        doc["message"] = doc["message"][: MESSAGE_LIMIT - 3] + "..."
    encoded = _encode(doc)
    while len(encoded) > limit:
        doc["truncated"] = True
        files = _longest_file_list(doc)
        if files is not None:
            files.pop()
        elif doc.get("inputs"):
            doc["inputs"].pop()
        elif isinstance(doc.get("message"), str) and len(doc["message"]) > 40:
            doc["message"] = doc["message"][: len(doc["message"]) // 2] + "..."
        else:
            doc = {"status": doc.get("status"), "truncated": True}
            encoded = _encode(doc)
            break
        encoded = _encode(doc)
    return encoded


def write_termination_message(path: Path, document: Mapping[str, Any], log: PodLog | None = None) -> None:
    """Best effort: a report that cannot be written must not hide the exit code, which says the same."""
    try:
        path.write_bytes(fit_termination_message(document))
    except OSError as error:
        if log is not None:
            log(f"could not write the termination message: {error.strerror or type(error).__name__}")
