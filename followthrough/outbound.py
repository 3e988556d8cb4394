"""The SSRF guard: where outgoing task requests (http_request, webhook) and subscription notifications may go.

Only http and https, and only to public addresses unless FOLLOWTHROUGH_OUTBOUND_ALLOW names the target (a
network such as ``10.0.0.0/8``, an address, or a host name). The check that counts happens when connecting:
``GuardedBackend`` resolves the name itself, checks every address it resolves to, and connects to a checked
address, so a name that resolved to something public when the task was created (or that answers differently
a second later) cannot lead to an internal one. TLS still verifies the certificate for, and sends SNI and Host
with, the name in the URL. ``refusal_for_url`` is the earlier, cheaper check the API makes on URLs whose host
is an address literal.

The LLM endpoint is configured by the operator, not by a task, and does not go through this guard.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from followthrough import allowed_hosts

SETTING = "FOLLOWTHROUGH_OUTBOUND_ALLOW"
SCHEMES = ("http", "https")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(Exception):
    """A target the guard does not let a request reach; no retry changes that."""

    def __init__(self, host: str, address: Address, reason: str) -> None:
        self.host, self.address, self.reason = host, address, reason
        if host == str(address):
            where = f"{address} is"
        else:
            where = f"{host} resolves to {address},"
        super().__init__(f"refused: {where} {reason}; allow it with {SETTING}")


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: Address) -> str | None:
    """Why a request must not reach ``address`` without an allowlist entry, or None for a public address."""
    if (inner := _embedded_ipv4(address)) is not None:
        reason = blocked_reason(inner)
        return f"{reason} (as {inner})" if reason else None
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified or (isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK):
        return "an unspecified (this-host) address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def parse_allow(entries: Iterable[str]) -> tuple[tuple[Network, ...], frozenset[str]]:
    """Allowlist entries as networks and host names; raises ValueError on an entry that is neither."""
    networks: list[Network] = []
    names: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not allowed_hosts.is_name_pattern(entry):
            raise ValueError(f"{raw!r} is neither an address, a network (CIDR) nor a host name")
        names.add(entry.rstrip("."))
    return tuple(networks), frozenset(names)


@dataclass(frozen=True)
class OutboundPolicy:
    networks: tuple[Network, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> "OutboundPolicy":
        return cls(*parse_allow(entries))

    def allows_name(self, host: str) -> bool:
        return allowed_hosts.allows(self.names, host)

    def refusal(self, host: str, address: Address) -> str | None:
        """The reason to refuse ``address`` (what ``host`` resolved to), or None when it may be reached."""
        reason = blocked_reason(address)
        if reason is None or self.allows_name(host):
            return None
        inner = _embedded_ipv4(address)
        if any(address in n or (inner is not None and inner in n) for n in self.networks):
            return None
        return reason

    def refusal_for_url(self, url: Any) -> str | None:
        """A reason to refuse ``url`` before any request: not http(s), or a literal address the guard refuses.

        Host names are not resolved here (what they resolve to now proves nothing about later): the guard
        checks them when it connects."""
        try:
            parts = urlsplit(str(url))
            host = parts.hostname
        except ValueError:
            return "not a valid URL"
        if parts.scheme.lower() not in SCHEMES or not host:
            return "must be an absolute http:// or https:// URL"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        reason = self.refusal(host, address)
        return str(OutboundRefused(host, address, reason)) if reason else None

    async def vet(self, host: str, port: int, timeout: float | None = None) -> list[Address]:
        """Every address ``host`` resolves to, once each is checked; raises OutboundRefused if any is refused."""
        try:
            addresses: list[Address] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = await _resolve(host, port, timeout)
        for address in addresses:
            if (reason := self.refusal(host, address)) is not None:
                raise OutboundRefused(host, address, reason)
        return addresses


async def _resolve(host: str, port: int, timeout: float | None) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError as err:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from err
    except (socket.gaierror, UnicodeError) as err:
        # Perhaps a passing DNS failure: left to the caller's retries.
        raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from err
    seen: dict[Address, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        # A scoped IPv6 address (fe80::1%eth0) comes without its scope: it is link-local either way.
        seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), None)
    if not seen:
        raise httpcore.ConnectError(f"{host} resolves to no address")
    return list(seen)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the check in front: resolve, check every address, connect to one."""

    def __init__(self, policy: OutboundPolicy, backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.vet(host, port, timeout)
        failure: Exception | None = None
        for address in addresses:  # connect to a checked address, never to the name again
            try:
                return await self._backend.connect_tcp(str(address), port, timeout=timeout,
                                                       local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("outbound requests do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection goes through GuardedBackend."""

    def __init__(self, policy: OutboundPolicy, limits: httpx.Limits = httpx.Limits(max_connections=100,
                                                                                  max_keepalive_connections=20)) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx builds its pool without a way to pass a network backend; this one is the same pool with the guard.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=GuardedBackend(policy))


def guarded_client(allow: Iterable[str]) -> httpx.AsyncClient:
    """The client for task sends and notifications: guarded, no redirects followed, no proxy from the environment
    (a proxy would connect for us, past the guard)."""
    return httpx.AsyncClient(transport=GuardedTransport(OutboundPolicy.from_entries(allow)), follow_redirects=False,
                             trust_env=False)
