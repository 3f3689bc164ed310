"""What an operator sees of a compute run in the Dagster UI (issue 16, items 3 and 7), read through the
webserver's GraphQL API as the UI reads it: a handful of readable tags, and a run config that holds
neither the consumer's raw code nor its custom data, while the algorithm still reads both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from c2d_cli.consumer import Target, initialize, place_orders, start_job, wait_for_status
from c2d_cli.publisher import SAMPLE_CONTAINER
from c2d_core import engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CODE_MARKER = "c2d-secret-code-5f1e9b"  # in the code only, never in anything the UI reads
CUSTOM_MARKER = "c2d-secret-custom-a83c27"
RAW_CODE = f"""\
import hashlib, json, os, sys
# {CODE_MARKER}
own = open(sys.argv[0], "rb").read()
custom = json.load(open(os.path.join(os.environ.get("INPUTS", "/data/inputs"), "algoCustomData.json")))
with open(os.path.join(os.environ.get("OUTPUTS", "/data/outputs"), "seen.json"), "w") as out:
    json.dump({{"code_sha256": hashlib.sha256(own).hexdigest(), "custom": custom}}, out)
"""
OPERATOR_TAGS = {
    "c2d/job_id",
    "c2d/owner",
    "c2d/did",
    "c2d/environment",
    "c2d/status",
    "c2d/status_text",
    "c2d/outcome",
}
_RUN = """
query($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename ... on Runs { results { runId runConfigYaml tags { key value } } }
  }
}
"""


def _ui_runs(webserver_url: str, key: str, value: str) -> list[dict[str, Any]]:
    answer = httpx.post(
        f"{webserver_url}/graphql",
        json={"query": _RUN, "variables": {"filter": {"tags": [{"key": key, "value": value}]}}},
        timeout=30,
    ).json()
    assert not answer.get("errors"), answer
    assert answer["data"]["runsOrError"]["__typename"] == "Runs"
    return list(answer["data"]["runsOrError"]["results"])


def test_the_ui_shows_readable_tags_and_no_code_or_custom_data(ocean_stack: Any, tmp_path: Path) -> None:
    s = ocean_stack
    meta = {"rawcode": RAW_CODE, "container": SAMPLE_CONTAINER}
    custom = {"column": "temp_c", "note": CUSTOM_MARKER}
    datasets = [Target.of(s.raw_dataset, "dataset")]
    consumer = s.other_consumer
    quoted = initialize(s.provider, s.chain, consumer.address, s.env, datasets, None, meta=meta)
    orders = place_orders(s.chain, consumer, s.env, quoted, lambda _text: None)
    job = start_job(s.provider, consumer, s.env, datasets, None, orders, meta=meta, algocustomdata=custom)
    final = wait_for_status(s.provider, consumer.address, job["jobId"], timeout=120)
    assert final["status"] == 70 and final["algoDID"] == "raw", final

    # The algorithm read its code and its custom data where it always has.
    output = next(r for r in final["results"] if r["type"] == "output")
    downloaded = s.provider.result(consumer, job["jobId"], int(output["index"]))
    assert downloaded.status_code == 200, downloaded.text
    seen = json.loads(downloaded.content)
    assert seen == {"code_sha256": hashlib.sha256(RAW_CODE.encode()).hexdigest(), "custom": custom}

    # What the UI reads of the run: the run config without either, and only the operator's tags.
    (run,) = _ui_runs(s.running.webserver_url, engine.JOB_ID, job["jobId"])
    config = run["runConfigYaml"]
    assert "encryptedSecrets" in config and hashlib.sha256(RAW_CODE.encode()).hexdigest() in config
    for secret in (CODE_MARKER, CUSTOM_MARKER, "algocustomdata", "rawcode:"):
        assert secret not in config
    shown = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert {key for key in shown if key.startswith("c2d/")} == OPERATOR_TAGS
    # Besides ours, only Dagster's own ("Launched by", the run monitor's limit, the code location).
    assert all(key == engine.LAUNCHED_BY or key.startswith("dagster/") for key in set(shown) - OPERATOR_TAGS)
    assert engine.MAX_RUNTIME in shown
    assert shown[engine.LAUNCHED_BY] == f"the Provider, for {consumer.address}"
    assert shown["c2d/status"] == "70" and shown["c2d/status_text"] == "Job finished"
    assert shown["c2d/outcome"] == "succeeded" and shown["c2d/did"] == s.raw_dataset.did
    assert not any(value.startswith(("[", "{")) for value in shown.values())
    # The hidden state is in run storage all the same: a filter on a hidden tag finds the run.
    by_agreement = _ui_runs(s.running.webserver_url, engine.AGREEMENT_ID, final["agreementId"])
    assert [item["runId"] for item in by_agreement] == [run["runId"]]
