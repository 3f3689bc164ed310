"""The publish pod (Ocean's pod-publishing): store a job's outputs and logs, then its results manifest.

Run as `python -m c2d_defs.pods.publish`. Reports 70 (exit 0) or 62 (exit 62). Everything under
/data/outputs was written by the consumer's algorithm, so it is treated as hostile: no symlink is
followed, no special file opened, and every name is rewritten into a flat, safe result filename.
The outputs and the algorithm's log are stored only when `C2D_PUBLISH_OUTPUTS` is exactly `true`
(the engine sets it on every publish pod); `false`, any other value or none stores only the
configure and publish logs and the manifest.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# Not c2d_core.results or c2d_core.review: their models would load pydantic in every publish pod.
from c2d_core.result_store_base import ResultStore, ResultType, manifest_bytes, store_key_problem
from c2d_core.status import JobStatus
from c2d_defs.pods import layout
from c2d_defs.pods.common import (
    EnvError,
    PodLog,
    Terminated,
    env_int,
    isolate_interpreter,
    raise_on_sigterm,
    write_termination_message,
)

MAX_NAME_LENGTH = 200
MAX_EXTENSION_LENGTH = 16
ALGORITHM_LOG_NAME = "algorithm.log"
CONFIGURE_LOG_NAME = "configure.log"
PUBLISH_LOG_NAME = "publish.log"
# Set by the engine (c2d_defs.stage_pods.publish_spec) to "true" or "false"; anything else withholds.
PUBLISH_OUTPUTS_ENV = "C2D_PUBLISH_OUTPUTS"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# EngineSettings' default and c2d_core.workflow's job id pattern, repeated so the pod imports neither
# pydantic-settings nor the workflow models (tests/unit/test_pod_imports.py holds them equal).
DEFAULT_MAX_OUTPUT_FILES = 1000
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}\Z")


# --- result stores -----------------------------------------------------------------------------------


def make_result_store(environ: Mapping[str, str]) -> ResultStore:
    """The store `C2D_RESULT_STORE` names, set up from the pod's environment. S3 credentials: AWS_*
    variables, or the shared credentials file the runner mounts as a secret (AWS_SHARED_CREDENTIALS_FILE);
    never in the pod spec's env, so never in a Job manifest."""
    from c2d_core.result_stores import result_store_from_settings

    kind = (environ.get("C2D_RESULT_STORE") or "local").strip()
    try:
        s3 = None
        if kind == "s3":
            from c2d_core.s3 import S3Settings  # pydantic, for the S3 store's pods only

            s3 = S3Settings.from_env(environ)
        return result_store_from_settings(
            kind,
            local_root=Path(environ.get("RESULTS_ROOT") or layout.RESULTS_PATH),
            s3=s3,
            ipfs_api_url=environ.get("C2D_IPFS_API_URL", ""),
        )
    except ValueError as error:
        raise EnvError(str(error)) from None


# --- names and files ---------------------------------------------------------------------------------


def safe_filename(relative_path: str) -> str:
    """A flat result name for an output path: `a/b c.csv` -> `a_b_c.csv`; never empty, hidden or long."""
    name = _UNSAFE.sub("_", relative_path.replace("/", "_")).lstrip(".")
    if not name:
        return "output"
    return _cap(name, MAX_NAME_LENGTH)


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) < MAX_EXTENSION_LENGTH:
        return stem, "." + extension
    return name, ""


def _cap(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    stem, extension = _split_extension(name)
    return stem[: limit - len(extension)] + extension


def unique_names(relative_paths: Iterable[str], reserved: Iterable[str] = ()) -> list[str]:
    """Safe names for the paths, in order, made distinct with `-1`, `-2`, ... before the extension."""
    taken = set(reserved)
    names = []
    for relative_path in relative_paths:
        name = safe_filename(relative_path)
        stem, extension = _split_extension(name)
        counter = 0
        while name in taken:
            counter += 1
            suffix = f"-{counter}"
            name = stem[: MAX_NAME_LENGTH - len(suffix) - len(extension)] + suffix + extension
        taken.add(name)
        names.append(name)
    return names


@dataclass
class OutputScan:
    files: list[tuple[str, Path]] = field(default_factory=list)  # (relative path, path), sorted
    too_many: bool = False


def scan_outputs(root: Path, cap: int, log: PodLog) -> OutputScan:
    """Regular files under `root`, sorted by relative path; symlinks and special files are skipped.

    Iterative (a deep tree cannot exhaust the stack), and it stops once more than `cap` files are seen.
    """
    scan = OutputScan()
    if root.is_symlink():
        log("skipped symlink outputs")
        return scan
    if not root.is_dir():
        log("no outputs folder")
        return scan
    pending: list[tuple[Path, str]] = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            log(f"could not list outputs/{prefix}: {error.strerror or type(error).__name__}")
            continue
        for entry in entries:
            relative = prefix + entry.name
            try:
                if entry.is_symlink():
                    log(f"skipped symlink outputs/{relative}")
                elif entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), relative + "/"))
                elif entry.is_file(follow_symlinks=False):
                    scan.files.append((relative, Path(entry.path)))
                    if len(scan.files) > cap:
                        scan.too_many = True
                        return scan
                else:
                    log(f"skipped special file outputs/{relative}")
            except OSError as error:
                log(f"skipped outputs/{relative}: {error.strerror or type(error).__name__}")
    scan.files.sort(key=lambda item: item[0])
    return scan


def open_regular(path: Path) -> BinaryIO:
    """Open a file only if it is a regular file itself: O_NOFOLLOW refuses a symlink swapped in, and
    O_NONBLOCK keeps a FIFO from hanging the pod before fstat turns it away."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# --- the stage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishSettings:
    job_id: str
    # The result store key the results go under: the job id, or its held key for a job the review
    # gate holds (c2d_core.review), which the Provider never serves.
    store_key: str
    volume: Path
    adminlogs: Path
    termination_log: Path
    max_output_files: int
    # False when the job's output stages did not accept its outputs: what the algorithm wrote (its
    # outputs and its log) is withheld, only the engine's configure and publish logs are stored.
    publish_outputs: bool = True
    # Why they are withheld when the engine's flag was missing or unreadable (for the publish log).
    withheld_because: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PublishSettings:
        job_id = (environ.get("WORKFLOWID") or "").strip()
        if not JOB_ID_PATTERN.match(job_id):
            raise EnvError("WORKFLOWID must be the job id, 32 lowercase hex characters")
        default_cap = DEFAULT_MAX_OUTPUT_FILES
        store_key = (environ.get("C2D_RESULTS_KEY") or job_id).strip()
        problem = store_key_problem(job_id, store_key)
        if problem:
            raise EnvError(f"C2D_RESULTS_KEY: {problem}")
        publish_outputs, withheld_because = publish_outputs_flag(environ)
        return cls(
            job_id=job_id,
            store_key=store_key,
            volume=Path(environ.get("VOLUME") or layout.VOLUME_PATH),
            adminlogs=Path(environ.get("ADMINLOGS") or layout.ADMINLOGS_PATH),
            termination_log=Path(environ.get("TERMINATION_LOG") or layout.TERMINATION_LOG_PATH),
            max_output_files=env_int(environ, "C2D_MAX_OUTPUT_FILES", default_cap, 1),
            publish_outputs=publish_outputs,
            withheld_because=withheld_because,
        )


def publish_outputs_flag(environ: Mapping[str, str]) -> tuple[bool, str]:
    """`C2D_PUBLISH_OUTPUTS`: whether the engine cleared the algorithm's outputs and log, and, when
    the flag is neither of the two values the engine writes, why they are withheld. Fails closed: a
    missing or mistyped flag (an operator's hand-run publish, a store variable gone wrong) must not
    publish outputs that no output stage accepted."""
    raw = environ.get(PUBLISH_OUTPUTS_ENV)
    if raw == "true":
        return True, ""
    if raw == "false":
        return False, ""
    shown = "not set" if raw is None else f"{raw[:40]!r}"
    return False, f"{PUBLISH_OUTPUTS_ENV} is {shown}, not 'true' or 'false'"


class Publisher:
    """One run of the publish stage: stores results in manifest order and reports what happened."""

    def __init__(self, settings: PublishSettings, store: ResultStore, log: PodLog) -> None:
        self.settings = settings
        self.store = store
        self.log = log
        # The manifest's entries, as c2d_core.results.ResultEntry dumps them (same keys, same order).
        self.entries: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def run(self) -> tuple[JobStatus, str, str]:
        """Returns (status, message, manifest location or "")."""
        settings = self.settings
        if not settings.publish_outputs:
            # Not even listed: names of withheld outputs stay out of the manifest and this log. The
            # algorithm's log goes with them: the algorithm writes it as freely as its outputs, so it
            # can carry the same copy of the inputs.
            why = settings.withheld_because or "the job's output stages did not accept them"
            self.log(
                f"outputs and the algorithm's log withheld: {why}; publishing the configure and "
                "publish logs only"
            )
            scan = OutputScan([], False)
        else:
            scan = scan_outputs(settings.volume / "outputs", settings.max_output_files, self.log)
        outputs = scan.files
        if scan.too_many:
            # All or nothing: a consumer must not mistake a cut-off subset for the algorithm's results.
            self.errors.append(
                f"the algorithm wrote more than {settings.max_output_files} output files, the most a job "
                "may publish; no outputs were published, only the logs"
            )
            self.log(self.errors[-1])
            outputs = []
        # The attestation is added by the publish op after this pod (c2d_defs/ops/attestation.py).
        reserved = (ALGORITHM_LOG_NAME, CONFIGURE_LOG_NAME, PUBLISH_LOG_NAME, layout.ATTESTATION_NAME)
        names = unique_names((relative for relative, _ in outputs), reserved)
        self.log(f"{len(outputs)} output file(s) to publish")
        for (relative, path), name in zip(outputs, names, strict=True):
            self._store_file(path, name, "output", f"outputs/{relative}")
        if settings.publish_outputs:
            self._store_file(settings.volume / "logs" / "algorithm.log", ALGORITHM_LOG_NAME, "algorithmLog")
        self._store_file(settings.adminlogs / "configure.log", CONFIGURE_LOG_NAME, "configurationLog")

        total = sum(entry["filesize"] for entry in self.entries)
        status = JobStatus.RESULTS_UPLOAD_FAILED if self.errors else JobStatus.JOB_FINISHED
        # The last lines of the publish log are written before it is stored, so it is complete
        # (Ocean uploads its own log while still writing it, and loses the end).
        self.log(f"stored {len(self.entries)} result(s), {total} bytes; storing this log and the manifest")
        # What this pod did, not the job's status: a failed algorithm's job also ends 70, and its
        # publish log must not read as a success of the job.
        self.log(f"publishing failed: {self.errors[0]}" if self.errors else "every result stored")
        self._store_bytes(self.log.text().encode("utf-8", "backslashreplace"), PUBLISH_LOG_NAME, "publishLog")
        manifest = self._store_manifest()
        if not manifest:
            status = JobStatus.RESULTS_UPLOAD_FAILED
        message = self.errors[0] if self.errors else f"published {len(self.entries)} result(s)"
        if len(self.errors) > 1:
            message += f" (and {len(self.errors) - 1} more error(s))"
        return status, message, manifest

    def _add(self, name: str, kind: ResultType, location: str, size: int, sha256: str) -> None:
        self.entries.append(
            {
                "index": len(self.entries),
                "filename": name,
                "filesize": size,
                "type": kind,
                "sha256": sha256,
                "location": location,
            }
        )

    def _store_file(self, path: Path, name: str, kind: ResultType, shown: str | None = None) -> None:
        shown = shown or f"{kind} {name}"
        try:
            handle = open_regular(path)
        except FileNotFoundError:
            if kind != "output":
                self.log(f"no {kind} to publish")
                return
            self._failed(f"{shown} disappeared before it was stored")
            return
        except OSError as error:
            # ELOOP: a symlink put in place of a log; skipped like symlinks among the outputs.
            self.log(f"skipped {shown}: {error.strerror or 'not a regular file'}")
            return
        try:
            with handle:
                stored = self.store.put(self.settings.store_key, name, handle)
        except (OSError, ValueError) as error:
            self._failed(f"could not store {shown}: {_reason(error)}")
            return
        self._add(name, kind, stored.location, stored.size, stored.sha256)
        self.log(f"stored {shown} as {name}: {stored.size} bytes, sha256 {stored.sha256}")

    def _store_bytes(self, content: bytes, name: str, kind: ResultType) -> None:
        try:
            stored = self.store.put(self.settings.store_key, name, io.BytesIO(content))
        except (OSError, ValueError) as error:
            self._failed(f"could not store the {kind}: {_reason(error)}")
            return
        self._add(name, kind, stored.location, stored.size, stored.sha256)

    def _store_manifest(self) -> str:
        document = manifest_bytes(self.entries)
        try:
            stored = self.store.put(self.settings.store_key, layout.MANIFEST_NAME, io.BytesIO(document))
        except (OSError, ValueError) as error:
            self._failed(f"could not store the results manifest: {_reason(error)}")
            return ""
        return stored.location

    def _failed(self, message: str) -> None:
        self.errors.append(message)
        self.log(message)


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)[:200] or type(error).__name__


def publish_report(status: int, message: str, manifest: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The termination report: c2d_defs.pods.report.PublishReport's document, written without its
    model (pydantic) in this process; the op reads it with the model, and
    tests/unit/test_pod_publish.py holds the two equal."""
    return {
        "status": status,
        "message": message,
        "manifest": manifest,
        "count": len(entries),
        "bytes": sum(entry["filesize"] for entry in entries),
    }


def main(environ: Mapping[str, str] | None = None, store: ResultStore | None = None) -> int:
    environ = os.environ if environ is None else environ
    log = PodLog("publish")
    termination_log = Path(environ.get("TERMINATION_LOG") or layout.TERMINATION_LOG_PATH)
    started = time.monotonic()
    publisher: Publisher | None = None
    manifest = ""
    try:
        settings = PublishSettings.from_env(environ)
        publisher = Publisher(settings, store or make_result_store(environ), log)
        status, message, manifest = publisher.run()
    except (EnvError, Terminated) as error:
        status, message = JobStatus.RESULTS_UPLOAD_FAILED, f"publish: {error}"
        log(message)
    except Exception as error:
        status = JobStatus.RESULTS_UPLOAD_FAILED
        message = f"publish failed unexpectedly ({type(error).__name__})"
        log(message)
    entries = publisher.entries if publisher is not None else []
    report = publish_report(int(status), message, manifest, entries)
    outcome = (
        "published"
        if status is JobStatus.JOB_FINISHED
        else f"publishing failed ({int(status)} {status.text})"
    )
    log(f"finished, {outcome}, after {time.monotonic() - started:.2f} s")
    write_termination_message(termination_log, report, log)
    return layout.EXIT_OK if status is JobStatus.JOB_FINISHED else int(status)


if __name__ == "__main__":
    isolate_interpreter(os.environ)
    raise_on_sigterm()
    sys.exit(main())
