"""Compute policy: every refusal code, deny-by-default trust, wildcards, checksums and case rules."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from c2d_core.ocean.checksums import (
    container_section_checksum,
    files_checksum,
    trusted_algorithm_entry,
    validate_container,
)
from c2d_core.ocean.refusals import PolicyError
from provider_api.policy import (
    check_algorithm,
    check_algorithm_asset,
    check_asset_consumable,
    check_asset_state,
    check_credentials,
    check_input_service,
    check_main_service_is_compute,
    check_service_type,
    find_service,
    input_resource,
    network_allowed,
)

ALGO_DID = "did:op:" + hashlib.sha256(b"algorithm nft" + b"8996").hexdigest()
OTHER_DID = "did:op:" + hashlib.sha256(b"another algorithm").hexdigest()
OWNER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # EIP-55 checksummed, as the indexer reports it
OTHER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
CONSUMER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
DIGEST = "sha256:8221d20c1c16491d7d56b9657ea09082c0ee4a8ab1a6621fa720da58b09580e4"
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11", "checksum": DIGEST}
# sha256("python $ALGO" + DIGEST), computed independently with `printf %s ... | sha256sum`.
CONTAINER_SECTION = "77ac49b8c4ad209694f7143cec62d67ee4c6d2d5edf1f3f4e09ca4173b22610f"
FILE_DIGESTS = [hashlib.sha256(b"print('hello')").hexdigest(), hashlib.sha256(b"helpers").hexdigest()]
FILES = "".join(FILE_DIGESTS)
GOOD_ENTRY = {"did": ALGO_DID, "filesChecksum": FILES, "containerSectionChecksum": CONTAINER_SECTION}


def algorithm_ddo(**overrides: Any) -> dict[str, Any]:
    ddo: dict[str, Any] = {
        "id": ALGO_DID,
        "version": "4.1.0",
        "chainId": 8996,
        "metadata": {"type": "algorithm", "name": "algo", "algorithm": {"container": dict(CONTAINER)}},
        "services": [{"id": "access-1", "type": "access", "files": "0xabcd", "timeout": 0}],
        "nft": {"address": "0x" + "1" * 40, "owner": OWNER, "state": 0},
    }
    ddo.update(overrides)
    return ddo


def compute_service(service_id: str = "compute-1", **compute: Any) -> dict[str, Any]:
    return {
        "id": service_id,
        "type": "compute",
        "files": "0xabcdef",
        "datatokenAddress": "0x" + "2" * 40,
        "serviceEndpoint": "http://127.0.0.1:8030",
        "timeout": 3600,
        "compute": compute,
    }


def access_service(service_id: str = "access-1") -> dict[str, Any]:
    return {"id": service_id, "type": "access", "files": "0xabcdef", "timeout": 0}


def dataset_ddo(*services: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    ddo: dict[str, Any] = {
        "id": "did:op:" + "d" * 64,
        "chainId": 8996,
        "metadata": {"type": "dataset", "name": "data"},
        "services": list(services) or [compute_service(), access_service()],
        "nft": {"address": "0x" + "3" * 40, "owner": OTHER, "state": 0},
    }
    ddo.update(overrides)
    return ddo


def refused(call: Callable[[], object], resource: str, code: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        call()
    assert (info.value.resource, info.value.code) == (resource, code), info.value.message
    assert info.value.wire == {resource: code}
    assert "http" not in info.value.message
    return info.value


# --- services -------------------------------------------------------------------------------------


def test_input_resource_keys_are_oceans() -> None:
    assert [input_resource(i) for i in range(3)] == ["dataset", "datasets[1]", "datasets[2]"]


def test_find_service_by_id() -> None:
    ddo = dataset_ddo()
    assert find_service(ddo, "access-1", "dataset")["type"] == "access"
    # ocean.py may send a number; ids are strings in DDO v4.
    numbered = dataset_ddo(compute_service("1"))
    assert find_service(numbered, 1, "dataset")["id"] == "1"


@pytest.mark.parametrize(
    ("ddo", "service_id", "code"),
    [
        (dataset_ddo(), "no-such-service", "not_found"),
        (dataset_ddo(), None, "missing"),
        (dataset_ddo(), "", "missing"),
        ({"id": "did:op:x"}, "compute-1", "not_found"),
        ({"services": "not a list"}, "compute-1", "not_found"),
        ({"services": ["not a dict"]}, "compute-1", "not_found"),
    ],
)
def test_find_service_refusals(ddo: dict[str, Any], service_id: object, code: str) -> None:
    refused(lambda: find_service(ddo, service_id, "datasets[1]"), "datasets[1].serviceId", code)


@pytest.mark.parametrize("kind", ["access", "compute"])
def test_service_type_access_or_compute(kind: str) -> None:
    check_service_type({"id": "s", "type": kind}, "dataset")


@pytest.mark.parametrize("kind", ["download", "wss", None, "Compute"])
def test_other_service_types_refused(kind: str | None) -> None:
    service = {"id": "s", "type": kind}
    refused(lambda: check_service_type(service, "dataset"), "dataset.serviceId", "service_not_access_compute")


def test_main_service_must_be_compute() -> None:
    check_main_service_is_compute(compute_service(), "dataset")
    refused(
        lambda: check_main_service_is_compute(access_service(), "dataset"),
        "dataset.serviceId",
        "main_service_compute",
    )


@pytest.mark.parametrize(
    ("service_id", "main", "error"),
    [
        ("compute-1", True, None),
        ("compute-1", False, None),
        ("access-1", False, None),  # additional inputs may be access services
        ("access-1", True, ("dataset.serviceId", "main_service_compute")),
        ("unknown", True, ("dataset.serviceId", "not_found")),
        ("odd", False, ("dataset.serviceId", "service_not_access_compute")),
    ],
)
def test_check_input_service(service_id: str, main: bool, error: tuple[str, str] | None) -> None:
    ddo = dataset_ddo(compute_service(), access_service(), {"id": "odd", "type": "metadata"})
    if error is None:
        assert check_input_service(ddo, service_id, "dataset", main=main)["id"] == service_id
    else:
        refused(lambda: check_input_service(ddo, service_id, "dataset", main=main), *error)


# --- assets and consumers -------------------------------------------------------------------------


@pytest.mark.parametrize("state", [0, 5])
def test_active_and_unlisted_assets_are_consumable(state: int) -> None:
    check_asset_state(state, "dataset")


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (1, "asset_end_of_life"),
        (2, "asset_deprecated"),
        (3, "asset_revoked"),
        (4, "asset_ordering_disabled"),
        (6, "asset_state_unknown"),
        (-1, "asset_state_unknown"),
    ],
)
def test_other_asset_states_refused(state: int, code: str) -> None:
    refused(lambda: check_asset_state(state, "datasets[1]"), "datasets[1]", code)


def _address(kind_values: list[str]) -> dict[str, Any]:
    return {"type": "address", "values": kind_values}


@pytest.mark.parametrize(
    ("credentials", "consumer", "code"),
    [
        (None, CONSUMER, None),
        ({}, CONSUMER, None),
        ({"allow": [], "deny": []}, CONSUMER, None),
        ({"allow": [_address([CONSUMER])]}, CONSUMER, None),
        # Addresses compare lowercased both ways.
        ({"allow": [_address([CONSUMER.lower()])]}, CONSUMER, None),
        ({"allow": [_address([CONSUMER])]}, CONSUMER.lower(), None),
        ({"allow": [_address([OTHER])]}, CONSUMER, "credential_not_in_allow_list"),
        ({"allow": [_address([])]}, CONSUMER, None),  # an empty list restricts nothing
        ({"allow": [_address([OTHER])]}, None, "credential_not_in_allow_list"),
        # Every address entry counts, not only the first.
        ({"allow": [_address([OTHER]), _address([CONSUMER])]}, CONSUMER, None),
        ({"deny": [_address([CONSUMER])]}, CONSUMER, "credential_in_deny_list"),
        ({"deny": [_address([CONSUMER.upper().replace("0X", "0x")])]}, CONSUMER, "credential_in_deny_list"),
        ({"deny": [_address([OTHER])]}, CONSUMER, None),
        # Deny wins even when the allow list names the consumer (Ocean ignores deny then).
        (
            {"allow": [_address([CONSUMER])], "deny": [_address([CONSUMER])]},
            CONSUMER,
            "credential_in_deny_list",
        ),
        # Credential types we cannot evaluate deny, in either list.
        ({"allow": [{"type": "nft", "values": ["0xabc"]}]}, CONSUMER, "credential_type_unsupported"),
        ({"deny": [{"type": "ens", "values": ["x.eth"]}]}, CONSUMER, "credential_type_unsupported"),
        (
            {"allow": [_address([CONSUMER])], "deny": [{"type": "ens"}]},
            CONSUMER,
            "credential_type_unsupported",
        ),
        # An allow list is a union: an address match admits, an unknown entry cannot.
        ({"allow": [_address([CONSUMER]), {"type": "nft"}]}, CONSUMER, None),
        ({"allow": [_address([OTHER]), {"type": "nft"}]}, CONSUMER, "credential_not_in_allow_list"),
        # Malformed sections deny.
        ("not json", CONSUMER, "credentials_malformed"),
        ('{"allow": [{"type": "address", "values": ["' + CONSUMER + '"]}]}', CONSUMER, None),
        (
            '{"allow": [{"type": "address", "values": ["' + OTHER + '"]}]}',
            CONSUMER,
            "credential_not_in_allow_list",
        ),
        (["allow"], CONSUMER, "credentials_malformed"),
        ({"allow": {"type": "address"}}, CONSUMER, "credentials_malformed"),
        ({"allow": ["0xabc"]}, CONSUMER, "credentials_malformed"),
        ({"allow": [{"type": "address", "values": CONSUMER}]}, CONSUMER, "credentials_malformed"),
        ({"deny": [{"type": "address", "values": [1, 2]}]}, CONSUMER, "credentials_malformed"),
        ({"deny": [{"type": "address"}]}, CONSUMER, "credentials_malformed"),
    ],
)
def test_credentials(credentials: Any, consumer: str | None, code: str | None) -> None:
    ddo = dataset_ddo(credentials=credentials)
    if code is None:
        check_credentials(ddo, consumer, "dataset")
    else:
        refused(lambda: check_credentials(ddo, consumer, "dataset"), "dataset", code)


def test_algorithm_credentials_use_oceans_resource_key() -> None:
    ddo = algorithm_ddo(credentials={"allow": [_address([OTHER])]})
    refused(
        lambda: check_credentials(ddo, CONSUMER, "algorithm.credentials"),
        "algorithm.credentials",
        "credential_not_in_allow_list",
    )


@pytest.mark.parametrize(
    ("overrides", "state", "code"),
    [
        ({}, 0, None),
        ({}, 5, None),
        ({"nft": None}, 0, "asset_malformed"),
        ({"nft": {"owner": OTHER}}, 0, "asset_malformed"),
        ({"chainId": None}, 0, "asset_malformed"),
        ({}, 3, "asset_revoked"),
        ({"credentials": {"deny": [_address([CONSUMER])]}}, 0, "credential_in_deny_list"),
    ],
)
def test_asset_consumable(overrides: dict[str, Any], state: int, code: str | None) -> None:
    ddo = dataset_ddo(**overrides)
    if code is None:
        check_asset_consumable(ddo, state=state, consumer=CONSUMER, resource="dataset")
    else:
        refused(
            lambda: check_asset_consumable(ddo, state=state, consumer=CONSUMER, resource="dataset"),
            "dataset",
            code,
        )


# --- containers and checksums ---------------------------------------------------------------------


def _container(**changes: Any) -> dict[str, Any]:
    container: dict[str, Any] = dict(CONTAINER)
    for key, value in changes.items():
        if value is None:
            container.pop(key)
        else:
            container[key] = value
    return container


@pytest.mark.parametrize(
    ("container", "code"),
    [
        (CONTAINER, None),
        (_container(tag=None), None),  # tag is not checked, as in Ocean
        (_container(entrypoint=None), "missing_entrypoint_image_checksum"),
        (_container(image=None), "missing_entrypoint_image_checksum"),
        (_container(checksum=None), "missing_entrypoint_image_checksum"),
        (_container(entrypoint=""), "missing_entrypoint_image_checksum"),
        (_container(image="   "), "missing_entrypoint_image_checksum"),
        (_container(checksum=42), "missing_entrypoint_image_checksum"),
        (None, "missing_entrypoint_image_checksum"),
        ([], "missing_entrypoint_image_checksum"),
        ({}, "missing_entrypoint_image_checksum"),
        (_container(checksum=DIGEST.removeprefix("sha256:")), "checksum_prefix"),
        (_container(checksum="SHA256:" + DIGEST.removeprefix("sha256:")), "checksum_prefix"),
        (_container(checksum="md5:0123"), "checksum_prefix"),
        (_container(checksum="sha256:"), "checksum_format"),
        (_container(checksum="sha256:xyz"), "checksum_format"),
        (_container(checksum=DIGEST.upper().replace("SHA256", "sha256")), "checksum_format"),
        (_container(checksum=DIGEST + "0"), "checksum_format"),
    ],
)
def test_validate_container(container: Any, code: str | None) -> None:
    if code is None:
        validate_container(container)
    else:
        refused(lambda: validate_container(container), "algorithm.container", code)


def test_validate_container_resource_for_the_route() -> None:
    error = refused(
        lambda: validate_container({}, resource="container"), "container", "missing_entrypoint_image_checksum"
    )
    assert "entrypoint, image, checksum" in error.message


def test_container_section_checksum_is_sha256_of_entrypoint_plus_checksum() -> None:
    assert container_section_checksum(CONTAINER) == CONTAINER_SECTION
    expected = hashlib.sha256(("python $ALGO" + DIGEST).encode()).hexdigest()
    assert container_section_checksum(CONTAINER) == expected
    # Only entrypoint and checksum count: image and tag do not change it, a space in the entrypoint does.
    assert container_section_checksum(_container(image="other", tag="9")) == CONTAINER_SECTION
    assert container_section_checksum(_container(entrypoint="python  $ALGO")) != CONTAINER_SECTION
    with pytest.raises(ValueError):
        container_section_checksum(_container(checksum=None))


def test_files_checksum_concatenates_in_order_lowercased() -> None:
    first, second = FILE_DIGESTS
    assert files_checksum([first, second]) == first + second
    assert files_checksum([second, first]) == second + first
    assert files_checksum([first.upper()]) == first


@pytest.mark.parametrize("digests", [[], ["0x" + "a" * 64], ["a" * 63], ["g" * 64], [None]])
def test_files_checksum_rejects_non_digests(digests: list[Any]) -> None:
    with pytest.raises(ValueError):
        files_checksum(digests)


def test_trusted_algorithm_entry_pins_did_files_and_container() -> None:
    entry = trusted_algorithm_entry(ALGO_DID.upper().replace("DID:OP:", "did:op:"), FILES.upper(), CONTAINER)
    assert entry == GOOD_ENTRY
    service = compute_service(publisherTrustedAlgorithms=[entry])
    check_algorithm(
        service, "dataset", algorithm_ddo=algorithm_ddo(), raw_meta=None, algorithm_files_checksum=FILES
    )


@pytest.mark.parametrize(
    ("did", "files", "container"),
    [
        ("did:op:123", FILES, CONTAINER),
        (ALGO_DID, "", CONTAINER),
        (ALGO_DID, FILES[:-1], CONTAINER),
        (ALGO_DID, "z" * 64, CONTAINER),
    ],
)
def test_trusted_algorithm_entry_rejects_bad_input(did: str, files: str, container: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        trusted_algorithm_entry(did, files, container)


def test_trusted_algorithm_entry_refuses_an_invalid_container() -> None:
    refused(
        lambda: trusted_algorithm_entry(ALGO_DID, FILES, _container(checksum="latest")),
        "algorithm.container",
        "checksum_prefix",
    )


# --- published algorithms: trust ------------------------------------------------------------------


def _entry(**changes: Any) -> dict[str, Any]:
    entry = dict(GOOD_ENTRY)
    for key, value in changes.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return entry


TRUST_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None, str | None]] = [
    # (name, compute section, algorithm DDO overrides, computed filesChecksum, expected code)
    ("no lists: deny by default", {}, {}, FILES, "not_trusted_algo"),
    (
        "empty lists: deny by default",
        {"publisherTrustedAlgorithms": [], "publisherTrustedAlgorithmPublishers": []},
        {},
        FILES,
        "not_trusted_algo",
    ),
    (
        "null lists: deny by default",
        {"publisherTrustedAlgorithms": None, "publisherTrustedAlgorithmPublishers": None},
        {},
        FILES,
        "not_trusted_algo",
    ),
    ("raw allowed does not trust published", {"allowRawAlgorithm": True}, {}, FILES, "not_trusted_algo"),
    ("* algorithms", {"publisherTrustedAlgorithms": ["*"]}, {}, None, None),
    ("* publishers", {"publisherTrustedAlgorithmPublishers": ["*"]}, {}, None, None),
    ("* among entries", {"publisherTrustedAlgorithms": [_entry(did=OTHER_DID), "*"]}, {}, None, None),
    ("publisher listed", {"publisherTrustedAlgorithmPublishers": [OWNER]}, {}, None, None),
    ("publisher listed lowercased", {"publisherTrustedAlgorithmPublishers": [OWNER.lower()]}, {}, None, None),
    (
        "owner reported lowercased",
        {"publisherTrustedAlgorithmPublishers": [OWNER]},
        {"nft": {"owner": OWNER.lower()}},
        None,
        None,
    ),
    (
        "publisher not listed",
        {"publisherTrustedAlgorithmPublishers": [OTHER]},
        {},
        FILES,
        "not_trusted_algo_publisher",
    ),
    (
        "owner missing",
        {"publisherTrustedAlgorithmPublishers": [OWNER]},
        {"nft": {"address": "0x" + "1" * 40}},
        FILES,
        "not_trusted_algo_publisher",
    ),
    (
        "no nft",
        {"publisherTrustedAlgorithmPublishers": [OWNER]},
        {"nft": None},
        FILES,
        "not_trusted_algo_publisher",
    ),
    (
        "publishers not a list",
        {"publisherTrustedAlgorithmPublishers": OWNER},
        {},
        FILES,
        "not_trusted_algo_publisher",
    ),
    ("algorithm listed", {"publisherTrustedAlgorithms": [GOOD_ENTRY]}, {}, FILES, None),
    (
        "algorithm not listed",
        {"publisherTrustedAlgorithms": [_entry(did=OTHER_DID)]},
        {},
        FILES,
        "not_trusted_algo",
    ),
    (
        "entry without did",
        {"publisherTrustedAlgorithms": [_entry(did=None)]},
        {},
        FILES,
        "no_publisherTrustedAlgorithms",
    ),
    (
        "entry not an object",
        {"publisherTrustedAlgorithms": [ALGO_DID]},
        {},
        FILES,
        "no_publisherTrustedAlgorithms",
    ),
    (
        "algorithms not a list",
        {"publisherTrustedAlgorithms": GOOD_ENTRY},
        {},
        FILES,
        "no_publisherTrustedAlgorithms",
    ),
    (
        "did compared lowercased",
        {"publisherTrustedAlgorithms": [_entry(did="did:op:" + ALGO_DID[7:].upper())]},
        {},
        FILES,
        None,
    ),
    (
        "filesChecksum compared lowercased",
        {"publisherTrustedAlgorithms": [_entry(filesChecksum=FILES.upper())]},
        {},
        FILES,
        None,
    ),
    ("computed checksum uppercased", {"publisherTrustedAlgorithms": [GOOD_ENTRY]}, {}, FILES.upper(), None),
    (
        "files mismatch",
        {"publisherTrustedAlgorithms": [_entry(filesChecksum="0" * 128)]},
        {},
        FILES,
        "algorithm_file_checksum_mismatch",
    ),
    (
        "files reordered",
        {"publisherTrustedAlgorithms": [GOOD_ENTRY]},
        {},
        FILE_DIGESTS[1] + FILE_DIGESTS[0],
        "algorithm_file_checksum_mismatch",
    ),
    (
        "files not computed",
        {"publisherTrustedAlgorithms": [GOOD_ENTRY]},
        {},
        None,
        "algorithm_file_checksum_mismatch",
    ),
    (
        "files checksum not a string",
        {"publisherTrustedAlgorithms": [_entry(filesChecksum=123)]},
        {},
        FILES,
        "algorithm_file_checksum_mismatch",
    ),
    (
        "entry pins nothing",
        {"publisherTrustedAlgorithms": [_entry(filesChecksum=None, containerSectionChecksum=None)]},
        {},
        None,
        None,
    ),
    ("entry pins container only", {"publisherTrustedAlgorithms": [_entry(filesChecksum="")]}, {}, None, None),
    (
        "container compared exactly",
        {"publisherTrustedAlgorithms": [_entry(containerSectionChecksum=CONTAINER_SECTION.upper())]},
        {},
        FILES,
        "algorithm_container_checksum_mismatch",
    ),
    (
        "container changed",
        {"publisherTrustedAlgorithms": [GOOD_ENTRY]},
        {"metadata": {"type": "algorithm", "algorithm": {"container": _container(entrypoint="sh -c $ALGO")}}},
        FILES,
        "algorithm_container_checksum_mismatch",
    ),
    (
        "image changed, same digest",
        {"publisherTrustedAlgorithms": [GOOD_ENTRY]},
        {"metadata": {"type": "algorithm", "algorithm": {"container": _container(image="other")}}},
        FILES,
        None,
    ),
    (
        "publisher trusted but files mismatch",
        {
            "publisherTrustedAlgorithmPublishers": [OWNER],
            "publisherTrustedAlgorithms": [_entry(filesChecksum="f" * 64)],
        },
        {},
        FILES,
        "algorithm_file_checksum_mismatch",
    ),
    (
        "publisher trusted but container mismatch",
        {
            "publisherTrustedAlgorithmPublishers": [OWNER],
            "publisherTrustedAlgorithms": [_entry(containerSectionChecksum="0" * 64)],
        },
        {},
        FILES,
        "algorithm_container_checksum_mismatch",
    ),
    (
        "* publishers but files mismatch",
        {
            "publisherTrustedAlgorithmPublishers": ["*"],
            "publisherTrustedAlgorithms": [_entry(filesChecksum="f" * 64)],
        },
        {},
        FILES,
        "algorithm_file_checksum_mismatch",
    ),
    (
        "algorithm listed, publisher not",
        {"publisherTrustedAlgorithmPublishers": [OTHER], "publisherTrustedAlgorithms": [GOOD_ENTRY]},
        {},
        FILES,
        "not_trusted_algo_publisher",
    ),
    (
        "* algorithms, publisher not",
        {"publisherTrustedAlgorithmPublishers": [OTHER], "publisherTrustedAlgorithms": ["*"]},
        {},
        FILES,
        "not_trusted_algo_publisher",
    ),
    (
        "both lists satisfied",
        {"publisherTrustedAlgorithmPublishers": [OTHER, OWNER], "publisherTrustedAlgorithms": [GOOD_ENTRY]},
        {},
        FILES,
        None,
    ),
    (
        "second entry for the DID matches",
        {"publisherTrustedAlgorithms": [_entry(filesChecksum="f" * 64), GOOD_ENTRY]},
        {},
        FILES,
        None,
    ),
    (
        "every entry for the DID mismatches",
        {
            "publisherTrustedAlgorithms": [
                _entry(filesChecksum="f" * 64),
                _entry(containerSectionChecksum="0" * 64),
            ]
        },
        {},
        FILES,
        "algorithm_file_checksum_mismatch",
    ),
]


@pytest.mark.parametrize(
    ("compute", "overrides", "computed", "code"),
    [case[1:] for case in TRUST_CASES],
    ids=[case[0] for case in TRUST_CASES],
)
def test_trusted_algorithms(
    compute: dict[str, Any], overrides: dict[str, Any], computed: str | None, code: str | None
) -> None:
    service = compute_service(**copy.deepcopy(compute))
    ddo = algorithm_ddo(**copy.deepcopy(overrides))

    def call() -> None:
        check_algorithm(
            service, "datasets[2]", algorithm_ddo=ddo, raw_meta=None, algorithm_files_checksum=computed
        )

    if code is None:
        call()
    else:
        refused(call, "datasets[2]", code)


@pytest.mark.parametrize(
    ("overrides", "algorithm_did", "error"),
    [
        ({}, None, None),
        ({}, ALGO_DID, None),
        ({}, "did:op:" + ALGO_DID[7:].upper(), None),
        (
            {"metadata": {"type": "dataset", "algorithm": {"container": CONTAINER}}},
            None,
            ("algorithm", "not_algo"),
        ),
        ({"metadata": None}, None, ("algorithm", "not_algo")),
        ({"metadata": {"algorithm": {"container": CONTAINER}}}, None, ("algorithm", "not_algo")),
        (
            {"metadata": {"type": "algorithm"}},
            None,
            ("algorithm.container", "missing_entrypoint_image_checksum"),
        ),
        (
            {"metadata": {"type": "algorithm", "algorithm": {"container": _container(checksum="x")}}},
            None,
            ("algorithm.container", "checksum_prefix"),
        ),
        # The DDO must carry the DID it was resolved for: trust is keyed by DID.
        ({}, OTHER_DID, ("algorithm", "did_mismatch")),
        ({"id": OTHER_DID}, ALGO_DID, ("algorithm", "did_mismatch")),
        ({"id": None}, None, ("algorithm", "did_mismatch")),
    ],
)
def test_algorithm_asset(
    overrides: dict[str, Any], algorithm_did: str | None, error: tuple[str, str] | None
) -> None:
    ddo = algorithm_ddo(**overrides)
    if error is None:
        assert check_algorithm_asset(ddo, algorithm_did) == (ALGO_DID, CONTAINER)
    else:
        refused(lambda: check_algorithm_asset(ddo, algorithm_did), *error)


def test_algorithm_asset_checks_run_before_trust() -> None:
    # A wildcard service still refuses a DDO that is not an algorithm or whose container is invalid.
    service = compute_service(publisherTrustedAlgorithms=["*"])
    not_algo = algorithm_ddo(metadata={"type": "dataset"})
    refused(
        lambda: check_algorithm(
            service, "dataset", algorithm_ddo=not_algo, raw_meta=None, algorithm_files_checksum=None
        ),
        "algorithm",
        "not_algo",
    )


def test_trust_is_keyed_by_the_resolved_did_not_the_ddos_claim() -> None:
    # An attacker's DDO claiming a trusted DID is refused when resolved under its own DID.
    service = compute_service(
        publisherTrustedAlgorithms=[_entry(filesChecksum=None, containerSectionChecksum=None)]
    )
    refused(
        lambda: check_algorithm(
            service,
            "dataset",
            algorithm_ddo=algorithm_ddo(),
            raw_meta=None,
            algorithm_files_checksum=None,
            algorithm_did=OTHER_DID,
        ),
        "algorithm",
        "did_mismatch",
    )


# --- raw algorithms and dispatch ------------------------------------------------------------------


RAW = {"rawcode": "print(1)", "container": CONTAINER}


@pytest.mark.parametrize(
    ("compute", "meta", "error"),
    [
        ({"allowRawAlgorithm": True}, RAW, None),
        ({"allowRawAlgorithm": True}, {"url": "https://example.org/algo.py", "container": CONTAINER}, None),
        ({}, RAW, ("dataset", "no_raw_algo_allowed")),
        ({"allowRawAlgorithm": False}, RAW, ("dataset", "no_raw_algo_allowed")),
        ({"allowRawAlgorithm": "true"}, RAW, ("dataset", "no_raw_algo_allowed")),
        ({"allowRawAlgorithm": 1}, RAW, ("dataset", "no_raw_algo_allowed")),
        # Trusting every published algorithm does not admit raw code.
        (
            {"publisherTrustedAlgorithms": ["*"], "publisherTrustedAlgorithmPublishers": ["*"]},
            RAW,
            ("dataset", "no_raw_algo_allowed"),
        ),
        (
            {"allowRawAlgorithm": True},
            {"container": CONTAINER},
            ("algorithm", "meta_oneof_url_rawcode_remote"),
        ),
        (
            {"allowRawAlgorithm": True},
            {"rawcode": "  ", "container": CONTAINER},
            ("algorithm", "meta_oneof_url_rawcode_remote"),
        ),
        (
            {"allowRawAlgorithm": True},
            {"rawcode": "print(1)"},
            ("algorithm.container", "missing_entrypoint_image_checksum"),
        ),
        (
            {"allowRawAlgorithm": True},
            {"rawcode": "print(1)", "container": _container(checksum="abc")},
            ("algorithm.container", "checksum_prefix"),
        ),
    ],
)
def test_raw_algorithms(compute: dict[str, Any], meta: dict[str, Any], error: tuple[str, str] | None) -> None:
    service = compute_service(**compute)

    def call() -> None:
        check_algorithm(service, "dataset", algorithm_ddo=None, raw_meta=meta, algorithm_files_checksum=None)

    if error is None:
        call()
    else:
        refused(call, *error)


def test_algorithm_must_be_published_or_raw_not_both() -> None:
    service = compute_service(allowRawAlgorithm=True, publisherTrustedAlgorithms=["*"])
    refused(
        lambda: check_algorithm(
            service, "dataset", algorithm_ddo=None, raw_meta=None, algorithm_files_checksum=None
        ),
        "algorithm",
        "missing_meta_documentId",
    )
    refused(
        lambda: check_algorithm(
            service, "dataset", algorithm_ddo=algorithm_ddo(), raw_meta=RAW, algorithm_files_checksum=FILES
        ),
        "algorithm",
        "meta_and_documentId",
    )


def test_access_inputs_have_no_algorithm_policy() -> None:
    # The consumer of an access service may download that data, so no trust list applies to it.
    check_algorithm(
        access_service(), "datasets[1]", algorithm_ddo=None, raw_meta=RAW, algorithm_files_checksum=None
    )
    check_algorithm(
        access_service(),
        "datasets[1]",
        algorithm_ddo=algorithm_ddo(),
        raw_meta=None,
        algorithm_files_checksum=None,
    )


def test_unknown_service_type_refused_by_check_algorithm() -> None:
    service = {"id": "x", "type": "metadata"}
    refused(
        lambda: check_algorithm(
            service, "datasets[1]", algorithm_ddo=None, raw_meta=RAW, algorithm_files_checksum=None
        ),
        "datasets[1].serviceId",
        "service_not_access_compute",
    )


@pytest.mark.parametrize("compute", [None, "yes", []])
def test_compute_section_missing_or_malformed_denies(compute: object) -> None:
    service = {**compute_service(), "compute": compute}
    refused(
        lambda: check_algorithm(
            service, "dataset", algorithm_ddo=algorithm_ddo(), raw_meta=None, algorithm_files_checksum=FILES
        ),
        "dataset",
        "not_trusted_algo",
    )
    refused(
        lambda: check_algorithm(
            service, "dataset", algorithm_ddo=None, raw_meta=RAW, algorithm_files_checksum=None
        ),
        "dataset",
        "no_raw_algo_allowed",
    )


# --- network access -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("services", "allowed"),
    [
        ([compute_service(allowNetworkAccess=True)], True),
        ([compute_service(allowNetworkAccess=True), compute_service("c2", allowNetworkAccess=True)], True),
        ([compute_service(allowNetworkAccess=True), compute_service("c2", allowNetworkAccess=False)], False),
        ([compute_service(allowNetworkAccess=True), compute_service("c2")], False),
        ([compute_service(allowNetworkAccess="true")], False),
        ([compute_service()], False),
        ([{**compute_service(), "compute": None}], False),
        ([compute_service(allowNetworkAccess=True), access_service()], True),  # access inputs do not vote
        ([access_service()], False),
        ([], False),
    ],
)
def test_network_allowed(services: list[dict[str, Any]], allowed: bool) -> None:
    assert network_allowed(services) is allowed
