"""Ocean v4 contracts on a real anvil: deploy, publish (flags 0-3), DIDs, mint, orders, provider fees."""

from __future__ import annotations

import hashlib
import json

import pytest
from fixtures_chain import DT, DevChain, publish_test_asset
from web3.logs import DISCARD

from c2d_cli.chain_stack import ensure_deployed, start_anvil, stop_anvil
from c2d_cli.stack_paths import STACK_LOGS
from c2d_core.chain import Chain, TransactionReverted, read_addresses
from c2d_core.crypto import public_key_of
from c2d_core.fees import (
    ProviderFee,
    approve,
    provider_data,
    recover_fee_signer,
    reuse_order,
    sign_provider_fee,
    start_order,
)
from c2d_core.ocean.ddo_reader import MetadataError, decode_ddo, read_metadata_events
from c2d_core.ocean.dids import did_for
from c2d_core.ocean.metadata_states import read_metadata_state
from c2d_core.publishing import create_asset, ecies_decryptor, ecies_encryptor, mint, set_metadata

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ZERO = "0x0000000000000000000000000000000000000000"
DDO = {
    "@context": ["https://w3id.org/did/v1"],
    "id": "did:op:placeholder",
    "version": "4.1.0",
    "metadata": {"type": "dataset", "name": "Ünïcode set", "description": "x" * 400},
    "services": [{"id": "svc-1", "type": "compute", "files": "0xdeadbeef", "timeout": 0}],
}


def _fee(dev: DevChain, datatoken: str, consumer: str, *, amount: int = 0, token: str = ZERO) -> ProviderFee:
    data = provider_data("env-1", datatoken, "svc-1", "did:op:x", consumer, dev.now())
    return sign_provider_fee(dev.provider_key, data, dev.provider.address, token, amount, dev.now() + 600)


def test_deploy_writes_ocean_shaped_addresses(dev_chain: DevChain) -> None:
    entry = read_addresses(dev_chain.addresses_file, network="development")
    assert entry == read_addresses(dev_chain.addresses_file, chain_id=8996)
    assert entry["chainId"] == 8996
    for key in ("Ocean", "Router", "FixedPrice", "Dispenser", "ERC721Factory", "OPFCommunityFeeCollector"):
        assert len(dev_chain.chain.w3.eth.get_code(entry[key])) > 0, key
    assert set(entry["ERC20Template"]) == {"1", "2"}
    assert set(entry["ERC721Template"]) == {"1"}
    factory = dev_chain.chain.contracts.at("ERC721Factory", entry["ERC721Factory"])
    assert factory.functions.getCurrentTemplateCount().call() == 2
    # Connecting from the file alone finds the same entry by chain id.
    again = Chain.connect(dev_chain.rpc_url, dev_chain.addresses_file, chain_id=8996)
    assert again.address("ERC721Factory") == entry["ERC721Factory"]
    assert again.address("ERC20Template", template=2) == entry["ERC20Template"]["2"]


def test_connect_refuses_a_wrong_chain_id(dev_chain: DevChain) -> None:
    from c2d_core.chain import ChainError

    with pytest.raises(ChainError, match="chain id 8996, expected 1"):
        Chain.connect(dev_chain.rpc_url, chain_id=1)


def test_ensure_deployed_reuses_a_live_deployment(dev_chain: DevChain, tmp_path) -> None:
    (tmp_path / "addresses.json").write_text(dev_chain.addresses_file.read_text())
    before = dev_chain.chain.w3.eth.block_number
    path = ensure_deployed(dev_chain.rpc_url, tmp_path)
    assert path == tmp_path / "addresses.json"
    assert dev_chain.chain.w3.eth.block_number == before  # nothing was sent


def test_anvil_state_survives_a_restart(tmp_path) -> None:
    pid, rpc_url = start_anvil(tmp_path, None, persist_state=True)
    try:
        path = ensure_deployed(rpc_url, tmp_path)
        factory = json.loads(path.read_text())["development"]["ERC721Factory"]
    finally:
        stop_anvil(pid)
    assert (tmp_path / "chain-state.json").stat().st_size > 100_000
    pid, rpc_url = start_anvil(tmp_path, None, persist_state=True)
    try:
        chain = Chain.connect(rpc_url, path, chain_id=8996)
        assert len(chain.w3.eth.get_code(factory)) > 0
        mtime = path.stat().st_mtime_ns
        assert ensure_deployed(rpc_url, tmp_path) == path
        assert path.stat().st_mtime_ns == mtime  # reused, not redeployed
    finally:
        stop_anvil(pid)
    assert "anvil.log" in {p.name for p in (tmp_path / STACK_LOGS).iterdir()}


def test_unreadable_state_is_kept_aside(tmp_path) -> None:
    (tmp_path / "chain-state.json").write_text('{"cut short')
    pid, rpc_url = start_anvil(tmp_path, None, persist_state=True)
    try:
        assert Chain.connect(rpc_url).w3.eth.block_number == 0
    finally:
        stop_anvil(pid)
    kept = [p.name for p in tmp_path.iterdir() if p.name.startswith("chain-state.json.unreadable-")]
    assert len(kept) == 1
    assert "moved it to" in (tmp_path / STACK_LOGS / "anvil.log").read_text()


def test_anvil_binary_missing_says_what_to_do(tmp_path, monkeypatch) -> None:
    from c2d_cli import chain_stack

    monkeypatch.setattr(chain_stack, "TOOLS_DIR", tmp_path)
    monkeypatch.delenv("C2D_ANVIL", raising=False)
    with pytest.raises(chain_stack.ChainStackError, match="run `make tools`"):
        chain_stack.anvil_binary()


def test_did_matches_ocean_formula(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    nft, _ = create_asset(dev.chain, dev.publisher, "Did", "DID")
    expected = "did:op:" + hashlib.sha256((nft + "8996").encode()).hexdigest()
    assert did_for(nft, 8996) == expected
    assert did_for(nft.lower(), 8996) == expected  # checksummed before hashing, as ocean.py does
    assert did_for(nft, 1) != expected


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_publish_and_read_back(evm_snapshot: DevChain, flags: int) -> None:
    dev = evm_snapshot
    nft, _ = create_asset(dev.chain, dev.publisher, "Data", "DATA")
    ddo = {**DDO, "id": did_for(nft, dev.chain.chain_id)}
    encrypt = ecies_encryptor(public_key_of(dev.provider_key)) if flags & 2 else None
    set_metadata(
        dev.chain,
        dev.publisher,
        nft,
        ddo,
        flags=flags,
        provider_url="http://127.0.0.1:8030",
        provider_address=dev.provider.address,
        encrypt=encrypt,
    )
    (event,) = read_metadata_events(dev.chain, nft)
    assert event.event == "MetadataCreated" and event.flags == flags
    assert event.metadata_hash == hashlib.sha256(json.dumps(ddo, separators=(",", ":")).encode()).digest()
    assert event.decryptor_url == "http://127.0.0.1:8030"
    assert event.updated_by == dev.publisher.address
    if flags & 2:
        assert b"metadata" not in event.data  # really encrypted
        with pytest.raises(MetadataError, match="encrypted"):
            decode_ddo(event)
        assert decode_ddo(event, ecies_decryptor(dev.provider_key)) == ddo
        with pytest.raises(MetadataError, match="could not be decrypted"):
            decode_ddo(event, ecies_decryptor("0x" + "11" * 32))
    else:
        assert decode_ddo(event) == ddo
    assert read_metadata_state(dev.chain, nft) == 0


def test_metadata_update_and_hash_mismatch(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    nft, _ = create_asset(dev.chain, dev.publisher, "Upd", "UPD")
    common = {"provider_url": "http://p", "provider_address": dev.provider.address}
    set_metadata(dev.chain, dev.publisher, nft, {"v": 1}, flags=1, **common)
    set_metadata(dev.chain, dev.publisher, nft, {"v": 2}, flags=0, state=5, **common)
    # A publisher can store any hash: readers must check it, and decode_ddo does.
    contract = dev.chain.contracts.at("ERC721Template", nft)
    call = contract.functions.setMetaData(
        0, "http://p", dev.provider.address, b"\x00", b'{"v":3}', b"\x01" * 32, []
    )
    dev.chain.send(dev.publisher, call)
    events = read_metadata_events(dev.chain, nft)
    assert [e.event for e in events] == ["MetadataCreated", "MetadataUpdated", "MetadataUpdated"]
    assert [decode_ddo(e) for e in events[:2]] == [{"v": 1}, {"v": 2}]
    assert events[1].state == 5
    with pytest.raises(MetadataError, match="does not match its metaDataHash"):
        decode_ddo(events[2])


def test_only_the_owner_can_set_metadata(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    nft, _ = create_asset(dev.chain, dev.publisher, "Own", "OWN")
    with pytest.raises(TransactionReverted, match="setMetaData reverted"):
        set_metadata(dev.chain, dev.stranger, nft, {"v": 1}, flags=0, provider_url="x", provider_address=ZERO)


def test_fee_signature_and_wire_shape(dev_chain: DevChain) -> None:
    data = provider_data(
        "env-1", "0x" + "ab" * 20, "svc", "did:op:1", dev_chain.consumer.address, 1700000000.5
    )
    assert list(json.loads(data)) == ["environment", "timestamp", "dt", "id", "did", "consumer"]
    assert b" " not in data
    fee = sign_provider_fee(
        dev_chain.provider_key, data, dev_chain.provider.address, ZERO, 10**18, 1700000600
    )
    wire = fee.to_wire()
    assert set(wire) == {
        "providerFeeAddress",
        "providerFeeToken",
        "providerFeeAmount",
        "providerData",
        "v",
        "r",
        "s",
        "validUntil",
    }
    assert wire["providerFeeAmount"] == "1000000000000000000" and wire["v"] in (27, 28)
    assert len(wire["r"]) == len(wire["s"]) == 66 and wire["providerData"] == "0x" + data.hex()
    assert dict(fee) == wire
    assert ProviderFee.from_wire(json.loads(json.dumps(wire))) == fee
    assert recover_fee_signer(fee) == dev_chain.provider.address
    # v as 0/1 (some clients) recovers the same signer.
    assert recover_fee_signer(ProviderFee(**{**fee.__dict__, "v": fee.v - 27})) == dev_chain.provider.address


def test_mint_start_order_and_reuse(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    chain = dev.chain
    _, datatoken = create_asset(chain, dev.publisher, "Ord", "ORD")
    mint(chain, dev.publisher, datatoken, dev.consumer.address, 2 * DT)
    dt = chain.contracts.at("ERC20Template", datatoken)
    opc = chain.address("OPFCommunityFeeCollector")
    assert dt.functions.balanceOf(dev.consumer.address).call() == 2 * DT

    fee = _fee(dev, datatoken, dev.consumer.address)
    order_tx = start_order(chain, dev.consumer, datatoken, dev.consumer.address, 0, fee)
    assert dt.functions.balanceOf(dev.consumer.address).call() == DT
    assert dt.functions.balanceOf(dev.publisher.address).call() == 97 * DT // 100
    assert dt.functions.balanceOf(opc).call() == 3 * DT // 100

    receipt = chain.w3.eth.get_transaction_receipt(order_tx)
    event = dt.events.OrderStarted().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (event["consumer"], event["payer"], event["amount"], event["serviceIndex"]) == (
        dev.consumer.address,
        dev.consumer.address,
        DT,
        0,
    )

    reuse_tx = reuse_order(
        chain, dev.consumer, datatoken, order_tx, _fee(dev, datatoken, dev.consumer.address)
    )
    reuse = chain.w3.eth.get_transaction_receipt(reuse_tx)
    reused = dt.events.OrderReused().process_receipt(reuse, errors=DISCARD)[0]["args"]
    assert "0x" + reused["orderTxId"].hex() == order_tx and reused["caller"] == dev.consumer.address
    assert dt.functions.balanceOf(dev.consumer.address).call() == DT  # reuse spends no datatoken


def test_tampered_fee_reverts(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    _, datatoken = create_asset(dev.chain, dev.publisher, "Tam", "TAM")
    mint(dev.chain, dev.publisher, datatoken, dev.consumer.address, DT)
    fee = _fee(dev, datatoken, dev.consumer.address)
    tampered = ProviderFee(**{**fee.__dict__, "provider_fee_amount": 0, "valid_until": fee.valid_until + 1})
    with pytest.raises(TransactionReverted, match="startOrder reverted"):
        start_order(dev.chain, dev.consumer, datatoken, dev.consumer.address, 0, tampered)
    other_data = ProviderFee(
        **{**fee.__dict__, "provider_data": fee.provider_data.replace(b"env-1", b"env-2")}
    )
    with pytest.raises(TransactionReverted):
        start_order(dev.chain, dev.consumer, datatoken, dev.consumer.address, 0, other_data)


def test_start_order_needs_a_datatoken(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    _, datatoken = create_asset(dev.chain, dev.publisher, "Bal", "BAL")
    with pytest.raises(TransactionReverted, match="Not enough datatokens"):
        start_order(dev.chain, dev.stranger, datatoken, dev.stranger.address, 0, _fee(dev, datatoken, ZERO))


def test_paid_provider_fee_reaches_the_provider(evm_snapshot: DevChain) -> None:
    dev = evm_snapshot
    chain = dev.chain
    ocean_address = chain.address("Ocean")
    ocean = chain.contracts.at("OceanToken", ocean_address)
    chain.send(dev.deployer, ocean.functions.transfer(dev.consumer.address, 5 * DT))
    asset = publish_test_asset(dev, "paid", [dev.consumer], flags=0)
    fee = _fee(dev, asset.datatoken, dev.consumer.address, amount=DT, token=ocean_address)
    # The datatoken contract pulls the fee, so it (not the provider) is the spender to approve.
    approve(chain, dev.consumer, ocean_address, asset.datatoken, DT)
    before = ocean.functions.balanceOf(dev.provider.address).call()
    start_order(chain, dev.consumer, asset.datatoken, dev.consumer.address, 0, fee)
    assert ocean.functions.balanceOf(dev.provider.address).call() - before == DT
