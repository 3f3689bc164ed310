"""The stack's data origin and the checks `c2d compute start` makes before paying (issue 16, items 10
and 11), on the real embedded stack of `ocean_stack`: real subprocesses, real chain, real Provider."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

C2D = str(Path(sys.executable).parent / "c2d")


def c2d(home: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.pop("COLUMNS", None)
    env.update({"C2D_HOME": home, "XDG_CONFIG_HOME": str(folder / "xdg")})
    return subprocess.run(
        [C2D, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def datatokens(chain: Any, datatoken: str, holder: str) -> int:
    return int(chain.contracts.at("ERC20Template", datatoken).functions.balanceOf(holder).call())


def test_the_stack_serves_the_examples_from_its_own_process(ocean_stack: Any) -> None:
    from c2d_cli import stack
    from c2d_cli.processes import alive

    running = stack.read_stack(Path(ocean_stack.running.home))
    assert running is not None and running.origin_url.startswith("http://127.0.0.1:")
    assert alive(running.origin_pid) and running.origin_pid in running.pids  # `down` stops it
    served = httpx.get(f"{running.origin_url}/data/weather.csv", timeout=10)
    assert served.status_code == 200
    assert served.content == (stack.ORIGIN_FOLDER / "data" / "weather.csv").read_bytes()


def test_start_refuses_before_ordering_when_the_dataset_is_unreachable(
    ocean_stack: Any, tmp_path: Path
) -> None:
    """The origin stopped: `compute start` says the data is unreachable, exits 1, and sends no
    transaction (the datatoken balance and the account's nonce are unchanged). The origin then
    restarts alone, on its recorded port."""
    from c2d_cli import stack
    from c2d_cli.processes import alive, stop_group
    from c2d_cli.publisher import SAMPLE_CONTAINER, mint_to, publish_asset
    from c2d_core.ocean.checksums import trusted_algorithm_entry

    s = ocean_stack
    home = Path(s.running.home)
    running = stack.read_stack(home)
    assert running is not None and running.origin_url
    entry = trusted_algorithm_entry(
        s.algorithm.did, hashlib.sha256(s.algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
    )
    dataset = publish_asset(
        s.chain,
        s.publisher,
        s.provider,
        name="Served by the stack",
        files=[{"type": "url", "url": f"{running.origin_url}/data/weather.csv", "method": "GET"}],
        asset_type="dataset",
        service_type="compute",
        compute={
            "allowRawAlgorithm": False,
            "allowNetworkAccess": False,
            "publisherTrustedAlgorithms": [entry],
            "publisherTrustedAlgorithmPublishers": [],
        },
    )
    mint_to(s.chain, s.publisher, dataset, s.consumer.address, 2)
    stop_group(running.origin_pid)
    assert not alive(running.origin_pid)
    try:
        before = (
            datatokens(s.chain, dataset.datatoken, s.consumer.address),
            datatokens(s.chain, s.algorithm.datatoken, s.consumer.address),
            s.chain.w3.eth.get_transaction_count(s.consumer.address),
        )
        result = c2d(
            str(home), tmp_path, "compute", "start", "--dataset", dataset.did, "--algorithm", s.algorithm.did
        )
        assert result.returncode == 1, result.stderr
        said = flat(result.stderr)
        assert f"the Provider cannot reach the data of the dataset {dataset.did}" in said, said
        assert "nothing was paid" in said and "startOrder" not in said
        assert running.origin_url not in said  # the location stays secret
        after = (
            datatokens(s.chain, dataset.datatoken, s.consumer.address),
            datatokens(s.chain, s.algorithm.datatoken, s.consumer.address),
            s.chain.w3.eth.get_transaction_count(s.consumer.address),
        )
        assert after == before
    finally:
        if not alive(running.origin_pid):
            stack.restart(home, "origin")
    again = stack.read_stack(home)
    assert again is not None and again.origin_url == running.origin_url and alive(again.origin_pid)
    # Only the origin was restarted: every other part kept its process.
    assert (again.provider_pid, again.webserver_pid, again.daemon_pid, again.anvil_pid) == (
        running.provider_pid,
        running.webserver_pid,
        running.daemon_pid,
        running.anvil_pid,
    )
