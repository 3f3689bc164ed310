"""Ocean's access service, `initialize` and `download`, for the assets jobs publish (issue 8).

A results asset's `access` service holds, encrypted for this Provider, file objects of our own type
`{"type": "c2dResult", "jobId", "index"}`: "result `index` of job `jobId`". Whoever holds an order of
the asset's datatoken downloads that result, streamed from the result store by the same code as
`computeResult`. The DDO cannot point this Provider at any job it likes: anyone may encrypt a files
document to the Provider's public key, so a c2dResult file is served only when the job itself records
this very DID as its results asset (the hidden tag `.dagster/c2d/results_did`, written by the engine
that published it), and only for a result the asset was published with
(`.dagster/c2d/results_asset_files`): the asset's owner may rewrite its DDO later, but not to reach the
job's logs or any result it was not published with.

Other file types (url, ipfs, ...) are refused with a 400: this Provider serves compute datasets to its
own engine, not downloads of third-party access assets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from c2d_core import engine
from c2d_core.ocean.signing import download_message
from c2d_core.result_assets import served_indexes
from c2d_core.result_stores import ResultStores
from c2d_core.workflow import JOB_ID_PATTERN
from provider_api import policy
from provider_api.assets import Assets, ResolvedAsset
from provider_api.auth import verify_request
from provider_api.dagster_jobs import BackendUnavailable, DagsterJobs
from provider_api.errors import OceanHTTPError, backend_error, bad_request, echo, not_found
from provider_api.fees import ProviderFees
from provider_api.jobs import JobRecord
from provider_api.nonces import NonceStore, NonceStoreUnavailable
from provider_api.orders import OrderError, ValidatedOrder, validate_order
from provider_api.result_files import ensure_results_published, read_job_manifest
from provider_api.schemas import FileInfo

if TYPE_CHECKING:
    from c2d_core.chain import Chain
    from provider_api.settings import ProviderSettings

C2D_RESULT = "c2dResult"
_GONE = "the results this asset serves are no longer available on this Provider"


@dataclass(frozen=True)
class DdoAccessService:
    """An asset's access service as a DDO lists it."""

    asset: ResolvedAsset
    index: int  # the service's position in the DDO: the order's serviceIndex
    service: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.service.get("id"))

    @property
    def datatoken(self) -> str:
        return str(self.service.get("datatokenAddress", ""))


def result_of(file_object: dict[str, Any], did: str, jobs: DagsterJobs) -> tuple[JobRecord, int]:
    """The job and result index a c2dResult file names, once the job vouches for this asset and the
    asset was published with that result."""
    kind = file_object.get("type")
    if kind != C2D_RESULT:
        raise bad_request(
            f"Unsupported type {echo(kind)} by this Provider: its access services serve compute "
            f"results ({C2D_RESULT}) only"
        )
    job_id, index = file_object.get("jobId"), file_object.get("index")
    if (
        not isinstance(job_id, str)
        or not JOB_ID_PATTERN.match(job_id)
        or not isinstance(index, int)
        or isinstance(index, bool)
        or index < 0
    ):
        raise bad_request(f"malformed {C2D_RESULT} file: it needs a jobId and an index")
    try:
        # As it is now, not as the status cache last saw it: storage expiry may have deleted the files.
        record = jobs.job(job_id, fresh=True)
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    if record is None or record.tags.get(engine.RESULTS_DID, "").lower() != did.lower():
        raise not_found(_GONE)
    if index not in served_indexes(record.tags):
        # What the owner may have put in the DDO after publishing (a log, a result left out): refused
        # as a file the asset does not have, whatever the encrypted files document says.
        raise bad_request(f"No such file: this asset was not published with result {index} of its job")
    return record, index


def result_file_infos(
    jobs: DagsterJobs,
    result_stores: Callable[[], ResultStores],
    did: str,
    files: list[dict[str, Any]],
    *,
    with_checksum: bool,
) -> list[FileInfo]:
    """fileinfo for a results asset's files, read from the job's manifest (nothing is fetched).

    ocean.py asks fileinfo for every file before it downloads; each c2dResult file answers with the
    result's name, size and (when asked) the sha256 the publish step recorded. A file whose job does
    not vouch for the asset, or whose results are gone, is reported invalid with the reason.
    """
    infos = []
    for position, file_object in enumerate(files):
        try:
            record, index = result_of(file_object, did, jobs)
            ensure_results_published(record)
            entries = read_job_manifest(result_stores(), record)
            if index >= len(entries):
                raise not_found(f"no result {index}: the job has {len(entries)}")
        except OceanHTTPError as error:
            if error.status_code >= 500:
                raise
            reason = error.body.get("error") if isinstance(error.body, dict) else None
            infos.append(
                FileInfo(index=position, valid=False, type=C2D_RESULT, error=str(reason or "invalid"))
            )
            continue
        entry = entries[index]
        infos.append(
            FileInfo(
                index=position,
                valid=True,
                type=C2D_RESULT,
                contentLength=str(entry.filesize),
                contentType="application/octet-stream",
                filename=entry.filename,
                **({"checksum": entry.sha256, "checksumType": "sha256"} if with_checksum else {}),
            )
        )
    return infos


class AccessService:
    """initialize and download of an asset's access service; one per Provider process."""

    def __init__(self, settings: ProviderSettings, chain: Chain, assets: Assets, fees: ProviderFees) -> None:
        self.settings = settings
        self.chain = chain
        self.assets = assets
        self.fees = fees

    def _access_service(self, did: str, service_id: str, consumer: str) -> DdoAccessService:
        """The DDO's access service, after Ocean's consumability checks (state, credentials)."""
        asset = self.assets.resolve(did, "documentId")
        policy.check_asset_consumable(asset.ddo, state=asset.state, consumer=consumer, resource="documentId")
        found = asset.service(service_id)
        if found is None:
            raise bad_request(f"Invalid serviceId: the asset has no service {echo(service_id)!r}")
        index, service = found
        if service.get("type") == "compute":
            raise bad_request("Use the initializeCompute endpoint to initialize compute jobs.")
        if service.get("type") != "access":
            raise bad_request(f"service {echo(service_id)!r} is not an access service")
        return DdoAccessService(asset=asset, index=index, service=service)

    def _order(self, access: DdoAccessService, tx_id: str, consumer: str) -> ValidatedOrder:
        # No environment: an access fee names none, and the fee's providerData binds datatoken, service
        # id, DID and consumer, so a compute fee or another consumer's fee cannot pass for this one.
        return validate_order(
            self.chain,
            tx_id=tx_id,
            datatoken=access.datatoken,
            nft=access.asset.nft_address,
            service_id=access.id,
            service_index=access.index,
            service_timeout=int(access.service.get("timeout") or 0),
            consumer=consumer,
            provider_address=self.settings.address,
            did=access.asset.did,
        )

    def _file(self, access: DdoAccessService, file_index: int) -> dict[str, Any]:
        files = self.assets.service_files(access.asset, access.service)
        if file_index >= len(files):
            raise bad_request(f"No such fileIndex {file_index}: the service has {len(files)} file(s)")
        return files[file_index]

    def initialize(
        self,
        *,
        did: str,
        service_id: str,
        consumer: str,
        transfer_tx_id: str | None,
        file_index: int | None,
        nonces: NonceStore,
        jobs: DagsterJobs,
    ) -> dict[str, Any]:
        """`{validOrder}` for a still-valid order, else the datatoken, the consumer's nonce and an
        access fee to order with (after checking the file, when `file_index` names one)."""
        access = self._access_service(did, service_id, consumer)
        if transfer_tx_id:
            try:
                order = self._order(access, transfer_tx_id, consumer)
            except OrderError:
                pass  # not a usable order: quote a fee for a new one
            else:
                return {"validOrder": order.tx_id}
        if file_index is not None:
            record, _index = result_of(self._file(access, file_index), access.asset.did, jobs)
            ensure_results_published(record)
        try:
            nonce = nonces.current(consumer)
        except NonceStoreUnavailable as error:
            raise backend_error(str(error)) from None
        return {
            "datatoken": access.datatoken,
            "nonce": nonce,
            "providerFee": self.fees.access_fee(access.datatoken, access.id, access.asset.did, consumer),
        }

    def download(
        self,
        *,
        did: str,
        service_id: str,
        consumer: str,
        transfer_tx_id: str,
        file_index: int,
        nonce: Any,
        signature: Any,
        nonces: NonceStore,
        jobs: DagsterJobs,
    ) -> tuple[JobRecord, int]:
        """The job result a signed download of an ordered access service serves."""
        # The nonce is spent before anything else happens, as on every signed route.
        verify_request(nonces, consumer, download_message(did), nonce, signature)
        access = self._access_service(did, service_id, consumer)
        try:
            self._order(access, transfer_tx_id, consumer)
        except OrderError as error:
            order = echo(transfer_tx_id, 66)
            refusal = f"the order {order} does not allow this download: {error.message}"
            raise OceanHTTPError(400, {"error": refusal}) from None
        return result_of(self._file(access, file_index), access.asset.did, jobs)
