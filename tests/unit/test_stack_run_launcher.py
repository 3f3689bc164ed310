"""`c2d dev up`'s instance file: which run launcher it names, and the queue's retry while the warm run
worker is down; the rendered file is loaded by Dagster itself, so a bad key fails here."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from c2d_cli import stack
from c2d_core.environments import Environments
from c2d_defs.warm_launcher import WarmRunLauncher

ROOT = Path(__file__).resolve().parents[2]


def _render(home: Path, choice: stack.RunLauncherChoice | None) -> dict:
    envs = Environments.load(ROOT / "config" / "environments.yaml")
    return yaml.safe_load(stack.render_instance(home, envs, run_launcher=choice).read_text())


def test_warm_names_the_launcher_its_socket_and_the_queues_retry(tmp_path: Path) -> None:
    config = _render(tmp_path, "warm")
    assert config["run_launcher"]["class"] == "WarmRunLauncher"
    assert config["run_launcher"]["config"]["socket_path"] == str(tmp_path / stack.WORKER_SOCKET)
    queue = config["run_coordinator"]["config"]
    assert queue["max_user_code_failure_retries"] == stack.WORKER_DOWN_RETRIES
    assert queue["user_code_failure_retry_delay"] == stack.WORKER_DOWN_RETRY_DELAY
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        assert launcher.socket_path == tmp_path / stack.WORKER_SOCKET


@pytest.mark.parametrize("choice", ["default", None])
def test_default_keeps_dagsters_launcher_and_no_worker(tmp_path: Path, choice: str | None) -> None:
    config = _render(tmp_path, choice)  # type: ignore[arg-type]
    assert "run_launcher" not in config  # the embedded dagster.yaml names none: Dagster's default
    assert not stack.uses_warm_launcher(config)
    assert "max_user_code_failure_retries" not in config["run_coordinator"]["config"]
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
