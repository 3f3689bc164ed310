"""The whole embedded stack for end-to-end tests: anvil with the Ocean contracts, Dagster webserver and
daemon, the Provider over HTTP, a local data origin, and a published dataset with a trusted algorithm."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OTHER_ENV = "ocean-compute-b"
# A copy of the first environment whose jobs go through the leak filter (issue 15): only the tests
# that pick it meet an output stage; the others' environments are as in config/environments.yaml.
FILTERED_ENV = "ocean-compute-filtered"
# A copy of the first environment whose jobs the review gate holds for an operator (issue 15, item 4;
# tests/e2e/test_review_flow.py).
REVIEW_ENV = "ocean-compute-review"


def _two_environments(path: Path) -> Path:
    """The project's environments plus a copy of the first under another id, one with the leak
    filter and one that requires review."""
    config = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    config["environments"].append({**config["environments"][0], "id": OTHER_ENV})
    config["environments"].append(
        {
            **config["environments"][0],
            "id": FILTERED_ENV,
            "outputStages": [{"name": "leak_filter", "settings": {"window_bytes": 4096}, "deadline": 60}],
        }
    )
    review = {"required": True, "deadlineSeconds": 3600}
    config["environments"].append({**config["environments"][0], "id": REVIEW_ENV, "review": review})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class OceanStack:
    running: object
    chain: object
    provider: object
    origin_url: str
    publisher: object
    consumer: object
    other_consumer: object
    dataset: object
    algorithm: object
    untrusted_algorithm: object
    raw_dataset: object
    env: dict
    algorithm_bytes: bytes
    # A second environment, so a fee quoted for one can be tried in the other.
    other_env: dict
    # An environment with `review: {required: true}`: its jobs wait at 55 for `c2d admin review`.
    review_env: dict
    # An environment with the leak filter as its output stage.
    filtered_env: dict


@pytest.fixture(scope="session")
def ocean_stack(tmp_path_factory: pytest.TempPathFactory):
    from c2d_cli import stack
    from c2d_cli.origin import LocalOrigin
    from c2d_cli.provider_client import ProviderClient
    from c2d_cli.publisher import SAMPLE_CONTAINER, mint_to, publish_asset
    from c2d_core.chain import Chain, dev_accounts
    from c2d_core.ocean.checksums import trusted_algorithm_entry

    home = tmp_path_factory.mktemp("ocean") / ".c2d"
    envs_file = _two_environments(home.parent / "environments.yaml")
    with pytest.MonkeyPatch.context() as patch:
        # Read by the Provider, the webserver and the daemon, which inherit the environment at start.
        patch.setenv("C2D_ENVIRONMENTS_FILE", str(envs_file))
        running, _ = stack.up(home, port=stack._free_port())
    provider = ProviderClient(running.provider_url)
    try:
        with LocalOrigin(EXAMPLES) as origin:
            chain = Chain.connect(running.rpc_url, Path(running.addresses_file))
            accounts = dev_accounts(10)
            publisher, consumer, other = accounts[1], accounts[2], accounts[3]
            algorithm_bytes = (EXAMPLES / "algorithms" / "summary.py").read_bytes()
            algorithm_files = [{"type": "url", "url": f"{origin.url}/algorithms/summary.py", "method": "GET"}]
            data_files = [{"type": "url", "url": f"{origin.url}/data/weather.csv", "method": "GET"}]
            algorithm = publish_asset(
                chain,
                publisher,
                provider,
                name="Summary",
                files=algorithm_files,
                asset_type="algorithm",
                service_type="access",
                container=SAMPLE_CONTAINER,
            )
            untrusted = publish_asset(
                chain,
                publisher,
                provider,
                name="Untrusted",
                files=algorithm_files,
                asset_type="algorithm",
                service_type="access",
                container=SAMPLE_CONTAINER,
            )
            entry = trusted_algorithm_entry(
                algorithm.did, hashlib.sha256(algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
            )
            dataset = publish_asset(
                chain,
                publisher,
                provider,
                name="Weather",
                files=data_files,
                asset_type="dataset",
                service_type="compute",
                compute={
                    "allowRawAlgorithm": False,
                    "allowNetworkAccess": False,
                    "publisherTrustedAlgorithms": [entry],
                    "publisherTrustedAlgorithmPublishers": [],
                },
            )
            raw_dataset = publish_asset(
                chain,
                publisher,
                provider,
                name="RawOK",
                files=data_files,
                asset_type="dataset",
                service_type="compute",
                compute={"allowRawAlgorithm": True, "publisherTrustedAlgorithms": ["*"]},
            )
            for asset in (algorithm, untrusted, dataset, raw_dataset):
                # Enough for every e2e module sharing this stack (each order spends one).
                for holder in (consumer, other):
                    mint_to(chain, publisher, asset, holder.address, 100)
            envs = {env["id"]: env for env in provider.environments(chain.chain_id)}
            env = envs["ocean-compute"]
            yield OceanStack(
                running=running,
                chain=chain,
                provider=provider,
                origin_url=origin.url,
                publisher=publisher,
                consumer=consumer,
                other_consumer=other,
                dataset=dataset,
                algorithm=algorithm,
                untrusted_algorithm=untrusted,
                raw_dataset=raw_dataset,
                env=env,
                algorithm_bytes=algorithm_bytes,
                other_env=envs[OTHER_ENV],
                review_env=envs[REVIEW_ENV],
                filtered_env=envs[FILTERED_ENV],
            )
    finally:
        provider.close()
        stack.down(home)
