"""The publish pod program: hostile output trees, safe names, manifest order, caps and store failures."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from c2d_core.results import LocalResultStore, ResultEntry
from c2d_defs.pods import layout
from c2d_defs.pods.publish import main, safe_filename, unique_names

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "fedcba9876543210fedcba9876543210"


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _volume(tmp_path: Path) -> tuple[Path, Path, Path]:
    data, adminlogs, results = tmp_path / "data", tmp_path / "adminlogs", tmp_path / "results"
    for folder in (data / "outputs", data / "logs", adminlogs, results):
        folder.mkdir(parents=True, exist_ok=True)
    return data, adminlogs, results


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "VOLUME": str(tmp_path / "data"),
        "ADMINLOGS": str(tmp_path / "adminlogs"),
        "WORKFLOWID": JOB_ID,
        "RESULTS_ROOT": str(tmp_path / "results"),
        "C2D_RESULT_STORE": "local",
        "TERMINATION_LOG": str(tmp_path / "termination-log"),
        "C2D_PUBLISH_OUTPUTS": "true",
        **extra,
    }


def _report(tmp_path: Path) -> dict[str, Any]:
    raw = (tmp_path / "termination-log").read_bytes()
    assert len(raw) <= 4096
    return json.loads(raw)


def _manifest(tmp_path: Path, report: dict[str, Any]) -> list[ResultEntry]:
    store = LocalResultStore(tmp_path / "results")
    assert report["manifest"] == f"{JOB_ID}/{layout.MANIFEST_NAME}"
    with store.open(report["manifest"]) as handle:
        return [ResultEntry.model_validate(item) for item in json.load(handle)]


def _stored(tmp_path: Path, entry: ResultEntry) -> bytes:
    with LocalResultStore(tmp_path / "results").open(entry.location) as handle:
        return handle.read()


def test_outputs_then_logs_with_safe_names_and_matching_checksums(tmp_path: Path) -> None:
    data, adminlogs, _ = _volume(tmp_path)
    outputs = data / "outputs"
    files = {
        "result.csv": b"a,b\n1,2\n",
        "nested/deep/x.txt": b"deep",
        "with space.txt": b"space",
        "ünïcode.csv": "ü".encode(),
        ".hidden": b"hidden",
        "..evil": b"evil",
        "a/b.txt": b"slash",
        "a_b.txt": b"underscore",
        "publish.log": b"an output that wants the log's name",
        "empty.bin": b"",
    }
    for relative, content in files.items():
        _write(outputs / relative, content)
    outside = tmp_path / "outside"
    _write(outside / "secret.txt", b"never published")
    (outputs / "passwd").symlink_to("/etc/passwd")
    (outputs / "linkdir").symlink_to(outside, target_is_directory=True)
    (outputs / "nested" / "up").symlink_to("../../..", target_is_directory=True)
    os.mkfifo(outputs / "pipe")
    _write(data / "logs" / "algorithm.log", b"algorithm says hi\n")
    _write(adminlogs / "configure.log", b"configure says hi\n")

    assert main(_env(tmp_path)) == 0
    report = _report(tmp_path)
    assert report["status"] == 70
    manifest = _manifest(tmp_path, report)

    expected_outputs = [
        # sorted by relative path: "..evil", ".hidden", "a/b.txt", "a_b.txt", "empty.bin", "nested/...", ...
        ("..evil", "evil"),
        (".hidden", "hidden"),
        ("a/b.txt", "a_b.txt"),
        ("a_b.txt", "a_b-1.txt"),
        ("empty.bin", "empty.bin"),
        ("nested/deep/x.txt", "nested_deep_x.txt"),
        ("publish.log", "publish-1.log"),
        ("result.csv", "result.csv"),
        ("with space.txt", "with_space.txt"),
        ("ünïcode.csv", "_n_code.csv"),
    ]
    assert [(e.filename, e.type) for e in manifest] == [(name, "output") for _, name in expected_outputs] + [
        ("algorithm.log", "algorithmLog"),
        ("configure.log", "configurationLog"),
        ("publish.log", "publishLog"),
    ]
    assert [e.index for e in manifest] == list(range(len(manifest)))
    for (relative, _), entry in zip(expected_outputs, manifest, strict=False):
        assert _stored(tmp_path, entry) == files[relative]
    for entry in manifest:
        content = _stored(tmp_path, entry)
        assert entry.filesize == len(content)
        assert entry.sha256 == hashlib.sha256(content).hexdigest()
    stored_bytes = b"".join(_stored(tmp_path, entry) for entry in manifest)
    assert b"root:" not in stored_bytes and b"never published" not in stored_bytes
    assert report["count"] == len(manifest)
    assert report["bytes"] == sum(entry.filesize for entry in manifest)

    publish_log = _stored(tmp_path, manifest[-1]).decode()
    for skipped in ("skipped symlink outputs/passwd", "skipped symlink outputs/linkdir"):
        assert skipped in publish_log
    assert "skipped symlink outputs/nested/up" in publish_log
    assert "skipped special file outputs/pipe" in publish_log
    assert "every result stored" in publish_log  # the log is complete when stored
    # Everything stored sits flat in the job's folder: nothing escaped it.
    job_dir = tmp_path / "results" / JOB_ID
    assert sorted(p.name for p in job_dir.iterdir()) == sorted(
        [e.filename for e in manifest] + [layout.MANIFEST_NAME]
    )


def test_too_many_outputs_is_62_and_still_stores_the_logs(tmp_path: Path) -> None:
    data, adminlogs, _ = _volume(tmp_path)
    for index in range(4):
        _write(data / "outputs" / "many" / f"{index}.txt", b"x")
    _write(adminlogs / "configure.log", b"configure\n")
    assert main(_env(tmp_path, C2D_MAX_OUTPUT_FILES="3")) == 62
    report = _report(tmp_path)
    assert report["status"] == 62
    assert "more than 3 output files" in report["message"]
    manifest = _manifest(tmp_path, report)
    assert [e.type for e in manifest] == ["configurationLog", "publishLog"]
    assert report["count"] == 2


def test_exactly_the_cap_is_fine(tmp_path: Path) -> None:
    data, _, _ = _volume(tmp_path)
    for index in range(3):
        _write(data / "outputs" / f"{index}.txt", b"x")
    assert main(_env(tmp_path, C2D_MAX_OUTPUT_FILES="3")) == 0
    assert [e.filename for e in _manifest(tmp_path, _report(tmp_path))][:3] == ["0.txt", "1.txt", "2.txt"]


def test_after_a_failed_configure_only_logs_are_published(tmp_path: Path) -> None:
    data, adminlogs, _ = _volume(tmp_path)
    (data / "outputs").rmdir()
    _write(adminlogs / "configure.log", b"input 0 file 0: HTTP 404 from the data source\n")
    assert main(_env(tmp_path)) == 0
    manifest = _manifest(tmp_path, _report(tmp_path))
    assert [(e.index, e.type) for e in manifest] == [(0, "configurationLog"), (1, "publishLog")]


def test_log_symlinks_are_not_followed(tmp_path: Path) -> None:
    data, _, _ = _volume(tmp_path)
    (data / "logs" / "algorithm.log").symlink_to("/etc/passwd")
    assert main(_env(tmp_path)) == 0
    manifest = _manifest(tmp_path, _report(tmp_path))
    assert [e.type for e in manifest] == ["publishLog"]
    assert "skipped algorithmLog algorithm.log" in _stored(tmp_path, manifest[0]).decode()


def test_store_failure_is_62(tmp_path: Path) -> None:
    _volume(tmp_path)
    _write(tmp_path / "data" / "outputs" / "x.csv", b"x")
    blocked = tmp_path / "not-a-dir"
    blocked.write_bytes(b"")
    assert main(_env(tmp_path, RESULTS_ROOT=str(blocked))) == 62
    report = _report(tmp_path)
    assert report["status"] == 62
    assert report["message"].startswith("could not store outputs/x.csv")
    assert report["manifest"] == ""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"C2D_RESULT_STORE": "gcs"}, "C2D_RESULT_STORE='gcs' is not one of: ipfs, local, s3"),
        ({"C2D_RESULT_STORE": "s3"}, "the S3 result store needs a bucket (C2D_S3_BUCKET)"),
        ({"C2D_RESULT_STORE": "ipfs"}, "the IPFS result store needs C2D_IPFS_API_URL"),
        ({"WORKFLOWID": "../etc"}, "WORKFLOWID must be the job id"),
        ({"C2D_MAX_OUTPUT_FILES": "0"}, "C2D_MAX_OUTPUT_FILES must be at least 1"),
    ],
)
def test_bad_settings_are_62_with_a_clear_message(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    _volume(tmp_path)
    assert main(_env(tmp_path, **env)) == 62
    report = _report(tmp_path)
    assert report == {"status": 62, "message": report["message"], "manifest": "", "count": 0, "bytes": 0}
    assert expected in report["message"]


def test_runs_as_a_pod_program(tmp_path: Path) -> None:
    data, _, _ = _volume(tmp_path)
    _write(data / "outputs" / "out.txt", b"hello\n")
    _write(data / "logs" / "algorithm.log", b"ran\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.update(_env(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "c2d_defs.pods.publish"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored outputs/out.txt as out.txt: 6 bytes" in done.stdout
    report = _report(tmp_path)
    manifest = _manifest(tmp_path, report)
    assert [e.filename for e in manifest] == ["out.txt", "algorithm.log", "publish.log"]
    assert (report["status"], report["count"]) == (70, 3)
    assert report["bytes"] == sum(e.filesize for e in manifest)


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("result.csv", "result.csv"),
        ("dir/sub/file.txt", "dir_sub_file.txt"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "output"),
        ("...", "output"),
        (".env", "env"),
        ("a b\tc\nd.txt", "a_b_c_d.txt"),
        ("résumé.pdf", "r_sum_.pdf"),
        ("日本.csv", "__.csv"),
        ("x" * 300 + ".csv", "x" * 196 + ".csv"),
        ("\udcff.bin", "_.bin"),  # an undecodable byte in a file name
    ],
)
def test_safe_filename(relative: str, expected: str) -> None:
    name = safe_filename(relative)
    assert name == expected
    assert "/" not in name and not name.startswith(".") and len(name) <= 200


def test_unique_names_avoid_reserved_and_each_other() -> None:
    long = "y" * 250 + ".csv"
    names = unique_names(["a.csv", "a.csv", "a/csv", "publish.log", long, long], reserved=["publish.log"])
    assert names[:4] == ["a.csv", "a-1.csv", "a_csv", "publish-1.log"]
    assert names[4] == "y" * 196 + ".csv"
    assert names[5] == "y" * 194 + "-1.csv"
    assert len(set(names)) == len(names)


def test_an_output_named_like_the_attestation_is_renamed(tmp_path: Path) -> None:
    # The publish op adds attestation.json after this pod; an algorithm must not take its name.
    data, adminlogs, _ = _volume(tmp_path)
    _write(data / "outputs" / "attestation.json", b'{"forged": true}')
    _write(adminlogs / "configure.log", b"configure says hi\n")
    assert main(_env(tmp_path)) == 0
    names = [entry.filename for entry in _manifest(tmp_path, _report(tmp_path))]
    assert names[0] == "attestation-1.json" and "attestation.json" not in names


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("false", "outputs and the algorithm's log withheld: the job's output stages did not accept them"),
        (None, "outputs and the algorithm's log withheld: C2D_PUBLISH_OUTPUTS is not set"),
        ("", "C2D_PUBLISH_OUTPUTS is '', not 'true' or 'false'"),
        ("yes", "C2D_PUBLISH_OUTPUTS is 'yes', not 'true' or 'false'"),
        ("TRUE", "C2D_PUBLISH_OUTPUTS is 'TRUE', not 'true' or 'false'"),
        ("true ", "C2D_PUBLISH_OUTPUTS is 'true ', not 'true' or 'false'"),
        ("0", "C2D_PUBLISH_OUTPUTS is '0', not 'true' or 'false'"),
    ],
)
def test_anything_but_true_withholds_the_outputs_and_the_algorithm_log(
    tmp_path: Path, flag: str | None, said: str
) -> None:
    data, adminlogs, results = _volume(tmp_path)
    _write(data / "outputs" / "copy.csv", b"the dataset itself\n")
    _write(data / "logs" / "algorithm.log", b"the dataset itself\n")
    _write(adminlogs / "configure.log", b"fetched\n")
    env = _env(tmp_path)
    if flag is None:
        del env["C2D_PUBLISH_OUTPUTS"]
    else:
        env["C2D_PUBLISH_OUTPUTS"] = flag
    assert main(env) == 0
    manifest = _manifest(tmp_path, _report(tmp_path))
    assert [(e.filename, e.type) for e in manifest] == [
        ("configure.log", "configurationLog"),
        ("publish.log", "publishLog"),
    ]
    stored = {path.name for path in results.rglob("*") if path.is_file()}
    assert not {"copy.csv", "algorithm.log"} & stored, stored
    publish_log = _stored(tmp_path, manifest[1]).decode()
    assert said in publish_log and "copy.csv" not in publish_log


def test_true_publishes_the_outputs_and_the_algorithm_log(tmp_path: Path) -> None:
    data, _, _ = _volume(tmp_path)
    _write(data / "outputs" / "mean.txt", b"12.5\n")
    _write(data / "logs" / "algorithm.log", b"ran\n")
    assert main(_env(tmp_path, C2D_PUBLISH_OUTPUTS="true")) == 0
    manifest = _manifest(tmp_path, _report(tmp_path))
    assert [e.filename for e in manifest] == ["mean.txt", "algorithm.log", "publish.log"]
