"""The engine side of issue 8 on the embedded stack: a job started over HTTP with `output.publishOutput`
ends 70, its run carries the new DID, and the asset it names resolves from the chain with provenance
that matches the job and files that name the job's results; the Provider's key holds no role on it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from c2d_cli.consumer import order_and_start, wait_for_status
from c2d_cli.publisher import SAMPLE_CONTAINER
from c2d_core import engine
from c2d_core.crypto import decrypt_service_files
from c2d_core.publishing import ecies_decryptor
from c2d_core.result_assets import RESULT_FILE_TYPE, RESULTS_DATATOKENS
from provider_api.assets import ChainDdoResolver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _run_tags(dagster_home: str, job_id: str) -> dict[str, str]:
    """The job's run tags, read from Dagster's run storage (as the Provider does: the job's state is
    under Dagster's hidden prefix, which GraphQL's Run.tags leaves out)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(dagster_home) as instance:
        (run,) = instance.get_runs(filters=dg.RunsFilter(tags={engine.JOB_ID: job_id}))
        return dict(run.tags)


def test_job_with_publish_output_ends_70_with_a_resolvable_results_asset(ocean_stack: Any) -> None:
    s = ocean_stack
    owner = s.other_consumer.address  # the consumer names someone else as the owner
    output = {
        "publishOutput": True,
        "publishAlgorithmLog": True,
        "metadata": {"name": "Weather summary", "tags": ["weather"], "license": "CC0-1.0"},
        "owner": owner,
    }
    job = order_and_start(s.chain, s.consumer, s.provider, s.dataset, s.algorithm, s.env, output=output)
    final = wait_for_status(s.provider, s.consumer.address, job["jobId"], timeout=240)
    assert final["status"] == 70, final

    tags = _run_tags(s.running.dagster_home, job["jobId"])
    assert tags[engine.STATUS] == "70"
    assert json.loads(tags[engine.RESULTS_ASSET])["status"] == "published", tags[engine.RESULTS_ASSET]
    did = tags[engine.RESULTS_DID]
    assert final["resultsDid"] == did

    provider_key = (Path(s.running.home) / "secrets" / "provider-key").read_text().strip()
    resolved = ChainDdoResolver(s.chain, ecies_decryptor(provider_key)).resolve(did)
    assert resolved is not None and resolved.ddo["nft"]["owner"] == owner
    provider_address = s.provider.root()["providerAddresses"][str(s.chain.chain_id)]
    nft = s.chain.contracts.at("ERC721Template", resolved.nft_address)
    assert tuple(nft.functions.getPermissions(provider_address).call()) == (False,) * 4
    (service,) = resolved.ddo["services"]
    assert service["serviceEndpoint"] == s.provider.url
    datatoken = s.chain.contracts.at("ERC20Template", service["datatokenAddress"])
    assert tuple(datatoken.functions.getPermissions(provider_address).call()) == (False, False)
    assert datatoken.functions.balanceOf(owner).call() == RESULTS_DATATOKENS * 10**18

    manifest = json.loads(tags[engine.RESULTS])
    outputs = [entry for entry in manifest if entry["type"] == "output"]
    (log,) = [entry for entry in manifest if entry["type"] == "algorithmLog"]
    provenance = resolved.ddo["metadata"]["additionalInformation"]["c2dProvenance"]
    assert provenance["jobId"] == job["jobId"] and provenance["inputs"] == [s.dataset.did]
    assert provenance["algorithm"] == {"did": s.algorithm.did}
    assert provenance["container"] == {
        "image": SAMPLE_CONTAINER["image"],
        "tag": SAMPLE_CONTAINER["tag"],
        "checksum": SAMPLE_CONTAINER["checksum"],
    }
    assert provenance["environment"] == s.env["id"] and provenance["providerAddress"] == provider_address
    assert [item["name"] for item in provenance["outputs"]] == [entry["filename"] for entry in outputs]
    # Each output's recorded checksum is that of the bytes computeResult serves.
    for item, entry in zip(provenance["outputs"], outputs, strict=True):
        served = s.provider.result(s.consumer, job["jobId"], entry["index"])
        assert served.status_code == 200
        assert item["checksum"] == hashlib.sha256(served.content).hexdigest()
        assert item["size"] == len(served.content)
    files = decrypt_service_files(provider_key, service["files"])
    assert files == [
        {"type": RESULT_FILE_TYPE, "jobId": job["jobId"], "index": entry["index"]}
        for entry in [*outputs, log]
    ]
