"""`c2d envs` and `c2d compute …`: what a consumer runs, from the first quote to the downloaded results.

One module per command (start, status and list, logs, results, verify, stop), with what they share beside
them: the start's inputs, following a job's progress, its outcome. The flow itself (orders, start,
polls, checked downloads) is c2d_cli.consumer's, shared with the demo, the benches and the tests.
"""

from __future__ import annotations

import typer

from c2d_cli.compute.envs import envs_command
from c2d_cli.compute.logs import compute_logs
from c2d_cli.compute.results import compute_results
from c2d_cli.compute.start import compute_start
from c2d_cli.compute.status import compute_list, compute_status
from c2d_cli.compute.stop import compute_stop
from c2d_cli.compute.verify import compute_verify

__all__ = ["compute_app", "envs_command"]

compute_app = typer.Typer(
    help="Run an algorithm on datasets you may not download, and fetch what it computed.",
    no_args_is_help=True,
)
# In the order `c2d compute --help` lists them.
compute_app.command("start")(compute_start)
compute_app.command("status")(compute_status)
compute_app.command("logs")(compute_logs)
compute_app.command("results")(compute_results)
compute_app.command("verify")(compute_verify)
compute_app.command("stop")(compute_stop)
compute_app.command("list")(compute_list)
