"""The SSRF guard: where outgoing task requests (http_request, webhook) and subscription notifications may go.

Only http and https, and only to public addresses unless FOLLOWTHROUGH_OUTBOUND_ALLOW names the target (a
network such as ``10.0.0.0/8``, an address, or a host name). The check that counts happens when connecting:
``GuardedBackend`` resolves the name itself, checks every address it resolves to, and connects to a checked
address, so a name that resolved to something public when the task was created (or that answers differently
a second later) cannot lead to an internal one. TLS still verifies the certificate for, and sends SNI and Host
with, the name in the URL. ``GuardedTransport`` puts that backend under httpx through public interfaces only.
``refusal_for_url`` is the earlier, cheaper check the API makes on URLs whose host is an address literal, and
``self_test`` is what the worker and the API run at start.

Which addresses are internal is this module's own table of IANA's special-purpose ranges (docs/security.md, "Outbound
requests (SSRF guard)").

The LLM endpoint is configured by the operator, not by a task, and does not go through this guard.
"""

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from followthrough.domain import allowed_hosts
from followthrough.domain.allowed_hosts import Network, parse_allow

SETTING = "FOLLOWTHROUGH_OUTBOUND_ALLOW"
SCHEMES = ("http", "https")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


class OutboundRefused(Exception):
    """A target the guard does not let a request reach; no retry changes that."""

    def __init__(self, host: str, address: Address, reason: str) -> None:
        self.host, self.address, self.reason = host, address, reason
        if host == str(address):
            where = f"{address} is"
        else:
            where = f"{host} resolves to {address},"
        super().__init__(f"refused: {where} {reason}; allow it with {SETTING}")


def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(network), reason) for network, reason in rows)


# IANA's IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and later), plus multicast, written out here
# rather than taken from the running Python's ``ipaddress`` (whose idea of "private" and "global" changes between
# releases). Entries the registry marks globally reachable (AS112, AMT, 2001:20::/28, ...) are left out unless they
# sit inside a wider block refused here. The first match names the reason.
_IPV4 = _table(
    ("0.0.0.0/8", "an unspecified (this-host) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("192.0.0.0/24", "an IETF protocol assignment"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),  # 255.255.255.255, the limited broadcast, included
)
_IPV6 = _table(
    ("::/128", "an unspecified (this-host) address"),
    ("::1/128", "a loopback address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("fc00::/7", "a private address"),
    ("ff00::/8", "a multicast address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("2001::/32", "a Teredo address"),
    ("2001::/23", "an IETF protocol assignment"),
    ("2002::/16", "a 6to4 address"),
    ("5f00::/16", "a segment routing (SRv6) address"),
)
# Only 2000::/3 is allocated for global unicast; the rest (IPv4-compatible ::a.b.c.d included) is not public.
_IPV6_UNICAST = ipaddress.ip_network("2000::/3")
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped and -compatible (::ffff:a.b.c.d, ::a.b.c.d), NAT64
    (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::) and Teredo (2001:0:server:flags:port:client, client inverted)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    value = int(address)
    if address in _MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _COMPATIBLE and value > 1:  # :: and ::1 are themselves
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if address in _TEREDO:
        return ipaddress.IPv4Address(~value & 0xFFFFFFFF)
    return None


def _listed(address: Address) -> str | None:
    if address in METADATA:
        return "a cloud metadata address"
    for network, reason in _IPV4 if isinstance(address, ipaddress.IPv4Address) else _IPV6:
        if address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address not in _IPV6_UNICAST:
        return "not a public address"
    return None


def blocked_reason(address: Address) -> str | None:
    """Why a request must not reach ``address`` without an allowlist entry, or None for a public address.

    An IPv6 address that carries an IPv4 one is refused for what the IPv4 one is; IPv4-mapped and NAT64
    addresses are otherwise judged by it (they reach it), the other forms are refused anyway."""
    if (inner := _embedded_ipv4(address)) is not None:
        if (reason := _listed(inner)) is not None:
            return f"{reason} (as {inner})"
        if address in _MAPPED or address in _NAT64:
            return None
    return _listed(address)


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
        # An IPv4-mapped or NAT64 address reaches the IPv4 one inside: an entry for that one admits it too.
        inner = _embedded_ipv4(address) if address in _MAPPED or address in _NAT64 else None
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


# httpcore's errors as httpx's, most specific first: callers (retries, error classes) catch httpx's.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError), (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError), (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol), (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError), (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except tuple(from_ for from_, _to in _ERRORS) as err:
        mapped = next(to for from_, to in _ERRORS if isinstance(err, from_))
        raise mapped(str(err), request=request) from err


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, request: httpx.Request, stream: Any) -> None:
        self._request, self._stream = request, stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport of its own, built on public interfaces only: httpx's transport base class and
    httpcore's connection pool, given GuardedBackend as its network backend. Nothing of httpx's own transport is
    used or replaced, so a new httpx release cannot switch the guard off by changing its internals."""

    def __init__(self, policy: OutboundPolicy,
                 limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)) -> None:
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=GuardedBackend(policy))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        # The URL keeps the name: httpcore sends it as Host and as TLS SNI, and checks the certificate for it,
        # while GuardedBackend connects to the address it checked.
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _as_httpx_errors(request):
            response = await self._pool.handle_async_request(core)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(request, response.stream), extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


def guarded_client(allow: Iterable[str]) -> httpx.AsyncClient:
    """The client for task sends and notifications: guarded, no redirects followed, no proxy from the environment
    (a proxy would connect for us, past the guard)."""
    return httpx.AsyncClient(transport=GuardedTransport(OutboundPolicy.from_entries(allow)), follow_redirects=False,
                             trust_env=False)


class GuardBroken(RuntimeError):
    """The guard let a request to an internal address through: the process must not start."""


# What the self-test sends: nothing listens on port 9 (discard), and nothing should ever try.
_PROBES = ("127.0.0.1", "::ffff:127.0.0.1", "2002:7f00:1::1", "64:ff9b::7f00:1")


async def self_test() -> None:
    """Check at start that a loopback address is refused, by the table, by the API's early check, and through the
    very client the sends use; raises GuardBroken if any lets it through (an httpx or httpcore release that no
    longer passes our network backend on would show here, not as a silent hole)."""
    policy = OutboundPolicy()
    for probe in _PROBES:
        if blocked_reason(ipaddress.ip_address(probe)) is None:
            raise GuardBroken(f"the SSRF guard counts {probe} as public; refusing to start")
    url = "http://127.0.0.1:9/"
    if policy.refusal_for_url(url) is None:
        raise GuardBroken(f"the SSRF guard's early check lets {url} through; refusing to start")
    async with guarded_client([]) as client:
        try:
            response = await client.get(url, timeout=5)
        except OutboundRefused:
            return
        except httpx.HTTPError as err:
            raise GuardBroken(f"the SSRF guard let a connection to {url} be tried ({err!r}); refusing to start") \
                from err
    raise GuardBroken(f"the SSRF guard let a request to {url} through (answered {response.status_code}); "
                      "refusing to start")
