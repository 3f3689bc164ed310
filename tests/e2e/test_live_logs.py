"""computeStreamableLogs and `c2d compute logs --follow` against the embedded stack (issue 16, item 8).

The algorithm prints a line, then waits until the test puts a file into its outputs folder (the job
volume is on this machine). Everything asserted about the first line is read while the job is still
running its algorithm, so nothing depends on timing: the stream and the CLI must deliver the line
before the job can go on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from c2d_core.chain import dev_account
from c2d_core.ocean.signing import compute_streamable_logs_message, sign_request
from c2d_core.settings import EngineSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

OWNER, STRANGER = 6, 7  # anvil accounts no other module orders with
C2D = str(Path(sys.executable).parent / "c2d")
WAITING = (
    "import os, time\n"
    "print('first line', flush=True)\n"
    "go = os.path.join(os.environ['OUTPUTS'], 'go')\n"
    "for _ in range(1500):\n"
    "    if os.path.exists(go):\n"
    "        break\n"
    "    time.sleep(0.1)\n"
    "print('second line', flush=True)\n"
)
ROUTE = "/api/services/computeStreamableLogs"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli_env(home: str, folder: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.update({"C2D_HOME": home, "XDG_CONFIG_HOME": str(folder / "xdg")})
    return env


def _signed(provider_url: str, account_index: int, job_id: str, nonce: int | None = None) -> dict[str, str]:
    account = dev_account(account_index)
    if nonce is None:
        answer = httpx.get(f"{provider_url}/api/services/nonce", params={"userAddress": account.address})
        nonce = int(float(answer.json()["nonce"])) + 1
    message = compute_streamable_logs_message(account.address, job_id)
    return {
        "consumerAddress": account.address,
        "jobId": job_id,
        "nonce": str(nonce),
        "signature": sign_request(account, message, nonce),
    }


def _read_until(process: subprocess.Popen, text: str) -> str:
    """Lines of the process's stdout up to the one holding `text` (readline blocks: no timing)."""
    seen = ""
    assert process.stdout is not None
    while text not in seen:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    return seen


@pytest.fixture(scope="module")
def waiting_job(ocean_stack, tmp_path_factory: pytest.TempPathFactory):
    from c2d_cli.publisher import SAMPLE_CONTAINER, mint_to

    s = ocean_stack
    folder = tmp_path_factory.mktemp("live-logs")
    (folder / "wait.py").write_text(WAITING)
    mint_to(s.chain, s.publisher, s.raw_dataset, dev_account(OWNER).address, 1)
    image = f"{SAMPLE_CONTAINER['image']}:{SAMPLE_CONTAINER['tag']}@{SAMPLE_CONTAINER['checksum']}"
    env = _cli_env(s.running.home, folder)
    started = subprocess.run(
        [C2D, "compute", "start", "--dataset", s.raw_dataset.did, "--raw-algorithm", "wait.py",
         "--image", image, "--entrypoint", "python $ALGO", "--account", str(OWNER)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    job_id = started.stdout.strip().splitlines()[-1]
    go = EngineSettings(home=Path(s.running.home)).resolved_work_dir / job_id / "data" / "outputs" / "go"
    try:
        yield job_id, folder, env
    finally:
        if go.parent.is_dir():  # never leave the job waiting, whatever failed
            go.write_text("")


def _status(ocean_stack, job_id: str) -> dict:
    return ocean_stack.provider.status(dev_account(OWNER).address, job_id)[0]


def test_the_log_streams_while_the_job_runs_and_the_cli_follows_it(ocean_stack, waiting_job) -> None:
    s = ocean_stack
    job_id, folder, env = waiting_job
    url = s.running.provider_url
    command = [C2D, "compute", "logs", job_id, "--follow", "--account", str(OWNER)]
    follower = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = _read_until(follower, "first line")
        job = _status(s, job_id)
        # The CLI printed the first line while the algorithm still waits for the test.
        assert "first line" in first and "second line" not in first
        assert job["status"] == 40 and job["dateFinished"] is None

        # Ctrl-C stops following, not the job.
        interrupted = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as a terminal delivers it: a test session started in the background (`cmd &` in a
            # script) ignores SIGINT, and an ignored disposition is inherited across exec.
            preexec_fn=_default_sigint,
        )
        assert "first line" in _read_until(interrupted, "first line")
        interrupted.send_signal(signal.SIGINT)
        _, said = interrupted.communicate(timeout=60)
        assert interrupted.returncode == 130, said
        assert f"stopped following: job {job_id} keeps running" in " ".join(said.split())
        assert _status(s, job_id)["status"] == 40

        # The route itself: chunked text/plain, the first line before the job ends.
        params = _signed(url, OWNER, job_id)
        with httpx.stream("GET", url + ROUTE, params=params, timeout=httpx.Timeout(30, read=None)) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain")
            assert answer.headers.get("transfer-encoding") == "chunked"
            received = b""
            for chunk in answer.iter_bytes():
                received += chunk
                if b"first line" in received:
                    break
        assert received.startswith(b"first line\n") and b"second line" not in received
        assert _status(s, job_id)["dateFinished"] is None

        # The same request again: its nonce is spent.
        replayed = httpx.get(url + ROUTE, params=params, timeout=30)
        assert replayed.status_code == 400 and "signature" in replayed.json()["errors"], replayed.text
        # Signed by another consumer for this job: as if there were no such job.
        stranger = httpx.get(url + ROUTE, params=_signed(url, STRANGER, job_id), timeout=30)
        assert stranger.status_code == 404, stranger.text
        # The owner's address with a stranger's signature.
        forged = {**_signed(url, STRANGER, job_id), "consumerAddress": dev_account(OWNER).address}
        refused = httpx.get(url + ROUTE, params=forged, timeout=30)
        assert refused.status_code == 400 and "signature" in refused.json()["errors"], refused.text

        # Let the algorithm go on: the followed log gets the rest and the command ends with the job.
        go = EngineSettings(home=Path(s.running.home)).resolved_work_dir / job_id / "data" / "outputs" / "go"
        go.write_text("")
        rest, errors = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, errors
    printed = first + rest
    assert printed.index("first line") < printed.index("second line")
    assert _status(s, job_id)["dateFinished"]
    # After the end the stream sends the whole (live) log and ends at once.
    after = httpx.get(url + ROUTE, params=_signed(url, OWNER, job_id), timeout=60)
    assert after.status_code == 200 and after.text == "first line\nsecond line\n"
