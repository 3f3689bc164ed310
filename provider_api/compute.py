"""The compute flow behind the routes: the environments, initializeCompute's fees, and a start request
checked (assets, policy, orders, fees) and turned into a `Workflow` that Dagster runs.

Ordering matters for safety: a start's signature and nonce are checked first (the nonce is spent
first, so a replay cannot reach the chain or Dagster), and nothing is submitted until every input's
order and the algorithm's order are proven on chain.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from c2d_core.chain import ZERO_ADDRESS
from c2d_core.crypto import public_key_of
from c2d_core.environments import Environment, Environments, UnknownEnvironmentError
from c2d_core.ocean.checksums import files_checksum
from c2d_core.ocean.signing import compute_start_message
from c2d_core.sealed import seal_workflow
from c2d_core.settings import EngineSettings
from c2d_core.workflow import OutputRequest, Workflow
from provider_api import policy
from provider_api.agreements import AgreementBusy, AgreementClaims, ClaimStoreUnavailable, run_holder
from provider_api.assets import Assets, ResolvedAsset
from provider_api.auth import verify_request
from provider_api.dagster_jobs import BackendUnavailable, DagsterJobs, JobConflict
from provider_api.errors import OceanHTTPError, backend_error, bad_request, echo, field_errors, resource_error
from provider_api.fees import ProviderFees
from provider_api.files import fetch_file_object
from provider_api.jobs import JobRecord
from provider_api.nonces import NonceStore
from provider_api.orders import OrderError, ValidatedOrder, validate_order
from provider_api.schemas import AlgorithmRef, ComputeStartBody, InitializeComputeBody, InputRef

if TYPE_CHECKING:
    from c2d_core.chain import Chain
    from provider_api.settings import ProviderSettings


def checksum_address(address: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))


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
    """One per Provider process: the policy, order and fee logic of computeEnvironments,
    initializeCompute and computeStart."""

    def __init__(
        self,
        settings: ProviderSettings,
        environments: Environments,
        assets: Assets,
        fees: ProviderFees,
        chain: Chain,
    ) -> None:
        self.settings = settings
        self.environments = environments
        self.assets = assets
        self.fees = fees
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

    def environment_listing(self, chain_id: int | None, jobs: DagsterJobs) -> dict[str, list[dict[str, Any]]]:
        """computeEnvironments: this chain's environments with their live job counts (none for
        another chain)."""
        if chain_id is not None and chain_id != self.settings.chain_id:
            return {str(chain_id): []}
        envs = [self._environment_json(env.id, jobs) for env in self.environments.all()]
        return {str(self.settings.chain_id): envs}

    def _environment_json(self, env_id: str, jobs: DagsterJobs) -> dict[str, Any]:
        env = self.environment(env_id)
        try:
            running, queued = jobs.current_jobs(env.id)
        except BackendUnavailable as error:
            raise backend_error(f"compute backend unavailable: {error}") from None
        return {
            "id": env.id,
            "cpuNumber": env.cpu_number,
            "cpuType": "",
            "gpuNumber": 0,
            "gpuType": "",
            "ramGB": env.ram_gb,
            "diskGB": env.disk_gb,
            "priceMin": env.price_min,
            "desc": env.description,
            "currentJobs": running,
            "queuedJobs": queued,
            "maxJobs": env.max_jobs,
            "consumerAddress": self.consumer_address_of(env),
            "storageExpiry": env.storage_expiry,
            "maxJobDuration": env.max_job_duration,
            # Our addition: seconds a job may wait in this environment's queue before it ends with
            # status 2 (the environment's maxQueueWait, else C2D_MAX_QUEUE_WAIT; 0 = no limit).
            "maxQueueWait": env.queue_wait_limit(EngineSettings().max_queue_wait),
            "feeToken": self.fees.fee_token_of(env),
            "allowNetwork": env.allow_network,
            "lastSeen": None,
        }

    # -- assets and policy --------------------------------------------------------------------

    def check_input(self, ref: InputRef, resource: str, consumer: str, main: bool) -> CheckedInput:
        asset = self.assets.resolve(ref.document_id, resource)
        policy.check_asset_consumable(asset.ddo, state=asset.state, consumer=consumer, resource=resource)
        service = policy.check_input_service(asset.ddo, ref.service_id, resource, main=main)
        found = asset.service(ref.service_id)
        assert found is not None  # check_input_service found it
        self.assets.check_files_readable(asset, service, resource)
        return CheckedInput(ref=ref, asset=asset, service_index=found[0], service=service, resource=resource)

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
        asset = self.assets.resolve(ref.document_id, "algorithm")
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
        from c2d_core.fetch import FetchError

        blob = str(service.get("files", ""))
        datatoken = str(service.get("datatokenAddress", ""))
        key = hashlib.sha256(f"{asset.nft_address}:{datatoken}:{blob}".encode()).hexdigest()
        with self._checksum_lock:
            if key in self._checksums:
                return self._checksums[key]
        files = self.assets.algorithm_files(asset, service)
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

    # -- orders -------------------------------------------------------------------------------

    def validated_order(
        self,
        item: CheckedInput | CheckedAlgorithm,
        tx_id: str,
        consumer: str,
        environment: str | None,
        allowed_consumers: set[str],
    ) -> ValidatedOrder:
        """The order `tx_id` of an input (or the algorithm), checked on chain; raises OrderError."""
        assert item.asset is not None and item.service is not None and item.service_index is not None
        return validate_order(
            self.chain,
            tx_id=tx_id,
            datatoken=str(item.service.get("datatokenAddress", "")),
            nft=item.asset.nft_address,
            service_id=str(item.service.get("id")),
            service_index=item.service_index,
            service_timeout=int(item.service.get("timeout") or 0),
            consumer=consumer,
            provider_address=self.settings.address,
            environment=environment,
            allowed_consumers=allowed_consumers,
            did=item.asset.did,
            now=self.fees.now(),
        )

    def _required_order(
        self,
        item: CheckedInput | CheckedAlgorithm,
        *,
        tx_id: str,
        consumer: str,
        environment: str | None,
        allowed_consumers: set[str],
        resource: str,
        code: str,
    ) -> ValidatedOrder:
        try:
            return self.validated_order(item, tx_id, consumer, environment, allowed_consumers)
        except OrderError as error:
            raise OceanHTTPError(400, {"error": {resource: code}, "message": error.message}) from None

    # -- initializeCompute --------------------------------------------------------------------

    def initialize(self, body: InitializeComputeBody) -> dict[str, Any]:
        """Provider fees for each input (or the still-valid order to reuse): datasets, then a published
        algorithm, in Ocean's order; one of them carries the fee."""
        env = self.environment(body.compute.env)
        # The fees' clock (the later of wall-clock and chain time), as the start's order check uses.
        now = self.fees.now()
        if body.compute.valid_until <= now:
            raise bad_request("The validUntil value is not correct.")
        consumer = body.consumer_address
        inputs = [
            self.check_input(ref, "dataset" if i == 0 else f"datasets[{i}]", consumer, main=i == 0)
            for i, ref in enumerate(body.datasets)
        ]
        algorithm = self.check_algorithm(body.algorithm, inputs, consumer)
        env_consumer = self.consumer_address_of(env)
        allowed = {consumer.lower(), env_consumer.lower()}
        priced: list[tuple[CheckedInput | CheckedAlgorithm, InputRef | AlgorithmRef, str | None]] = [
            (item, item.ref, env.id) for item in inputs
        ]
        if algorithm.asset is not None:
            priced.append((algorithm, body.algorithm, None))
        answers: list[dict[str, Any]] = []
        payer_chosen = False
        validated: list[ValidatedOrder | None] = []
        for item, ref, environment in priced:
            order = None
            if ref.transfer_tx_id:
                try:
                    order = self.validated_order(item, ref.transfer_tx_id, consumer, environment, allowed)
                except OrderError:
                    order = None  # not a reusable order: the input gets a fresh fee below
            validated.append(order)
        fee_index = next(
            (i for i, order in enumerate(validated) if order is not None and order.valid_until >= now), 0
        )
        for i, (item, _ref, _environment) in enumerate(priced):
            assert item.asset is not None and item.service is not None
            order = validated[i]
            answer: dict[str, Any] = {}
            paying = i == fee_index and not payer_chosen
            if order is not None:
                answer["validOrder"] = order.tx_id
                if order.valid_until >= body.compute.valid_until:
                    answers.append(answer)
                    payer_chosen = payer_chosen or paying
                    continue
            answer["datatoken"] = str(item.service.get("datatokenAddress", ""))
            answer["providerFee"] = self.fees.quote(
                env,
                answer["datatoken"],
                str(item.service.get("id")),
                item.asset.did,
                consumer,
                body.compute.valid_until,
                paying,
            )
            payer_chosen = payer_chosen or paying
            answers.append(answer)
        result: dict[str, Any] = {"datasets": answers[: len(inputs)]}
        if algorithm.asset is not None:
            result["algorithm"] = answers[len(inputs)]
        return result

    # -- computeStart -------------------------------------------------------------------------

    def start(
        self, body: ComputeStartBody, *, nonces: NonceStore, claims: AgreementClaims, jobs: DagsterJobs
    ) -> JobRecord:
        """Check a signed start request end to end, claim its agreement and submit the job's run."""
        # Like every field rule, a bad `output` is refused before the nonce is spent.
        output = parse_output(body.output, body.consumer_address, self.settings.address)
        verify_request(
            nonces,
            body.consumer_address,
            compute_start_message(body.consumer_address, body.dataset.document_id),
            body.nonce,
            body.signature,
        )
        env = self.environment(body.environment)
        consumer = body.consumer_address
        allowed = {consumer.lower(), self.consumer_address_of(env).lower()}
        refs = [body.dataset, *body.additional_datasets]
        inputs = [
            self.check_input(ref, "dataset" if i == 0 else f"datasets[{i}]", consumer, main=i == 0)
            for i, ref in enumerate(refs)
        ]
        algorithm = self.check_algorithm(body.algorithm, inputs, consumer)
        orders = []
        for i, item in enumerate(inputs):
            if not item.ref.transfer_tx_id:
                raise field_errors({f"{'dataset' if i == 0 else f'datasets[{i}]'}.transferTxId": "required"})
            orders.append(
                self._required_order(
                    item,
                    tx_id=item.ref.transfer_tx_id,
                    consumer=consumer,
                    environment=env.id,
                    allowed_consumers=allowed,
                    resource=f"{item.resource}.serviceId",
                    code="order_invalid",
                )
            )
        if algorithm.asset is not None:
            if not body.algorithm.transfer_tx_id:
                raise field_errors({"algorithm.transferTxId": "required for a published algorithm"})
            orders.append(
                self._required_order(
                    algorithm,
                    tx_id=body.algorithm.transfer_tx_id,
                    consumer=consumer,
                    # Our fees name their environment on every input, the algorithm's included.
                    environment=env.id,
                    allowed_consumers=allowed,
                    resource="algorithm",
                    code="in_use_or_not_on_chain",
                )
            )
        self.fees.ensure_paid(env, orders)
        workflow = self.build_workflow(body, env, inputs, algorithm, self.chain.chain_id, output)
        return submit_claimed(workflow, claims, jobs)

    # -- workflow -----------------------------------------------------------------------------

    def build_workflow(
        self,
        request: ComputeStartBody,
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
            workflow = Workflow.model_validate(
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
        # The consumer's code and custom data go into the run config sealed to our own key, as a DDO's
        # files do: the Dagster UI shows the run config, only the configure pod opens them.
        return seal_workflow(workflow, public_key_of(self.settings.private_key_hex))


def submit_claimed(workflow: Workflow, claims: AgreementClaims, jobs: DagsterJobs) -> JobRecord:
    """Claim the workflow's agreement, then submit its run; a launch that fails frees the claim."""
    agreement = workflow.agreement_id
    try:
        # The claim makes "one unfinished job per agreement" hold across Provider replicas.
        if agreement:
            claims.claim(agreement, workflow.job_id, run_holder(jobs))
        return jobs.submit(workflow)
    except AgreementBusy as error:
        raise bad_request(str(error)) from None
    except JobConflict as error:
        # Dagster holds an unfinished run of the agreement that has no claim (launched before claims
        # existed): nothing was launched for this job, so its claim goes.
        _release_if_not_launched(claims, jobs, agreement or "", workflow.job_id)
        raise bad_request(str(error)) from None
    except ClaimStoreUnavailable as error:
        raise backend_error(str(error)) from None
    except BackendUnavailable as error:
        if agreement:
            _release_if_not_launched(claims, jobs, agreement, workflow.job_id)
        raise backend_error(f"compute backend unavailable: {error}") from None


def _release_if_not_launched(claims: AgreementClaims, jobs: DagsterJobs, agreement: str, job_id: str) -> None:
    """Free the agreement after a failed launch, unless a run for the job exists after all.

    Best effort: if Dagster or the database cannot say, the claim stays and goes stale on its own
    (agreements.STALE_AFTER), as after a Provider that died between the claim and the launch.
    """
    try:
        if jobs.job(job_id) is None:
            claims.release(agreement, job_id)
    except (BackendUnavailable, ClaimStoreUnavailable):
        pass
