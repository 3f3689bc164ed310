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


@pytest.mark.parametrize("choice", ["warm", None])
def test_warm_names_the_launcher_its_socket_and_the_queues_retry(tmp_path: Path, choice: str | None) -> None:
    config = _render(tmp_path, choice)  # type: ignore[arg-type]  # None: the embedded dagster.yaml's, warm
    assert config["run_launcher"]["class"] == "WarmRunLauncher"
    assert config["run_launcher"]["config"]["socket_path"] == str(tmp_path / stack.WORKER_SOCKET)
    queue = config["run_coordinator"]["config"]
    assert queue["max_user_code_failure_retries"] == stack.WORKER_DOWN_RETRIES
    assert queue["user_code_failure_retry_delay"] == stack.WORKER_DOWN_RETRY_DELAY
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        assert launcher.socket_path == tmp_path / stack.WORKER_SOCKET


def test_default_keeps_dagsters_launcher_and_no_worker(tmp_path: Path) -> None:
    config = _render(tmp_path, "default")
    assert "run_launcher" not in config  # the embedded dagster.yaml's warm launcher is dropped
    assert not stack.uses_warm_launcher(config)
    assert "max_user_code_failure_retries" not in config["run_coordinator"]["config"]
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"


def test_the_production_template_keeps_its_own_launcher(tmp_path: Path) -> None:
    envs = Environments.load(ROOT / "config" / "environments.yaml")
    template = ROOT / "deploy" / "dagster-postgres.yaml"
    config = yaml.safe_load(stack.render_instance(tmp_path, envs, template).read_text())
    assert not stack.uses_warm_launcher(config)  # only the embedded default names the warm worker


def test_a_home_too_deep_for_the_workers_socket_is_refused_before_anything_starts(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ".c2d"
    with pytest.raises(stack.StackError, match="--run-launcher default"):
        stack._check_worker_socket(deep)
    stack._check_worker_socket(tmp_path)  # a short one passes


def _running(home: Path, worker_pid: int) -> stack.Stack:
    return stack.Stack(
        home=str(home),
        dagster_home=str(home),
        webserver_url="http://127.0.0.1:1",
        webserver_host="127.0.0.1",
        webserver_port=1,
        webserver_pid=1,
        daemon_pid=1,
        started_at=0.0,
        worker_pid=worker_pid,
    )


def test_a_running_stack_is_reused_only_with_the_launcher_asked_for(tmp_path: Path) -> None:
    warm, default = _running(tmp_path, worker_pid=4242), _running(tmp_path, worker_pid=0)
    for existing in (warm, default):
        stack._check_same_launcher(tmp_path, existing, None)  # no option: whatever runs
    stack._check_same_launcher(tmp_path, warm, "warm")
    stack._check_same_launcher(tmp_path, default, "default")
    with pytest.raises(stack.StackError, match="running with the warm run launcher, not default"):
        stack._check_same_launcher(tmp_path, warm, "default")
    with pytest.raises(stack.StackError, match="c2d dev down"):
        stack._check_same_launcher(tmp_path, default, "warm")
