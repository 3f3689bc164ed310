"""The `c2d` command. `c2d dev` manages the embedded local stack and runs the demo; `envs`, `compute`,
`publish`, `asset` and `balance` are what consumers and publishers use (c2d_cli/compute/,
commands_publish.py, commands_account.py).

Imports stay light at the top (typer, rich's console, the command modules, which import their own
heavy parts when they run), so `c2d --help` and every command start quickly (bench/cli_startup.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from c2d_cli.admin import admin_app
from c2d_cli.cli_output import JsonOption, OutputOption, print_json, stdout_console, wants_json
from c2d_cli.commands_account import balance_command
from c2d_cli.commands_publish import asset_app, publish_app
from c2d_cli.compute import compute_app, envs_command
from c2d_cli.help_format import hide_flag_types
from c2d_cli.stack_paths import HOME_HINT, find_stack_home, remember_stack_home

if TYPE_CHECKING:
    from c2d_cli.stack import Stack

hide_flag_types()
app = typer.Typer(
    help="Compute-to-Data on Dagster: run algorithms on data you may not download, publish data for it.",
    no_args_is_help=True,
    # A traceback's local variables can hold a private key: never print them.
    pretty_exceptions_show_locals=False,
)
dev = typer.Typer(
    help="The embedded local stack on 127.0.0.1: anvil, Dagster webserver and daemon, the Provider, "
    "a data origin.",
    no_args_is_help=True,
)
app.add_typer(dev, name="dev")
app.command("envs")(envs_command)
app.add_typer(compute_app, name="compute")
app.add_typer(publish_app, name="publish")
app.add_typer(asset_app, name="asset")
app.command("balance")(balance_command)
app.add_typer(admin_app, name="admin")
console = stdout_console()

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="State folder of the local stack (DAGSTER_HOME). Default: $C2D_HOME, else ./.c2d, else the "
        "stack `c2d dev up` last started (~/.config/c2d/stack-home).",
        show_default=False,
    ),
]


def _home(home: Path | None) -> Path:
    return find_stack_home(home)[0].resolve()


def _no_stack(home: Path) -> str:
    return f"no stack is running in {home}: {HOME_HINT}"


@dev.command("up")
def dev_up(
    home: HomeOption = None,
    port: Annotated[int | None, typer.Option(help="Webserver port (default 3300, or a free one).")] = None,
    run_launcher: Annotated[
        str | None,
        typer.Option(
            help="Dagster's run launcher: 'warm' (the warm run worker) or 'default'; default: dagster.yaml's."
        ),
    ] = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """Start the stack, reuse the one already running, or restart only its parts that died (on their
    recorded ports); writes stack.json and records the stack for commands run from other folders."""
    from c2d_cli import stack, stack_health
    from c2d_core.sandbox_cgroups import describe_sandbox

    json_output = wants_json(json_output, output)
    folder = _home(home)
    os.environ["C2D_HOME"] = str(folder)
    if run_launcher not in (None, "warm", "default"):
        console.print(f"[red]--run-launcher must be 'warm' or 'default', not {run_launcher!r}[/]")
        raise typer.Exit(2)
    recorded = stack.read_stack(folder)
    try:
        restarted = stack_health.restart_dead(folder) if run_launcher is None else None
        if restarted is None and recorded is not None and port is None:
            # Started afresh: the same ports as before, so the URLs in published assets stay right.
            port = recorded.webserver_port
        running, reused = stack.up(
            folder,
            port=port,
            provider_port=_recorded_provider_port(recorded) if restarted is None else None,
            run_launcher=run_launcher,  # type: ignore[arg-type]
        )
    except stack.StackError as error:
        console.print(f"[red]could not start the stack:[/] {error}")
        raise typer.Exit(1) from error
    pointer = remember_stack_home(folder)
    if json_output:
        print_json({**running.__dict__, "restarted": restarted or [], "reused": reused})
        return
    if restarted:
        console.print(f"restarted {', '.join(restarted)} (the rest was running): {running.webserver_url}")
    else:
        console.print(f"{'already running' if reused else 'started'}: Dagster UI at {running.webserver_url}")
    console.print(f"state in {running.home} (stack.json has the URLs and PIDs; recorded in {pointer})")
    console.print(describe_sandbox(), markup=False, highlight=False, soft_wrap=True)


def _recorded_provider_port(recorded: Stack | None) -> int | None:
    if recorded is None or not recorded.provider_url:
        return None
    try:
        return int(recorded.provider_url.rsplit(":", 1)[1])
    except ValueError:
        return None


@dev.command("down")
def dev_down(home: HomeOption = None) -> None:
    """Stop the stack recorded in stack.json."""
    from c2d_cli import stack

    folder = _home(home)
    if stack.down(folder):
        console.print(f"stopped the stack in {folder}")
    else:
        console.print(_no_stack(folder))


@dev.command("status")
def dev_status(home: HomeOption = None, json_output: JsonOption = False, output: OutputOption = None) -> None:
    """Each part of the stack: its process alive and answering (health), with its URL; exit 1 when a
    part is down (`c2d dev up` restarts only what died)."""
    from c2d_cli import stack, stack_health

    json_output = wants_json(json_output, output)
    folder = _home(home)
    running = stack.read_stack(folder)
    if running is None:
        if json_output:
            print_json({"home": str(folder), "running": False, "parts": []})
        else:
            console.print(_no_stack(folder))
        raise typer.Exit(1)
    parts = stack_health.check(running)
    healthy = all(part.healthy for part in parts)
    if json_output:
        print_json({**running.__dict__, "healthy": healthy, "parts": [part.as_json() for part in parts]})
    else:
        from rich.table import Table

        table = Table(title=f"stack in {running.home}", box=None, pad_edge=False)
        for column in ("part", "pid", "state", "url", "detail"):
            table.add_column(column, overflow="fold")
        for part in parts:
            state = "[green]healthy[/]" if part.healthy else "[red]down[/]"
            table.add_row(part.name, str(part.pid or ""), state, part.url, part.detail)
        console.print(table)
        if not healthy:
            console.print("some parts are down: `c2d dev up` restarts only those, on the same ports")
    if not healthy:
        raise typer.Exit(1)


@dev.command("demo")
def dev_demo(
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 300.0,
) -> None:
    """Run a sample compute job end to end on the embedded stack and show its results."""
    from rich.console import Console

    from c2d_cli.demo import run_demo

    folder = _home(home)
    os.environ["C2D_HOME"] = str(folder)
    code = run_demo(folder, Console(), timeout=timeout)
    remember_stack_home(folder)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
