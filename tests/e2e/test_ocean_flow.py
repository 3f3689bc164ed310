"""The whole Ocean Compute-to-Data flow on the embedded stack, as an Ocean client does it:
publish, mint, initializeCompute, startOrder with the signed fees, signed start, poll, download."""

import json
from pathlib import Path

import httpx
import pytest

from c2d_cli.consumer import download_results, order_and_start, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_consumer_runs_a_trusted_algorithm_and_downloads_every_result(ocean_stack, tmp_path: Path) -> None:
    s = ocean_stack
    job = order_and_start(s.chain, s.consumer, s.provider, s.dataset, s.algorithm, s.env)
    assert job["status"] == 1 and job["statusText"] == "Warming up"
    assert job["owner"] == s.consumer.address and job["inputDID"] == [s.dataset.did]
    seen: list[int] = []
    final = wait_for_status(
        s.provider, s.consumer.address, job["jobId"], on_change=lambda j: seen.append(j["status"])
    )
    assert final["status"] == 70, final
    assert seen[-1] == 70 and final["algoDID"] == s.algorithm.did
    assert isinstance(final["dateCreated"], str) and float(final["dateFinished"]) >= float(
        final["dateCreated"]
    )
    assert [r["type"] for r in final["results"]] == [
        "output",
        "algorithmLog",
        "configurationLog",
        "publishLog",
        "attestation",
    ]
    saved = [result.path for result in download_results(s.provider, s.consumer, final, tmp_path)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cities"]["Lisbon"]["count"] == 4
    assert len(saved) == 5
    # Range requests return the exact slice.
    ranged = s.provider.result(s.consumer, job["jobId"], 0, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == (tmp_path / "summary.json").read_bytes()[:10]
    assert ranged.headers["content-disposition"] == 'attachment; filename="summary.json"'
    # The dataset's location appears in no response the consumer got.
    host = s.origin_url.split("//")[1]
    status_text = httpx.get(
        f"{s.provider.url}/api/services/compute", params={"consumerAddress": s.consumer.address}
    ).text
    assert host not in status_text and "weather.csv" not in status_text
    for path in saved:
        assert host not in path.read_text(errors="replace")
