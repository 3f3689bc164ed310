"""`make demo`'s own script (c2d_cli.demo.run_demo), run against the already-running test stack: the
same code a newcomer runs, in its fast form (the stack is reused, nothing is installed)."""

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from c2d_cli.demo import run_demo
from c2d_cli.main import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_the_demo_script_runs_the_whole_flow_on_the_running_stack(ocean_stack) -> None:
    console = Console(record=True, width=160)
    home = Path(ocean_stack.running.home)
    assert run_demo(home, console, timeout=120) == 0
    text = console.export_text()
    assert "reusing the running stack" in text
    assert "status 70 Job finished" in text
    assert '"statusText": "Job finished"' in text
    assert "summary.json (the algorithm's output)" in text and '"Lisbon"' in text
    assert f"{ocean_stack.running.webserver_url}/runs/" in text
    results = sorted((home / "demo-results").iterdir(), key=lambda folder: folder.stat().st_mtime)
    assert results and (results[-1] / "summary.json").exists()
    # The demo says how to check its results against the Provider's attestation, and that passes.
    job_id = results[-1].name
    assert f"c2d compute verify {job_id} --dir {results[-1]}" in " ".join(text.split())
    verified = CliRunner().invoke(
        app, ["compute", "verify", job_id, "--dir", str(results[-1]), "--home", str(home)]
    )
    assert verified.exit_code == 0, verified.output
