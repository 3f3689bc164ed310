"""The leak filter through the whole stack (issue 15): a consumer orders a raw algorithm that copies the
dataset into its outputs, in the shared stack's environment with the leak filter configured, and meets
what the docs promise over the Provider's HTTP API: status 61 with the filter's sentence in
statusDetail and the filter phase's times, no output listed nor fetchable by index, nor the
algorithm's log, the configure and publish logs downloadable; `c2d compute status` shows the
filtering phase as the failed one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from c2d_cli.compute.outcome import outcome_of
from c2d_cli.compute.status import status_rows
from c2d_cli.consumer import Target, initialize, place_orders, start_job, wait_for_status
from c2d_cli.publisher import SAMPLE_CONTAINER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# The raw dataset's one file (tests/fixtures_stack.py serves examples/ as the data origin).
WEATHER = (Path(__file__).resolve().parents[2] / "examples" / "data" / "weather.csv").read_bytes()

COPY_INPUT = """\
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
source = os.path.join(os.environ["INPUTS"], did, "0")
shutil.copyfile(source, os.path.join(os.environ["OUTPUTS"], "copy.csv"))
print("copied", os.path.getsize(source), "bytes")
"""


def test_a_copied_input_is_refused_with_61_and_only_the_logs_come_back(ocean_stack: Any) -> None:
    s = ocean_stack
    env = s.filtered_env
    meta = {"rawcode": COPY_INPUT, "container": SAMPLE_CONTAINER}
    datasets = [Target.of(s.raw_dataset, "dataset")]
    consumer = s.consumer
    quoted = initialize(s.provider, s.chain, consumer.address, env, datasets, None, meta=meta)
    orders = place_orders(s.chain, consumer, env, quoted, lambda _text: None)
    job = start_job(s.provider, consumer, env, datasets, None, orders, meta=meta)
    final = wait_for_status(s.provider, consumer.address, job["jobId"], timeout=180)

    # The consumer's job JSON: refused by the filter, with its reason and the filter phase's times.
    assert final["status"] == 61 and final["statusText"] == "Failed to fetch results", final
    assert final["statusDetail"] == (
        "outputs withheld by the leak_filter stage: outputs/copy.csv is an exact copy of an input file "
        f"({len(WEATHER)} bytes)"
    ), final["statusDetail"]
    assert final["dateFinished"] is not None
    phases = final["phases"]
    assert phases["filter"]["started"] is not None and phases["filter"]["finished"] is not None
    assert float(phases["filter"]["started"]) >= float(phases["algorithm"]["finished"])
    assert s.origin_url.split("//")[1] not in str(final)

    # No output is listed, and none can be fetched by index; nor the algorithm's log (the algorithm
    # writes it as freely as its outputs); the engine's logs can.
    results = final["results"]
    kinds = {entry["type"] for entry in results}
    assert results and not {"output", "algorithmLog"} & kinds, results
    assert {"configurationLog", "publishLog"} <= kinds
    beyond = s.provider.result(consumer, job["jobId"], len(results))
    assert beyond.status_code == 404, beyond.text
    publish_log = next(entry for entry in results if entry["type"] == "publishLog")
    downloaded = s.provider.result(consumer, job["jobId"], int(publish_log["index"]))
    assert downloaded.status_code == 200, downloaded.text
    assert "outputs and the algorithm's log withheld" in downloaded.text
    for entry in results:
        answer = s.provider.result(consumer, job["jobId"], int(entry["index"]))
        assert answer.status_code == 200 and WEATHER not in answer.content, entry

    # What `c2d compute status` makes of it.
    shown = dict(status_rows(final, float(final["dateFinished"]) + 1))
    assert shown["filtering"].startswith("failed") and shown["publishing"].startswith("done")
    assert outcome_of(final) == "failed: outputs withheld by leak_filter"
