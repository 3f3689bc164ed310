"""The `c2d` commands through typer's test runner, with no stack: help, argument checks, where each
setting came from in the messages, and keys never printed."""

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from c2d_cli.main import app

KEY = "0x" + "4c" * 32
DID = "did:op:" + "ab" * 32
DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `c2d` in an empty folder: no config file, no stack, no C2D_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("C2D_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "200")  # help and panels unwrapped
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, list(args), env=env)

    return run


def flat(text: str) -> str:
    """Output without rich's panel borders and line breaks, for matching sentences."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["envs", "compute", "publish", "asset", "dev"]),
        (["compute"], ["start", "status", "logs", "results", "stop", "list"]),
        (["compute", "start"], ["--dataset", "--algorithm", "--raw-algorithm", "--wait", "--provider-url"]),
        (["compute", "results"], ["--out", "size"]),
        (["compute", "logs"], ["--follow"]),
        (["publish", "dataset"], ["--trusted-algorithm", "--allow-raw-algorithm", "--mint-to", "--compute"]),
        (["publish", "algorithm"], ["--image", "--entrypoint", "--checksum"]),
        (["asset", "show"], ["without secrets"]),
        (["envs"], ["--json"]),
    ],
)
def test_every_command_explains_itself(cli, args: list[str], words: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.exit_code == 0, result.output
    for word in words:
        assert word in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", DID], "give one of --algorithm DID or --raw-algorithm FILE"),
        (["--dataset", DID, "--algorithm", DID, "--raw-algorithm", "x.py"], "give one of"),
        (["--dataset", "did:op:123", "--algorithm", DID], "is not did:op: followed by 64 hex digits"),
        (["--dataset", DID, "--algorithm", DID, "--image", "python"], "go with --raw-algorithm"),
        (["--dataset", DID, "--algorithm", DID, "--algocustomdata", "{nope"], "is not JSON"),
        (["--dataset", DID, "--algorithm", DID, "--algocustomdata", "[1]"], "must be a JSON object"),
    ],
)
def test_compute_start_refuses_bad_arguments_before_any_call(cli, args: list[str], message: str) -> None:
    result = cli("compute", "start", *args)
    assert result.exit_code == 2, result.output
    assert message in flat(result.output)


def test_a_raw_algorithm_needs_its_container(cli, tmp_path: Path) -> None:
    code = tmp_path / "algo.py"
    code.write_text("print(1)\n")
    result = cli("compute", "start", "--dataset", DID, "--raw-algorithm", str(code), "--chain-id", "1")
    assert result.exit_code == 2 and "needs --image" in flat(result.output)
    result = cli(
        "compute", "start", "--dataset", DID, "--raw-algorithm", str(code), "--image", "python:3.11",
        "--entrypoint", "python $ALGO", "--chain-id", "1", "--provider-url", "http://127.0.0.1:9",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "needs its image digest" in flat(result.output)


def test_an_unreachable_provider_names_the_setting_it_came_from(cli, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    result = cli("envs", "--provider-url", url, "--chain-id", "8996")
    assert result.exit_code == 1
    assert f"cannot reach the Provider at {url}" in flat(result.output)
    assert "came from --provider-url" in flat(result.output)
    result = cli("envs", "--chain-id", "8996", env={"C2D_PROVIDER_URL": url})
    assert result.exit_code == 1 and "came from C2D_PROVIDER_URL" in flat(result.output)


def test_the_config_file_is_used_and_named(cli, tmp_path: Path, closed_port: int) -> None:
    (tmp_path / ".c2d").mkdir()
    (tmp_path / ".c2d" / "cli.toml").write_text(
        f'provider_url = "http://127.0.0.1:{closed_port}"\nchain_id = 5\n'
    )
    result = cli("envs")
    assert result.exit_code == 1
    assert f"came from {tmp_path / '.c2d' / 'cli.toml'}" in flat(result.output)


def test_no_key_and_no_local_chain_says_how_to_give_one(cli, closed_port: int) -> None:
    result = cli("compute", "list", "--provider-url", f"http://127.0.0.1:{closed_port}", "--chain-id", "137")
    assert result.exit_code == 1
    assert "no key is configured" in flat(result.output) and "C2D_KEY_FILE" in flat(result.output)
    result = cli("compute", "list", "--chain-id", "137", "--account", "3")
    assert result.exit_code == 1 and "local chain" in flat(result.output)


def test_keys_are_never_printed(cli, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    result = cli("compute", "status", "f" * 32, "--provider-url", url, env={"C2D_PRIVATE_KEY": KEY})
    assert result.exit_code == 1
    bad = KEY[:-2] + "zz"
    refused = cli("compute", "list", "--provider-url", url, env={"C2D_PRIVATE_KEY": bad})
    assert refused.exit_code == 1 and "C2D_PRIVATE_KEY" in refused.output
    for output in (result.output, refused.output):
        assert KEY.removeprefix("0x") not in output and bad.removeprefix("0x")[:20] not in output


def test_a_local_file_is_refused_with_how_to_serve_it(cli, tmp_path: Path) -> None:
    code = tmp_path / "algo.py"
    code.write_text("print(1)\n")
    result = cli(
        "publish", "algorithm", "--file", str(code), "--image", "python:3.11", "--checksum", DIGEST,
        "--entrypoint", "python $ALGO", "--provider-url", "http://127.0.0.1:9", "--chain-id", "8996",
    )  # fmt: skip
    assert result.exit_code == 1
    text = flat(result.output)
    assert "is a local file" in text and "http.server" in text


def test_publish_refuses_malformed_trust_entries(cli) -> None:
    result = cli(
        "publish", "dataset", "--name", "x", "--file", "https://example.org/a.csv",
        "--trusted-algorithm", f"{DID}:abc:def",
    )  # fmt: skip
    assert result.exit_code == 2 and "FILESCHECKSUM" in flat(result.output)
    result = cli(
        "publish", "dataset", "--name", "x", "--file", "https://example.org/a.csv", "--access",
        "--allow-raw-algorithm",
    )  # fmt: skip
    assert result.exit_code == 2 and "--compute datasets only" in flat(result.output)


def test_asset_show_needs_a_well_formed_did(cli) -> None:
    result = cli("asset", "show", "did:op:xyz")
    assert result.exit_code == 2 and "64 hex digits" in flat(result.output)


def test_a_server_that_is_not_a_provider_is_named(cli, tmp_path: Path) -> None:
    from c2d_cli.origin import LocalOrigin

    with LocalOrigin(tmp_path) as origin:
        result = cli("envs", "--provider-url", origin.url, "--chain-id", "8996")
    assert result.exit_code == 1
    assert f"{origin.url} does not answer like an Ocean Provider" in flat(result.output)


def test_an_invalid_provider_url_is_named(cli) -> None:
    result = cli("compute", "list", "--provider-url", "http://256.1.1.1:80", "--chain-id", "8996")
    assert result.exit_code == 1
    assert "the Provider URL is not valid" in flat(result.output) and "--provider-url" in flat(result.output)
