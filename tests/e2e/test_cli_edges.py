"""The CLI's rough edges (issue 16, item 12), each reproduced as a user meets it: real `c2d`
subprocesses against the embedded stack of `ocean_stack` (real chain, Provider, Dagster, sandbox)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from c2d_cli.consumer import wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

C2D = str(Path(sys.executable).parent / "c2d")
ROOT = Path(__file__).resolve().parents[2]
FAILING = 'print("reading")\nraise SystemExit(1)\n'
SLEEPING = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"


class Cli:
    """`c2d` as a user runs it: in a folder of its own, the stack found through C2D_HOME unless
    `home=False`, the user's config folder a fresh one (so `dev up` records the stack there)."""

    def __init__(self, home: str, folder: Path) -> None:
        self.home = home
        self.folder = folder
        self.base = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
        self.base.pop("COLUMNS", None)
        self.base["XDG_CONFIG_HOME"] = str(folder / "xdg")

    def run(self, *args: str, home: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.base, **({"C2D_HOME": self.home} if home else {})}
        return subprocess.run(
            [C2D, *args],
            cwd=cwd or self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


@pytest.fixture(scope="module")
def cli(ocean_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(ocean_stack.running.home, tmp_path_factory.mktemp("edges"))


@pytest.fixture(scope="module")
def raw_args(cli: Cli) -> list[str]:
    from c2d_cli.publisher import SAMPLE_CONTAINER

    image = f"{SAMPLE_CONTAINER['image']}:{SAMPLE_CONTAINER['tag']}@{SAMPLE_CONTAINER['checksum']}"
    return ["--image", image, "--entrypoint", "python $ALGO"]


def raw_file(cli: Cli, name: str, code: str) -> str:
    path = cli.folder / name
    path.write_text(code)
    return str(path)


def test_wait_timeout_stop_and_list_say_what_happened(
    ocean_stack: Any, cli: Cli, raw_args: list[str]
) -> None:
    s = ocean_stack
    dataset = ["--dataset", s.raw_dataset.did]
    failed = cli.run(
        "compute", "start", *dataset, "--raw-algorithm", raw_file(cli, "f.py", FAILING), *raw_args, "--wait"
    )
    assert failed.returncode == 3, failed.stderr
    failed_id = re.search(r"job ([0-9a-f]{32}) failed", failed.stdout).group(1)  # type: ignore[union-attr]

    # A --wait that runs out of time has its own exit code (5), and says the job goes on.
    sleeping = cli.run(
        "compute",
        "start",
        *dataset,
        "--raw-algorithm",
        raw_file(cli, "s.py", SLEEPING),
        *raw_args,
        "--wait",
        "--timeout",
        "2",
    )
    assert sleeping.returncode == 5, sleeping.stderr
    assert "it keeps running" in flat(sleeping.stderr)
    sleeping_id = re.search(r"started job ([0-9a-f]{32})", flat(sleeping.stderr)).group(1)  # type: ignore[union-attr]
    stopped = cli.run("compute", "stop", sleeping_id)
    assert stopped.returncode == 0 and f"stop requested for job {sleeping_id}" in stopped.stdout
    wait_for_status(s.provider, s.consumer.address, sleeping_id, timeout=120)

    # A second stop: the job had finished, nothing is sent, and it says so (not "stop requested").
    again = cli.run("compute", "stop", sleeping_id)
    assert again.returncode == 0, again.stderr
    assert f"job {sleeping_id} had already finished (stopped on request)" in flat(again.stdout)
    assert "stop requested" not in again.stdout

    listing = cli.run("compute", "list")
    assert listing.returncode == 0, listing.stderr
    rows = {
        line.split()[0]: line for line in listing.stdout.splitlines() if re.match(r"\s*[0-9a-f]{32}\s", line)
    }
    assert "failed: exit code 1" in rows[failed_id] and "stopped on request" in rows[sleeping_id]
    assert "…" not in listing.stdout  # nothing is cut short
    assert all(len(job_id) == 32 for job_id in rows)
    as_json = json.loads(cli.run("compute", "list", "-o", "json").stdout)
    assert {job["jobId"] for job in as_json} >= {failed_id, sleeping_id}

    logs = json.loads(cli.run("compute", "logs", failed_id, "--json").stdout)
    assert logs["jobId"] == failed_id and logs["log"] == "algorithm" and "reading" in logs["content"]


def test_the_readme_publish_example_works_and_names_its_author(ocean_stack: Any, cli: Cli) -> None:
    """README's `publish algorithm` line, run as written (the origin URL from stack.json), then
    `publish dataset` with --description and --author: the DDO carries them, no demo text."""
    from c2d_cli import stack

    running = stack.read_stack(Path(cli.home))
    assert running is not None
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\.venv/bin/c2d publish algorithm (.+?)\n(?!  )", readme, re.S)
    assert block is not None
    args = shlex.split(block.group(1).replace("\\\n", " ").replace("$ORIGIN", running.origin_url))
    published = cli.run("publish", "algorithm", *args, "--json")
    assert published.returncode == 0, published.stderr
    algorithm = json.loads(published.stdout)["did"]

    dataset = cli.run(
        "publish",
        "dataset",
        "--name",
        "Mine",
        "--description",
        "My readings",
        "--author",
        "Ada",
        "--file",
        f"{running.origin_url}/data/weather.csv",
        "--trusted-algorithm",
        algorithm,
        "-o",
        "json",
    )
    assert dataset.returncode == 0, dataset.stderr
    did = json.loads(dataset.stdout)["did"]
    shown = json.loads(cli.run("asset", "show", did, "-o", "json").stdout)
    metadata = shown["ddo"]["metadata"]
    assert (metadata["description"], metadata["author"]) == ("My readings", "Ada")
    assert "c2d demo" not in json.dumps(metadata)


def test_balance_and_mint(ocean_stack: Any, cli: Cli) -> None:
    s = ocean_stack
    stranger = "0x" + "5" * 40
    before = json.loads(
        cli.run("balance", "--asset", s.dataset.did, "--address", stranger, "-o", "json").stdout
    )
    row = next(r for r in before["balances"] if r["what"] == f"datatoken of {s.dataset.did}")
    assert row["balance"] == 0 and before["address"].lower() == stranger

    minted = cli.run("publish", "mint", s.dataset.did, "--amount", "3", "--to", stranger)
    assert minted.returncode == 0, minted.stderr
    after = json.loads(cli.run("balance", "--asset", s.dataset.did, "--address", stranger, "--json").stdout)
    assert next(r for r in after["balances"] if r["what"] == row["what"])["balance"] == 3

    mine = cli.run("balance", "--asset", s.dataset.did)  # the consumer's own, as a table
    assert mine.returncode == 0 and "native coin" in mine.stdout and "Ocean" in mine.stdout

    refused = cli.run("publish", "mint", s.dataset.did, "--to", stranger, "--account", "4")
    assert refused.returncode == 1 and "may not mint" in flat(refused.stderr)


def test_dev_up_after_a_provider_crash_restarts_only_it_and_commands_find_the_stack_anywhere(
    ocean_stack: Any, cli: Cli, tmp_path: Path
) -> None:
    from c2d_cli import stack
    from c2d_cli.processes import alive, stop_group

    home = Path(cli.home)
    before = stack.read_stack(home)
    assert before is not None
    stop_group(before.provider_pid)
    assert not alive(before.provider_pid)

    status = cli.run("dev", "status", "-o", "json")
    assert status.returncode == 1  # a dead part is reported, not listed as running
    parts = {part["name"]: part for part in json.loads(status.stdout)["parts"]}
    assert not parts["provider"]["alive"] and not parts["provider"]["healthy"]
    assert parts["webserver"]["healthy"] and parts["anvil"]["healthy"] and parts["daemon"]["healthy"]

    up = cli.run("dev", "up")
    assert up.returncode == 0, up.stderr + up.stdout
    assert "restarted provider" in flat(up.stdout)
    after = stack.read_stack(home)
    assert after is not None and alive(after.provider_pid)
    assert after.provider_url == before.provider_url  # the port published assets name
    assert (after.webserver_pid, after.daemon_pid, after.anvil_pid) == (
        before.webserver_pid,
        before.daemon_pid,
        before.anvil_pid,
    )
    healthy = cli.run("dev", "status")
    assert healthy.returncode == 0 and "down" not in healthy.stdout, healthy.stdout
    # The restarted Provider serves the environments `up` was started with, though this shell (the
    # CLI runs without C2D_* variables) does not name their file.
    served = {env["id"] for env in ocean_stack.provider.environments(ocean_stack.chain.chain_id)}
    assert served == {
        ocean_stack.env["id"],
        ocean_stack.other_env["id"],
        ocean_stack.filtered_env["id"],
        ocean_stack.review_env["id"],
    }, served

    # From another folder, without C2D_HOME: the stack `dev up` recorded is found.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listing = cli.run("compute", "list", "-o", "json", home=False, cwd=elsewhere)
    assert listing.returncode == 0, listing.stderr
    assert isinstance(json.loads(listing.stdout), list)
