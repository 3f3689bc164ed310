"""The consumer flow's own guards (c2d_cli.consumer): downloads that never write outside the chosen folder
and refuse a result that does not match what the job lists, and the one polling loop, timed by an
injected clock so no test waits.

The downloads talk to a fake Provider on 127.0.0.1: the real one never lists a result named `../x` or
with a wrong checksum, and guarding against a Provider that does is the point.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from eth_account import Account

from c2d_cli.cli_output import CliError
from c2d_cli.consumer import PollTimeout, download_results, poll_until, wait_for_status
from c2d_cli.provider_client import ProviderClient

KEY = "0x" + "4c" * 32
JOB_ID = "a" * 32
ENDPOINTS = {
    "nonce": ["GET", "/api/services/nonce"],
    "computeStatus": ["GET", "/api/services/compute"],
    "computeResult": ["GET", "/api/services/computeResult"],
}


@dataclass
class FakeProvider:
    """Serves `results[index]` as computeResult and `statuses` one by one as the job's status."""

    url: str = ""
    results: dict[int, bytes] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    status_reads: int = 0


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            if parts.path == "/":
                self._send(200, json.dumps({"serviceEndpoints": ENDPOINTS}).encode())
            elif parts.path == "/api/services/nonce":
                self._send(200, b'{"nonce": 0}')
            elif parts.path == "/api/services/compute":
                index = min(fake.status_reads, len(fake.statuses) - 1)
                fake.status_reads += 1
                self._send(200, json.dumps([fake.statuses[index]]).encode())
            elif parts.path == "/api/services/computeResult" and int(query["index"]) in fake.results:
                self._send(200, fake.results[int(query["index"])], "application/octet-stream")
            else:
                self._send(404, b'{"error": "not found"}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def entry(index: int, filename: str, content: bytes, **extra: Any) -> dict[str, Any]:
    return {"index": index, "filename": filename, "filesize": len(content), "type": "output", **extra}


def download(fake: FakeProvider, entries: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    client = ProviderClient(fake.url)
    try:
        job = {"jobId": JOB_ID, "results": entries}
        return [saved.path for saved in download_results(client, Account.from_key(KEY), job, out_dir)]
    finally:
        client.close()


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize(
    ("filename", "saved_as"),
    [
        ("../x", "x"),
        ("../../../../tmp/escaped", "escaped"),
        ("/etc/cron.d/job", "job"),
        ("a\x00b", "result-0"),
        ("sub/..", "result-0"),
    ],
)
def test_a_result_never_lands_outside_the_folder(
    fake_provider: FakeProvider, tmp_path: Path, filename: str, saved_as: str
) -> None:
    content = b"computed"
    fake_provider.results[0] = content
    out_dir = tmp_path / "deep" / "out"
    saved = download(fake_provider, [entry(0, filename, content)], out_dir)
    assert saved == [out_dir / saved_as]
    assert saved[0].read_bytes() == content
    # Nothing anywhere else under tmp_path: not beside the folder, not in its parent.
    assert files_under(tmp_path) == [f"deep/out/{saved_as}"]


def test_a_result_that_does_not_match_its_checksum_is_refused_and_not_written(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    fake_provider.results[0] = b"tampered"
    listed = entry(0, "model.bin", b"tampered", sha256=hashlib.sha256(b"original").hexdigest())
    with pytest.raises(CliError, match=r"result 0 \(model.bin\) does not match its sha256"):
        download(fake_provider, [listed], tmp_path / "out")
    assert files_under(tmp_path) == []


def test_a_result_with_a_matching_checksum_is_saved(fake_provider: FakeProvider, tmp_path: Path) -> None:
    fake_provider.results[0] = b"original"
    listed = entry(0, "model.bin", b"original", sha256=hashlib.sha256(b"original").hexdigest().upper())
    assert download(fake_provider, [listed], tmp_path) == [tmp_path / "model.bin"]


def test_a_result_of_another_size_than_listed_is_refused(fake_provider: FakeProvider, tmp_path: Path) -> None:
    fake_provider.results[0] = b"short"
    with pytest.raises(CliError, match="arrived with 5 bytes, the job lists 100"):
        download(fake_provider, [{**entry(0, "out.txt", b""), "filesize": 100}], tmp_path / "out")
    assert files_under(tmp_path) == []


def test_a_refused_download_is_the_providers_explained_error(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    with pytest.raises(CliError, match="the Provider says: not found"):
        download(fake_provider, [entry(7, "gone.txt", b"")], tmp_path / "out")
    assert files_under(tmp_path) == []


# --- polling ------------------------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_polling_returns_the_read_that_satisfies_the_condition() -> None:
    clock = FakeClock()
    values = iter([1, 2, 3, 4])
    seen: list[int] = []
    result = poll_until(
        lambda: next(values),
        lambda value: value >= 3,
        timeout=60,
        interval=0.5,
        on_poll=seen.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result == 3 and seen == [1, 2, 3]
    assert clock.sleeps == [0.5, 0.5]


def test_polling_gives_up_after_its_timeout_with_the_last_value() -> None:
    clock = FakeClock()
    reads = iter(range(1000))
    with pytest.raises(PollTimeout) as raised:
        poll_until(
            lambda: next(reads),
            lambda _value: False,
            timeout=10,
            interval=2,
            describe=lambda value: f"still at {value}",
            clock=clock,
            sleep=clock.sleep,
        )
    # Reads at t = 0, 2, …, 10 are within the timeout; the one at 12 is past it.
    assert raised.value.last == 6 and str(raised.value) == "still at 6 after 10 s"
    assert isinstance(raised.value, TimeoutError)


def test_waiting_for_a_job_reports_each_new_status_once(fake_provider: FakeProvider) -> None:
    fake_provider.statuses = [
        {"jobId": JOB_ID, "status": status, "dateFinished": finished}
        for status, finished in ((20, None), (40, None), (40, None), (60, None), (70, "1700000000.5"))
    ]
    clock = FakeClock()
    changes: list[int] = []
    client = ProviderClient(fake_provider.url)
    try:
        final = wait_for_status(
            client,
            "0x" + "ab" * 20,
            JOB_ID,
            job={"jobId": JOB_ID, "status": 1, "dateFinished": None},  # the start's answer: read first
            on_change=lambda job: changes.append(job["status"]),
            clock=clock,
            sleep=clock.sleep,
        )
    finally:
        client.close()
    assert final["status"] == 70 and changes == [1, 20, 40, 60, 70]
    assert fake_provider.status_reads == 5
