"""Deploys the Ocean v4 core contracts onto a development chain and writes an Ocean-shaped addresses file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2d_core.chain import Chain

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

# FactoryRouter wants a pool template; pools are gone from Ocean v4's live flows, so like Ocean's own
# development deployment we hand it the conventional burn address.
DEAD_ADDRESS = "0x000000000000000000000000000000000000dEaD"
OCEAN_SUPPLY_WEI = 10**6 * 10**18


def deploy_ocean(chain_or_w3: Chain | Web3, deployer: LocalAccount) -> dict[str, Any]:
    """Deploy OceanToken, the fee collector, FactoryRouter, FixedRateExchange, the templates, Dispenser and
    ERC721Factory, wire them into the router, and return the network entry in Ocean's address.json shape.

    The deployer owns everything and gets the whole OCEAN supply. Datatoken template 1 is ERC20Template,
    2 is ERC20TemplateEnterprise (Ocean's numbering, so clients asking for either find it). On a `Chain`,
    its `addresses` are replaced by the new entry.
    """
    chain = (
        chain_or_w3
        if isinstance(chain_or_w3, Chain)
        else Chain(chain_or_w3, int(chain_or_w3.eth.chain_id), {})
    )
    owner = deployer.address
    start_block = int(chain.w3.eth.block_number) + 1

    ocean = chain.deploy(deployer, "OceanToken", owner)
    chain.send(deployer, chain.contracts.at("OceanToken", ocean).functions.mint(owner, OCEAN_SUPPLY_WEI))
    collector = chain.deploy(deployer, "OPFCommunityFeeCollector", owner, owner)
    router = chain.deploy(deployer, "FactoryRouter", owner, ocean, DEAD_ADDRESS, collector, [])
    fixed_rate = chain.deploy(deployer, "FixedRateExchange", router)
    erc20_template = chain.deploy(deployer, "ERC20Template")
    erc20_enterprise = chain.deploy(deployer, "ERC20TemplateEnterprise")
    erc721_template = chain.deploy(deployer, "ERC721Template")
    dispenser = chain.deploy(deployer, "Dispenser", router)
    factory = chain.deploy(deployer, "ERC721Factory", erc721_template, erc20_template, router)

    factory_contract = chain.contracts.at("ERC721Factory", factory)
    chain.send(deployer, factory_contract.functions.addTokenTemplate(erc20_enterprise))
    router_contract = chain.contracts.at("FactoryRouter", router)
    chain.send(deployer, router_contract.functions.addFactory(factory))
    chain.send(deployer, router_contract.functions.addFixedRateContract(fixed_rate))
    chain.send(deployer, router_contract.functions.addDispenserContract(dispenser))

    entry: dict[str, Any] = {
        "chainId": chain.chain_id,
        "startBlock": start_block,
        "Ocean": ocean,
        "OPFCommunityFeeCollector": collector,
        "Router": router,
        "FixedPrice": fixed_rate,
        "ERC20Template": {"1": erc20_template, "2": erc20_enterprise},
        "ERC721Template": {"1": erc721_template},
        "Dispenser": dispenser,
        "ERC721Factory": factory,
    }
    if isinstance(chain_or_w3, Chain):
        chain_or_w3.addresses = entry
    return entry


def write_addresses_file(path: Path, addresses: dict[str, Any], network: str = "development") -> None:
    """Store `addresses` as `network` in an address.json, keeping the file's other networks; atomic."""
    document: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            document = loaded
    document[network] = addresses
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)
