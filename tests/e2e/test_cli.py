"""The `c2d` command as a user runs it: real subprocesses against the embedded stack of `ocean_stack`
(C2D_HOME points at it), from start --wait to downloaded results, and each way it can go wrong."""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from c2d_cli.consumer import wait_for_status
from c2d_core.chain import dev_account

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STOPPER = 4  # the anvil account that starts and stops the sleeping job
C2D = str(Path(sys.executable).parent / "c2d")
JOB_LINE = re.compile(r"job ([0-9a-f]{32}) (finished|failed)")
FAILING = 'print("reading the inputs")\nraise SystemExit("boom: no such column")\n'
SLEEPING = (
    "import os, time\n"
    "open(os.path.join(os.environ['OUTPUTS'], 'partial.txt'), 'w').write('so far')\n"
    "print('sleeping', flush=True)\n"
    "time.sleep(120)\n"
)


class Cli:
    def __init__(self, home: str, folder: Path) -> None:
        self.folder = folder
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
        self.env.pop("COLUMNS", None)
        self.env.update({"C2D_HOME": home, "XDG_CONFIG_HOME": str(folder / "xdg")})

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [C2D, *args],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        process = self.start(*args)
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def finish(process: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def flat(text: str) -> str:
    """Output without rich's panel borders and line breaks, for matching sentences."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


@pytest.fixture(scope="module")
def cli(ocean_stack, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(ocean_stack.running.home, tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def raw_container() -> list[str]:
    from c2d_cli.publisher import SAMPLE_CONTAINER

    image = f"{SAMPLE_CONTAINER['image']}:{SAMPLE_CONTAINER['tag']}@{SAMPLE_CONTAINER['checksum']}"
    return ["--image", image, "--entrypoint", "python $ALGO"]


@pytest.fixture(scope="module")
def jobs(ocean_stack, cli: Cli, raw_container: list[str]) -> dict[str, subprocess.Popen]:
    """The module's three jobs, started together so it stays short: two followed with --wait, and one
    that sleeps until it is stopped (in the other environment, so it does not queue behind them).

    Each as another account: one account's concurrent orders and signed requests would race for the
    same transaction and Provider nonces."""
    from c2d_cli.publisher import mint_to

    (cli.folder / "fail.py").write_text(FAILING)
    (cli.folder / "sleep.py").write_text(SLEEPING)
    s = ocean_stack
    mint_to(s.chain, s.publisher, s.raw_dataset, dev_account(STOPPER).address, 1)
    return {
        "trusted": cli.start(
            "compute", "start", "--dataset", s.dataset.did, "--algorithm", s.algorithm.did,
            "--algocustomdata", '{"column": "temp_c"}', "--wait",
        ),
        "failing": cli.start(
            "compute", "start", "--dataset", s.raw_dataset.did, "--raw-algorithm", "fail.py", *raw_container,
            "--wait", "--account", "3",
        ),
        "sleeping": cli.start(
            "compute", "start", "--dataset", s.raw_dataset.did, "--raw-algorithm", "sleep.py", *raw_container,
            "--env", getattr(s, "other_env", s.env)["id"], "--account", str(STOPPER),
        ),
    }  # fmt: skip


@pytest.fixture(scope="module")
def trusted_job(jobs) -> subprocess.CompletedProcess:
    """The trusted algorithm's `start --wait`, finished (read once: its output is a pipe)."""
    return finish(jobs["trusted"])


def test_start_wait_follows_the_phases_and_the_results_download(
    ocean_stack, cli: Cli, trusted_job: subprocess.CompletedProcess
) -> None:
    result = trusted_job
    assert result.returncode == 0, result.stdout + result.stderr
    for phase in ("queued", "provisioning", "running", "publishing"):
        assert re.search(rf"✓\s+{phase}\s+\d+\.\d s", result.stdout), result.stdout
    assert "initializeCompute" in result.stderr and "startOrder" in result.stderr
    job_id = JOB_LINE.search(result.stdout).group(1)

    out = cli.folder / "results"
    downloaded = cli.run("compute", "results", job_id, "--out", str(out), "--json")
    assert downloaded.returncode == 0, downloaded.stderr
    listing = json.loads(downloaded.stdout)
    assert [item["type"] for item in listing] == [
        "output",
        "algorithmLog",
        "configurationLog",
        "publishLog",
        "attestation",
    ]
    for item in listing:
        content = Path(item["path"]).read_bytes()
        assert len(content) == item["filesize"] and hashlib.sha256(content).hexdigest() == item["sha256"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["column"] == "temp_c" and summary["cities"]["Lisbon"]["count"] == 4

    logs = cli.run("compute", "logs", job_id)
    assert logs.returncode == 0 and "summarised 8 rows" in logs.stdout
    listed = cli.run("compute", "list", "--json")
    assert job_id in [job["jobId"] for job in json.loads(listed.stdout)]
    # The dataset's location is in nothing the consumer saw.
    host = ocean_stack.origin_url.split("//")[1]
    assert host not in result.stdout + result.stderr + downloaded.stdout + listed.stdout


def test_verify_passes_on_the_downloaded_results_and_fails_on_a_tampered_one(
    ocean_stack, cli: Cli, trusted_job: subprocess.CompletedProcess
) -> None:
    job_id = JOB_LINE.search(trusted_job.stdout).group(1)
    out = cli.folder / "verified"
    assert cli.run("compute", "results", job_id, "--out", str(out)).returncode == 0

    verified = cli.run("compute", "verify", job_id, "--dir", str(out), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    provider = httpx.get(ocean_stack.running.provider_url + "/").json()["providerAddresses"]
    assert (
        report["verified"] is True and report["expectedSigner"] == provider[str(ocean_stack.running.chain_id)]
    )
    attestation = report["attestation"]
    print("attestation of job", job_id, json.dumps(attestation, indent=1))  # shown with -s
    assert attestation["jobId"] == job_id and attestation["status"] == 70
    assert attestation["algorithm"]["did"] == ocean_stack.algorithm.did
    assert attestation["inputs"][0]["did"] == ocean_stack.dataset.did
    assert attestation["inputs"][0]["files"] and attestation["algorithm"]["files"]
    assert [c["subject"] for c in report["checks"] if c["check"] == "file"] == [
        r["filename"] for r in attestation["results"]
    ]
    table = cli.run("compute", "verify", job_id, "--dir", str(out))
    assert table.returncode == 0 and f"verified: job {job_id}" in flat(table.stdout)

    summary = out / "summary.json"
    summary.write_bytes(summary.read_bytes().replace(b"Lisbon", b"Lisbom"))
    tampered = cli.run("compute", "verify", job_id, "--dir", str(out))
    assert tampered.returncode == 4, tampered.stdout + tampered.stderr
    assert "summary.json sha256 summary.json's sha256 is" in flat(tampered.stdout)
    assert f"not verified: 1 check(s) failed for job {job_id}" in flat(tampered.stderr)


def test_a_failing_algorithm_exits_3_with_its_log(cli: Cli, jobs) -> None:
    result = finish(jobs["failing"])
    assert result.returncode == 3, result.stdout + result.stderr
    text = flat(result.stdout)
    assert re.search(r"job [0-9a-f]{32} failed: algorithm exited with code 1", text), text
    assert "boom: no such column" in text  # the log's last lines
    assert re.search(r"✗\s+running", result.stdout)


def test_stop_kills_the_algorithm_and_keeps_what_it_wrote(ocean_stack, cli: Cli, jobs) -> None:
    s = ocean_stack
    started = finish(jobs["sleeping"])
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    owner = dev_account(STOPPER).address
    wait_for_status(
        s.provider, owner, job_id, until=lambda job: job["status"] >= 40, timeout=60, interval=0.2
    )
    stopped = cli.run("compute", "stop", job_id, "--account", str(STOPPER))
    assert stopped.returncode == 0 and f"stop requested for job {job_id}" in stopped.stdout
    logs = cli.run("compute", "logs", job_id, "--follow", "--account", str(STOPPER))  # waits for the end
    assert logs.returncode == 0 and "sleeping" in logs.stdout
    job = s.provider.status(owner, job_id)[0]
    assert job["stopreq"] == 1 and job["dateFinished"]
    assert "partial.txt" in [entry["filename"] for entry in job["results"]]
    assert "stopped on request" in cli.run("compute", "status", job_id, "--account", str(STOPPER)).stdout


def test_a_bad_did_is_a_clear_error(ocean_stack, cli: Cli) -> None:
    unknown = "did:op:" + "0" * 64
    result = cli.run("compute", "start", "--dataset", unknown, "--algorithm", ocean_stack.algorithm.did)
    assert result.returncode == 1
    assert f"the dataset {unknown} is not an asset on chain 8996" in flat(result.stderr)
    no_job = cli.run("compute", "status", "0" * 32)
    assert no_job.returncode == 1 and f"no job {'0' * 32} for the account" in flat(no_job.stderr)


def test_an_account_without_datatokens_is_told_so_before_paying(ocean_stack, cli: Cli) -> None:
    s = ocean_stack
    result = cli.run(
        "compute", "start", "--dataset", s.dataset.did, "--algorithm", s.algorithm.did, "--account", "5"
    )
    assert result.returncode == 1
    text = flat(result.stderr)
    assert "holds no datatoken of the dataset" in text and "--mint-to" in text


def test_an_unreachable_provider_is_named(ocean_stack, cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli.run(
        "compute", "start", "--dataset", ocean_stack.dataset.did, "--algorithm", ocean_stack.algorithm.did,
        "--provider-url", f"http://127.0.0.1:{port}",
    )  # fmt: skip
    assert result.returncode == 1
    text = flat(result.stderr)
    assert f"cannot reach the Provider at http://127.0.0.1:{port}" in text and "--provider-url" in text


def test_publish_an_algorithm_and_a_dataset_trusting_it_by_did(ocean_stack, cli: Cli) -> None:
    from c2d_cli.publisher import SAMPLE_CONTAINER
    from c2d_core.ocean.checksums import trusted_algorithm_entry

    origin = ocean_stack.origin_url
    algorithm = cli.run(
        "publish", "algorithm", "--name", "Summary again", "--file", f"{origin}/algorithms/summary.py",
        "--image", "python:3.11-slim", "--checksum", SAMPLE_CONTAINER["checksum"],
        "--entrypoint", "python $ALGO", "--json",
    )  # fmt: skip
    assert algorithm.returncode == 0, algorithm.stderr
    published = json.loads(algorithm.stdout)
    expected = trusted_algorithm_entry(
        published["did"], hashlib.sha256(ocean_stack.algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
    )
    assert published["trustedAlgorithmEntry"] == expected

    dataset = cli.run(
        "publish", "dataset", "--name", "Weather again", "--file", f"{origin}/data/weather.csv",
        "--trusted-algorithm", published["did"], "--json",
    )  # fmt: skip
    assert dataset.returncode == 0, dataset.stderr
    did = json.loads(dataset.stdout)["did"]
    shown = cli.run("asset", "show", did, "--json")
    assert shown.returncode == 0, shown.stderr
    ddo = json.loads(shown.stdout)["ddo"]
    service = ddo["services"][0]
    assert service["compute"]["publisherTrustedAlgorithms"] == [expected]
    assert service["files"].startswith("<encrypted for the Provider")
    assert origin.split("//")[1] not in shown.stdout
