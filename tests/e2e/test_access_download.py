"""A job's results published as a new Ocean asset, bought and downloaded through Ocean's access routes.

On the embedded stack, as Ocean clients do it: a job started with `output.publishOutput` reports the
new DID (`resultsDid`); its owner asks `initialize` for a fee, orders the new datatoken with
`startOrder`, and downloads file 0 through `download`, byte for byte what `computeResult` serves.
Refusals: another address without an order, a wrong signature, a reused nonce, an asset forged by
someone else whose encrypted files point at the job's results, and the owner's own DDO rewritten to
name a result (a log) the asset was not published with.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from c2d_cli.consumer import order_and_start, wait_for_status
from c2d_cli.publisher import mint_to, publish_asset
from c2d_core.ocean.signing import sign_text as sign

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OUTPUT = {
    "publishOutput": True,
    "metadata": {
        "name": "Weather summary",
        "description": "Per-city summary computed on the Weather dataset",
        "tags": ["summary", "weather"],
        "license": "CC0-1.0",
    },
}


@dataclass
class ResultsAsset:
    job: dict[str, Any]
    did: str
    datatoken: str
    order_tx: str
    computed: bytes  # file 0 as computeResult serves it


def order_access(s: Any, account: Any, did: str, file_index: int | None = 0) -> tuple[str, str]:
    """initialize (checking file `file_index` when given), then startOrder with the quoted fee:
    (datatoken, order tx)."""
    from c2d_core.fees import ProviderFee, start_order

    quote = s.provider.initialize(did, "access", account.address, file_index=file_index)
    assert set(quote) == {"datatoken", "nonce", "providerFee"}, quote
    fee = ProviderFee.from_wire(quote["providerFee"])
    assert fee.provider_fee_amount == 0 and fee.valid_until == 0
    tx = start_order(s.chain, account, quote["datatoken"], account.address, 0, fee)
    return str(quote["datatoken"]), tx


def download_params(account: Any, did: str, tx: str, nonce: str, signer: Any = None) -> dict[str, str]:
    return {
        "documentId": did,
        "serviceId": "access",
        "transferTxId": tx,
        "fileIndex": "0",
        "consumerAddress": account.address,
        "nonce": nonce,
        "signature": sign(signer or account, did + nonce),
    }


@pytest.fixture(scope="module")
def results_asset(ocean_stack: Any) -> ResultsAsset:
    s = ocean_stack
    started = order_and_start(s.chain, s.consumer, s.provider, s.dataset, s.algorithm, s.env, output=OUTPUT)
    assert started["resultsDid"] == ""
    assert started["resultsAsset"]["status"] == "pending"
    job = wait_for_status(s.provider, s.consumer.address, started["jobId"], timeout=180)
    assert job["status"] == 70, job
    assert job["resultsAsset"]["status"] == "published", job["resultsAsset"]
    did = job["resultsDid"]
    assert re.fullmatch(r"did:op:[0-9a-f]{64}", did), job
    computed = s.provider.result(s.consumer, job["jobId"], 0)
    assert computed.status_code == 200
    datatoken, tx = order_access(s, s.consumer, did)
    return ResultsAsset(job=job, did=did, datatoken=datatoken, order_tx=tx, computed=computed.content)


def test_owner_downloads_the_published_results_byte_for_byte(
    ocean_stack: Any, results_asset: ResultsAsset
) -> None:
    s, asset = ocean_stack, results_asset
    response = s.provider.download(s.consumer, asset.did, "access", asset.order_tx, 0)
    assert response.status_code == 200, response.text
    assert response.content == asset.computed
    assert response.headers["content-disposition"] == 'attachment; filename="summary.json"'
    # Range works as on computeResult.
    ranged = s.provider.download(
        s.consumer, asset.did, "access", asset.order_tx, 0, headers={"Range": "bytes=0-9"}
    )
    assert ranged.status_code == 206 and ranged.content == asset.computed[:10]
    assert ranged.headers["content-range"] == f"bytes 0-9/{len(asset.computed)}"
    tail = s.provider.download(
        s.consumer, asset.did, "access", asset.order_tx, 0, headers={"Range": "bytes=-5"}
    )
    assert tail.status_code == 206 and tail.content == asset.computed[-5:]
    # The order stays usable: initialize names it instead of quoting a new fee.
    again = s.provider.initialize(asset.did, "access", s.consumer.address, transfer_tx_id=asset.order_tx)
    assert again == {"validOrder": asset.order_tx}
    # No location in anything the consumer got.
    for text in (response.headers.get("content-disposition", ""), str(asset.job)):
        assert "://" not in text.replace(s.provider.url, "")


def test_the_results_asset_is_an_ocean_asset_with_an_access_service(
    ocean_stack: Any, results_asset: ResultsAsset
) -> None:
    from provider_api.assets import ChainDdoResolver

    s, asset = ocean_stack, results_asset
    resolved = ChainDdoResolver(s.chain, lambda data: data).resolve(asset.did)
    assert resolved is not None
    services = resolved.ddo["services"]
    assert [service["type"] for service in services] == ["access"]
    assert services[0]["datatokenAddress"].lower() == asset.datatoken.lower()
    assert resolved.ddo["metadata"]["name"] == OUTPUT["metadata"]["name"]
    assert resolved.ddo["nft"]["owner"] == s.consumer.address
    # fileinfo (which ocean.py calls before every download) describes each file from the manifest.
    infos = s.provider._call("fileinfo", json={"did": asset.did, "serviceId": "access", "checksum": 1}).json()
    assert infos == [
        {
            "index": 0,
            "valid": True,
            "type": "c2dResult",
            "contentLength": str(len(asset.computed)),
            "contentType": "application/octet-stream",
            "filename": "summary.json",
            "checksum": hashlib.sha256(asset.computed).hexdigest(),
            "checksumType": "sha256",
        }
    ]
    # A compute service this is not: initializeCompute's territory stays separate.
    refused = s.provider._call(
        "initialize",
        params={"documentId": s.dataset.did, "serviceId": "compute", "consumerAddress": s.consumer.address},
    )
    assert refused.status_code == 400 and "initializeCompute" in refused.json()["error"]


def test_another_address_without_an_order_is_refused(ocean_stack: Any, results_asset: ResultsAsset) -> None:
    s, asset = ocean_stack, results_asset
    other = s.other_consumer
    # The owner's order does not entitle anyone else.
    response = s.provider.download(other, asset.did, "access", asset.order_tx, 0)
    assert response.status_code == 400, response.text
    assert "error" in response.json() and asset.computed[:20] not in response.content
    # Nor does a transaction that is no order at all.
    response = s.provider.download(other, asset.did, "access", "0x" + "ab" * 32, 0)
    assert response.status_code == 400 and "error" in response.json()


def test_wrong_signature_and_reused_nonce_are_refused(ocean_stack: Any, results_asset: ResultsAsset) -> None:
    s, asset = ocean_stack, results_asset
    url = f"{s.provider.url}/api/services/download"
    nonce = str(s.provider.nonce(s.consumer.address) + 1)
    forged = download_params(s.consumer, asset.did, asset.order_tx, nonce, signer=s.other_consumer)
    response = s.provider._http.get(url, params=forged)
    assert response.status_code == 400 and "signature" in response.json()["errors"]
    # The refused request spent nothing: the same nonce, properly signed, works once ...
    good = download_params(s.consumer, asset.did, asset.order_tx, nonce)
    assert s.provider._http.get(url, params=good).status_code == 200
    # ... and only once.
    replay = s.provider._http.get(url, params=good)
    assert replay.status_code == 400 and "signature" in replay.json()["errors"]


def test_an_asset_forged_to_point_at_the_job_serves_nothing(
    ocean_stack: Any, results_asset: ResultsAsset
) -> None:
    """Anyone can encrypt a files document to the Provider's public key: a look-alike asset naming the
    job's results must not open them to whoever buys it."""
    s, asset = ocean_stack, results_asset
    thief = s.other_consumer
    forged = publish_asset(
        s.chain,
        thief,
        s.provider,
        name="Not yours",
        files=[{"type": "c2dResult", "jobId": asset.job["jobId"], "index": 0}],
        asset_type="dataset",
        service_type="access",
    )
    mint_to(s.chain, thief, forged, thief.address, 2)
    _datatoken, tx = order_access(s, thief, forged.did, file_index=None)
    response = s.provider.download(thief, forged.did, "access", tx, 0)
    assert response.status_code == 404, response.text
    assert asset.computed[:20] not in response.content
    infos = s.provider._call("fileinfo", json={"did": forged.did, "serviceId": "access"}).json()
    assert infos[0]["valid"] is False and "filename" not in infos[0]
    # initialize with the file index says the same before anyone pays.
    checked = s.provider._call(
        "initialize",
        params={
            "documentId": forged.did,
            "serviceId": "access",
            "consumerAddress": thief.address,
            "fileIndex": "0",
        },
    )
    assert checked.status_code == 404


def test_the_owner_cannot_rewrite_the_asset_to_serve_a_log_it_was_not_published_with(
    ocean_stack: Any, results_asset: ResultsAsset
) -> None:
    """The asset's owner holds every ERC725 role and may set new metadata: files naming the algorithm's
    log (published without it: publishAlgorithmLog false) or another log of the job stay refused."""
    import copy

    from c2d_core.ocean.ddo_reader import FLAG_LZMA
    from c2d_core.publishing import set_metadata
    from provider_api.assets import ChainDdoResolver

    s, asset = ocean_stack, results_asset
    by_type = {item["type"]: item["index"] for item in asset.job["results"]}
    resolved = ChainDdoResolver(s.chain, lambda data: data).resolve(asset.did)
    assert resolved is not None and resolved.ddo["nft"]["owner"] == s.consumer.address
    original = {key: value for key, value in resolved.ddo.items() if key != "nft"}
    provider_address = s.provider.root()["providerAddresses"][str(s.chain.chain_id)]

    def store(ddo: dict[str, Any]) -> None:
        set_metadata(
            s.chain,
            s.consumer,
            resolved.nft_address,
            ddo,
            flags=FLAG_LZMA,
            provider_url=s.provider.url,
            provider_address=provider_address,
        )

    try:
        for kind in ("algorithmLog", "configurationLog"):
            document = {
                "datatokenAddress": asset.datatoken,
                "nftAddress": resolved.nft_address,
                "files": [{"type": "c2dResult", "jobId": asset.job["jobId"], "index": by_type[kind]}],
            }
            rewritten = copy.deepcopy(original)
            rewritten["services"][0]["files"] = s.provider.encrypt(
                json.dumps(document).encode(), s.chain.chain_id
            )
            store(rewritten)
            # The owner's own order still stands, and the job still vouches for the DID: only the index
            # is new, and it is refused as a file the asset does not have.
            response = s.provider.download(s.consumer, asset.did, "access", asset.order_tx, 0)
            assert response.status_code == 400, response.text
            assert "not published with result" in response.json()["error"]
            computed_log = s.provider.result(s.consumer, asset.job["jobId"], by_type[kind]).content
            assert not computed_log or computed_log[:20] not in response.content
            infos = s.provider._call("fileinfo", json={"did": asset.did, "serviceId": "access"}).json()
            assert infos[0]["valid"] is False and "not published with result" in infos[0]["error"]
            assert "filename" not in infos[0]
            checked = s.provider._call(
                "initialize",
                params={
                    "documentId": asset.did,
                    "serviceId": "access",
                    "consumerAddress": s.consumer.address,
                    "fileIndex": "0",
                },
            )
            assert checked.status_code == 400 and "not published with result" in checked.json()["error"]
    finally:
        store(original)
    # Back to what was published: the output is served again.
    assert s.provider.download(s.consumer, asset.did, "access", asset.order_tx, 0).content == asset.computed


def test_the_cli_publishes_and_shows_the_results_did(ocean_stack: Any, tmp_path_factory: Any) -> None:
    from test_cli import Cli, flat

    s = ocean_stack
    cli = Cli(s.running.home, tmp_path_factory.mktemp("cli-results-asset"))
    started = cli.run(
        "compute", "start", "--dataset", s.dataset.did, "--algorithm", s.algorithm.did,
        "--publish-output", "--output-name", "CLI results", "--output-tag", "cli", "--publish-log", "--wait",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr + started.stdout
    job_id = re.search(r"job ([0-9a-f]{32}) finished", started.stdout)
    assert job_id is not None, started.stdout
    assert re.search(r"results asset: did:op:[0-9a-f]{64}", flat(started.stdout)), started.stdout
    status = cli.run("compute", "status", job_id.group(1))
    assert status.returncode == 0, status.stderr
    assert re.search(r"results asset did:op:[0-9a-f]{64}", flat(status.stdout)), status.stdout
    as_json = cli.run("compute", "status", job_id.group(1), "--json")
    job = json.loads(as_json.stdout)
    assert job["resultsAsset"]["status"] == "published" and job["resultsDid"].startswith("did:op:")
    # With the log asked for, the asset serves two files: the output and the algorithm's log.
    _datatoken, tx = order_access(s, s.consumer, job["resultsDid"], file_index=1)
    log = s.provider.download(s.consumer, job["resultsDid"], "access", tx, 1)
    computed_log = s.provider.result(s.consumer, job["jobId"], 1)
    assert log.status_code == 200 and log.content == computed_log.content
    assert log.headers["content-disposition"] == 'attachment; filename="algorithm.log"'


def test_expired_results_are_a_clear_410(ocean_stack: Any, tmp_path_factory: Any) -> None:
    """What storage expiry leaves behind (the run tagged, the files deleted) answers like computeResult."""
    import dagster as dg

    from c2d_core import engine
    from c2d_core.results import LocalResultStore

    s = ocean_stack
    started = order_and_start(
        s.chain, s.consumer, s.provider, s.dataset, s.algorithm, s.env, output={**OUTPUT, "owner": None}
    )
    job = wait_for_status(s.provider, s.consumer.address, started["jobId"], timeout=180)
    did = job["resultsDid"]
    assert did, job
    _datatoken, tx = order_access(s, s.consumer, did)
    assert s.provider.download(s.consumer, did, "access", tx, 0).status_code == 200
    with dg.DagsterInstance.from_config(s.running.dagster_home) as instance:
        run = instance.get_runs(filters=dg.RunsFilter(tags={engine.JOB_ID: job["jobId"]}))[0]
        results = Path(s.running.home) / "results"
        assert (results / job["jobId"]).is_dir()
        LocalResultStore(results).delete_job(job["jobId"])
        instance.add_run_tags(run.run_id, {engine.RESULTS_EXPIRED: "1"})
    response = s.provider.download(s.consumer, did, "access", tx, 0)
    assert response.status_code == 410 and "expired" in response.json()["error"]
    checked = s.provider._call(
        "initialize",
        params={
            "documentId": did,
            "serviceId": "access",
            "consumerAddress": s.consumer.address,
            "fileIndex": "0",
        },
    )
    assert checked.status_code == 410
