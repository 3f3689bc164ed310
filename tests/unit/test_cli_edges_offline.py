"""The CLI's rough edges (issue 16, item 12) that need no stack: help without `<bool>`, `-o json`
everywhere, outcomes in words, the queue position, finding the stack from any folder, the hints."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from c2d_cli.cli_output import EXIT_JOB_FAILED, EXIT_NOT_VERIFIED, EXIT_TIMEOUT, wants_json
from c2d_cli.compute.outcome import outcome_of
from c2d_cli.compute.status import status_rows
from c2d_cli.main import app
from c2d_cli.stack_paths import find_stack_home, pointer_file, remember_stack_home

JOB = "0123456789abcdef0123456789abcdef"
DID = "did:op:" + "ab" * 32


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("C2D_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def every_command() -> list[list[str]]:
    """The path of every command and group of `c2d`, from typer's own click tree."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    # typer ships its own copy of click: a group is what has subcommands.
    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(root, [])
    return paths


def test_no_help_prints_a_type_after_a_flag(cli) -> None:
    paths = every_command()
    assert ["balance"] in paths and ["publish", "mint"] in paths and ["dev", "status"] in paths
    for path in paths:
        result = cli(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
    start = cli("compute", "start", "--help").output
    assert "--wait" in start and "<int>" not in start.split("--wait")[1].split("\n")[0]


def test_every_command_that_prints_takes_output_json_and_json() -> None:
    root = typer.main.get_command(app)
    missing = []
    for path in every_command():
        command: Any = root
        for name in path:
            command = command.commands[name]
        if hasattr(command, "commands") or path in (["dev", "down"], ["dev", "demo"]):
            continue
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if not {"-o", "--output", "--json"} <= options:
            missing.append(path)
    assert missing == []


def test_output_format_is_checked(cli) -> None:
    assert wants_json(False, "json") and wants_json(True, None) and not wants_json(False, "table")
    result = cli("envs", "-o", "yaml")
    assert result.exit_code == 2 and "choose table or json" in flat(result.output)


def test_exit_codes_are_distinct() -> None:
    assert len({1, 2, EXIT_JOB_FAILED, EXIT_NOT_VERIFIED, EXIT_TIMEOUT}) == 5


def job(status: int = 70, **extra: Any) -> dict[str, Any]:
    return {
        "jobId": JOB,
        "status": status,
        "statusText": "Job finished" if status == 70 else "Running algorithm",
        "dateCreated": "1700000000.0",
        "dateFinished": "1700000010.0" if status >= 70 or status in (31, 32, 41) else None,
        "stopreq": 0,
        "algoDID": DID,
        "inputDID": [DID],
        "results": "",
        "statusDetail": "",
        "terminationDetails": {},
        **extra,
    }


@pytest.mark.parametrize(
    ("finished", "words"),
    [
        (job(terminationDetails={"exitCode": 0, "reason": "Completed"}), "succeeded"),
        (job(terminationDetails={"exitCode": 1, "reason": "Error"}), "failed: exit code 1"),
        (job(terminationDetails={"exitCode": 137, "reason": "OOMKilled"}), "failed: out of memory"),
        (
            job(terminationDetails={"exitCode": None, "reason": "DeadlineExceeded"}),
            "failed: past its time limit",
        ),
        (job(stopreq=1, terminationDetails={"exitCode": -15, "reason": "Stopped"}), "stopped on request"),
        (job(31, statusText="Data provisioning failed"), "failed: 31 Data provisioning failed"),
        (job(40), ""),
    ],
)
def test_the_outcome_says_what_status_70_does_not(finished: dict[str, Any], words: str) -> None:
    assert outcome_of(finished) == words


def test_status_shows_the_queue_position() -> None:
    queued = job(1, statusText="Warming up", queuePosition=3, dateFinished=None)
    assert ("queue", "position 3 in its environment's queue") in status_rows(queued, 1700000005.0)


def test_the_stack_is_found_from_any_folder(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    stack_home = tmp_path / "project" / ".c2d"
    stack_home.mkdir(parents=True)
    (stack_home / "stack.json").write_text(json.dumps({"provider_url": "http://127.0.0.1:1"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing recorded yet: ./.c2d of the folder, which holds no stack.
    assert find_stack_home(None, environ, elsewhere) == (elsewhere / ".c2d", "./.c2d")
    pointer = remember_stack_home(stack_home, environ)
    assert pointer == pointer_file(environ) == tmp_path / "xdg" / "c2d" / "stack-home"
    assert find_stack_home(None, environ, elsewhere) == (stack_home.resolve(), str(pointer))
    # The folder's own stack, then C2D_HOME, then --home come first.
    local = elsewhere / ".c2d"
    local.mkdir()
    (local / "stack.json").write_text("{}")
    assert find_stack_home(None, environ, elsewhere)[0] == local
    assert find_stack_home(None, {**environ, "C2D_HOME": "x"}, elsewhere) == (elsewhere / "x", "C2D_HOME")
    assert find_stack_home(Path("/y"), environ, elsewhere) == (Path("/y"), "--home")
    # A pointer to a stack that is gone is ignored.
    (local / "stack.json").unlink()
    (stack_home / "stack.json").unlink()
    assert find_stack_home(None, environ, elsewhere) == (elsewhere / ".c2d", "./.c2d")


def test_no_stack_names_home_and_c2d_home(cli) -> None:
    status = cli("dev", "status")
    assert status.exit_code == 1
    said = flat(status.output)
    assert "--home" in said and "C2D_HOME" in said and "c2d dev up" in said
    listing = cli("compute", "list")
    assert listing.exit_code == 1
    said = flat(listing.output)
    assert "--home" in said and "C2D_HOME" in said
