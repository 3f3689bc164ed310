"""The SSRF guard for every fetch of a publisher- or consumer-supplied location.

A host is resolved once, every address it resolves to must be public (or on the operator's
allow-list), and the connection goes to the address that was checked: `GuardedTransport` rewrites the
request to that IP and keeps the name for the Host header and TLS (SNI and certificate checks), so a
DNS answer that changes between check and connect (rebinding) never reaches a private address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from c2d_core.fetch import FetchError, check_scheme

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as text; raises OSError when it does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

# IPv6 prefixes that embed an IPv4 address a router may forward to: NAT64 (RFC 6052, RFC 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
# Allow-list entries that admit every address: refused outside development.
_EVERYTHING = ("*", "0.0.0.0/0", "::/0")


# Where a server's own host (loopback) and the cloud metadata service (link-local) live, IPv4-mapped
# forms included: an allow-list entry reaching them is a development convenience, never a production need.
HOST_LOCAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(text)
    for text in (
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fe80::/10",
        "::ffff:127.0.0.0/104",
        "::ffff:169.254.0.0/112",
    )
)


def split_allow_list(value: object) -> object:
    """An allow-list from the environment (`C2D_FETCH_ALLOW`, `PROVIDER_FETCH_ALLOW`): comma-separated
    entries, blanks dropped; a list passes through. `NetPolicy.from_allow_list` judges the entries."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # IPv4-compatible (::a.b.c.d, deprecated) still routes to the IPv4 host on some stacks.
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not private, loopback, link-local, CGNAT, reserved, multicast or
    unspecified, for IPv4 and IPv6, looking through IPv6 forms that carry an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_unspecified
        and not address.is_reserved
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_private
    )


@dataclass(frozen=True)
class NetPolicy:
    """Where fetches may go: public addresses, plus the allow-list (host names and CIDRs)."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_allow_list(
        cls, entries: Iterable[str], *, allow_everything: bool, resolver: Resolver = system_resolver
    ) -> NetPolicy:
        """`entries`: host names (`minio.internal`), addresses or CIDRs (`10.0.0.0/8`, `::1`).

        An entry that admits every address (`*`, `0.0.0.0/0`, `::/0`) is refused unless
        `allow_everything` (development only) says otherwise.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry in _EVERYTHING:
                if not allow_everything:
                    raise ValueError(
                        f"fetch allow-list entry {entry!r} admits every address (SSRF); it is allowed "
                        "only in development"
                    )
                networks.extend([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")])
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not all(part and (part.isalnum() or "-" in part) for part in entry.split(".")):
                    raise ValueError(
                        f"fetch allow-list entry {entry[:60]!r} is neither a host name nor a CIDR"
                    ) from None
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks), resolver)

    def host_local_entries(self) -> list[str]:
        """The allowed networks that reach loopback or link-local addresses (`HOST_LOCAL_NETWORKS`)."""
        return [
            str(network)
            for network in self.allowed_networks
            if any(
                network.version == local.version and network.overlaps(local) for local in HOST_LOCAL_NETWORKS
            )
        ]

    def _allowed_address(self, address: IPAddress) -> bool:
        if is_public(address):
            return True
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.allowed_networks
        )

    def resolve(self, url: httpx.URL) -> IPAddress:
        """The address to connect to for `url`, checked; raises FetchError (naming no location)."""
        check_scheme(url)
        host = url.host.lower().rstrip(".")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                # getaddrinfo also reads the numeric forms a browser would (2130706433, 0x7f.1, 0177.0.0.1,
                # "0"), so they are judged by the address they really mean.
                found = self.resolver(host, port)
                addresses = [ipaddress.ip_address(item) for item in found]
            except (OSError, UnicodeError, ValueError):
                raise FetchError("the host of the location does not resolve") from None
        if not addresses:
            raise FetchError("the host of the location does not resolve")
        if host in self.allowed_hosts:
            return addresses[0]
        # Every answer must pass: a name with one public and one private address is refused.
        if not all(self._allowed_address(address) for address in addresses):
            raise FetchError("the location is not a public address")
        return addresses[0]

    def check(self, url: httpx.URL) -> None:
        """A `UrlGuard`: refuse early with a clear message (the transport checks again when connecting)."""
        self.resolve(url)


class GuardedTransport(httpx.BaseTransport):
    """Checks every request (so every redirect hop) with `policy` and connects to the checked address."""

    def __init__(self, policy: NetPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpx.HTTPTransport(trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = self.policy.resolve(request.url)
        host = request.url.host
        if host != str(address):
            # The Host header was set from the URL when the request was built; TLS verifies the name.
            request.url = request.url.copy_with(host=str(address))
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def guarded_client(policy: NetPolicy, **kwargs: Any) -> httpx.Client:
    """An httpx client whose every connection passes `policy`; no proxy or netrc from the environment."""
    return httpx.Client(transport=GuardedTransport(policy), follow_redirects=False, trust_env=False, **kwargs)
