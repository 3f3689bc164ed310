"""The configure and publish pod programs import only what they use (issue 14, item 3).

Each pod starts a fresh interpreter for every job, so what it imports is paid on every job. These tests
run the programs as the sandbox runs them (`python -I -m ...`, a real job's work: an encrypted input
fetched from a loopback origin, a raw algorithm; outputs stored in the local result store) under
`python -X importtime`, and hold the modules imported to a budget: a count and a list of packages that
must never load. The budget is on modules counted, never on seconds (timings are for bench/).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from fixtures_http import HttpOrigin

from c2d_core import attestation, settings, workflow
from c2d_core.crypto import encrypt_for, public_key_of
from c2d_core.results import ResultEntry
from c2d_defs.pods import common, configure, layout, publish
from c2d_defs.pods.report import PublishReport
from c2d_defs.stage_pods import POD_PROGRAM_INTERPRETER

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "0123456789abcdef0123456789abcdef"
DID = "did:op:" + "a" * 64

# What neither program may import: the settings library and what it drags in (asyncio), the CLI
# packages httpx would load, cffi's C parser, Dagster, the chain libraries and the cloud SDK, and the
# package metadata pydantic's plugin loader reads (common.isolate_interpreter: no plugins in pods).
NEVER = (
    "importlib.metadata",
    "pydantic_settings",
    "asyncio",
    "click",
    "rich",
    "pygments",
    "cffi",
    "pycparser",
    "dagster",
    "web3",
    "eth_account",
    "boto3",
    "botocore",
    "c2d_core.settings",
    "c2d_core.attestation",
)
# Modules counted by -X importtime (first imports, the interpreter's own start included), measured
# when the programs were made lean (416 and 233) plus some room; before, configure loaded 582 and
# publish 312. The publish pod without pydantic (its report, manifest entries and store interface are
# plain Python): 113; the configure pod without pydantic's plugin lookup: 404.
CONFIGURE_BUDGET = 420
PUBLISH_BUDGET = 125
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)\s*$")


def imported(stderr: str) -> list[str]:
    """The modules `-X importtime` reported as loaded, in the order they were first imported.

    A package the program refused (common.isolate_interpreter: None in sys.modules) is reported too,
    as an import that took microseconds and loaded nothing; those lines are left out. A line's
    children are the deeper lines just before it (the report is in post-order), so a refused import is
    one of those names with no deeper line before it.
    """
    entries = [
        (len(match.group(1)), match.group(2))
        for line in stderr.splitlines()
        if (match := _IMPORT_LINE.match(line))
    ]
    loaded = []
    for index, (depth, name) in enumerate(entries):
        had_children = index > 0 and entries[index - 1][0] > depth
        if name in common.UNUSED_OPTIONAL_PACKAGES and not had_children:
            continue
        loaded.append(name)
    return loaded


def run_program(module: str, env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("C2D_", "PYTHON"))}
    done = subprocess.run(
        [sys.executable, *POD_PROGRAM_INTERPRETER[1:], "-X", "importtime", "-m", module],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, imported(done.stderr)


def forbidden(modules: list[str]) -> list[str]:
    return [name for name in modules if any(name == bad or name.startswith(bad + ".") for bad in NEVER)]


def test_the_configure_pod_imports_only_what_a_job_uses(http_origin: HttpOrigin, tmp_path: Path) -> None:
    key = Account.create().key.hex()
    (tmp_path / "provider-key").write_text(key)
    files = {
        "nftAddress": "0x" + "1" * 40,
        "datatokenAddress": "0x" + "2" * 40,
        "files": [{"type": "url", "url": http_origin.url("data.csv"), "method": "GET"}],
    }
    document = {
        "jobId": JOB_ID,
        "owner": "0x" + "9" * 40,
        "environment": "ocean-compute",
        "inputs": [
            {
                "did": DID,
                "serviceId": "compute",
                "files": {"encryptedFiles": encrypt_for(public_key_of(key), json.dumps(files).encode())},
            }
        ],
        "algorithm": {
            "rawcode": "print('hi')\n",
            "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim"},
        },
    }
    (tmp_path / "workflow.json").write_text(json.dumps(document))
    (tmp_path / "data").mkdir()
    code, modules = run_program(
        "c2d_defs.pods.configure",
        {
            "WORKFLOW": str(tmp_path / "workflow.json"),
            "VOLUME": str(tmp_path / "data"),
            "TERMINATION_LOG": str(tmp_path / "termination-log"),
            "PROVIDER_KEY_FILE": str(tmp_path / "provider-key"),
            "C2D_FETCH_ALLOW": "127.0.0.1/32",
        },
        tmp_path,
    )
    report = json.loads((tmp_path / "termination-log").read_text())
    assert code == 0 and report["status"] == 30, report
    # The job's work really ran: decrypted, fetched over HTTP, written.
    assert {"c2d_core.crypto", "httpx", "c2d_core.fetch"} <= set(modules)
    assert (tmp_path / "data" / "inputs" / DID.removeprefix("did:op:") / "0").read_bytes()
    assert forbidden(modules) == []
    assert len(modules) <= CONFIGURE_BUDGET, f"{len(modules)} modules imported: {modules}"


def test_the_publish_pod_of_a_local_store_imports_no_pydantic_http_or_crypto(tmp_path: Path) -> None:
    data, adminlogs, results = tmp_path / "data", tmp_path / "adminlogs", tmp_path / "results"
    for folder in (data / "outputs", data / "logs", adminlogs, results):
        folder.mkdir(parents=True)
    (data / "outputs" / "out.txt").write_text("42\n")
    (data / "logs" / "algorithm.log").write_text("ran\n")
    code, modules = run_program(
        "c2d_defs.pods.publish",
        {
            "WORKFLOWID": JOB_ID,
            "VOLUME": str(data),
            "ADMINLOGS": str(adminlogs),
            "RESULTS_ROOT": str(results),
            "C2D_RESULT_STORE": "local",
            "C2D_PUBLISH_OUTPUTS": "true",
            "TERMINATION_LOG": str(tmp_path / "termination-log"),
        },
        tmp_path,
    )
    report = json.loads((tmp_path / "termination-log").read_text())
    assert code == 0 and report["status"] == 70 and report["count"] == 3, report
    # Written without the report's model, read back by the op with it: the same document.
    parsed = PublishReport.from_message(json.dumps(report))
    assert parsed is not None and parsed.document() == report
    # Its manifest too: entries the model reads back unchanged, in Ocean's order.
    manifest = json.loads((results / report["manifest"]).read_text())
    assert [ResultEntry.model_validate(entry).model_dump() for entry in manifest] == manifest
    assert [entry["type"] for entry in manifest] == ["output", "algorithmLog", "publishLog"]
    assert forbidden(modules) == []
    # No pydantic at all: the manifest's entries, the report and the store interface are plain Python.
    assert not {"pydantic", "pydantic_core", "httpx", "httpcore", "ssl"} & set(modules)
    assert not {"c2d_core.crypto", "c2d_core.workflow", "c2d_core.results", "c2d_core.s3"} & set(modules)
    assert len(modules) <= PUBLISH_BUDGET, f"{len(modules)} modules imported: {modules}"


def test_an_extension_pod_keeps_every_installed_package_importable() -> None:
    """Isolation never blocks what an extension module may use."""
    code = (
        "import sys; from c2d_defs.pods.common import isolate_interpreter;"
        "isolate_interpreter({'C2D_EXTENSIONS': 'x'}); import cffi; print(sys.modules['cffi'] is not None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"
    blocked = "from c2d_defs.pods.common import isolate_interpreter; isolate_interpreter({}); import cffi"
    refused = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "import of cffi halted" in refused.stderr


@pytest.mark.parametrize(
    ("pod_value", "engine_field"),
    [
        (configure.DEFAULT_CONFIGURE_DEADLINE, "configure_deadline"),
        (configure.DEFAULT_CONNECT_TIMEOUT, "connect_timeout"),
        (configure.DEFAULT_READ_TIMEOUT, "read_timeout"),
        (configure.DEFAULT_FETCH_RETRIES, "fetch_retries"),
        (configure.DEFAULT_MAX_INPUT_BYTES, "max_input_bytes"),
        (publish.DEFAULT_MAX_OUTPUT_FILES, "max_output_files"),
    ],
)
def test_the_pods_defaults_are_the_engines(pod_value: object, engine_field: str) -> None:
    assert pod_value == settings.EngineSettings.model_fields[engine_field].default


def test_the_pods_names_and_patterns_are_the_engines() -> None:
    assert layout.ATTESTATION_NAME == attestation.FILENAME
    assert publish.JOB_ID_PATTERN.pattern == workflow.JOB_ID_PATTERN.pattern
    assert set(common.UNUSED_OPTIONAL_PACKAGES) <= set(NEVER)
