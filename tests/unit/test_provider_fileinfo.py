"""fileinfo against real local HTTP servers: sizes, types, checksums, the public-address guard, and
that no answer (valid, invalid or error) ever repeats any part of the file's location.

`http_origin` (tests/fixtures_http.py) has no HEAD and ignores Range, so it exercises the fallback;
`head_origin` below answers HEAD and ranged GETs as object stores do.
"""

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from fixtures_http import BIG_SIZE, CSV_BYTES, SECRET_PREFIX, HttpOrigin

from c2d_core.fetch import FetchError
from c2d_core.netguard import NetPolicy
from provider_api.main import create_app
from provider_api.settings import ProviderSettings

REPORT = b"a,b,c\n" * 1000


def make_client(tmp_path: Path, **overrides: Any) -> TestClient:
    settings = ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}", **{"allow_non_public_ip": True, **overrides}
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as test_client:
        yield test_client


class _HeadHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _headers(self, status: int, length: int, **extra: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(length))
        for key, value in extra.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()

    def do_HEAD(self) -> None:
        if self.path.endswith("/report.csv"):
            self._headers(200, len(REPORT), Content_Disposition='attachment; filename="../../etc/report.csv"')
        elif self.path.endswith("/get-only.csv"):
            self._headers(403, 0)  # like a URL presigned for GET only
        else:
            self._headers(404, 0)

    def do_GET(self) -> None:
        if self.path.endswith("/report.csv"):
            self._headers(200, len(REPORT))
            self.wfile.write(REPORT)
        elif self.path.endswith("/get-only.csv"):
            if self.headers.get("Range") == "bytes=0-0":
                self._headers(206, 1, Content_Range=f"bytes 0-0/{len(REPORT)}")
                self.wfile.write(REPORT[:1])
            else:
                self._headers(200, len(REPORT))
                self.wfile.write(REPORT)
        else:
            self._headers(404, 0)


@pytest.fixture
def head_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HeadHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{SECRET_PREFIX}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fileinfo(client: TestClient, body: dict[str, Any]) -> httpx.Response:
    return client.post("/api/services/fileinfo", json=body)


def assert_no_location(response: httpx.Response, origin: HttpOrigin | None = None) -> None:
    text = response.text + " ".join(f"{key}: {value}" for key, value in response.headers.items())
    for piece in ("s3cr3t", SECRET_PREFIX, "127.0.0.1", "http://", "localhost"):
        assert piece not in text, f"{piece!r} leaked in {text}"
    if origin is not None:
        assert origin.leaks_in(text) == []


def test_reachable_file_with_checksum_as_ocean_py_asks(client: TestClient, http_origin: HttpOrigin) -> None:
    response = fileinfo(
        client, {"type": "url", "url": http_origin.url("data.csv"), "method": "GET", "checksum": 1}
    )
    assert response.status_code == 200
    assert response.json() == [
        {
            "index": 0,
            "valid": True,
            "type": "url",
            "contentLength": str(len(CSV_BYTES)),
            "contentType": "application/octet-stream",
            "checksum": hashlib.sha256(CSV_BYTES).hexdigest(),
            "checksumType": "sha256",
        }
    ]
    assert_no_location(response, http_origin)
    # HEAD is not implemented there (501), so the probe fell back to a one-byte ranged GET
    assert http_origin.requests[0].headers.get("Range") == "bytes=0-0"


def test_checksum_only_when_asked(client: TestClient, http_origin: HttpOrigin) -> None:
    for flag in (None, False, 0, "false"):
        body = {"type": "url", "url": http_origin.url("data.csv")}
        if flag is not None:
            body["checksum"] = flag
        item = fileinfo(client, body).json()[0]
        assert item["valid"] is True and "checksum" not in item
    assert (
        "checksum"
        in fileinfo(client, {"type": "url", "url": http_origin.url("data.csv"), "checksum": True}).json()[0]
    )


def test_head_metadata_and_declared_filename(client: TestClient, head_origin: str) -> None:
    response = fileinfo(client, {"type": "url", "url": f"{head_origin}/report.csv", "checksum": 1})
    item = response.json()[0]
    assert item["contentType"] == "text/csv"
    assert item["contentLength"] == str(len(REPORT))
    assert item["filename"] == "report.csv"  # only the last component of what the server declared
    assert item["checksum"] == hashlib.sha256(REPORT).hexdigest()
    assert_no_location(response)


def test_length_from_content_range_when_head_is_refused(client: TestClient, head_origin: str) -> None:
    item = fileinfo(client, {"type": "url", "url": f"{head_origin}/get-only.csv"}).json()[0]
    assert item == {
        "index": 0,
        "valid": True,
        "type": "url",
        "contentLength": str(len(REPORT)),
        "contentType": "text/csv",
    }


def test_missing_file_is_invalid_and_says_why_without_the_location(
    client: TestClient, http_origin: HttpOrigin
) -> None:
    response = fileinfo(client, {"type": "url", "url": http_origin.url("gone.csv"), "checksum": 1})
    assert response.status_code == 200
    assert response.json() == [
        {"index": 0, "valid": False, "type": "url", "error": "HTTP 404 from the data source"}
    ]
    assert_no_location(response, http_origin)


def test_redirects_are_followed_but_not_to_other_schemes(client: TestClient, http_origin: HttpOrigin) -> None:
    ok = fileinfo(client, {"type": "url", "url": http_origin.url("redirect.csv"), "checksum": 1}).json()[0]
    assert ok["valid"] is True and ok["checksum"] == hashlib.sha256(CSV_BYTES).hexdigest()
    response = fileinfo(client, {"type": "url", "url": http_origin.url("redirect-file")})
    assert response.json()[0]["valid"] is False
    assert_no_location(response, http_origin)


def test_unreachable_host_is_invalid(client: TestClient) -> None:
    response = fileinfo(client, {"type": "url", "url": "http://127.0.0.1:9/s3cr3t-bucket-path/x.csv"})
    assert response.json() == [
        {"index": 0, "valid": False, "type": "url", "error": "could not connect to the data source"}
    ]
    assert_no_location(response)


def test_large_files_get_no_checksum(tmp_path: Path, http_origin: HttpOrigin) -> None:
    with make_client(tmp_path, max_checksum_bytes=1024) as small:
        for name in ("big.bin", "big-unsized.bin"):
            item = fileinfo(small, {"type": "url", "url": http_origin.url(name), "checksum": 1}).json()[0]
            assert item["valid"] is True and "checksum" not in item, name
        assert fileinfo(small, {"type": "url", "url": http_origin.url("big.bin")}).json()[0][
            "contentLength"
        ] == str(BIG_SIZE)


def test_post_files_are_checked_with_post(client: TestClient, http_origin: HttpOrigin) -> None:
    item = fileinfo(
        client, {"type": "url", "url": http_origin.url("echo"), "method": "post", "checksum": 1}
    ).json()[0]
    assert item["valid"] is True
    assert {request.method for request in http_origin.requests} == {"POST"}


def test_non_public_addresses_are_refused_by_default(tmp_path: Path, http_origin: HttpOrigin) -> None:
    with make_client(tmp_path, allow_non_public_ip=False) as guarded:
        for url in (
            http_origin.url("data.csv"),
            "http://localhost/s3cr3t-bucket-path/x",
            "http://169.254.169.254/s3cr3t",
        ):
            response = fileinfo(guarded, {"type": "url", "url": url, "checksum": 1})
            assert response.json() == [
                {"index": 0, "valid": False, "type": "url", "error": "the location is not a public address"}
            ]
            assert_no_location(response, http_origin)
    assert http_origin.requests == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"type": "url"}, "malformed file object: file 0: a file of type 'url' needs a 'url'"),
        ({"url": "http://127.0.0.1/s3cr3t-bucket-path/a"}, "malformed file object: file 0 needs a 'type'"),
        (
            {"type": "graphql", "url": "http://127.0.0.1/s3cr3t"},
            "Unsupported type graphql by this Provider (only arweave, ipfs, s3, url)",
        ),
        ({"type": "ftp", "url": "ftp://127.0.0.1/s3cr3t-bucket-path/a"}, "Unsupported type ftp"),
        (
            {"type": "url", "url": "http://127.0.0.1/s3cr3t-bucket-path/a", "method": "DELETE"},
            "Unsafe method DELETE: file 0 may use GET or POST",
        ),
        (
            {"type": "url", "url": "http://127.0.0.1/s3cr3t-bucket-path/a", "headers": ["s3cr3t"]},
            "malformed file object: file 0: headers: Input should be a valid dictionary",
        ),
        ({"did": "did:op:" + "ab" * 32}, "fileinfo by did and serviceId needs both"),
        ({"serviceId": "0"}, "fileinfo by did and serviceId needs both"),
        ({}, "malformed file object: send a file object such as {type: 'url', url: ...}"),
    ],
)
def test_malformed_requests_are_400_without_the_location(
    client: TestClient, body: dict[str, Any], error: str
) -> None:
    response = fileinfo(client, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert_no_location(response)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://100.64.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1]/x",
        "http://0.0.0.0/x",
        "http://localhost/x",
        "http://no-such-host.invalid/x",
        "file:///etc/passwd",
    ],
)
def test_public_host_guard_refuses(url: str) -> None:
    with pytest.raises(FetchError):
        NetPolicy().check(httpx.URL(url))


@pytest.mark.parametrize("url", ["http://8.8.8.8/x", "https://[2606:4700:4700::1111]/x"])
def test_public_host_guard_allows_public_literals(url: str) -> None:
    NetPolicy().check(httpx.URL(url))
