"""The pod report: one model the pod programs write and the ops read back, on the same JSON."""

from __future__ import annotations

import subprocess
import sys

from c2d_core.status import JobStatus
from c2d_defs.pods.common import fit_termination_message
from c2d_defs.pods.report import AssetReport, ConfigureReport, FileReport, PublishReport


def test_a_configure_report_reads_back_as_written() -> None:
    report = ConfigureReport(status=31, message="input 0 file 0: HTTP 404 from the data source")
    report.inputs.append(AssetReport(did="did:op:1", files=[FileReport(index=0, size=3, sha256="ab")]))
    report.inputs[0].error = report.message
    # The JSON keeps the shape the pods always wrote: unset fields are left out.
    assert report.document() == {
        "status": 31,
        "message": report.message,
        "inputs": [
            {"did": "did:op:1", "files": [{"index": 0, "size": 3, "sha256": "ab"}], "error": report.message}
        ],
        "algorithm": {"files": []},
    }
    back = ConfigureReport.from_message(fit_termination_message(report.document()).decode())
    assert back == report and back is not None and back.job_status is JobStatus.DATA_PROVISIONING_FAILED


def test_a_publish_report_and_what_is_no_report() -> None:
    back = PublishReport.from_message('{"status":70,"message":"","manifest":"j/m.json","count":2,"bytes":9}')
    assert back is not None and (back.job_status, back.manifest, back.count) == (
        JobStatus.JOB_FINISHED,
        "j/m.json",
        2,
    )
    assert PublishReport.from_message("") is None
    assert PublishReport.from_message("not json") is None
    assert PublishReport.from_message("[70]") is None
    unknown = PublishReport.from_message('{"status": 99}')
    assert unknown is not None and unknown.status == 99 and unknown.job_status is None


def test_the_pod_programs_import_no_dagster_or_web3() -> None:
    code = (
        "import sys, c2d_defs.pods.configure, c2d_defs.pods.publish, c2d_defs.pods.report\n"
        "print(sorted(m for m in ('dagster', 'web3', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
