"""c2d_defs.ops.attestation: the publish op signs the job's attestation from what the stages recorded,
stores it beside the results and lists it in the manifest; a job it cannot attest truthfully gets none,
with a warning saying why, and still ends as it would have."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from eth_account import Account

from c2d_core.attestation import FILENAME, verify_attestation, verify_files
from c2d_core.engine import ALGORITHM_EXIT_CODE, ALGORITHM_TERMINATION, phase_tag
from c2d_core.results import MANIFEST_NAME, LocalResultStore, ResultEntry, read_manifest
from c2d_core.status import JobStatus, Stage
from c2d_core.workflow import Workflow
from c2d_defs.ops.attestation import attest_job
from c2d_defs.pods.report import ConfigureReport

JOB_ID = "fedcba9876543210fedcba9876543210"
DID = "did:op:" + "ab" * 32
KEY = Account.create()


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warning(self, msg: str) -> None:
        self.lines.append("WARNING " + msg)


def workflow() -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": JOB_ID,
            "owner": "0x" + "11" * 20,
            "environment": "ocean-compute",
            "chainId": 8996,
            "inputs": [{"did": DID, "serviceId": "compute", "files": {"encryptedFiles": "0xab"}}],
            "algorithm": {
                "rawcode": "print(1)\n",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )


def report(truncated: bool | None = None) -> ConfigureReport:
    return ConfigureReport.model_validate(
        {
            "status": 30,
            "truncated": truncated,
            "inputs": [
                {
                    "did": DID,
                    "files": [{"index": 0, "size": 4, "sha256": hashlib.sha256(b"data").hexdigest()}],
                }
            ],
            "algorithm": {
                "did": "raw",
                "files": [{"index": 0, "size": 9, "sha256": hashlib.sha256(b"print(1)\n").hexdigest()}],
            },
        }
    )


def stored(store: LocalResultStore, name: str, content: bytes, kind: str) -> ResultEntry:
    obj = store.put(JOB_ID, name, io.BytesIO(content))
    return ResultEntry(
        index=0, filename=name, filesize=obj.size, type=kind, sha256=obj.sha256, location=obj.location
    )  # type: ignore[arg-type]


def attest(tmp_path: Path, **overrides):
    store = LocalResultStore(tmp_path / "results")
    manifest = [stored(store, "out.txt", b"42\n", "output")]
    manifest.append(stored(store, "algorithm.log", b"ran\n", "algorithmLog").model_copy(update={"index": 1}))
    key_file = tmp_path / "provider-key"
    key_file.write_text(KEY.key.hex())
    log = Log()
    arguments = (
        dict(
            workflow=workflow(),
            provisioned=report(),
            status=JobStatus.JOB_FINISHED,
            tags={
                phase_tag(Stage.CONFIGURE, "started"): "1796290982.5",
                ALGORITHM_TERMINATION: "Completed",
                ALGORITHM_EXIT_CODE: "0",
            },
            manifest=manifest,
            store=store,
            key_file=key_file,
            finished_at=1796291000.0,
            log=log,
        )
        | overrides
    )
    return attest_job(**arguments), store, manifest, log


def test_the_attestation_is_stored_listed_and_vouches_for_every_result(tmp_path: Path) -> None:
    attested, store, _, log = attest(tmp_path)
    assert attested is not None
    assert (attested.entry.index, attested.entry.filename, attested.entry.type) == (
        2,
        FILENAME,
        "attestation",
    )
    assert attested.manifest_location == f"{JOB_ID}/{MANIFEST_NAME}"
    assert [e.type for e in read_manifest(store, JOB_ID)] == ["output", "algorithmLog", "attestation"]
    folder = tmp_path / "results" / JOB_ID
    document = verify_attestation((folder / FILENAME).read_bytes(), KEY.address)
    assert [c.outcome for c in verify_files(document, folder, ignore=(FILENAME, MANIFEST_NAME))] == [
        "ok",
        "ok",
    ]
    assert document.inputs[0].files[0].sha256 == hashlib.sha256(b"data").hexdigest()
    assert (document.date_started, document.date_finished) == ("2026-12-03T09:43:02Z", "2026-12-03T09:43:20Z")
    assert (document.algorithm_termination, document.algorithm_exit_code) == ("Completed", 0)
    assert any(line.startswith(f"attestation signed by {KEY.address}") for line in log.lines)


def test_a_cut_configure_report_gives_no_attestation(tmp_path: Path) -> None:
    attested, _, _, log = attest(tmp_path, provisioned=report(truncated=True))
    assert attested is None and not (tmp_path / "results" / JOB_ID / FILENAME).exists()
    assert "WARNING no attestation: the configure report was cut" in log.lines[-1]


def test_no_configure_report_gives_no_attestation(tmp_path: Path) -> None:
    attested, _, _, log = attest(tmp_path, provisioned=None)
    assert attested is None and "configure stage's report" in log.lines[-1]


def test_an_unreadable_key_gives_no_attestation_and_no_error(tmp_path: Path) -> None:
    attested, _, _, log = attest(tmp_path, key_file=tmp_path / "absent")
    assert attested is None
    assert (
        log.lines[-1]
        == "WARNING no attestation: the provider key file cannot be read (No such file or directory)"
    )
