"""The streaming fetcher against a real local HTTP server: checksums, caps, retries, timeouts, leaks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures_http import ALGORITHM_CODE, BIG_SIZE, CSV_BYTES, HttpOrigin, big_bytes

from c2d_core.fetch import FetchError, FetchLimits, SourceSettings, check_scheme, fetch_to_file
from c2d_core.workflow import FileObject

FAST = FetchLimits(connect_timeout=1.0, read_timeout=1.0, retries=2, deadline=10.0)


class Sleeps:
    """An injected sleeper: records the backoff instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def _get(origin: HttpOrigin, name: str, **extra: object) -> FileObject:
    return FileObject.model_validate({"type": "url", "url": origin.url(name), "method": "GET", **extra})


def _assert_no_leak(origin: HttpOrigin, message: str) -> None:
    assert origin.leaks_in(message) == [], message


def test_fetch_writes_file_with_size_and_sha256(http_origin: HttpOrigin, tmp_path: Path) -> None:
    dest = tmp_path / "0"
    fetched = fetch_to_file(_get(http_origin, "data.csv"), dest, FAST, sleeper=Sleeps())
    assert dest.read_bytes() == CSV_BYTES
    assert fetched.size == len(CSV_BYTES)
    assert fetched.sha256 == hashlib.sha256(CSV_BYTES).hexdigest()
    assert not (tmp_path / "0.part").exists()


def test_big_file_streams_in_chunks(http_origin: HttpOrigin, tmp_path: Path) -> None:
    dest = tmp_path / "big"
    fetched = fetch_to_file(_get(http_origin, "big.bin"), dest, FAST)
    assert fetched.size == BIG_SIZE == dest.stat().st_size
    assert fetched.sha256 == hashlib.sha256(big_bytes()).hexdigest()


def test_plain_dict_file_objects_are_accepted(http_origin: HttpOrigin, tmp_path: Path) -> None:
    fetched = fetch_to_file({"type": "url", "url": http_origin.url("data.csv")}, tmp_path / "f", FAST)
    assert fetched.size == len(CSV_BYTES)


def test_404_fails_at_once_without_naming_the_location(http_origin: HttpOrigin, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with pytest.raises(FetchError) as caught:
        fetch_to_file(
            _get(http_origin, "missing.csv"), tmp_path / "0", FAST, sleeper=sleeps, label="input file 0"
        )
    assert caught.value.message == "input file 0: HTTP 404 from the data source"
    assert str(caught.value) == caught.value.message
    _assert_no_leak(http_origin, str(caught.value))
    assert http_origin.count("missing.csv") == 1  # 4xx is never retried
    assert sleeps.delays == []
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_500_then_200_succeeds_after_one_retry(http_origin: HttpOrigin, tmp_path: Path) -> None:
    sleeps = Sleeps()
    fetched = fetch_to_file(_get(http_origin, "flaky.csv"), tmp_path / "0", FAST, sleeper=sleeps)
    assert fetched.sha256 == hashlib.sha256(CSV_BYTES).hexdigest()
    assert http_origin.count("flaky.csv") == 2
    assert len(sleeps.delays) == 1
    assert 0 < sleeps.delays[0] <= FAST.backoff_cap


def test_429_is_retried(http_origin: HttpOrigin, tmp_path: Path) -> None:
    fetch_to_file(_get(http_origin, "busy.csv"), tmp_path / "0", FAST, sleeper=Sleeps())
    assert http_origin.count("busy.csv") == 2


def test_persistent_5xx_gives_up_after_bounded_attempts_with_capped_backoff(
    http_origin: HttpOrigin, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    limits = FetchLimits(retries=4, backoff_base=1.0, backoff_cap=3.0, deadline=100.0)
    with pytest.raises(FetchError) as caught:
        fetch_to_file(_get(http_origin, "broken.csv"), tmp_path / "0", limits, sleeper=sleeps)
    assert caught.value.message == "file: HTTP 503 from the data source after 5 attempts"
    assert http_origin.count("broken.csv") == 5
    assert len(sleeps.delays) == 4
    # Exponential with jitter: each delay within [ceiling/2, ceiling], ceilings 1, 2, 3 (capped), 3.
    for delay, ceiling in zip(sleeps.delays, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_read_timeout_fails_after_bounded_time(http_origin: HttpOrigin, tmp_path: Path) -> None:
    limits = FetchLimits(connect_timeout=0.5, read_timeout=0.2, retries=2, deadline=10.0)
    sleeps = Sleeps()
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_to_file(
            _get(http_origin, "slow.csv"), tmp_path / "0", limits, sleeper=sleeps, label="input file 0"
        )
    elapsed = time.monotonic() - started
    assert caught.value.message == "input file 0: timed out after 3 attempts"
    assert http_origin.count("slow.csv") == 3
    assert elapsed < 2.0
    _assert_no_leak(http_origin, caught.value.message)


def test_overall_deadline_stops_a_trickling_download(http_origin: HttpOrigin, tmp_path: Path) -> None:
    # Each read arrives well within the read timeout; only the overall deadline can stop this.
    limits = FetchLimits(read_timeout=1.0, retries=3, deadline=0.4)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_to_file(_get(http_origin, "trickle.bin"), tmp_path / "0", limits, sleeper=Sleeps())
    assert "0.4-second deadline" in caught.value.message
    assert time.monotonic() - started < 1.5
    assert http_origin.count("trickle.bin") == 1
    assert list(tmp_path.iterdir()) == []


def test_deadline_leaves_no_time_for_backoff(http_origin: HttpOrigin, tmp_path: Path) -> None:
    now = [0.0]

    def sleeper(seconds: float) -> None:
        now[0] += seconds

    limits = FetchLimits(retries=10, backoff_base=4.0, backoff_cap=8.0, deadline=5.0)
    with pytest.raises(FetchError) as caught:
        fetch_to_file(
            _get(http_origin, "broken.csv"), tmp_path / "0", limits, sleeper=sleeper, clock=lambda: now[0]
        )
    assert "5-second deadline leaves no time to retry" in caught.value.message
    assert http_origin.count("broken.csv") < 11


def test_size_cap_with_content_length_aborts_before_reading(http_origin: HttpOrigin, tmp_path: Path) -> None:
    limits = FetchLimits(max_bytes=1024 * 1024)
    with pytest.raises(FetchError) as caught:
        fetch_to_file(_get(http_origin, "big.bin"), tmp_path / "0", limits, label="input file 0")
    assert caught.value.message == "input file 0: larger than the 1048576-byte cap"
    assert list(tmp_path.iterdir()) == []
    assert http_origin.count("big.bin") == 1  # a cap is not transient


def test_size_cap_without_content_length_aborts_while_streaming(
    http_origin: HttpOrigin, tmp_path: Path
) -> None:
    limits = FetchLimits(max_bytes=1024 * 1024)
    with pytest.raises(FetchError) as caught:
        fetch_to_file(_get(http_origin, "big-unsized.bin"), tmp_path / "0", limits)
    assert caught.value.message == "file: larger than the 1048576-byte cap"
    assert http_origin.count("big-unsized.bin") == 1
    assert list(tmp_path.iterdir()) == []


def test_body_ends_where_content_length_says(http_origin: HttpOrigin, tmp_path: Path) -> None:
    # HTTP framing wins over a server that keeps writing: the file is the declared 10 bytes.
    fetched = fetch_to_file(_get(http_origin, "lying-length.bin"), tmp_path / "0", FetchLimits(max_bytes=100))
    assert fetched.size == 10


def test_exactly_the_cap_is_allowed(http_origin: HttpOrigin, tmp_path: Path) -> None:
    fetched = fetch_to_file(
        _get(http_origin, "data.csv"), tmp_path / "0", FetchLimits(max_bytes=len(CSV_BYTES))
    )
    assert fetched.size == len(CSV_BYTES)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:70/",
        "data:text/plain,hi",
        "//no-scheme/x",
    ],
)
def test_non_http_schemes_are_rejected(tmp_path: Path, url: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_to_file({"type": "url", "url": url}, tmp_path / "0", FAST)
    assert "passwd" not in caught.value.message and "127.0.0.1" not in caught.value.message
    assert not (tmp_path / "0").exists()


def test_redirect_is_followed(http_origin: HttpOrigin, tmp_path: Path) -> None:
    fetched = fetch_to_file(_get(http_origin, "redirect.csv"), tmp_path / "0", FAST)
    assert fetched.size == len(CSV_BYTES)
    assert http_origin.count("redirect.csv") == 1 and http_origin.count("data.csv") == 1


def test_redirect_to_a_file_url_is_refused(http_origin: HttpOrigin, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_to_file(_get(http_origin, "redirect-file"), tmp_path / "0", FAST)
    assert caught.value.message == "file: only http and https locations are allowed"


def test_redirect_loop_is_bounded(http_origin: HttpOrigin, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_to_file(_get(http_origin, "redirect-loop"), tmp_path / "0", FAST)
    assert "redirects" in caught.value.message
    _assert_no_leak(http_origin, caught.value.message)


def test_url_guard_sees_every_hop(http_origin: HttpOrigin, tmp_path: Path) -> None:
    seen: list[str] = []

    def guard(url: httpx.URL) -> None:
        check_scheme(url)
        seen.append(url.path)

    fetch_to_file(_get(http_origin, "redirect.csv"), tmp_path / "0", FAST, url_guard=guard)
    assert [path.rsplit("/", 1)[-1] for path in seen] == ["redirect.csv", "data.csv"]


def test_url_guard_can_refuse(http_origin: HttpOrigin, tmp_path: Path) -> None:
    def deny(url: httpx.URL) -> None:
        raise FetchError("the location is not allowed")

    with pytest.raises(FetchError, match=r"^input file 2: the location is not allowed$"):
        fetch_to_file(
            _get(http_origin, "data.csv"), tmp_path / "0", FAST, url_guard=deny, label="input file 2"
        )
    assert http_origin.count("data.csv") == 0


def test_post_with_headers_and_userdata_body(http_origin: HttpOrigin, tmp_path: Path) -> None:
    file_object = _get(http_origin, "echo", method="POST", headers={"X-Api-Key": "k-123"})
    fetch_to_file(file_object, tmp_path / "0", FAST, userdata={"limit": 5})
    request = http_origin.last("echo")
    assert request.method == "POST"
    assert request.headers["X-Api-Key"] == "k-123"
    assert request.body == b'{"limit":5}' or request.body.replace(b" ", b"") == b'{"limit":5}'
    assert request.query == ""


def test_get_appends_userdata_as_query_parameters(http_origin: HttpOrigin, tmp_path: Path) -> None:
    file_object = FileObject(url=http_origin.url("echo") + "?fixed=1", headers={"Authorization": "Bearer t"})
    fetch_to_file(file_object, tmp_path / "0", FAST, userdata={"region": "eu west", "n": 3, "on": True})
    request = http_origin.last("echo")
    assert request.method == "GET"
    assert request.query == "fixed=1&region=eu+west&n=3&on=true"
    assert request.headers["Authorization"] == "Bearer t"
    assert (tmp_path / "0").read_bytes().startswith(b"GET fixed=1&region=eu+west")


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(FetchError) as caught:
        fetch_to_file({"url": f"http://127.0.0.1:{port}/x"}, tmp_path / "0", FAST, sleeper=sleeps)
    assert caught.value.message == "file: could not connect to the data source after 3 attempts"
    assert str(port) not in caught.value.message
    assert len(sleeps.delays) == 2


def test_unsupported_types_and_bad_objects_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="the 'hash' of an ipfs file is not a CID"):
        fetch_to_file({"type": "ipfs", "hash": "Qm/../../etc"}, tmp_path / "0", FAST)
    with pytest.raises(FetchError, match="needs a 'transactionId'"):
        fetch_to_file({"type": "arweave", "transactionId": "../x"}, tmp_path / "0", FAST)
    with pytest.raises(FetchError, match="needs an 's3Access' object"):
        fetch_to_file({"type": "s3"}, tmp_path / "0", FAST)
    with pytest.raises(FetchError) as caught:
        fetch_to_file({"type": "url", "url": "http://h/x", "method": "DELETE"}, tmp_path / "0", FAST)
    assert "not a valid file object" in caught.value.message and "http://h" not in caught.value.message


def test_existing_destination_is_replaced_atomically(http_origin: HttpOrigin, tmp_path: Path) -> None:
    dest = tmp_path / "algorithm"
    dest.write_bytes(b"old")
    fetch_to_file(_get(http_origin, "algorithm.py"), dest, FAST)
    assert dest.read_bytes() == ALGORITHM_CODE


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        FetchLimits(read_timeout=0)
    with pytest.raises(ValueError):
        FetchLimits(retries=-1)


# --- ipfs and arweave through a gateway (a real loopback HTTP server answering the gateway paths) ---

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
TX_ID = "bNbA3TEQVL60xlgCcqdz4ZPHFZ711cZ3hmkpGttDt_U"


@pytest.fixture
def gateway() -> Iterator[str]:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    served = {f"/ipfs/{CID}": CSV_BYTES, f"/ipfs/{CID}/algo.py": ALGORITHM_CODE, f"/ar/{TX_ID}": b"arweave!"}

    class Gateway(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_ipfs_and_arweave_files_come_through_their_gateways(gateway: str, tmp_path: Path) -> None:
    sources = SourceSettings(ipfs_gateway=gateway, arweave_gateway=gateway + "/ar/")
    fetched = fetch_to_file({"type": "ipfs", "hash": CID}, tmp_path / "0", FAST, sources=sources)
    assert (tmp_path / "0").read_bytes() == CSV_BYTES and fetched.size == len(CSV_BYTES)
    fetch_to_file({"type": "ipfs", "hash": f"ipfs://{CID}/algo.py"}, tmp_path / "1", FAST, sources=sources)
    assert (tmp_path / "1").read_bytes() == ALGORITHM_CODE
    fetch_to_file({"type": "arweave", "transactionId": TX_ID}, tmp_path / "2", FAST, sources=sources)
    assert (tmp_path / "2").read_bytes() == b"arweave!"
    with pytest.raises(FetchError) as caught:
        fetch_to_file({"type": "ipfs", "hash": "Q" * 46}, tmp_path / "3", FAST, sources=sources, label="x")
    assert caught.value.message == "x: HTTP 404 from the data source"


def test_a_failing_disk_write_surfaces_and_leaves_no_partial_file(
    http_origin: HttpOrigin, tmp_path: Path
) -> None:
    # Hashing and writing happen on a second thread: its error must still reach the caller. A file
    # size limit (as the sandbox sets) makes the write fail with EFBIG part way through.
    script = f"""
import errno, resource, sys
from pathlib import Path
from c2d_core.fetch import FetchLimits, fetch_to_file
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
try:
    fetch_to_file({{"type": "url", "url": {http_origin.url("big.bin")!r}}}, Path({str(tmp_path / "big")!r}),
                  FetchLimits(connect_timeout=1.0, read_timeout=1.0, retries=0, deadline=10.0))
except OSError as error:
    sys.exit(0 if error.errno == errno.EFBIG else 3)
sys.exit(2)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []
