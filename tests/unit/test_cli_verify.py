"""`c2d compute verify` through typer's test runner on folders laid out as `c2d compute results` leaves
them: exit 0 when the signature and every file check out, 4 when anything differs, 1 when there is
nothing to check; the expected signer from --provider-address or from a real Provider's `GET /`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from c2d_cli.main import app
from c2d_core.attestation import FILENAME, build_attestation, dump_file, sign_attestation
from c2d_core.workflow import Workflow
from provider_api.settings import PROVIDER_DEV_ACCOUNT_INDEX, anvil_dev_key

# The key a development Provider signs with (anvil's account 9), so a real Provider's GET / names it.
PROVIDER: LocalAccount = Account.from_key(anvil_dev_key(PROVIDER_DEV_ACCOUNT_INDEX))
OTHER: LocalAccount = Account.from_key("0x" + "c3" * 32)
JOB_ID = "0123456789abcdef0123456789abcdef"
RESULTS = {"result.txt": b"42\n", "algorithm.log": b"ran\n"}


def attestation_of(signer: LocalAccount, job_id: str = JOB_ID) -> dict[str, Any]:
    workflow = Workflow.model_validate(
        {
            "jobId": job_id,
            "owner": "0x" + "11" * 20,
            "environment": "ocean-compute",
            "chainId": 8996,
            "inputs": [
                {"did": "did:op:" + "ab" * 32, "serviceId": "compute", "files": {"encryptedFiles": "0xab"}}
            ],
            "algorithm": {
                "rawcode": "print(42)\n",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )
    built = build_attestation(
        workflow,
        provider=signer.address,
        input_files=[[{"index": 0, "size": 10, "sha256": "aa" * 32}]],
        algorithm_files=[{"index": 0, "size": 10, "sha256": hashlib.sha256(b"print(42)\n").hexdigest()}],
        results=[
            {
                "index": index,
                "filename": name,
                "filesize": len(data),
                "type": "algorithmLog" if name.endswith(".log") else "output",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for index, (name, data) in enumerate(RESULTS.items())
        ],
        status=70,
        status_text="Job finished",
        started_at=1796290982,
        finished_at=1796291000,
    )
    return sign_attestation(signer, built)


def results_folder(tmp_path: Path, signed: dict[str, Any]) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    for name, data in RESULTS.items():
        (folder / name).write_bytes(data)
    (folder / FILENAME).write_bytes(dump_file(signed))
    return folder


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`c2d` in an empty folder: no config file, no stack, no C2D_* variables."""
    for name in list(os.environ):
        if name.startswith("C2D_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def verify(cli, folder: Path, *extra: str, job_id: str = JOB_ID):
    return cli("compute", "verify", job_id, "--dir", str(folder), *extra)


def test_a_faithful_download_verifies(cli, tmp_path: Path) -> None:
    folder = results_folder(tmp_path, attestation_of(PROVIDER))
    result = verify(cli, folder, "--provider-address", PROVIDER.address)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert f"verified: job {JOB_ID}, signed by {PROVIDER.address}; 2 file(s) match" in text
    assert f"signature {FILENAME} ok signed by the Provider {PROVIDER.address}" in text
    assert "file result.txt ok 3 bytes" in text and "file algorithm.log ok 4 bytes" in text
    assert "algorithm: raw code sha256 " + hashlib.sha256(b"print(42)\n").hexdigest() in text


@pytest.mark.parametrize("flag", [["--json"], ["-o", "json"]])
def test_json_for_scripts(cli, tmp_path: Path, flag: list[str]) -> None:
    folder = results_folder(tmp_path, attestation_of(PROVIDER))
    (folder / "result.txt").write_bytes(b"43\n")
    result = verify(cli, folder, "--provider-address", PROVIDER.address, *flag)
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["verified"] is False and report["expectedSigner"] == PROVIDER.address
    outcomes = {(c["check"], c["subject"]): (c["ok"], c["outcome"]) for c in report["checks"]}
    assert outcomes == {
        ("signature", FILENAME): (True, "ok"),
        ("job", JOB_ID): (True, "ok"),
        ("file", "result.txt"): (False, "sha256"),
        ("file", "algorithm.log"): (True, "ok"),
    }
    assert report["attestation"]["jobId"] == JOB_ID


def test_a_changed_missing_or_extra_file_fails_with_exit_4(cli, tmp_path: Path) -> None:
    folder = results_folder(tmp_path, attestation_of(PROVIDER))
    (folder / "algorithm.log").unlink()
    (folder / "planted.csv").write_bytes(b"x")
    result = verify(cli, folder, "--provider-address", PROVIDER.address)
    assert result.exit_code == 4
    text = flat(result.output)
    assert f"algorithm.log missing algorithm.log is not in {folder}" in text
    assert "planted.csv extra file planted.csv is not among the job's results" in text
    assert f"not verified: 2 check(s) failed for job {JOB_ID}" in text


def test_a_changed_attestation_fails_and_its_files_are_not_trusted(cli, tmp_path: Path) -> None:
    signed = attestation_of(PROVIDER)
    signed["attestation"]["results"][0]["sha256"] = hashlib.sha256(b"43\n").hexdigest()
    folder = results_folder(tmp_path, signed)
    (folder / "result.txt").write_bytes(b"43\n")  # the file the changed attestation vouches for
    result = verify(cli, folder, "--provider-address", PROVIDER.address)
    assert result.exit_code == 4
    text = flat(result.output)
    assert "tampered" in text and "changed after it was signed" in text
    assert "the files were not checked" in text and "file result.txt" not in text


def test_another_job_s_attestation_fails(cli, tmp_path: Path) -> None:
    folder = results_folder(tmp_path, attestation_of(PROVIDER, job_id="f" * 32))
    result = verify(cli, folder, "--provider-address", PROVIDER.address)
    assert result.exit_code == 4
    assert f"the attestation is of job {'f' * 32}, not {JOB_ID}" in flat(result.output)


def test_no_attestation_says_how_to_get_one(cli, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    result = verify(cli, folder, "--provider-address", PROVIDER.address)
    assert result.exit_code == 1
    text = flat(result.output)
    assert f"there is no {FILENAME} in {folder}" in text
    assert f"c2d compute results {JOB_ID} --out {folder}" in text


@pytest.mark.parametrize(
    "args, words",
    [
        (["nope", "--dir", "."], "is not 32 hex digits"),
        ([JOB_ID, "--dir", ".", "--provider-address", "0x12"], "is not 0x and 40 hex digits"),
        ([JOB_ID, "--dir", ".", "-o", "yaml"], "choose table or json"),
    ],
)
def test_bad_arguments_are_refused(cli, args: list[str], words: str) -> None:
    result = cli("compute", "verify", *args)
    assert result.exit_code == 2 and words in flat(result.output)


# --- against a real Provider's GET / -----------------------------------------------------------------


@pytest.fixture(scope="module")
def provider_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A development Provider under uvicorn on a free loopback port (it signs with anvil's account 9)."""
    folder = tmp_path_factory.mktemp("provider")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("C2D_", "PROVIDER_"))},
        "C2D_HOME": str(folder / "home"),
        "PROVIDER_ENVIRONMENT": "development",
        "PROVIDER_NONCE_DB_URL": f"sqlite:///{folder / 'nonces.db'}",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "provider_api.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with (folder / "uvicorn.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("uvicorn did not start:\n" + (folder / "uvicorn.log").read_text())
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_the_expected_signer_is_the_address_the_provider_lists(
    cli, tmp_path: Path, provider_url: str
) -> None:
    assert httpx.get(provider_url + "/").json()["providerAddresses"] == {"8996": PROVIDER.address}
    folder = results_folder(tmp_path, attestation_of(PROVIDER))
    result = verify(cli, folder, "--provider-url", provider_url)
    assert result.exit_code == 0, result.output
    assert f"signed by the Provider {PROVIDER.address}" in flat(result.output)


def test_an_attestation_signed_by_another_key_fails_against_the_provider(
    cli, tmp_path: Path, provider_url: str
) -> None:
    folder = results_folder(tmp_path, attestation_of(OTHER))
    result = verify(cli, folder, "--provider-url", provider_url)
    assert result.exit_code == 4
    text = flat(result.output)
    assert "wrong_signer" in text and OTHER.address in text and PROVIDER.address in text


def docs_snippet() -> str:
    """The Python block docs/api.md gives for verifying without our code."""
    text = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    section = text.split("## Job attestation", 1)[1].split("**Verifying without our code**", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_snippet_verifies_and_catches_a_changed_file(
    tmp_path: Path, provider_url: str
) -> None:
    folder = results_folder(tmp_path, attestation_of(PROVIDER))
    exec(docs_snippet(), {"PROVIDER_URL": provider_url, "FOLDER": str(folder)})
    (folder / "result.txt").write_bytes(b"43\n")
    with pytest.raises(AssertionError):
        exec(docs_snippet(), {"PROVIDER_URL": provider_url, "FOLDER": str(folder)})
