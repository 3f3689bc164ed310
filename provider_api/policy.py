"""Compute policy over Ocean DDO v4 dicts: which services, assets, consumers and algorithms a job may use.

Pure functions (no network, chain or web framework): callers resolve DDOs, read the on-chain metadata
state and compute the algorithm's file checksums, then ask these functions, which raise `PolicyError`
carrying Ocean's wire resource key and code (`{"error": {err.resource: err.code}}`).

Where we differ from Ocean's Python Provider (v2.1.x), and why:

- **Deny by default.** A compute service whose `publisherTrustedAlgorithms` and
  `publisherTrustedAlgorithmPublishers` are both empty or absent trusts *no* published algorithm
  (`not_trusted_algo`); Ocean's Python Provider lets any algorithm run then. Omitting a list is the
  easiest mistake a publisher can make, and under allow-all it silently exposes the data to every
  algorithm anyone publishes. A publisher who really wants that writes `"*"`.
- **`"*"` wildcard, as Ocean Node does.** `"*"` in either list lifts that list's constraint. Each list
  that is non-empty and holds no `"*"` must be satisfied (both must hold when both are set, as in Ocean).
- **Publisher addresses compared lowercased.** Ocean compares `nft.owner` with the list by exact string,
  so a publisher who writes an address lowercased while the indexer reports it EIP-55 checksummed is
  refused for nothing. Case is only a checksum encoding of the same 20 bytes, so lowercasing changes
  no trust decision and removes that failure. DIDs are compared lowercased too: our resolver treats
  `did:op:<hex>` case-insensitively, so an exact compare could only refuse the same asset.
- **Strict booleans.** `allowRawAlgorithm` and `allowNetworkAccess` count only when they are JSON
  `true`; Ocean refuses raw algorithms only on `false`, so a string `"false"` allowed them.
- **A request naming both a published algorithm and `meta` is refused** (`meta_and_documentId`):
  Ocean checks trust against the DID but builds the job from `meta`, so a trusted DID could carry
  arbitrary raw code.
- **Credentials.** Every `address` entry counts (Ocean reads only the first); the deny list applies
  even when an allow list is set (Ocean ignores it then); a credential type we cannot evaluate denies
  (`credential_type_unsupported`) rather than being skipped, since skipping it would drop the
  publisher's restriction.
- **Container digests.** Besides Ocean's two rules, the checksum must be a whole image digest
  (`checksum_format`; `validate_container` in c2d_core/ocean/checksums.py, shared with the CLI).

As in Ocean, a trusted-algorithm entry without `filesChecksum` / `containerSectionChecksum` trusts the
DID whatever its files or container are now or later; `trusted_algorithm_entry` always pins both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from c2d_core.ocean.checksums import container_section_checksum, validate_container
from c2d_core.ocean.metadata_states import CONSUMABLE_STATES, MetadataState
from c2d_core.ocean.refusals import PolicyError

WILDCARD: Final = "*"
_STATE_REFUSALS: Final[dict[int, tuple[str, str]]] = {
    MetadataState.END_OF_LIFE: ("asset_end_of_life", "the asset has reached its end of life"),
    MetadataState.DEPRECATED: ("asset_deprecated", "the asset is deprecated (replaced by another asset)"),
    MetadataState.REVOKED: ("asset_revoked", "the asset was revoked by its publisher"),
    MetadataState.ORDERING_DISABLED: (
        "asset_ordering_disabled",
        "ordering of the asset is temporarily disabled",
    ),
}

Ddo = Mapping[str, Any]
Service = Mapping[str, Any]


def input_resource(index: int) -> str:
    """Ocean's key for the index-th compute input: `dataset` for the main one, `datasets[i]` after."""
    return f"datasets[{index}]" if index else "dataset"


# --- services -------------------------------------------------------------------------------------


def find_service(ddo: Ddo, service_id: object, resource: str) -> dict[str, Any]:
    """The DDO's service with this id (`{resource}.serviceId`: `missing` / `not_found`)."""
    if service_id is None or service_id == "":
        raise PolicyError(f"{resource}.serviceId", "missing", "serviceId is required")
    services = ddo.get("services")
    if isinstance(services, list):
        for service in services:
            # Ids are strings in DDO v4; clients may send a number, so compare textually.
            if isinstance(service, dict) and str(service.get("id")) == str(service_id):
                return service
    raise PolicyError(
        f"{resource}.serviceId", "not_found", f"the asset has no service with id {str(service_id)[:40]!r}"
    )


def check_service_type(service: Service, resource: str) -> None:
    """A compute input must be an `access` or `compute` service (`service_not_access_compute`)."""
    if service.get("type") not in ("access", "compute"):
        raise PolicyError(
            f"{resource}.serviceId",
            "service_not_access_compute",
            f"service {service.get('id')!r} is of type {service.get('type')!r}, not access or compute",
        )


def check_main_service_is_compute(service: Service, resource: str) -> None:
    """The main dataset must be used through a `compute` service (`main_service_compute`)."""
    if service.get("type") != "compute":
        raise PolicyError(
            f"{resource}.serviceId",
            "main_service_compute",
            f"service {service.get('id')!r} is not a compute service; the main dataset needs one",
        )


def check_input_service(ddo: Ddo, service_id: object, resource: str, *, main: bool) -> dict[str, Any]:
    """`find_service`, `check_service_type` and, for the main dataset, `check_main_service_is_compute`."""
    service = find_service(ddo, service_id, resource)
    check_service_type(service, resource)
    if main:
        check_main_service_is_compute(service, resource)
    return service


# --- assets and consumers -------------------------------------------------------------------------


def check_asset_state(state: int, resource: str) -> None:
    """Only active (0) and unlisted (5) assets may be computed on, as in Ocean."""
    if state in CONSUMABLE_STATES:
        return
    code, text = _STATE_REFUSALS.get(
        state, ("asset_state_unknown", f"the asset's metadata state {state} is unknown")
    )
    raise PolicyError(resource, code, text)


def check_credentials(ddo: Ddo, consumer: str | None, resource: str) -> None:
    """The DDO's `credentials` allow/deny lists admit `consumer` (addresses compared lowercased).

    A non-empty allow list must name the consumer (`credential_not_in_allow_list`); the deny list
    must not (`credential_in_deny_list`), allow list or not; an entry whose type we cannot evaluate
    denies (`credential_type_unsupported`); a malformed section denies (`credentials_malformed`).
    Ocean reports a published algorithm's refusal under `algorithm.credentials`: pass that as resource.
    """
    credentials: Any = ddo.get("credentials")
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            raise PolicyError(
                resource, "credentials_malformed", "the asset's credentials are not JSON"
            ) from None
    if not credentials:
        return
    if not isinstance(credentials, dict):
        raise PolicyError(resource, "credentials_malformed", "the asset's credentials must be an object")
    allowed, allow_unsupported = _address_credentials(credentials.get("allow"), "allow", resource)
    denied, deny_unsupported = _address_credentials(credentials.get("deny"), "deny", resource)
    who = (consumer or "").strip().lower()

    if deny_unsupported:
        raise PolicyError(
            resource,
            "credential_type_unsupported",
            f"the asset's deny list uses credential types we cannot check: {sorted(deny_unsupported)}",
        )
    if who and who in denied:
        raise PolicyError(
            resource, "credential_in_deny_list", f"consumer {consumer} is in the asset's deny list"
        )
    if who and who in allowed:
        return
    if allowed:
        raise PolicyError(
            resource, "credential_not_in_allow_list", f"consumer {consumer} is not in the asset's allow list"
        )
    if allow_unsupported:
        raise PolicyError(
            resource,
            "credential_type_unsupported",
            f"the asset's allow list uses credential types we cannot check: {sorted(allow_unsupported)}",
        )


def _address_credentials(entries: object, kind: str, resource: str) -> tuple[set[str], set[str]]:
    """(lowercased addresses of every `address` entry, other credential types present) of one list."""
    if entries is None:
        return set(), set()
    if not isinstance(entries, list):
        raise PolicyError(resource, "credentials_malformed", f"credentials.{kind} must be a list")
    addresses: set[str] = set()
    unsupported: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise PolicyError(
                resource, "credentials_malformed", f"credentials.{kind} entries must be objects"
            )
        kind_of_entry = entry.get("type")
        if kind_of_entry != "address":
            unsupported.add(str(kind_of_entry))
            continue
        values = entry.get("values")
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise PolicyError(
                resource,
                "credentials_malformed",
                f"credentials.{kind} address values must be a list of strings",
            )
        addresses.update(value.strip().lower() for value in values if value.strip())
    return addresses, unsupported


def check_asset_consumable(ddo: Ddo, *, state: int, consumer: str | None, resource: str) -> None:
    """What Ocean's `check_asset_consumable` covers: an NFT and chain id, the state, the credentials."""
    nft = ddo.get("nft")
    if not isinstance(nft, dict) or not nft.get("address") or not ddo.get("chainId"):
        raise PolicyError(resource, "asset_malformed", "the asset has no NFT address or chain id")
    check_asset_state(state, resource)
    check_credentials(ddo, consumer, resource)


# --- algorithms -----------------------------------------------------------------------------------


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _compute_section(service: Service) -> Mapping[str, Any]:
    compute = service.get("compute")
    return compute if isinstance(compute, dict) else {}


def check_algorithm_asset(algorithm_ddo: Ddo, algorithm_did: str | None = None) -> tuple[str, dict[str, Any]]:
    """A published algorithm's own checks: its DDO is an algorithm (`not_algo`), names the DID it was
    resolved for, and has a valid container. Returns (lowercased DID, container)."""
    metadata = algorithm_ddo.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("type") != "algorithm":
        raise PolicyError("algorithm", "not_algo", "the DID does not name an algorithm (metadata.type)")
    declared = str(algorithm_ddo.get("id") or "").lower()
    did = (algorithm_did or declared).lower()
    # Trust is keyed by DID: the DDO must not claim another one than the DID it was resolved from.
    if not did or (declared and declared != did):
        raise PolicyError("algorithm", "did_mismatch", "the algorithm's DDO does not carry the requested DID")
    algorithm = metadata.get("algorithm")
    container = algorithm.get("container") if isinstance(algorithm, dict) else None
    validate_container(container)
    assert isinstance(container, dict)  # validate_container refused anything else
    return did, container


def check_trusted_algorithm(
    dataset_service: Service,
    resource: str,
    *,
    algorithm_ddo: Ddo,
    algorithm_did: str | None = None,
    algorithm_files_checksum: str | None,
) -> None:
    """The dataset's compute service trusts this published algorithm (see the module docstring)."""
    did, container = check_algorithm_asset(algorithm_ddo, algorithm_did)
    compute = _compute_section(dataset_service)
    algorithms = compute.get("publisherTrustedAlgorithms") or []
    publishers = compute.get("publisherTrustedAlgorithmPublishers") or []
    if not isinstance(algorithms, list):
        raise PolicyError(
            resource, "no_publisherTrustedAlgorithms", "publisherTrustedAlgorithms must be a list"
        )
    if not isinstance(publishers, list):
        raise PolicyError(
            resource, "not_trusted_algo_publisher", "publisherTrustedAlgorithmPublishers must be a list"
        )
    if not algorithms and not publishers:
        raise PolicyError(
            resource,
            "not_trusted_algo",
            "this compute service trusts no published algorithm: its publisherTrustedAlgorithms and "
            "publisherTrustedAlgorithmPublishers are empty",
        )
    if publishers and WILDCARD not in publishers:
        _check_publisher(algorithm_ddo, publishers, resource)
    if algorithms and WILDCARD not in algorithms:
        _check_listed_algorithm(algorithms, did, container, algorithm_files_checksum, resource)


def _check_publisher(algorithm_ddo: Ddo, publishers: Iterable[object], resource: str) -> None:
    nft = algorithm_ddo.get("nft")
    owner = nft.get("owner") if isinstance(nft, dict) else None
    trusted = {publisher.strip().lower() for publisher in publishers if isinstance(publisher, str)}
    if not isinstance(owner, str) or owner.strip().lower() not in trusted:
        raise PolicyError(
            resource,
            "not_trusted_algo_publisher",
            f"the algorithm's publisher {owner} is not in this service's publisherTrustedAlgorithmPublishers",
        )


def _check_listed_algorithm(
    algorithms: Sequence[object],
    did: str,
    container: Mapping[str, Any],
    computed_files_checksum: str | None,
    resource: str,
) -> None:
    entries: list[Mapping[str, Any]] = []
    for entry in algorithms:
        if not isinstance(entry, dict) or not _text(entry.get("did")):
            raise PolicyError(
                resource, "no_publisherTrustedAlgorithms", "an entry in publisherTrustedAlgorithms has no did"
            )
        if entry["did"].strip().lower() == did:
            entries.append(entry)
    if not entries:
        raise PolicyError(
            resource, "not_trusted_algo", f"algorithm {did} is not in publisherTrustedAlgorithms"
        )
    # The same DID may be listed more than once (e.g. two releases): any fully matching entry trusts it.
    refusals = [_entry_refusal(entry, container, computed_files_checksum, resource) for entry in entries]
    errors = [refusal for refusal in refusals if refusal is not None]
    if len(errors) == len(refusals):
        raise errors[0]


def _entry_refusal(
    entry: Mapping[str, Any], container: Mapping[str, Any], computed_files_checksum: str | None, resource: str
) -> PolicyError | None:
    wanted_files = entry.get("filesChecksum")
    # Ocean lowercases both sides: hex digests are case-insensitive. An entry that pins files while we
    # could not checksum them is a mismatch, never a pass.
    if wanted_files and (
        not isinstance(wanted_files, str)
        or computed_files_checksum is None
        or computed_files_checksum.lower() != wanted_files.lower()
    ):
        return PolicyError(
            resource,
            "algorithm_file_checksum_mismatch",
            "the algorithm's files do not match the filesChecksum this service trusts",
        )
    wanted_container = entry.get("containerSectionChecksum")
    if wanted_container and wanted_container != container_section_checksum(container):
        return PolicyError(
            resource,
            "algorithm_container_checksum_mismatch",
            "the algorithm's container does not match the containerSectionChecksum this service trusts",
        )
    return None


def check_raw_algorithm(dataset_service: Service, resource: str, raw_meta: object) -> None:
    """A raw algorithm (`algorithm.meta`): allowed by the service, with code or a URL, and a container."""
    if _compute_section(dataset_service).get("allowRawAlgorithm") is not True:
        raise PolicyError(
            resource, "no_raw_algo_allowed", "this compute service does not allow raw algorithms"
        )
    meta = raw_meta if isinstance(raw_meta, dict) else {}
    if not (_text(meta.get("rawcode")) or _text(meta.get("url"))):
        raise PolicyError(
            "algorithm", "meta_oneof_url_rawcode_remote", "algorithm.meta needs a rawcode or a url"
        )
    validate_container(meta.get("container"))


def check_algorithm(
    dataset_service: Service,
    resource: str,
    *,
    algorithm_ddo: Ddo | None,
    raw_meta: Mapping[str, Any] | None,
    algorithm_files_checksum: str | None,
    algorithm_did: str | None = None,
) -> None:
    """May this algorithm run on the input `resource` served by `dataset_service`?

    A published algorithm (`algorithm_ddo`, with the DID it was resolved for and the files checksum the
    provider computed) goes through `check_trusted_algorithm`, a raw one (`raw_meta`) through
    `check_raw_algorithm`. An `access` input has nothing to check: its consumer may download it anyway.
    """
    if algorithm_ddo is None and raw_meta is None:
        raise PolicyError(
            "algorithm", "missing_meta_documentId", "give a published algorithm or algorithm.meta"
        )
    if algorithm_ddo is not None and raw_meta is not None:
        raise PolicyError(
            "algorithm", "meta_and_documentId", "give a published algorithm or algorithm.meta, not both"
        )
    if dataset_service.get("type") == "access":
        return
    if dataset_service.get("type") != "compute":
        check_service_type(dataset_service, resource)
    if algorithm_ddo is not None:
        check_trusted_algorithm(
            dataset_service,
            resource,
            algorithm_ddo=algorithm_ddo,
            algorithm_did=algorithm_did,
            algorithm_files_checksum=algorithm_files_checksum,
        )
    else:
        check_raw_algorithm(dataset_service, resource, raw_meta)


def network_allowed(dataset_services: Iterable[Service]) -> bool:
    """Network access for the algorithm only if every compute input says `allowNetworkAccess: true`.

    Access inputs do not vote (their consumer may download them anyway); no compute input means no.
    """
    votes = [
        _compute_section(service).get("allowNetworkAccess") is True
        for service in dataset_services
        if service.get("type") == "compute"
    ]
    return bool(votes) and all(votes)
