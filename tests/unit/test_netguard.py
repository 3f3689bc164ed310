"""The SSRF guard: every non-public form refused, names pinned to the checked address, redirects re-checked.

Literal addresses and names that cannot resolve need no DNS; names that must resolve to a chosen address
use an injected resolver (and an unresolvable `.test` name, so a success proves no second lookup).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fixtures_http import CSV_BYTES, HttpOrigin

from c2d_core.fetch import FetchError, FetchLimits, fetch_to_file
from c2d_core.netguard import GuardedTransport, NetPolicy, guarded_client

FAST = FetchLimits(connect_timeout=2, read_timeout=2, retries=0, deadline=10)
LOOPBACK_ONLY = ["127.0.0.1/32"]


class Resolver:
    """Answers from a script, one answer per call (the last repeats), and counts the calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://172.16.0.1/x",
        "http://192.168.1.1/x",
        "http://100.64.0.1/x",  # CGNAT
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://0/x",
        "http://0.0.0.0/x",
        "http://2130706433/x",  # decimal 127.0.0.1
        "http://0177.0.0.1/x",  # octal 127.0.0.1
        "http://0x7f.0.0.1/x",  # hex 127.0.0.1
        "http://017700000001/x",  # octal as one number
        "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped
        "http://[::ffff:a9fe:a9fe]/x",  # IPv4-mapped metadata, hex form
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of the metadata address
        "http://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
        "http://[::127.0.0.1]/x",  # IPv4-compatible
        "http://[fe80::1]/x",
        "http://[fc00::1]/x",
        "http://[::]/x",
        "http://224.0.0.1/x",  # multicast
        "http://[ff02::1]/x",
        "http://240.0.0.1/x",  # reserved
        "http://255.255.255.255/x",
        "http://no-such-host.invalid/x",  # failed DNS is a rejection
        "file:///etc/passwd",
        "gopher://127.0.0.1/x",
        "ftp://8.8.8.8/x",
    ],
)
def test_non_public_locations_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        _fetch(NetPolicy(), url, tmp_path / "f")
    assert caught.value.message.removeprefix("file: ") in (
        "the location is not a public address",
        "the host of the location does not resolve",
        "only http and https locations are allowed",
        "the location is not a valid URL",  # httpx itself refuses e.g. 0177.0.0.1
    )
    assert "127" not in caught.value.message and "169" not in caught.value.message


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/x", "https://[2606:4700:4700::1111]/x", "https://1.1.1.1:8443/"]
)
def test_public_literals_pass(url: str) -> None:
    NetPolicy().check(httpx.URL(url))


def test_a_public_looking_name_resolving_to_a_private_address_is_refused() -> None:
    policy = NetPolicy(resolver=Resolver(["10.0.0.5"]))
    with pytest.raises(FetchError, match="not a public address"):
        policy.check(httpx.URL("https://data.example.com/file.csv"))


def test_one_private_answer_among_public_ones_is_refused() -> None:
    policy = NetPolicy(resolver=Resolver(["93.184.216.34", "127.0.0.1"]))
    with pytest.raises(FetchError, match="not a public address"):
        policy.check(httpx.URL("https://data.example.com/file.csv"))


def test_allow_list_admits_cidrs_and_hosts_only() -> None:
    policy = NetPolicy.from_allow_list(
        ["10.0.0.0/8", "minio.internal", "::1"],
        allow_everything=False,
        resolver=Resolver(["10.9.9.9"]),
    )
    policy.check(httpx.URL("http://10.1.2.3/x"))
    policy.check(httpx.URL("http://[::1]/x"))
    policy.check(httpx.URL("http://[::ffff:10.0.0.1]/x"))  # mapped form of an allowed address
    policy.check(httpx.URL("http://minio.internal:9000/x"))
    with pytest.raises(FetchError):
        policy.check(httpx.URL("http://169.254.169.254/x"))
    with pytest.raises(FetchError):
        policy.check(httpx.URL("http://127.0.0.1/x"))


@pytest.mark.parametrize("entry", ["*", "0.0.0.0/0", "::/0"])
def test_allow_everything_is_refused_outside_development(entry: str) -> None:
    with pytest.raises(ValueError, match="only in development"):
        NetPolicy.from_allow_list([entry], allow_everything=False)
    NetPolicy.from_allow_list([entry], allow_everything=True).check(httpx.URL("http://10.0.0.1/"))


def test_bad_allow_list_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="neither a host name nor a CIDR"):
        NetPolicy.from_allow_list(["http://x/"], allow_everything=False)


def test_engine_settings_refuse_an_open_allow_list_for_k8s(monkeypatch: pytest.MonkeyPatch) -> None:
    from c2d_core.settings import EngineSettings

    monkeypatch.setenv("C2D_FETCH_ALLOW", "127.0.0.0/8, *")
    monkeypatch.setenv("C2D_DEPLOYMENT", "k8s")
    with pytest.raises(ValueError, match="only in development"):
        EngineSettings()
    monkeypatch.setenv("C2D_DEPLOYMENT", "local")
    assert EngineSettings().fetch_allow == ["127.0.0.0/8", "*"]


# --- against a real loopback server -----------------------------------------------------------------


class _Redirector(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/to":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["target"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(CSV_BYTES)))
        self.end_headers()
        self.wfile.write(CSV_BYTES)


@pytest.fixture
def redirector() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _fetch(policy: NetPolicy, url: str, dest: Path) -> None:
    with guarded_client(policy) as client:
        fetch_to_file({"type": "url", "url": url}, dest, FAST, client=client, url_guard=policy.check)


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:{port}/data.csv",  # loopback, but outside the allowed /32
        "http://[::1]:{port}/data.csv",
        "http://[::ffff:127.0.0.2]:{port}/data.csv",
        "http://10.0.0.1/x",
    ],
)
def test_a_redirect_from_an_allowed_origin_to_a_private_one_is_refused(
    redirector: tuple[str, list[str]], tmp_path: Path, target: str
) -> None:
    origin, _ = redirector
    port = origin.rsplit(":", 1)[1]
    policy = NetPolicy.from_allow_list(LOOPBACK_ONLY, allow_everything=False)
    _fetch(policy, f"{origin}/data.csv", tmp_path / "ok")  # the origin itself is allowed
    assert (tmp_path / "ok").read_bytes() == CSV_BYTES
    url = httpx.URL(f"{origin}/to").copy_merge_params({"target": target.format(port=port)})
    with pytest.raises(FetchError) as caught:
        _fetch(policy, str(url), tmp_path / "no")
    assert caught.value.message == "file: the location is not a public address"
    assert not (tmp_path / "no").exists()


def test_the_connection_goes_to_the_checked_address(http_origin: HttpOrigin, tmp_path: Path) -> None:
    # `rebind.test` resolves nowhere in real DNS: success means httpx connected to the pinned IP.
    resolver = Resolver(["127.0.0.1"])
    policy = NetPolicy.from_allow_list(LOOPBACK_ONLY, allow_everything=False, resolver=resolver)
    url = http_origin.url("data.csv").replace("127.0.0.1", "rebind.test")
    _fetch(policy, url, tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == CSV_BYTES
    assert http_origin.last("data.csv").headers["Host"] == f"rebind.test:{http_origin.port}"


def test_a_host_whose_second_resolution_differs_is_refused(http_origin: HttpOrigin, tmp_path: Path) -> None:
    # First answer allowed, every later one the metadata address: whatever is resolved is what is
    # checked, and the connection never uses another lookup.
    resolver = Resolver(["127.0.0.1"], ["169.254.169.254"])
    policy = NetPolicy.from_allow_list(LOOPBACK_ONLY, allow_everything=False, resolver=resolver)
    url = http_origin.url("data.csv").replace("127.0.0.1", "rebind.test")
    with pytest.raises(FetchError, match="not a public address"):
        _fetch(policy, url, tmp_path / "f")
    assert http_origin.requests == []


def test_https_keeps_the_name_for_sni_and_the_host_header() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"ok")

    policy = NetPolicy(resolver=Resolver(["93.184.216.34"]))
    transport = GuardedTransport(policy, inner=httpx.MockTransport(record))
    with httpx.Client(transport=transport) as client:
        assert client.get("https://data.example.com/x.csv").content == b"ok"
    (request,) = seen
    assert request.url.host == "93.184.216.34"
    assert request.headers["Host"] == "data.example.com"
    assert request.extensions["sni_hostname"] == "data.example.com"
