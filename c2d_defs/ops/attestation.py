"""The publish stage's last result: the job's attestation (c2d_core.attestation), signed with the Provider's
key and stored beside the outputs and logs as a result of type `attestation`.

It is signed here, in the run worker, and never in the publish pod: the pod handles files the algorithm
wrote, and the key must stay out of reach of those. Signing needs only what the stages recorded (the
configure pod's report of the inputs' sha256, the publish pod's manifest, the run's tags), never a file's
content. The Provider's own process would keep the key in one place, but it would have to sign on every
read and list a result the manifest does not hold; docs/api.md ("Job attestation") weighs the two.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from c2d_core import attestation, engine
from c2d_core.results import MANIFEST_NAME, ResultEntry, ResultStore, manifest_document
from c2d_core.status import JobStatus, Stage
from c2d_core.workflow import Workflow
from c2d_defs.pods.report import ConfigureReport


class AttestationLog(Protocol):
    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


@dataclass(frozen=True)
class Attested:
    """The attestation's manifest entry, and where the manifest that now lists it was stored."""

    entry: ResultEntry
    manifest_location: str


def attest_job(
    *,
    workflow: Workflow | None,
    provisioned: ConfigureReport | None,
    status: JobStatus,
    tags: Mapping[str, str],
    manifest: list[ResultEntry],
    store: ResultStore,
    key_file: Path,
    finished_at: float,
    log: AttestationLog,
) -> Attested | None:
    """Sign and store the attestation of the job whose results `manifest` lists, and store the manifest
    again with it appended; None (and a warning saying why) when the job cannot be attested truthfully.
    Never raises: a job without its attestation still ends as it would have."""
    reason = _why_not(workflow, provisioned, manifest)
    if reason:
        log.warning(f"no attestation: {reason}")
        return None
    assert workflow is not None and provisioned is not None  # _why_not checked both
    try:
        from eth_account import Account

        try:
            account = Account.from_key(key_file.read_text().strip())
        except OSError as error:
            log.warning(f"no attestation: the provider key file cannot be read ({error.strerror})")
            return None
        job = engine.JobTags.from_tags(tags)
        started_at = engine.epoch(tags.get(engine.phase_tag(Stage.CONFIGURE, "started"))) or finished_at
        # The configure pod reports the inputs in the workflow's order, up to the first it could not reach.
        reported = [
            item
            for item, asked in zip(provisioned.inputs, workflow.inputs, strict=False)
            if item.did == asked.did
        ]
        document = attestation.build_attestation(
            workflow,
            provider=account.address,
            input_files=[[f.model_dump() for f in item.files] for item in reported],
            algorithm_files=[f.model_dump() for f in provisioned.algorithm.files],
            results=[entry.public() for entry in manifest],
            status=int(status),
            status_text=status.text,
            started_at=started_at,
            finished_at=finished_at,
            algorithm_termination=job.algorithm_termination,
            algorithm_exit_code=job.algorithm_exit_code,
        )
        content = attestation.dump_file(attestation.sign_attestation(account, document))
        job_id = workflow.job_id
        stored = store.put(job_id, attestation.FILENAME, io.BytesIO(content))
        entry = ResultEntry(
            index=len(manifest),
            filename=attestation.FILENAME,
            filesize=stored.size,
            type="attestation",
            sha256=stored.sha256,
            location=stored.location,
        )
        listed = store.put(job_id, MANIFEST_NAME, io.BytesIO(manifest_document([*manifest, entry])))
    except Exception as error:
        # Never the error's text: a store error may quote its endpoint.
        log.warning(f"no attestation: signing or storing it failed ({type(error).__name__})")
        return None
    log.info(f"attestation signed by {account.address}: {len(manifest)} result(s), sha256 {stored.sha256}")
    return Attested(entry, listed.location)


def _why_not(
    workflow: Workflow | None, provisioned: ConfigureReport | None, manifest: list[ResultEntry]
) -> str:
    if workflow is None:
        return "the job has no valid workflow"
    if not manifest:
        return "no results were stored"
    if provisioned is None:
        # e.g. a job the stage watchdog publishes for: its worker died with the configure report.
        return "the configure stage's report of the inputs is not at hand"
    if provisioned.truncated:
        return "the configure report was cut to fit its termination message, so its file list is incomplete"
    return ""
