"""The one chain DDO reader (c2d_core.ocean.ddo_reader) on a real anvil chain, and its two users reading the
same assets: the Provider's resolver (provider_api.assets) and the CLI's `read_chain_asset`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures_chain import DevChain

from c2d_cli.commands_publish import read_chain_asset
from c2d_core.crypto import public_key_of
from c2d_core.ocean.ddo_reader import FLAG_ENCRYPTED, FLAG_LZMA, ChainDdoReader, DidMismatchError
from c2d_core.ocean.dids import did_for
from c2d_core.ocean.metadata_states import MetadataState
from c2d_core.publishing import create_asset, ecies_decryptor, ecies_encryptor, set_metadata
from provider_api.assets import AssetError, ChainDdoResolver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROVIDER_URL = "http://127.0.0.1:8030"
UNKNOWN_DID = "did:op:" + "ab" * 32


def _publish(
    dev: DevChain, *, flags: int, ddo_id: str | None = None, name: str = "Reader"
) -> tuple[str, str, dict[str, Any]]:
    nft, datatoken = create_asset(dev.chain, dev.publisher, name, "RDR")
    did = did_for(nft, dev.chain.chain_id)
    ddo = {
        "id": ddo_id or did,
        "version": "4.1.0",
        "metadata": {"type": "dataset", "name": name},
        "services": [],
    }
    set_metadata(
        dev.chain,
        dev.publisher,
        nft,
        ddo,
        flags=flags,
        provider_url=PROVIDER_URL,
        provider_address=dev.provider.address,
        encrypt=ecies_encryptor(public_key_of(dev.provider_key)) if flags & FLAG_ENCRYPTED else None,
    )
    return nft, datatoken, ddo


def _key_file(dev: DevChain, tmp_path: Path) -> Path:
    path = tmp_path / "provider.key"
    path.write_text(dev.provider_key)
    return path


def test_an_unknown_did_is_none_for_every_reader(evm_snapshot: DevChain, tmp_path: Path) -> None:
    dev = evm_snapshot
    assert ChainDdoReader(dev.chain).read(UNKNOWN_DID) is None
    assert ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key)).resolve(UNKNOWN_DID) is None
    assert read_chain_asset(dev.chain, UNKNOWN_DID, _key_file(dev, tmp_path)) is None


def test_an_encrypted_ddo_reads_the_same_through_the_provider_and_the_cli(
    evm_snapshot: DevChain, tmp_path: Path
) -> None:
    dev = evm_snapshot
    nft, datatoken, ddo = _publish(dev, flags=FLAG_LZMA | FLAG_ENCRYPTED)
    did = did_for(nft, dev.chain.chain_id)
    enriched = {
        **ddo,
        "chainId": dev.chain.chain_id,
        "nft": {"address": nft, "owner": dev.publisher.address, "state": 0},
    }

    found = ChainDdoReader(dev.chain, ecies_decryptor(dev.provider_key)).read(
        did.upper().replace("DID:OP:", "did:op:")
    )
    assert found is not None and found.error is None
    assert (found.did, found.nft, found.owner, found.state) == (did, nft, dev.publisher.address, 0)
    assert found.ddo == enriched
    assert found.latest is not None and found.latest.decryptor_url == PROVIDER_URL

    resolved = ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key)).resolve(did)
    assert resolved is not None
    assert (resolved.did, resolved.nft_address, resolved.state, resolved.ddo) == (did, nft, 0, enriched)

    shown = read_chain_asset(dev.chain, did, _key_file(dev, tmp_path))
    assert shown is not None
    assert shown.ddo == enriched and shown.unreadable == ""
    assert shown.datatokens == [datatoken]
    assert (shown.flags, shown.decryptor_url, shown.created_block) == (3, PROVIDER_URL, found.latest.block)


def test_without_the_provider_key_the_cli_says_who_can_read_it(
    evm_snapshot: DevChain, tmp_path: Path
) -> None:
    dev = evm_snapshot
    nft, _, _ = _publish(dev, flags=FLAG_ENCRYPTED)
    did = did_for(nft, dev.chain.chain_id)
    shown = read_chain_asset(dev.chain, did, None)
    assert shown is not None and shown.ddo is None
    assert f"encrypted for the Provider at {PROVIDER_URL}" in shown.unreadable
    # What the chain says in the clear is still there.
    assert (shown.owner, shown.state, shown.nft) == (dev.publisher.address, 0, nft)

    with pytest.raises(AssetError, match=f"the DDO of {did} cannot be read: .*could not be decrypted"):
        ChainDdoResolver(dev.chain, ecies_decryptor("0x" + "11" * 32)).resolve(did)


def test_a_ddo_naming_another_did_is_refused_by_both(evm_snapshot: DevChain, tmp_path: Path) -> None:
    dev = evm_snapshot
    nft, _, _ = _publish(dev, flags=FLAG_LZMA, ddo_id=UNKNOWN_DID)
    did = did_for(nft, dev.chain.chain_id)
    found = ChainDdoReader(dev.chain).read(did)
    assert found is not None and found.ddo is None
    assert isinstance(found.error, DidMismatchError) and found.error.declared == UNKNOWN_DID

    with pytest.raises(AssetError, match=r"^the DDO on chain names another DID$"):
        ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key)).resolve(did)
    shown = read_chain_asset(dev.chain, did, None)
    assert shown is not None and shown.ddo is None
    assert shown.unreadable == f"the DDO on chain names another DID ({UNKNOWN_DID})"


def test_an_nft_without_metadata(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    nft, _ = create_asset(dev.chain, dev.publisher, "Bare", "BARE")
    did = did_for(nft, dev.chain.chain_id)
    found = ChainDdoReader(dev.chain).read(did)
    assert found is not None
    assert (found.events, found.latest, found.ddo, found.error) == ((), None, None, None)
    assert ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key)).resolve(did) is None
    shown = read_chain_asset(dev.chain, did, None)
    assert shown is not None and shown.unreadable == "no metadata was set"


def test_a_kept_reader_sees_new_assets_state_changes_and_updates_at_once(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    reader = ChainDdoReader(dev.chain)
    first, _, _ = _publish(dev, flags=FLAG_LZMA, name="First")
    assert reader.read(did_for(first, dev.chain.chain_id)) is not None
    # The index grows from the last block it saw: an asset created after the first read is found.
    second, _, ddo = _publish(dev, flags=0, name="Second")
    did = did_for(second, dev.chain.chain_id)
    found = reader.read(did)
    assert found is not None and found.ddo is not None and found.ddo["metadata"]["name"] == "Second"

    # A state change emits no metadata event; the next read has it all the same.
    contract = dev.chain.contracts.at("ERC721Template", second)
    dev.chain.send(dev.publisher, contract.functions.setMetaDataState(int(MetadataState.REVOKED)))
    found = reader.read(did)
    assert found is not None and found.ddo is not None
    assert found.state == MetadataState.REVOKED and found.ddo["nft"]["state"] == MetadataState.REVOKED

    set_metadata(
        dev.chain,
        dev.publisher,
        second,
        {**ddo, "metadata": {"type": "dataset", "name": "Second, updated"}},
        flags=0,
        provider_url=PROVIDER_URL,
        provider_address=dev.provider.address,
    )
    found = reader.read(did)
    assert found is not None and found.ddo is not None
    assert found.ddo["metadata"]["name"] == "Second, updated" and len(found.events) == 2
