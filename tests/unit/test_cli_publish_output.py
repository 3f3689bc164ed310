"""`c2d compute start --publish-output …` builds Ocean's output object, refusing flag mistakes before
any call; `compute status` and `--wait` describe the job's results asset in one line."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from test_cli_commands import DID, cli, flat  # noqa: F401 - `cli` is a fixture

from c2d_cli.compute.inputs import output_request
from c2d_cli.compute.outcome import results_asset_text

OWNER = "0x" + "ab" * 20


def test_no_publish_output_sends_no_output() -> None:
    assert output_request(False, None, None, None, None, None, False) is None


def test_the_output_object_carries_what_the_flags_say() -> None:
    assert output_request(True, " Model ", "trained", ["a", "b"], "CC0", OWNER, True) == {
        "publishOutput": True,
        "publishAlgorithmLog": True,
        "metadata": {"name": "Model", "description": "trained", "tags": ["a", "b"], "license": "CC0"},
        "owner": OWNER,
    }
    # The owner is left to the Provider's default (the consumer) when not given.
    assert output_request(True, "Model", None, None, None, None, False) == {
        "publishOutput": True,
        "publishAlgorithmLog": False,
        "metadata": {"name": "Model"},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((True, None, None, None, None, None, False), "needs --output-name"),
        ((True, "  ", None, None, None, None, False), "needs --output-name"),
        ((True, "Model", None, None, None, "0x12", False), "is not an address"),
        ((False, "Model", None, None, None, None, False), "--output-name: only with --publish-output"),
        ((False, None, None, None, None, None, True), "--publish-log: only with --publish-output"),
    ],
)
def test_flag_mistakes_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(typer.BadParameter) as caught:
        output_request(*args)
    assert message in str(caught.value)


def test_compute_start_refuses_them_before_any_call(cli) -> None:  # noqa: F811
    result = cli("compute", "start", "--dataset", DID, "--algorithm", DID, "--publish-output")
    assert result.exit_code == 2 and "needs --output-name" in flat(result.output)
    result = cli("compute", "start", "--dataset", DID, "--algorithm", DID, "--publish-log")
    assert result.exit_code == 2 and "only with --publish-output" in flat(result.output)
    helped = cli("compute", "start", "--help")
    for flag in ("--publish-output", "--output-name", "--output-owner", "--publish-log"):
        assert flag in helped.output


@pytest.mark.parametrize(
    ("job", "line"),
    [
        ({"resultsDid": ""}, None),
        ({"resultsDid": "", "resultsAsset": {"status": "pending", "detail": "x"}}, "pending"),
        (
            {"resultsDid": "", "resultsAsset": {"status": "failed", "detail": "chain down"}},
            "failed: chain down",
        ),
        ({"resultsDid": "", "resultsAsset": {"status": "skipped", "detail": "stopped"}}, "skipped: stopped"),
        ({"resultsDid": "did:op:" + "1" * 64, "resultsAsset": {"status": "published"}}, "did:op:" + "1" * 64),
    ],
)
def test_the_results_asset_line(job: dict[str, Any], line: str | None) -> None:
    text = results_asset_text(job)
    if line is None:
        assert text is None
    else:
        assert text is not None and text.startswith(line)
