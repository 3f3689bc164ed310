"""The configure pod (Ocean's pod-configuration): fetch a job's inputs, algorithm and DDOs into /data.

Run as `python -m c2d_defs.pods.configure`. Reports 30, 31 or 32 in its termination message and as its
exit code (0 for 30). Plaintext file locations exist only in this process: never in its log or report.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from c2d_core.status import JobStatus
from c2d_defs.pods import layout
from c2d_defs.pods.common import (
    EnvError,
    PodLog,
    Terminated,
    env_float,
    env_int,
    explain_validation,
    isolate_interpreter,
    load_pod_extensions,
    raise_on_sigterm,
    write_termination_message,
)

if TYPE_CHECKING:
    # Imported where they are used (HTTP at the first fetch, crypto at the first sealed blob): this
    # program starts in a fresh interpreter for every job (tests/unit/test_pod_imports.py). The
    # workflow's and the report's models too, so that they are built after `isolate_interpreter`.
    import httpx

    from c2d_core.fetch import Clock, FetchLimits, SourceSettings
    from c2d_core.netguard import NetPolicy
    from c2d_core.workflow import AlgorithmSpec, DatasetInput, FileObject, ServiceFiles, Workflow
    from c2d_defs.pods.report import ConfigureReport, FileReport

# EngineSettings' defaults (c2d_core.settings), repeated so the pod need not import pydantic-settings;
# tests/unit/test_pod_imports.py holds them equal.
DEFAULT_CONFIGURE_DEADLINE = 900
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_FETCH_RETRIES = 3
DEFAULT_MAX_INPUT_BYTES = 1024 * 1024 * 1024
# The algorithm runs as another (unprivileged) uid: it must read inputs and write outputs and logs.
READABLE_DIR, WRITABLE_DIR, READABLE_FILE, EXECUTABLE_FILE = 0o755, 0o777, 0o644, 0o755
SUBDIR_MODES = {
    "inputs": READABLE_DIR,
    "transformations": READABLE_DIR,
    "ddos": READABLE_DIR,
    "outputs": WRITABLE_DIR,
    "logs": WRITABLE_DIR,
}


class StageFailure(Exception):
    """Ends the input or algorithm being provisioned; the message is safe to log and report."""


@dataclass(frozen=True)
class ConfigureSettings:
    workflow_path: Path
    volume: Path
    termination_log: Path
    provider_key_file: Path
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: int = DEFAULT_FETCH_RETRIES
    # The whole stage's fetch budget, shared by all files.
    deadline: float = float(DEFAULT_CONFIGURE_DEADLINE - 5)
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES
    # Where fetches may go besides public addresses (EngineSettings validated it): C2D_FETCH_ALLOW.
    fetch_allow: tuple[str, ...] = ()
    ipfs_gateway: str = ""  # "" = c2d_core.fetch's default
    arweave_gateway: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ConfigureSettings:
        return cls(
            workflow_path=Path(environ.get("WORKFLOW") or layout.WORKFLOW_PATH),
            volume=Path(environ.get("VOLUME") or layout.VOLUME_PATH),
            termination_log=Path(environ.get("TERMINATION_LOG") or layout.TERMINATION_LOG_PATH),
            provider_key_file=Path(environ.get("PROVIDER_KEY_FILE") or layout.PROVIDER_KEY_PATH),
            connect_timeout=env_float(environ, "C2D_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            read_timeout=env_float(environ, "C2D_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
            retries=env_int(environ, "C2D_FETCH_RETRIES", DEFAULT_FETCH_RETRIES, minimum=0),
            # A little under the runner's hard deadline, so the pod still gets to write its report.
            deadline=env_float(environ, "C2D_FETCH_DEADLINE", float(max(1, DEFAULT_CONFIGURE_DEADLINE - 5))),
            max_bytes=env_int(environ, "C2D_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES, 1),
            fetch_allow=tuple(environ.get("C2D_FETCH_ALLOW", "").split(",")),
            ipfs_gateway=environ.get("C2D_IPFS_GATEWAY", ""),
            arweave_gateway=environ.get("C2D_ARWEAVE_GATEWAY", ""),
        )

    def limits(self, deadline: float) -> FetchLimits:
        from c2d_core.fetch import FetchLimits

        return FetchLimits(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries=self.retries,
            deadline=deadline,
            max_bytes=self.max_bytes,
        )

    def policy(self) -> NetPolicy:
        from c2d_core.netguard import NetPolicy

        try:
            # The engine refused an allow-everything list outside development before passing it here.
            return NetPolicy.from_allow_list(self.fetch_allow, allow_everything=True)
        except ValueError as error:
            raise EnvError(str(error)) from None

    def sources(self) -> SourceSettings:
        from c2d_core.fetch import SourceSettings

        return SourceSettings(
            ipfs_gateway=self.ipfs_gateway or SourceSettings.ipfs_gateway,
            arweave_gateway=self.arweave_gateway or SourceSettings.arweave_gateway,
        )


def _file_report(index: int, size: int, sha256: str) -> FileReport:
    from c2d_defs.pods.report import FileReport

    return FileReport(index=index, size=size, sha256=sha256)


class Configurator:
    """One run of the configure stage over one workflow; fills `report` as it goes."""

    def __init__(
        self,
        settings: ConfigureSettings,
        log: PodLog,
        report: ConfigureReport,
        client: httpx.Client | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.log = log
        self.report = report
        # Given (tests), or made at the first fetch and closed by `close`.
        self.client = client
        self._owned_client: httpx.Client | None = None
        self._policy: NetPolicy | None = None
        self.clock = clock
        self.deadline_at = clock() + settings.deadline
        self._provider_key: str | None = None
        self.data = settings.volume
        self.inputs_dir = self.data / "inputs"
        self.transformations_dir = self.data / "transformations"
        self.ddos_dir = self.data / "ddos"

    def close(self) -> None:
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None

    # --- the stage ---------------------------------------------------------------------------------

    def run(self) -> JobStatus:
        self._make_folders()
        workflow = self._load_workflow()
        if workflow is None:
            return JobStatus.DATA_PROVISIONING_FAILED
        self.log(
            f"job {workflow.job_id}: {len(workflow.inputs)} input(s), "
            f"algorithm {workflow.algorithm.did_hash or 'raw'}"
        )
        failures = [
            message for index, item in enumerate(workflow.inputs) if (message := self._input(index, item))
        ]
        if failures:
            # Ocean's rule: with any dataset missing, the algorithm is not even fetched.
            self.report.message = failures[0] + (
                f" (and {len(failures) - 1} more input(s) failed)" if len(failures) > 1 else ""
            )
            self.log("algorithm not fetched: data provisioning failed")
            return JobStatus.DATA_PROVISIONING_FAILED
        message = self._algorithm(workflow.algorithm)
        if message:
            self.report.message = message
            return JobStatus.ALGORITHM_PROVISIONING_FAILED
        self.report.message = JobStatus.PROVISIONING_SUCCESS.text
        return JobStatus.PROVISIONING_SUCCESS

    def _make_folders(self) -> None:
        for name, mode in SUBDIR_MODES.items():
            folder = self.data / name
            try:
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(mode)
            except OSError as error:
                # As Ocean: the runner may have created it already (as another user); a real problem
                # surfaces when a file cannot be written there.
                self.log(f"folder {name}: {error.strerror or type(error).__name__}")

    def _load_workflow(self) -> Workflow | None:
        try:
            raw = self.settings.workflow_path.read_bytes()
        except OSError as error:
            self.report.message = f"cannot read the workflow document: {error.strerror}"
            self.log(self.report.message)
            return None
        from c2d_core.workflow import Workflow

        try:
            return Workflow.model_validate_json(raw)
        except ValidationError as error:
            self.report.message = explain_validation(error, "workflow")
            self.log(self.report.message)
            return None

    # --- inputs ------------------------------------------------------------------------------------

    def _input(self, index: int, item: DatasetInput) -> str | None:
        """Provision one dataset; returns the failure message, or None when all its files arrived."""
        from c2d_defs.pods.report import AssetReport

        entry = AssetReport(did=item.did)
        self.report.inputs.append(entry)
        self.log(f"input {index} ({item.did_hash}): started")
        started = self.clock()
        try:
            folder = self.inputs_dir / item.did_hash
            _make_dir(folder, READABLE_DIR)
            if item.ddo is not None:
                self._write_ddo(item.did_hash, item.ddo)
            files = self._resolve_files(item.files, item.ddo, item.service_id, f"input {index}")
            for file_index, file_object in enumerate(files):
                label = f"input {index} file {file_index}"
                fetched = self._fetch(file_object, folder / str(file_index), item.userdata, file_index, label)
                entry.files.append(fetched)
        except StageFailure as failure:
            message = str(failure)
            entry.error = message
            self.log(f"input {index} ({item.did_hash}): FAILED: {message}")
            return message
        self.log(
            f"input {index} ({item.did_hash}): {len(entry.files)} file(s) in {self.clock() - started:.2f} s"
        )
        return None

    # --- algorithm ---------------------------------------------------------------------------------

    def _algorithm(self, algorithm: AlgorithmSpec) -> str | None:
        name = algorithm.did_hash or "raw"
        from c2d_defs.pods.report import AssetReport

        entry = AssetReport(did=algorithm.did or "raw")
        self.report.algorithm = entry
        self.log(f"algorithm ({name}): started")
        started = self.clock()
        try:
            rawcode, custom_data = self._algorithm_secrets(algorithm)
            # Written before the algorithm is fetched, as Ocean does; `{}` so algorithms can always read it.
            custom = json.dumps(custom_data or {}).encode()
            _write_file(self.inputs_dir / layout.ALGO_CUSTOM_DATA, custom, READABLE_FILE)
            if algorithm.did and algorithm.ddo is not None:
                self._write_ddo(algorithm.did_hash, algorithm.ddo)
            if rawcode is not None:
                code = rawcode.encode("utf-8")
                target = self.transformations_dir / "algorithm"
                _write_file(target, code, EXECUTABLE_FILE)
                digest = hashlib.sha256(code).hexdigest()
                entry.files.append(_file_report(0, len(code), digest))
                self.log(f"algorithm file 0: raw code, {len(code)} bytes, sha256 {digest}")
            else:
                assert algorithm.files is not None  # AlgorithmSpec: published means files are given
                files = self._resolve_files(algorithm.files, algorithm.ddo, algorithm.service_id, "algorithm")
                for file_index, file_object in enumerate(files):
                    target = self.transformations_dir / ("algorithm" if file_index == 0 else str(file_index))
                    label = f"algorithm file {file_index}"
                    fetched = self._fetch(file_object, target, algorithm.userdata, file_index, label)
                    entry.files.append(fetched)
                    if file_index == 0:
                        _chmod(target, EXECUTABLE_FILE)
        except StageFailure as failure:
            message = str(failure)
            entry.error = message
            self.log(f"algorithm ({name}): FAILED: {message}")
            return message
        self.log(f"algorithm ({name}): {len(entry.files)} file(s) in {self.clock() - started:.2f} s")
        return None

    # --- shared steps ------------------------------------------------------------------------------

    def _algorithm_secrets(self, algorithm: AlgorithmSpec) -> tuple[str | None, dict[str, Any] | None]:
        """The raw code and custom data: as given, or opened from the Provider's sealed blob
        (c2d_core.sealed), which keeps them out of the run config the Dagster UI shows."""
        if algorithm.encrypted_secrets is None:
            return algorithm.rawcode, algorithm.algocustomdata
        from c2d_core.crypto import CryptoError
        from c2d_core.sealed import open_secrets

        try:
            rawcode, custom = open_secrets(
                self._key("algorithm"), algorithm.encrypted_secrets, algorithm.rawcode_sha256
            )
        except CryptoError as error:
            raise StageFailure(f"algorithm: {error}") from None
        self.log("algorithm: opened the sealed code and custom data")
        return rawcode, custom

    def _write_ddo(self, did_hash: str, ddo: dict[str, Any]) -> None:
        # DDOs hold only the encrypted files blob, so they are safe for the algorithm to read.
        _write_file(self.ddos_dir / did_hash, json.dumps(ddo).encode("utf-8"), READABLE_FILE)
        self.log(f"ddo {did_hash}: written")

    def _resolve_files(
        self, files: ServiceFiles, ddo: dict[str, Any] | None, service_id: str | None, what: str
    ) -> Sequence[FileObject]:
        if files.files is not None:
            return files.files
        assert files.encrypted_files is not None  # ServiceFiles: exactly one of the two
        nft, datatoken = _expected_addresses(ddo, service_id)
        from c2d_core.crypto import CryptoError, decrypt_service_files

        try:
            raw_files = decrypt_service_files(
                self._key(what),
                files.encrypted_files,
                expected_nft_address=nft,
                expected_datatoken_address=datatoken,
            )
        except CryptoError as error:
            raise StageFailure(f"{what}: {error}") from None
        self.log(f"{what}: decrypted {len(raw_files)} file object(s)")
        return [_file_object(raw, f"{what} file {index}") for index, raw in enumerate(raw_files)]

    def _key(self, what: str) -> str:
        if self._provider_key is None:
            try:
                self._provider_key = self.settings.provider_key_file.read_text().strip()
            except OSError as error:
                raise StageFailure(
                    f"{what}: encryptedFiles need the provider key, which cannot be read ({error.strerror})"
                ) from None
        return self._provider_key

    def _http(self) -> tuple[httpx.Client, NetPolicy]:
        """The stage's one client (its TLS context and connections reused across files) and the policy
        it enforces; it connects only to addresses the policy checked, on every hop (c2d_core.netguard)."""
        if self._policy is None:
            self._policy = self.settings.policy()
        if self.client is None:
            from c2d_core.netguard import guarded_client

            if TUNE_SOCKET_READS:
                import httpcore

                httpcore.HTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES
            self.client = self._owned_client = guarded_client(self._policy)
        return self.client, self._policy

    def _fetch(
        self, file_object: FileObject, target: Path, userdata: dict[str, Any] | None, index: int, label: str
    ) -> FileReport:
        remaining = self.deadline_at - self.clock()
        if remaining <= 0:
            raise StageFailure(
                f"{label}: the stage's {self.settings.deadline:.0f}-second fetch deadline has passed"
            )
        client, policy = self._http()
        from c2d_core.fetch import FetchError, fetch_to_file

        started = self.clock()
        try:
            fetched = fetch_to_file(
                file_object,
                target,
                self.settings.limits(remaining),
                userdata=userdata,
                client=client,
                label=label,
                url_guard=policy.check,
                sources=self.settings.sources(),
            )
        except FetchError as error:
            raise StageFailure(error.message) from None
        _chmod(target, READABLE_FILE)
        self.log(f"{label}: {fetched.size} bytes, sha256 {fetched.sha256}, {self.clock() - started:.2f} s")
        return _file_report(index, fetched.size, fetched.sha256)


def _expected_addresses(ddo: dict[str, Any] | None, service_id: str | None) -> tuple[str | None, str | None]:
    """The NFT and datatoken the DDO names for this service, to check the decrypted blob against."""
    if not isinstance(ddo, dict):
        return None, None
    nft = ddo.get("nftAddress") if isinstance(ddo.get("nftAddress"), str) else None
    datatoken = None
    for service in ddo.get("services") or []:
        if isinstance(service, dict) and service.get("id") == service_id:
            value = service.get("datatokenAddress")
            datatoken = value if isinstance(value, str) else None
    return nft, datatoken


def _file_object(raw: dict[str, Any], label: str) -> FileObject:
    # Ocean's DDOs spell methods in lower case ("get"); the model takes Ocean's upper-case form.
    from c2d_core.workflow import FileObject

    fields = dict(raw)
    if isinstance(fields.get("method"), str):
        fields["method"] = fields["method"].upper()
    try:
        return FileObject.model_validate(fields)
    except ValidationError as error:
        raise StageFailure(explain_validation(error, f"{label} object")) from None


def _make_dir(folder: Path, mode: int) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(mode)
    except OSError as error:
        raise StageFailure(f"cannot create a folder in the job volume: {error.strerror}") from None


def _chmod(path: Path, mode: int) -> None:
    try:
        path.chmod(mode)
    except OSError as error:
        raise StageFailure(f"cannot set permissions in the job volume: {error.strerror}") from None


def _write_file(path: Path, content: bytes, mode: int) -> None:
    try:
        path.write_bytes(content)
        path.chmod(mode)
    except OSError as error:
        raise StageFailure(f"cannot write to the job volume: {error.strerror}") from None


def _where(error: BaseException) -> str:
    """File and line of the innermost frame: enough to debug, and unlike the message it holds no URL."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is None:
        return ""
    return f" at {os.path.basename(trace.tb_frame.f_code.co_filename)}:{trace.tb_lineno}"


def main(environ: Mapping[str, str] | None = None, client: httpx.Client | None = None) -> int:
    from c2d_defs.pods.report import ConfigureReport

    environ = os.environ if environ is None else environ
    log = PodLog("configure")
    report = ConfigureReport(status=0)
    termination_log = Path(environ.get("TERMINATION_LOG") or layout.TERMINATION_LOG_PATH)
    started = time.monotonic()
    try:
        settings = ConfigureSettings.from_env(environ)
        # The file sources C2D_EXTENSIONS registers; a missing one fails the stage by name, at once.
        load_pod_extensions(environ)
        configurator = Configurator(settings, log, report, client=client)
        try:
            status = configurator.run()
        finally:
            configurator.close()
    except (EnvError, Terminated) as error:
        status, report.message = JobStatus.DATA_PROVISIONING_FAILED, f"configure: {error}"
        log(report.message)
    except Exception as error:
        # Never the exception's text: an HTTP library error would quote the URL it failed on.
        status = JobStatus.DATA_PROVISIONING_FAILED
        report.message = f"configure failed unexpectedly ({type(error).__name__}{_where(error)})"
        log(report.message)
    report.status = int(status)
    log(f"status {int(status)} {status.text} after {time.monotonic() - started:.2f} s")
    write_termination_message(termination_log, report.document(), log)
    return layout.EXIT_OK if status is JobStatus.PROVISIONING_SUCCESS else int(status)


# Socket reads of the pod process. httpcore reads 64 KiB at a time; a read returns whatever has
# arrived (so a trickling source is not held back), and fewer, larger reads move a large input about
# 1.5x faster through h11 (bench/staging.py). Set for the pod's process only (TUNE_SOCKET_READS),
# when its client is made, not in the library.
SOCKET_READ_BYTES = 256 * 1024
TUNE_SOCKET_READS = False

if __name__ == "__main__":
    isolate_interpreter(os.environ)
    raise_on_sigterm()
    TUNE_SOCKET_READS = True
    sys.exit(main())
