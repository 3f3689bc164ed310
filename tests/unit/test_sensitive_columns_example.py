"""The example output stage's two plain parts (examples/extensions): where the sensitive names come from
(`declared_columns`, from the workflow's DDOs and the settings) and the pod program's check of header
rows (plain and gzipped CSV and TSV, BOM, quoting, fail closed on what it cannot read). The stage runs
end to end in tests/integration/test_sensitive_columns_stage.py."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from c2d_core import environments
from c2d_core.workflow import Workflow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "extensions"
DID = "did:op:" + hashlib.sha256(b"people").hexdigest()


def _load(name: str) -> ModuleType:
    """The example module under a private name (pydantic resolves its annotations through
    sys.modules), so a test that imports it as a deployment does gets its own copy."""
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pod() -> ModuleType:
    return _load("sensitive_columns_pod")


@pytest.fixture
def columns_module() -> Iterator[ModuleType]:
    parsers = dict(environments._SETTINGS_PARSERS)
    try:
        yield _load("sensitive_columns")
    finally:
        environments._SETTINGS_PARSERS.clear()
        environments._SETTINGS_PARSERS.update(parsers)


def _workflow(*infos: Any) -> Workflow:
    inputs = []
    for index, info in enumerate(infos):
        ddo = None if info is None else {"metadata": {"name": "x", "additionalInformation": info}}
        did = "did:op:" + hashlib.sha256(f"people-{index}".encode()).hexdigest()
        inputs.append({"did": did, "serviceId": "compute", "ddo": ddo, "files": {"encryptedFiles": "00"}})
    return Workflow.model_validate(
        {
            "jobId": "a" * 32,
            "owner": "0x" + "1" * 40,
            "environment": "e",
            "inputs": inputs,
            "algorithm": {
                "rawcode": "print(1)",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )


def test_names_come_from_each_ddo_and_the_settings_without_repeats(columns_module: ModuleType) -> None:
    settings = columns_module.SensitiveColumnsSettings(columns=["email"])
    workflow = _workflow({"sensitiveColumns": ["ssn", " name "]}, {"sensitiveColumns": ["ssn", "dob"]}, None)
    assert columns_module.declared_columns(workflow, settings) == ["email", "ssn", "name", "dob"]
    # No additionalInformation, or not the key: nothing marked.
    plain = columns_module.SensitiveColumnsSettings()
    assert columns_module.declared_columns(_workflow({"other": 1}, None), plain) == []
    # Another key, as the environment's settings choose.
    other = columns_module.SensitiveColumnsSettings(metadata_key="piiColumns")
    assert columns_module.declared_columns(_workflow({"piiColumns": ["ip"]}), other) == ["ip"]


@pytest.mark.parametrize("value", ["ssn", [""], [1], [{"name": "ssn"}], ["x" * 300]])
def test_a_malformed_list_is_an_error_naming_the_field(columns_module: ModuleType, value: Any) -> None:
    with pytest.raises(columns_module.DeclaredColumnsError, match=r"additionalInformation\.sensitiveColumns"):
        columns_module.declared_columns(
            _workflow({"sensitiveColumns": value}), columns_module.SensitiveColumnsSettings()
        )


def test_bad_settings_are_refused_by_name_where_environments_load(columns_module: ModuleType) -> None:
    for settings, field in (
        ({"colums": []}, "colums"),
        ({"columns": [""]}, "columns"),
        ({"metadata_key": "a b"}, "metadata_key"),
    ):
        config = environments.OutputStageConfig(name="sensitive_columns", settings=settings)
        with pytest.raises(environments.OutputStageError, match=field):
            config.parsed_settings()


def _volume(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = tmp_path / "outputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (tmp_path / "outputs").mkdir(parents=True, exist_ok=True)
    return tmp_path


def _verdict(
    pod: ModuleType, volume: Path, columns: list[str], case_sensitive: bool = False
) -> dict[str, Any]:
    termination = volume / "termination-log"
    environ = {
        "VOLUME": str(volume),
        "TERMINATION_LOG": str(termination),
        pod.COLUMNS_ENV: json.dumps(columns),
        pod.CASE_SENSITIVE_ENV: "true" if case_sensitive else "false",
    }
    code = pod.main(environ)
    report = json.loads(termination.read_text())
    report["exit"] = code
    return report


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("a.csv", b"id,SSN,total\n1,x,2\n"),
        ("nested/b.tsv", b"id\tssn\n1\tx\n"),
        ("c.csv.gz", gzip.compress(b"ssn,total\n")),
        ("d.CSV", b"\xef\xbb\xbfssn,total\n"),  # a BOM before the first name
        ("e.csv", b'"id"," ssn ",total\n'),  # quoted and padded
    ],
)
def test_a_table_with_a_sensitive_column_is_rejected(
    pod: ModuleType, tmp_path: Path, name: str, content: bytes
) -> None:
    report = _verdict(pod, _volume(tmp_path, {name: content}), ["ssn"])
    assert report["exit"] == 0 and report["verdict"] == "reject"
    assert (
        report["message"]
        == f"outputs/{name} has the column 'ssn', which the dataset's metadata marks as sensitive"
    )


def test_other_tables_and_files_pass(pod: ModuleType, tmp_path: Path) -> None:
    volume = _volume(
        tmp_path,
        {
            "by_age.csv": b"age,visits\n36,11\n",
            "ssn.csv": b"count\n3\n",  # the file's name is not a column
            "notes.txt": b"ssn\n",  # not a table this stage reads
            "summary.json": json.dumps({"ssn": 1}).encode(),  # values under a key: not checked
            "rows.csv": b"id,total\nssn,3\n",  # a value, not a header
        },
    )
    report = _verdict(pod, volume, ["ssn"])
    assert report == {
        "verdict": "pass",
        "message": "3 table(s) checked, none with a sensitive column",
        "tables": 3,
        "exit": 0,
    }


def test_case_sensitive_settings(pod: ModuleType, tmp_path: Path) -> None:
    volume = _volume(tmp_path, {"a.csv": b"SSN,total\n"})
    assert _verdict(pod, volume, ["ssn"], case_sensitive=True)["verdict"] == "pass"
    assert _verdict(pod, volume, ["SSN"], case_sensitive=True)["verdict"] == "reject"


def test_what_cannot_be_read_is_rejected(pod: ModuleType, tmp_path: Path) -> None:
    report = _verdict(pod, _volume(tmp_path, {"broken.csv.gz": b"not gzip at all"}), ["ssn"])
    assert report["verdict"] == "reject"
    assert (
        report["message"]
        == "outputs/broken.csv.gz cannot be read (BadGzipFile), so it cannot be checked for sensitive columns"
    )
    long_header = b"a," * (pod.HEADER_LIMIT // 2 + 1)
    report = _verdict(pod, _volume(tmp_path / "long", {"wide.csv": long_header}), ["ssn"])
    assert report["verdict"] == "reject" and "header row longer than" in report["message"]


def test_a_symlinked_output_is_skipped_as_publish_skips_it(pod: ModuleType, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.csv"
    secret.write_bytes(b"ssn\n")
    volume = _volume(tmp_path / "v", {})
    (volume / "outputs" / "link.csv").symlink_to(secret)
    assert _verdict(pod, volume, ["ssn"])["verdict"] == "pass"


def test_bad_input_is_an_error_that_withholds_the_outputs(pod: ModuleType, tmp_path: Path) -> None:
    volume = _volume(tmp_path, {"a.csv": b"x\n"})
    termination = volume / "termination-log"
    code = pod.main(
        {"VOLUME": str(volume), "TERMINATION_LOG": str(termination), pod.COLUMNS_ENV: '{"ssn": 1}'}
    )
    assert code == 1
    assert json.loads(termination.read_text()) == {
        "verdict": "error",
        "message": "the check failed (ValueError)",
    }
