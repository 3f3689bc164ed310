"""The leak filter pod program: reads the job volume, writes its report, exits 0 on pass and on reject."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from c2d_defs.pods.leak_filter import main

ROOT = Path(__file__).resolve().parents[2]
DID = "ab" * 32
DATA = random.Random(7).randbytes(300_000)


def _volume(tmp_path: Path, outputs: dict[str, bytes]) -> Path:
    volume = tmp_path / "data"
    (volume / "inputs" / DID).mkdir(parents=True)
    (volume / "outputs").mkdir()
    (volume / "inputs" / DID / "0").write_bytes(DATA)
    (volume / "inputs" / DID / "1").write_bytes((ROOT / "examples/data/weather.csv").read_bytes())
    for name, content in outputs.items():
        (volume / "outputs" / name).parent.mkdir(parents=True, exist_ok=True)
        (volume / "outputs" / name).write_bytes(content)
    return volume


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "VOLUME": str(tmp_path / "data"),
        "C2D_LEAK_FILTER_REPORT": str(tmp_path / "report" / "leak-filter.json"),
        "TERMINATION_LOG": str(tmp_path / "termination-log"),
        **extra,
    }


def _report(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "report" / "leak-filter.json").read_text())


def _termination(tmp_path: Path) -> dict[str, Any]:
    raw = (tmp_path / "termination-log").read_bytes()
    assert len(raw) <= 4096
    return json.loads(raw)


def test_a_clean_job_passes(tmp_path: Path) -> None:
    _volume(
        tmp_path, {"summary.json": b'{"cities": {"Lisbon": {"count": 3}}}', "model/w.bin": os.urandom(50_000)}
    )
    assert main(_env(tmp_path)) == 0
    report = _report(tmp_path)
    assert report["verdict"] == "pass"
    assert [output["path"] for output in report["outputs"]] == ["model/w.bin", "summary.json"]
    assert report["inputs"]["files"] == 2 and report["inputs"]["bytes"] == len(DATA) + 238
    assert set(report["timings"]) == {"fingerprint_seconds", "scan_seconds", "total_seconds"}
    assert _termination(tmp_path)["verdict"] == "pass"


def test_a_copy_is_rejected_with_exit_0_and_a_safe_reason(tmp_path: Path) -> None:
    blob = base64.b64encode(DATA[1000:20_000]).decode()
    _volume(tmp_path, {"ok.txt": b"fine", "result.json": json.dumps({"n": 1, "blob": blob}).encode()})
    assert main(_env(tmp_path)) == 0
    report = _report(tmp_path)
    assert report["verdict"] == "reject"
    assert report["reason"].startswith("outputs/result.json (base64 at byte ")
    assert ") holds 19000 bytes copied verbatim from the inputs, starting at byte 0" in report["reason"]
    assert DID not in json.dumps(report)  # no input location, in the report or the termination message
    termination = _termination(tmp_path)
    assert termination["verdict"] == "reject" and termination["message"] == report["reason"]
    assert DID not in json.dumps(termination)


def test_the_consumers_custom_data_and_symlinks_are_not_inputs_or_outputs(tmp_path: Path) -> None:
    custom = json.dumps({"column": "temp_c", "pad": "x" * 9000}).encode()
    volume = _volume(tmp_path, {"echo.json": custom})
    (volume / "inputs" / "algoCustomData.json").write_bytes(custom)
    (volume / "outputs" / "link").symlink_to(volume / "inputs" / DID / "0")
    assert main(_env(tmp_path)) == 0
    report = _report(tmp_path)
    assert report["verdict"] == "pass"
    assert [output["path"] for output in report["outputs"]] == ["echo.json"]


def test_settings_come_from_the_json_config(tmp_path: Path) -> None:
    _volume(tmp_path, {"big.bin": os.urandom(200_000)})
    assert main(_env(tmp_path, C2D_LEAK_FILTER_CONFIG='{"max_output_share": 0.5}')) == 0
    assert "more than 0.5 of the inputs'" in _report(tmp_path)["reason"]


def test_bad_settings_fail_the_filter_not_the_job(tmp_path: Path) -> None:
    _volume(tmp_path, {})
    assert main(_env(tmp_path, C2D_LEAK_FILTER_CONFIG='{"window_bytes": 10}')) == 1
    report = _report(tmp_path)
    assert report["verdict"] == "error" and "window_bytes" in report["reason"]
    assert main(_env(tmp_path, C2D_LEAK_FILTER_CONFIG="[1")) == 1


def test_runs_as_a_module_in_a_fresh_interpreter(tmp_path: Path) -> None:
    _volume(tmp_path, {"copy.csv": (ROOT / "examples/data/weather.csv").read_bytes()})
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **_env(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "c2d_defs.pods.leak_filter"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "leak-filter: verdict reject: outputs/copy.csv is an exact copy of an input file" in done.stdout
    assert _report(tmp_path)["verdict"] == "reject"


def test_the_algorithm_log_is_checked_as_if_it_were_an_output(tmp_path: Path) -> None:
    # The log publish would store beside the outputs: a copy printed to stdout leaks like a file.
    volume = _volume(tmp_path, {"summary.json": b'{"rows": 3}'})
    (volume / "logs").mkdir()
    (volume / "logs" / "algorithm.log").write_bytes(b"read 300000 bytes\n" + DATA[5000:15_000] + b"\ndone\n")
    assert main(_env(tmp_path)) == 0
    report = _report(tmp_path)
    assert report["verdict"] == "reject"
    assert report["reason"] == (
        "logs/algorithm.log holds 10000 bytes copied verbatim from the inputs, starting at byte 18; "
        "outputs may hold at most 4096 consecutive bytes of an input"
    )
    assert [(o["folder"], o["path"], o["verdict"]) for o in report["outputs"]] == [
        ("outputs", "summary.json", "pass"),
        ("logs", "algorithm.log", "reject"),
    ]
    assert _termination(tmp_path)["message"] == report["reason"]


def test_a_clean_algorithm_log_passes_and_a_symlinked_one_is_skipped(tmp_path: Path) -> None:
    volume = _volume(tmp_path, {})
    (volume / "logs").mkdir()
    (volume / "logs" / "algorithm.log").write_bytes(b"mean 12.5\n" * 2000)
    assert main(_env(tmp_path)) == 0
    assert _report(tmp_path)["verdict"] == "pass"
    # A symlink in the log's place: publish skips it (never follows it), so it is not checked either.
    (volume / "logs" / "algorithm.log").unlink()
    (volume / "logs" / "algorithm.log").symlink_to(volume / "inputs" / DID / "0")
    assert main(_env(tmp_path)) == 0
    report = _report(tmp_path)
    assert report["verdict"] == "pass" and report["outputs"] == []
