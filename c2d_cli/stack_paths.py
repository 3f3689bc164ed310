"""Where the local stack keeps its files under its home (`.c2d/`), and how a command finds that home
from any folder: `--home`, then `$C2D_HOME`, then `./.c2d` when a stack runs there, then the home the
last `c2d dev up` recorded in `~/.config/c2d/stack-home` (`$XDG_CONFIG_HOME`), else `./.c2d`.

Light on purpose (json and pathlib only): every command reads stack.json before it does anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Not `logs/`: Dagster owns $DAGSTER_HOME/logs and moves whatever is in it to `.logs_queue/`.
STACK_LOGS = "stack-logs"
STACK_FILE = "stack.json"
ENV_HOME = "C2D_HOME"
# Under the user's config folder: the home of the stack `c2d dev up` last started or reused.
POINTER = Path("c2d") / "stack-home"
HOME_HINT = (
    "start one with `c2d dev up`, or point at a running one with --home DIR or C2D_HOME=DIR "
    "(the folder holding its stack.json)"
)


def user_config_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME")
    return Path(base) if base else Path(environ.get("HOME") or Path.home()) / ".config"


def pointer_file(environ: Mapping[str, str]) -> Path:
    return user_config_dir(environ) / POINTER


def read_stack_json(home: Path) -> dict[str, Any] | None:
    """stack.json of the stack under `home`, or None when there is none (or it is unreadable)."""
    try:
        value = json.loads((home / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def find_stack_home(
    home: Path | None = None, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[Path, str]:
    """The stack home a command uses and where that choice came from (for messages)."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()

    def absolute(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else cwd / path

    if home is not None:
        return absolute(home), "--home"
    if environ.get(ENV_HOME):
        return absolute(Path(environ[ENV_HOME])), ENV_HOME
    local = cwd / ".c2d"
    if (local / STACK_FILE).is_file():
        return local, "./.c2d"
    pointer = pointer_file(environ)
    try:
        recorded = Path(pointer.read_text().strip())
    except OSError:
        recorded = None
    if recorded is not None and recorded.is_absolute() and (recorded / STACK_FILE).is_file():
        return recorded, str(pointer)
    return local, "./.c2d"


def remember_stack_home(home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Record `home` as the user's stack, so commands from any folder find it; the pointer's path."""
    pointer = pointer_file(os.environ if environ is None else environ)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    partial = pointer.with_name(f".{pointer.name}.part")
    partial.write_text(f"{home.resolve()}\n")
    partial.replace(pointer)
    return pointer
