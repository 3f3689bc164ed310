"""The compute flow behind the routes: resolve assets, apply the policy, check orders, quote fees,
and turn a valid start request into a `Workflow` for the engine.

Ordering matters for safety: everything here runs after the request's signature and nonce were
checked (the nonce is spent first, so a replay cannot reach the chain or Dagster), and nothing is
submitted until every input's order and the algorithm's order are proven on chain.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from c2d_core.chain import ZERO_ADDRESS
from c2d_core.environments import Environment, Environments, UnknownEnvironmentError
from c2d_core.ocean.checksums import files_checksum
from c2d_core.workflow import OutputRequest, Workflow, canonical_tx_id
from provider_api import policy
from provider_api.assets import AssetError, DdoResolver, ResolvedAsset
from provider_api.errors import OceanHTTPError, bad_request, echo, field_errors, resource_error
from provider_api.params import WholeNumber

if TYPE_CHECKING:
    from c2d_core.chain import Chain
    from provider_api.settings import ProviderSettings

WEI = 10**18
RequestT = TypeVar("RequestT", bound=BaseModel)


class _Request(BaseModel):
    # Clients send keys we do not use (ocean.py's `additionalInputs`, ocean.js extras): ignore them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _canonical_tx(value: Any) -> Any:
    # A transferTxId in any case, with or without 0x, becomes the one form that orders are checked
    # in and agreements are tagged and claimed under; anything else is left for the order check to refuse.
    return canonical_tx_id(value) or value


class InputRef(_Request):
    document_id: str = Field(alias="documentId", min_length=1)
    service_id: str = Field(alias="serviceId", min_length=1)
    transfer_tx_id: str | None = Field(default=None, alias="transferTxId")
    userdata: dict[str, Any] | None = None

    @field_validator("userdata", mode="before")
    @classmethod
    def _json_userdata(cls, value: Any) -> Any:
        return _json_object(value, "userdata")

    @field_validator("transfer_tx_id")
    @classmethod
    def _tx(cls, value: str | None) -> str | None:
        return _canonical_tx(value)


class RawAlgorithm(_Request):
    rawcode: str | None = None
    url: str | None = None
    container: dict[str, Any]


class AlgorithmRef(_Request):
    document_id: str | None = Field(default=None, alias="documentId")
    service_id: str | None = Field(default=None, alias="serviceId")
    transfer_tx_id: str | None = Field(default=None, alias="transferTxId")
    userdata: dict[str, Any] | None = None
    algocustomdata: dict[str, Any] | None = None
    meta: RawAlgorithm | None = None

    @field_validator("userdata", "algocustomdata", mode="before")
    @classmethod
    def _json_fields(cls, value: Any) -> Any:
        return _json_object(value, "algocustomdata")

    @field_validator("transfer_tx_id")
    @classmethod
    def _tx(cls, value: str | None) -> str | None:
        return _canonical_tx(value)


class StartRequest(_Request):
    consumer_address: str = Field(alias="consumerAddress", pattern=r"^0x[0-9a-fA-F]{40}$")
    signature: str = Field(min_length=1)
    nonce: str
    environment: str = Field(min_length=1)
    dataset: InputRef
    algorithm: AlgorithmRef
    additional_datasets: list[InputRef] = Field(
        default_factory=list, alias="additionalDatasets", max_length=16
    )
    # Ocean's `output` object, validated by `parse_output` (a JSON object, or one in a JSON string).
    output: Any = None

    @field_validator("nonce", mode="before")
    @classmethod
    def _nonce_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class ComputeSection(_Request):
    env: str = Field(min_length=1)
    valid_until: WholeNumber = Field(alias="validUntil")


class InitializeRequest(_Request):
    datasets: list[InputRef] = Field(min_length=1, max_length=17)
    algorithm: AlgorithmRef
    compute: ComputeSection
    consumer_address: str = Field(alias="consumerAddress", pattern=r"^0x[0-9a-fA-F]{40}$")


def checksum_address(address: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))


def _json_object(value: Any, name: str) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} must be a JSON object") from error
    return value


def parse_request(model: type[RequestT], params: dict[str, Any]) -> RequestT:
    """Parse a request's parameters; missing or malformed fields are a 400 naming each field."""
    if "additionalInputs" in params and "additionalDatasets" not in params:
        # ocean.py sends its additional datasets under this name.
        params = {**params, "additionalDatasets": params["additionalInputs"]}
    try:
        return model.model_validate(params)
    except ValidationError as error:
        errors = {}
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]) or "body"
            errors[where] = item["msg"]
        raise field_errors(errors) from None


# Keys of Ocean's historical output object that name its own services (Brizo, Aquarius, the secret
# store, a whitelist): ocean.js still types them. They have no meaning here and are dropped, while any
# other unknown key is refused, so a misspelt `publishOutput` cannot silently publish nothing.
LEGACY_OUTPUT_KEYS = frozenset(
    {
        "brizoAddress",
        "brizoUri",
        "metadataUri",
        "nodeUri",
        "providerAddress",
        "providerUri",
        "secretStoreUri",
        "whitelist",
    }
)


def parse_output(raw: Any, consumer: str, provider_address: str = "") -> OutputRequest | None:
    """The start request's `output`, validated (400 naming each bad field), or None to publish nothing.

    Strict types (a JSON `true`, not `"yes"` or 1), size-capped metadata, and a real owner: a minted
    NFT cannot go to the zero address, and the Provider keeps no asset of its own (the engine would
    refuse to publish it, after the job ran). The owner defaults to the consumer who signed the request.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise field_errors({"output": "must be a JSON object (or a string holding one)"}) from None
    if not isinstance(raw, dict):
        raise field_errors({"output": "must be a JSON object (or a string holding one)"})
    fields = {key: value for key, value in raw.items() if key not in LEGACY_OUTPUT_KEYS}
    try:
        output = OutputRequest.model_validate(fields, strict=True)
    except ValidationError as error:
        errors: dict[str, str] = {}
        for item in error.errors():
            where = ".".join(["output", *(str(p) for p in item["loc"])])
            errors[where] = str(item["msg"]).removeprefix("Value error, ")
        raise field_errors(errors) from None
    if output.owner == ZERO_ADDRESS:
        raise field_errors({"output.owner": "the zero address cannot own the results asset"})
    if not output.publish_output:
        return None
    owner = checksum_address(output.owner or consumer)
    if provider_address and owner.lower() == provider_address.lower():
        raise field_errors({"output.owner": "the Provider's own address cannot own the results asset"})
    return output.model_copy(update={"owner": owner})


@dataclass
class CheckedInput:
    ref: InputRef
    asset: ResolvedAsset
    service_index: int
    service: dict[str, Any]
    resource: str


@dataclass
class CheckedAlgorithm:
    ref: AlgorithmRef
    asset: ResolvedAsset | None
    service_index: int | None
    service: dict[str, Any] | None
    container: dict[str, Any]


class ComputeService:
    """One per Provider process: the policy and order logic shared by initializeCompute and start."""

    def __init__(
        self,
        settings: ProviderSettings,
        environments: Environments,
        resolver: DdoResolver,
        chain: Chain,
    ) -> None:
        self.settings = settings
        self.environments = environments
        self.resolver = resolver
        self.chain = chain
        self._checksums: dict[str, str] = {}
        self._checksum_lock = threading.Lock()

    # -- environments -------------------------------------------------------------------------

    def environment(self, env_id: str) -> Environment:
        try:
            return self.environments.get(env_id)
        except UnknownEnvironmentError:
            raise bad_request("Compute environment does not exist") from None

    def consumer_address_of(self, env: Environment) -> str:
        """The address that orders name as `consumer` for this environment (Ocean's env consumerAddress)."""
        return env.consumer_address or self.settings.address

    def fee_token_of(self, env: Environment) -> str:
        return env.fee_token or self.chain.address("Ocean")

    # -- assets and policy --------------------------------------------------------------------

    def resolve(self, did: str, resource: str) -> ResolvedAsset:
        try:
            asset = self.resolver.resolve(did)
        except AssetError:
            raise resource_error(resource, "did_not_found") from None
        if asset is None:
            raise resource_error(resource, "did_not_found")
        return asset

    def check_input(self, ref: InputRef, resource: str, consumer: str, main: bool) -> CheckedInput:
        asset = self.resolve(ref.document_id, resource)
        policy.check_asset_consumable(asset.ddo, state=asset.state, consumer=consumer, resource=resource)
        service = policy.check_input_service(asset.ddo, ref.service_id, resource, main=main)
        found = asset.service(ref.service_id)
        assert found is not None  # check_input_service found it
        self._check_files_readable(asset, service, resource)
        return CheckedInput(ref=ref, asset=asset, service_index=found[0], service=service, resource=resource)

    def service_files(self, asset: ResolvedAsset, service: dict[str, Any]) -> list[dict[str, Any]]:
        """The decrypted file objects of one of the asset's services (fileinfo, download); a 400 when
        they were sealed for another Provider or belong to another asset than the DDO's."""
        from c2d_core.crypto import CryptoError, decrypt_service_files

        try:
            return decrypt_service_files(
                self.settings.private_key_hex,
                str(service.get("files", "")),
                expected_nft_address=asset.nft_address,
                expected_datatoken_address=str(service.get("datatokenAddress", "")),
            )
        except CryptoError:
            raise bad_request("the service's files cannot be decrypted by this Provider") from None

    def _check_files_readable(self, asset: ResolvedAsset, service: dict[str, Any], resource: str) -> None:
        """The engine decrypts each input's files with this Provider's key: refuse, before anyone pays
        or a job starts, an input whose files were sealed for another provider or copied from
        another asset (Ocean's `compute_services_not_in_same_provider`)."""
        from c2d_core.crypto import CryptoError, decrypt_service_files

        try:
            decrypt_service_files(
                self.settings.private_key_hex,
                str(service.get("files", "")),
                expected_nft_address=asset.nft_address,
                expected_datatoken_address=str(service.get("datatokenAddress", "")),
            )
        except (CryptoError, ValueError):
            raise resource_error(resource, "compute_services_not_in_same_provider") from None

    def check_algorithm(
        self, ref: AlgorithmRef, inputs: list[CheckedInput], consumer: str
    ) -> CheckedAlgorithm:
        if ref.meta is not None and ref.document_id:
            # Trust would be judged on the DID while the job ran `meta`: refuse the mix.
            raise resource_error("algorithm", "meta_and_documentId")
        if ref.meta is not None:
            container = ref.meta.container
            for item in inputs:
                if item.service.get("type") == "compute":
                    policy.check_algorithm(
                        item.service,
                        item.resource,
                        algorithm_ddo=None,
                        raw_meta=ref.meta.model_dump(),
                        algorithm_files_checksum=None,
                    )
            return CheckedAlgorithm(
                ref=ref, asset=None, service_index=None, service=None, container=container
            )
        if not ref.document_id or not ref.service_id:
            raise resource_error("algorithm", "missing_meta_documentId")
        asset = self.resolve(ref.document_id, "algorithm")
        policy.check_asset_consumable(asset.ddo, state=asset.state, consumer=consumer, resource="algorithm")
        service = policy.find_service(asset.ddo, ref.service_id, "algorithm")
        found = asset.service(ref.service_id)
        assert found is not None
        container = dict(((asset.ddo.get("metadata") or {}).get("algorithm") or {}).get("container") or {})
        checksum = None
        for item in inputs:
            if item.service.get("type") != "compute":
                continue
            if self._trust_needs_files_checksum(item.service, asset.did) and checksum is None:
                checksum = self.algorithm_files_checksum(asset, service)
            policy.check_algorithm(
                item.service,
                item.resource,
                algorithm_ddo=asset.ddo,
                raw_meta=None,
                algorithm_files_checksum=checksum,
                algorithm_did=asset.did,
            )
        return CheckedAlgorithm(
            ref=ref, asset=asset, service_index=found[0], service=service, container=container
        )

    @staticmethod
    def _trust_needs_files_checksum(service: dict[str, Any], algorithm_did: str) -> bool:
        trusted = ((service.get("compute") or {}).get("publisherTrustedAlgorithms")) or []
        return any(
            isinstance(entry, dict)
            and str(entry.get("did", "")).lower() == algorithm_did.lower()
            and entry.get("filesChecksum")
            for entry in trusted
        )

    def algorithm_files_checksum(self, asset: ResolvedAsset, service: dict[str, Any]) -> str:
        """Ocean's filesChecksum: the sha256 of each algorithm file's content, concatenated in order.

        The Provider fetches the files itself (bounded by `max_checksum_bytes`); results are cached by
        the encrypted files blob, which changes whenever the files do.
        """
        from c2d_core.crypto import CryptoError, decrypt_service_files
        from c2d_core.fetch import FetchError
        from provider_api.routes.files import fetch_file_object

        blob = str(service.get("files", ""))
        datatoken = str(service.get("datatokenAddress", ""))
        key = hashlib.sha256(f"{asset.nft_address}:{datatoken}:{blob}".encode()).hexdigest()
        with self._checksum_lock:
            if key in self._checksums:
                return self._checksums[key]
        try:
            # Files sealed for another key, or copied from another asset, are the algorithm's fault
            # (400 file_unavailable), not a backend failure.
            files = decrypt_service_files(
                self.settings.private_key_hex,
                blob,
                expected_nft_address=asset.nft_address,
                expected_datatoken_address=datatoken,
            )
        except (CryptoError, ValueError):
            raise resource_error("algorithm", "file_unavailable") from None
        digests = []
        with tempfile.TemporaryDirectory(prefix="c2d-checksum-") as tmp:
            for index, file_object in enumerate(files):
                try:
                    fetched = fetch_file_object(file_object, Path(tmp) / str(index), self.settings)
                except FetchError:
                    raise resource_error("algorithm", "file_unavailable") from None
                digests.append(fetched.sha256)
        checksum = files_checksum(digests)
        with self._checksum_lock:
            self._checksums[key] = checksum
        return checksum

    # -- fees ---------------------------------------------------------------------------------

    def fee_amount(self, env: Environment, seconds: int) -> int:
        from c2d_core.fees import fee_amount

        return fee_amount(str(env.price_min), max(seconds, 0))

    def quote(
        self,
        env: Environment,
        datatoken: str,
        service_id: str,
        did: str,
        consumer: str,
        valid_until: int,
        paying: bool,
    ) -> dict[str, Any]:
        """A provider fee bound to this environment, datatoken, service, DID and consumer."""
        now = self.chain.block_timestamp()
        amount = self.fee_amount(env, valid_until - now) if paying else 0
        return self._signed_fee(
            env.id, self.fee_token_of(env), datatoken, service_id, did, consumer, amount, valid_until, now
        )

    def access_fee(self, datatoken: str, service_id: str, did: str, consumer: str) -> dict[str, Any]:
        """Ocean's access fee: amount 0 and validUntil 0 (never expires), bound like a compute fee to
        the datatoken, service, DID and consumer; `environment` is null, as Ocean's Provider sends it."""
        now = self.chain.block_timestamp()
        return self._signed_fee(
            None, self.chain.address("Ocean"), datatoken, service_id, did, consumer, 0, 0, now
        )

    def _signed_fee(
        self,
        environment: str | None,
        fee_token: str,
        datatoken: str,
        service_id: str,
        did: str,
        consumer: str,
        amount: int,
        valid_until: int,
        timestamp: int,
    ) -> dict[str, Any]:
        from c2d_core.fees import provider_data, sign_provider_fee

        data = provider_data(
            environment=environment,
            datatoken=datatoken,
            service_id=service_id,
            did=did,
            consumer=consumer,
            timestamp=timestamp,
        )
        fee = sign_provider_fee(
            self.settings.private_key_hex,
            data,
            self.settings.address,
            fee_token,
            amount,
            valid_until,
        )
        return fee.to_wire()

    # -- workflow -----------------------------------------------------------------------------

    def build_workflow(
        self,
        request: StartRequest,
        env: Environment,
        inputs: list[CheckedInput],
        algorithm: CheckedAlgorithm,
        chain_id: int,
        output: OutputRequest | None = None,
    ) -> Workflow:
        """The run config: DDOs and the services' *encrypted* files only, never a plaintext location.

        `output` (from `parse_output`) asks the engine to publish the results as a new asset.
        """
        algorithm_section: dict[str, Any]
        if algorithm.asset is None:
            assert request.algorithm.meta is not None
            if not request.algorithm.meta.rawcode:
                raise resource_error("algorithm", "meta_oneof_url_rawcode_remote")
            algorithm_section = {"rawcode": request.algorithm.meta.rawcode}
        else:
            assert algorithm.service is not None
            algorithm_section = {
                "did": algorithm.asset.did,
                "serviceId": algorithm.service["id"],
                "transferTxId": request.algorithm.transfer_tx_id,
                "ddo": algorithm.asset.ddo,
                "files": {"encryptedFiles": algorithm.service["files"]},
            }
        container = algorithm.container
        try:
            return Workflow.model_validate(
                {
                    "jobId": uuid.uuid4().hex,
                    # One spelling of the owner everywhere: run tags are matched exactly.
                    "owner": checksum_address(request.consumer_address),
                    "environment": env.id,
                    "agreementId": request.dataset.transfer_tx_id,
                    "allowNetworkAccess": policy.network_allowed([item.service for item in inputs]),
                    "chainId": chain_id,
                    "inputs": [
                        {
                            "did": item.asset.did,
                            "serviceId": item.ref.service_id,
                            "transferTxId": item.ref.transfer_tx_id,
                            "ddo": item.asset.ddo,
                            "files": {"encryptedFiles": item.service["files"]},
                            **({"userdata": item.ref.userdata} if item.ref.userdata else {}),
                        }
                        for item in inputs
                    ],
                    "algorithm": {
                        **algorithm_section,
                        "container": {
                            "entrypoint": container.get("entrypoint", ""),
                            "image": container.get("image", ""),
                            "tag": container.get("tag") or "latest",
                            **({"checksum": container["checksum"]} if container.get("checksum") else {}),
                        },
                        **(
                            {"algocustomdata": request.algorithm.algocustomdata}
                            if request.algorithm.algocustomdata
                            else {}
                        ),
                        **({"userdata": request.algorithm.userdata} if request.algorithm.userdata else {}),
                    },
                    **({"output": output.model_dump(by_alias=True)} if output is not None else {}),
                }
            )
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise bad_request(f"cannot run this request: {echo(where)}: {first['msg']}") from None


__all__ = [
    "AlgorithmRef",
    "CheckedInput",
    "ComputeService",
    "InitializeRequest",
    "InputRef",
    "OceanHTTPError",
    "StartRequest",
    "parse_output",
    "parse_request",
]
