"""The `c2d` command. `c2d dev` manages the embedded local stack and runs the demo; `envs`, `compute`,
`publish` and `asset` are what consumers and publishers use (c2d_cli/compute/, commands_publish.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from c2d_cli import stack
from c2d_cli.commands_publish import asset_app, publish_app
from c2d_cli.compute import compute_app, envs_command
from c2d_core.sandbox_cgroups import describe_sandbox

app = typer.Typer(
    help="Compute-to-Data on Dagster: run algorithms on data you may not download, publish data for it.",
    no_args_is_help=True,
    # A traceback's local variables can hold a private key: never print them.
    pretty_exceptions_show_locals=False,
)
dev = typer.Typer(
    help="The embedded local stack on 127.0.0.1: anvil, Dagster webserver and daemon, the Provider.",
    no_args_is_help=True,
)
app.add_typer(dev, name="dev")
app.command("envs")(envs_command)
app.add_typer(compute_app, name="compute")
app.add_typer(publish_app, name="publish")
app.add_typer(asset_app, name="asset")
console = Console()

HomeOption = Annotated[
    Path, typer.Option("--home", envvar="C2D_HOME", help="State folder of the local stack (DAGSTER_HOME).")
]


def _home(home: Path | None) -> Path:
    return (home or Path.cwd() / ".c2d").resolve()


@dev.command("up")
def dev_up(
    home: HomeOption = Path(".c2d"),
    port: Annotated[int | None, typer.Option(help="Webserver port (default 3300, or a free one).")] = None,
    run_launcher: Annotated[
        str | None,
        typer.Option(
            help="Dagster's run launcher: 'warm' (the warm run worker) or 'default'; default: dagster.yaml's."
        ),
    ] = None,
) -> None:
    """Start the stack, or reuse the one already running; writes .c2d/stack.json."""
    os.environ["C2D_HOME"] = str(_home(home))
    if run_launcher not in (None, "warm", "default"):
        console.print(f"[red]--run-launcher must be 'warm' or 'default', not {run_launcher!r}[/]")
        raise typer.Exit(2)
    try:
        running, reused = stack.up(_home(home), port=port, run_launcher=run_launcher)  # type: ignore[arg-type]
    except stack.StackError as error:
        console.print(f"[red]could not start the stack:[/] {error}")
        raise typer.Exit(1) from error
    console.print(f"{'already running' if reused else 'started'}: Dagster UI at {running.webserver_url}")
    console.print(f"state in {running.home} (stack.json has the URLs and PIDs)")
    console.print(describe_sandbox(), markup=False, highlight=False, soft_wrap=True)


@dev.command("down")
def dev_down(home: HomeOption = Path(".c2d")) -> None:
    """Stop the stack recorded in .c2d/stack.json."""
    console.print("stopped" if stack.down(_home(home)) else "no stack was running")


@dev.command("status")
def dev_status(home: HomeOption = Path(".c2d")) -> None:
    """Print stack.json of the running stack."""
    running = stack.read_stack(_home(home))
    if running is None:
        console.print("no stack (run: c2d dev up)")
        raise typer.Exit(1)
    console.print_json(json.dumps(running.__dict__))


@dev.command("demo")
def dev_demo(
    home: HomeOption = Path(".c2d"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 300.0,
) -> None:
    """Run a sample compute job end to end on the embedded stack and show its results."""
    from c2d_cli.demo import run_demo

    os.environ["C2D_HOME"] = str(_home(home))
    raise typer.Exit(run_demo(_home(home), console, timeout=timeout))


if __name__ == "__main__":
    app()
