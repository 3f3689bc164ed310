"""The configure pod program, run as the runner runs it (a subprocess) against a real HTTP data source."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fixtures_http import ALGORITHM_CODE, CSV_BYTES, HttpOrigin

from c2d_core.crypto import encrypt_for, public_key_of
from c2d_defs.pods import configure

ROOT = Path(__file__).resolve().parents[2]
DID_A = "did:op:" + "a" * 64
DID_B = "did:op:" + "b" * 64
ALGO_DID = "did:op:" + "c" * 64
JOB_ID = "0123456789abcdef0123456789abcdef"
NFT = "0x" + "1" * 40
DATATOKEN = "0x" + "2" * 40


@dataclass
class PodRun:
    exit_code: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    data: Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _workflow(inputs: list[dict[str, Any]], algorithm: dict[str, Any]) -> dict[str, Any]:
    return {
        "jobId": JOB_ID,
        "owner": "0x" + "9" * 40,
        "environment": "ocean-compute",
        "inputs": inputs,
        "algorithm": algorithm,
    }


def _input(did: str, urls: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "did": did,
        "serviceId": "compute",
        "files": {"files": [{"type": "url", "url": url, "method": "GET"} for url in urls]},
        **extra,
    }


def _raw_algorithm(**extra: Any) -> dict[str, Any]:
    return {
        "rawcode": "print('hello from a raw algorithm')\n",
        "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim"},
        **extra,
    }


def _published_algorithm(files: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "did": ALGO_DID,
        "serviceId": "compute",
        "files": files,
        "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim"},
        **extra,
    }


def run_configure(tmp_path: Path, workflow: dict[str, Any] | str, **env: str) -> PodRun:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    workflow_file = tmp_path / "workflow.json"
    workflow_file.write_text(workflow if isinstance(workflow, str) else json.dumps(workflow))
    termination = tmp_path / "termination-log"
    base = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    base.update(
        {
            "WORKFLOW": str(workflow_file),
            "VOLUME": str(data),
            "TERMINATION_LOG": str(termination),
            "PROVIDER_KEY_FILE": str(tmp_path / "no-key"),
            "C2D_CONNECT_TIMEOUT": "1",
            "C2D_READ_TIMEOUT": "1",
            "C2D_FETCH_RETRIES": "1",
            "C2D_FETCH_DEADLINE": "20",
            # The data source is on loopback: the SSRF guard refuses it unless allow-listed.
            "C2D_FETCH_ALLOW": "127.0.0.1/32",
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "c2d_defs.pods.configure"],
        env=base,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    raw = termination.read_bytes()
    assert len(raw) <= 4096
    return PodRun(done.returncode, done.stdout, done.stderr, json.loads(raw), data)


def _assert_no_leaks(origin: HttpOrigin, run: PodRun) -> None:
    assert origin.leaks_in(run.stdout) == [], run.stdout
    assert origin.leaks_in(run.stderr) == [], run.stderr
    assert origin.leaks_in(json.dumps(run.report)) == [], run.report


def test_two_inputs_and_raw_algorithm_fill_oceans_layout(http_origin: HttpOrigin, tmp_path: Path) -> None:
    ddo = {"id": DID_A, "nftAddress": NFT, "services": [{"id": "compute", "files": "0xabcdef"}]}
    workflow = _workflow(
        [
            _input(DID_A, [http_origin.url("data.csv"), http_origin.url("other.csv")], ddo=ddo),
            _input(DID_B, [http_origin.url("redirect.csv")]),
        ],
        _raw_algorithm(algocustomdata={"threshold": 3}),
    )
    run = run_configure(tmp_path, workflow)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.report["status"] == 30
    data = run.data
    hash_a, hash_b = DID_A.removeprefix("did:op:"), DID_B.removeprefix("did:op:")
    assert (data / "inputs" / hash_a / "0").read_bytes() == CSV_BYTES
    assert (data / "inputs" / hash_a / "1").read_bytes() == b"a,b\nx,y\n"
    assert (data / "inputs" / hash_b / "0").read_bytes() == CSV_BYTES
    assert sorted(p.name for p in (data / "inputs" / hash_a).iterdir()) == ["0", "1"]  # no .part files
    assert json.loads((data / "ddos" / hash_a).read_text()) == ddo
    assert not (data / "ddos" / hash_b).exists()
    assert json.loads((data / "inputs" / "algoCustomData.json").read_text()) == {"threshold": 3}
    algorithm = data / "transformations" / "algorithm"
    assert algorithm.read_text() == "print('hello from a raw algorithm')\n"
    assert algorithm.stat().st_mode & stat.S_IXUSR and algorithm.stat().st_mode & stat.S_IXOTH
    for folder in ("inputs", "transformations", "ddos", "outputs", "logs"):
        assert (data / folder).is_dir()
    assert stat.S_IMODE((data / "outputs").stat().st_mode) == 0o777  # the algorithm's uid writes here

    assert run.report["inputs"] == [
        {
            "did": DID_A,
            "files": [
                {"index": 0, "size": len(CSV_BYTES), "sha256": _sha(CSV_BYTES)},
                {"index": 1, "size": 8, "sha256": _sha(b"a,b\nx,y\n")},
            ],
        },
        {"did": DID_B, "files": [{"index": 0, "size": len(CSV_BYTES), "sha256": _sha(CSV_BYTES)}]},
    ]
    code = b"print('hello from a raw algorithm')\n"
    assert run.report["algorithm"]["files"] == [{"index": 0, "size": len(code), "sha256": _sha(code)}]
    assert _sha(CSV_BYTES) in run.stdout and hash_a in run.stdout
    _assert_no_leaks(http_origin, run)


def test_missing_input_file_fails_31_and_skips_the_algorithm(http_origin: HttpOrigin, tmp_path: Path) -> None:
    workflow = _workflow(
        [
            _input(DID_A, [http_origin.url("missing.csv"), http_origin.url("other.csv")]),
            _input(DID_B, [http_origin.url("data.csv")]),
        ],
        _published_algorithm({"files": [{"type": "url", "url": http_origin.url("algorithm.py")}]}),
    )
    run = run_configure(tmp_path, workflow)
    assert run.exit_code == 31
    assert run.report["status"] == 31
    assert run.report["message"] == "input 0 file 0: HTTP 404 from the data source"
    # Ocean: stop that input at its first failure, go on with the others, never fetch the algorithm.
    assert http_origin.count("other.csv") == 0
    assert (run.data / "inputs" / DID_B.removeprefix("did:op:") / "0").read_bytes() == CSV_BYTES
    assert http_origin.count("algorithm.py") == 0
    assert not (run.data / "transformations" / "algorithm").exists()
    assert not (run.data / "inputs" / "algoCustomData.json").exists()
    assert run.report["inputs"][0]["error"] == run.report["message"]
    _assert_no_leaks(http_origin, run)


def test_failing_published_algorithm_is_32(http_origin: HttpOrigin, tmp_path: Path) -> None:
    workflow = _workflow(
        [_input(DID_A, [http_origin.url("data.csv")])],
        _published_algorithm({"files": [{"type": "url", "url": http_origin.url("broken.csv")}]}),
    )
    run = run_configure(tmp_path, workflow)
    assert run.exit_code == 32
    assert run.report["status"] == 32
    assert run.report["message"] == "algorithm file 0: HTTP 503 from the data source after 2 attempts"
    assert http_origin.count("broken.csv") == 2  # C2D_FETCH_RETRIES=1
    assert json.loads((run.data / "inputs" / "algoCustomData.json").read_text()) == {}
    assert not (run.data / "transformations" / "algorithm").exists()
    _assert_no_leaks(http_origin, run)


def test_slow_input_times_out_within_the_configured_limits(http_origin: HttpOrigin, tmp_path: Path) -> None:
    workflow = _workflow([_input(DID_A, [http_origin.url("slow.csv")])], _raw_algorithm())
    run = run_configure(tmp_path, workflow, C2D_READ_TIMEOUT="0.2", C2D_FETCH_RETRIES="0")
    assert run.exit_code == 31
    assert run.report["message"] == "input 0 file 0: timed out after 1 attempt"
    _assert_no_leaks(http_origin, run)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", "malformed workflow"),
        (json.dumps({"jobId": JOB_ID}), "malformed workflow: owner: Field required"),
        (
            json.dumps(
                _workflow(
                    [
                        {
                            "did": "did:op:nothex",
                            "serviceId": "s",
                            "files": {"files": [{"url": "http://h/secret"}]},
                        }
                    ],
                    _raw_algorithm(),
                )
            ),
            "inputs.0.did: Value error, a dataset DID looks like did:op:<64 hex characters>",
        ),
    ],
)
def test_malformed_workflow_is_31_with_a_clear_message(tmp_path: Path, document: str, expected: str) -> None:
    run = run_configure(tmp_path, document)
    assert run.exit_code == 31
    assert run.report["status"] == 31
    assert expected in run.report["message"]
    assert "http://h" not in run.stdout and "secret" not in run.report["message"]
    assert (run.data / "inputs").is_dir()  # the folders exist even so, for publish to run over


def test_missing_workflow_file_is_31(tmp_path: Path) -> None:
    run = run_configure(tmp_path, "{}", WORKFLOW=str(tmp_path / "absent.json"))
    assert run.exit_code == 31
    assert run.report["message"].startswith("cannot read the workflow document")


def test_bad_limit_setting_is_31_with_the_variable_named(tmp_path: Path) -> None:
    run = run_configure(tmp_path, "{}", C2D_FETCH_RETRIES="many")
    assert run.exit_code == 31
    assert "C2D_FETCH_RETRIES" in run.report["message"]


def _provider_key(tmp_path: Path) -> tuple[str, Path]:
    account = Account.create()
    tmp_path.mkdir(parents=True, exist_ok=True)
    key_file = tmp_path / "provider-key"
    key_file.write_text(account.key.hex() + "\n")
    return public_key_of(account.key.hex()), key_file


def _encrypted(
    public_key: str, files: list[dict[str, Any]], nft: str = NFT, datatoken: str = DATATOKEN
) -> str:
    document = {"nftAddress": nft, "datatokenAddress": datatoken, "files": files}
    return encrypt_for(public_key, json.dumps(document).encode())


def _ddo(did: str) -> dict[str, Any]:
    return {"id": did, "nftAddress": NFT, "services": [{"id": "compute", "datatokenAddress": DATATOKEN}]}


def test_encrypted_files_are_decrypted_with_the_key_file(http_origin: HttpOrigin, tmp_path: Path) -> None:
    public_key, key_file = _provider_key(tmp_path)
    input_blob = _encrypted(
        public_key,
        [{"type": "url", "url": http_origin.url("echo"), "method": "get", "headers": {"X-Token": "tok-42"}}],
    )
    algorithm_blob = _encrypted(
        public_key,
        [
            {"type": "url", "url": http_origin.url("algorithm.py"), "method": "GET"},
            {"url": http_origin.url("other.csv")},
        ],
    )
    workflow = _workflow(
        [
            {
                "did": DID_A,
                "serviceId": "compute",
                "ddo": _ddo(DID_A),
                "files": {"encryptedFiles": input_blob},
                "userdata": {"rows": 2},
            }
        ],
        _published_algorithm({"encryptedFiles": algorithm_blob}, ddo=_ddo(ALGO_DID)),
    )
    run = run_configure(tmp_path, workflow, PROVIDER_KEY_FILE=str(key_file))
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.report["status"] == 30
    request = http_origin.last("echo")
    assert request.headers["X-Token"] == "tok-42" and request.query == "rows=2"
    assert (run.data / "inputs" / DID_A.removeprefix("did:op:") / "0").read_bytes() == b"GET rows=2\n"
    transformations = run.data / "transformations"
    assert (transformations / "algorithm").read_bytes() == ALGORITHM_CODE
    assert (transformations / "algorithm").stat().st_mode & stat.S_IXUSR
    assert (transformations / "1").read_bytes() == b"a,b\nx,y\n"
    assert (run.data / "ddos" / ALGO_DID.removeprefix("did:op:")).exists()
    assert [f["sha256"] for f in run.report["algorithm"]["files"]] == [
        _sha(ALGORITHM_CODE),
        _sha(b"a,b\nx,y\n"),
    ]
    assert "tok-42" not in run.stdout and "X-Token" not in run.stdout
    _assert_no_leaks(http_origin, run)


def test_encrypted_files_with_the_wrong_key_or_asset_fail_31(http_origin: HttpOrigin, tmp_path: Path) -> None:
    public_key, key_file = _provider_key(tmp_path)
    other_public_key, _ = _provider_key(tmp_path / "other")
    files = [{"type": "url", "url": http_origin.url("data.csv")}]
    wrong_key = {
        "did": DID_A,
        "serviceId": "compute",
        "files": {"encryptedFiles": _encrypted(other_public_key, files)},
    }
    wrong_asset = {
        "did": DID_B,
        "serviceId": "compute",
        "ddo": _ddo(DID_B),
        "files": {"encryptedFiles": _encrypted(public_key, files, datatoken="0x" + "3" * 40)},
    }
    run = run_configure(
        tmp_path, _workflow([wrong_key, wrong_asset], _raw_algorithm()), PROVIDER_KEY_FILE=str(key_file)
    )
    assert run.exit_code == 31
    assert run.report["inputs"][0]["error"].startswith("input 0: could not decrypt the encrypted document")
    assert (
        run.report["inputs"][1]["error"]
        == "input 1: the decrypted files belong to another datatoken than the service's"
    )
    assert http_origin.count("data.csv") == 0
    _assert_no_leaks(http_origin, run)


def test_encrypted_files_without_a_key_file_fail_31(tmp_path: Path) -> None:
    workflow = _workflow(
        [{"did": DID_A, "serviceId": "compute", "files": {"encryptedFiles": "0x" + "ab" * 120}}],
        _raw_algorithm(),
    )
    run = run_configure(tmp_path, workflow)
    assert run.exit_code == 31
    assert "encryptedFiles need the provider key" in run.report["message"]


def test_termination_message_stays_under_4096_bytes(http_origin: HttpOrigin, tmp_path: Path) -> None:
    workflow = _workflow([_input(DID_A, [http_origin.url("data.csv")] * 60)], _raw_algorithm())
    run = run_configure(tmp_path, workflow)
    assert run.exit_code == 0
    assert run.report["status"] == 30 and run.report["truncated"] is True
    assert 0 < len(run.report["inputs"][0]["files"]) < 60
    assert len(list((run.data / "inputs" / DID_A.removeprefix("did:op:")).iterdir())) == 60


def test_sigterm_still_writes_the_report(http_origin: HttpOrigin, tmp_path: Path) -> None:
    workflow = _workflow([_input(DID_A, [http_origin.url("slow.csv")])], _raw_algorithm())
    (tmp_path / "data").mkdir()
    (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.update(
        WORKFLOW=str(tmp_path / "workflow.json"),
        VOLUME=str(tmp_path / "data"),
        TERMINATION_LOG=str(tmp_path / "termination-log"),
        C2D_READ_TIMEOUT="30",
        C2D_FETCH_ALLOW="127.0.0.1/32",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "c2d_defs.pods.configure"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while http_origin.count("slow.csv") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 31
    report = json.loads((tmp_path / "termination-log").read_text())
    assert report["status"] == 31 and report["message"] == "configure: stopped by SIGTERM"
    assert http_origin.leaks_in(stdout) == []


def test_unexpected_errors_are_reported_as_31_without_their_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(self: configure.Configurator) -> None:
        raise RuntimeError("GET http://10.0.0.5/private/data.csv failed")

    monkeypatch.setattr(configure.Configurator, "run", explode)
    termination = tmp_path / "termination-log"
    code = configure.main({"WORKFLOW": str(tmp_path / "w.json"), "TERMINATION_LOG": str(termination)})
    assert code == 31
    report = json.loads(termination.read_text())
    assert report["status"] == 31
    assert report["message"].startswith(
        "configure failed unexpectedly (RuntimeError at test_pod_configure.py:"
    )
    assert "10.0.0.5" not in capsys.readouterr().out + report["message"]


def test_ssrf_guard_refuses_loopback_without_an_allow_list_as_31(
    http_origin: HttpOrigin, tmp_path: Path
) -> None:
    workflow = _workflow([_input(DID_A, [http_origin.url("data.csv")])], _raw_algorithm())
    run = run_configure(tmp_path, workflow, C2D_FETCH_ALLOW="")
    assert run.exit_code == 31
    assert run.report["message"] == "input 0 file 0: the location is not a public address"
    assert http_origin.requests == []
    _assert_no_leaks(http_origin, run)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/x", "http://0/x"]
)
def test_ssrf_guard_refuses_private_locations_even_with_loopback_allowed(tmp_path: Path, url: str) -> None:
    workflow = _workflow([_input(DID_A, [url])], _raw_algorithm())
    run = run_configure(tmp_path, workflow)
    assert run.exit_code == 31
    assert run.report["message"] == "input 0 file 0: the location is not a public address"
