"""The whole Ocean Compute-to-Data flow, as a publisher and a consumer do it against our stack.

Publisher: NFT + datatoken, files encrypted through the Provider's `encrypt`, the DDO set on chain
(compressed and encrypted, flags 3, as ocean.py publishes), datatokens minted to the consumer.
Consumer: `initializeCompute`, `startOrder` (or `reuseOrder`) with the signed provider fees, a signed
`POST compute`, status polling, and every result downloaded through `computeResult`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from c2d_cli.provider_client import ProviderClient, ProviderError
from c2d_core.chain import Chain

DT = 10**18
SAMPLE_CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    # A fixed digest: the embedded sandbox maps `python@sha256:*` to the host's Python.
    "checksum": "sha256:" + hashlib.sha256(b"c2d-sample-python-3.11").hexdigest(),
}


@dataclass(frozen=True)
class PublishedAsset:
    did: str
    nft: str
    datatoken: str
    service_id: str
    service_index: int = 0


def publish_asset(
    chain: Chain,
    publisher: LocalAccount,
    provider: ProviderClient,
    *,
    name: str,
    files: list[dict[str, Any]],
    asset_type: str,
    service_type: str,
    compute: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    timeout: int = 3600,
) -> PublishedAsset:
    from c2d_core.ocean.dids import did_for
    from c2d_core.publishing import create_asset, set_metadata

    root = provider.root()
    provider_address = root["providerAddresses"][str(chain.chain_id)]
    nft, datatoken = create_asset(chain, publisher, name, name[:6].upper().replace(" ", ""))
    did = did_for(nft, chain.chain_id)
    files_document = {"datatokenAddress": datatoken, "nftAddress": nft, "files": files}
    encrypted_files = provider.encrypt(json.dumps(files_document).encode(), chain.chain_id)
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    metadata: dict[str, Any] = {
        "created": now,
        "updated": now,
        "type": asset_type,
        "name": name,
        "description": f"{name} (published by the c2d demo)",
        "author": "c2d demo",
        "license": "CC0-1.0",
    }
    if container is not None:
        metadata["algorithm"] = {"language": "python", "version": "0.1", "container": container}
    service: dict[str, Any] = {
        "id": service_type,
        "type": service_type,
        "files": encrypted_files,
        "datatokenAddress": datatoken,
        "serviceEndpoint": provider.url,
        "timeout": timeout,
    }
    if compute is not None:
        service["compute"] = compute
    ddo = {
        "@context": ["https://w3id.org/did/v1"],
        "id": did,
        "version": "4.1.0",
        "chainId": chain.chain_id,
        "nftAddress": nft,
        "metadata": metadata,
        "services": [service],
    }
    set_metadata(
        chain,
        publisher,
        nft,
        ddo,
        flags=3,
        provider_url=provider.url,
        provider_address=provider_address,
        encrypt=lambda data: bytes.fromhex(provider.encrypt(data, chain.chain_id).removeprefix("0x")),
    )
    return PublishedAsset(did=did, nft=nft, datatoken=datatoken, service_id=service_type)


def mint_to(
    chain: Chain, publisher: LocalAccount, asset: PublishedAsset, holder: str, amount: int = 5
) -> None:
    from c2d_core.publishing import mint

    mint(chain, publisher, asset.datatoken, holder, amount * DT)


def order_and_start(
    chain: Chain,
    consumer: LocalAccount,
    provider: ProviderClient,
    dataset: PublishedAsset,
    algorithm: PublishedAsset,
    env: dict[str, Any],
    *,
    valid_for: int = 3600,
    algocustomdata: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """initializeCompute → pay each quoted fee on chain → signed start; returns the job JSON."""
    from c2d_core.fees import ProviderFee, reuse_order, start_order

    valid_until = chain.block_timestamp() + valid_for
    quote = provider.initialize_compute(
        [{"documentId": dataset.did, "serviceId": dataset.service_id}],
        {"documentId": algorithm.did, "serviceId": algorithm.service_id},
        env["id"],
        valid_until,
        consumer.address,
    )
    orders = []
    for asset, answer in ((dataset, quote["datasets"][0]), (algorithm, quote["algorithm"])):
        if "providerFee" not in answer:
            orders.append(answer["validOrder"])
            continue
        fee = ProviderFee.from_wire(answer["providerFee"])
        if "validOrder" in answer:
            orders.append(reuse_order(chain, consumer, asset.datatoken, answer["validOrder"], fee))
        else:
            orders.append(
                start_order(
                    chain, consumer, asset.datatoken, env["consumerAddress"], asset.service_index, fee
                )
            )
    jobs = provider.start(
        consumer,
        {"documentId": dataset.did, "serviceId": dataset.service_id, "transferTxId": orders[0]},
        {
            "documentId": algorithm.did,
            "serviceId": algorithm.service_id,
            "transferTxId": orders[1],
            **({"algocustomdata": algocustomdata} if algocustomdata else {}),
        },
        env["id"],
        output=output,
    )
    return jobs[0]


def wait_for_job(
    provider: ProviderClient, consumer: str, job_id: str, timeout: float = 180.0, on_change: Any = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        job = provider.status(consumer, job_id)[0]
        if on_change and job["status"] != last:
            last = job["status"]
            on_change(job)
        if job.get("dateFinished"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still at status {job['status']} after {timeout:.0f} s")
        time.sleep(0.3)


def download_results(
    provider: ProviderClient, consumer: LocalAccount, job: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Download every result index; sizes are checked against the job's results list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for entry in job["results"] or []:
        response = provider.result(consumer, job["jobId"], int(entry["index"]))
        if response.status_code != 200:
            raise ProviderError(response.status_code, response.text)
        if len(response.content) != int(entry["filesize"]):
            raise ProviderError(
                200, f"result {entry['index']} is {len(response.content)} bytes, not {entry['filesize']}"
            )
        path = out_dir / entry["filename"]
        path.write_bytes(response.content)
        saved.append(path)
    return saved
