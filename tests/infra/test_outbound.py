"""The SSRF guard's address checks, allowlist and guarded client, against a real receiver on 127.0.0.1."""

import asyncio
import ipaddress
import socket
from collections.abc import Iterator

import httpcore
import httpx
import pytest
from pydantic import ValidationError

from followthrough.infra import outbound
from followthrough.infra.outbound import (GuardBroken, GuardedBackend, GuardedTransport, OutboundPolicy, OutboundRefused,
                                    blocked_reason, guarded_client, parse_allow, self_test)
from followthrough.config.settings import Settings
from tests.receivers import Receiver
from followthrough.worker import run_worker


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("0.0.0.0", "an unspecified (this-host) address"),
    ("0.1.2.3", "an unspecified (this-host) address"),
    ("::", "an unspecified (this-host) address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("::ffff:127.0.0.1", "a loopback address (as 127.0.0.1)"),
    ("::ffff:169.254.169.254", "a cloud metadata address (as 169.254.169.254)"),
    ("64:ff9b::a00:1", "a private address (as 10.0.0.1)"),
    ("192.0.2.1", "a documentation address"),
])
def test_internal_addresses_are_refused_with_their_kind(address, reason):
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_the_allowlist_admits_networks_addresses_and_names():
    policy = OutboundPolicy.from_entries(["10.0.0.0/8", "127.0.0.1", "crm.internal", "*.corp.example"])
    ip = ipaddress.ip_address
    assert policy.refusal("x", ip("10.20.30.40")) is None
    assert policy.refusal("x", ip("127.0.0.1")) is None
    assert policy.refusal("x", ip("::ffff:127.0.0.1")) is None  # the same address, IPv4-mapped
    assert policy.refusal("x", ip("127.0.0.2")) == "a loopback address"
    assert policy.refusal("x", ip("192.168.0.1")) == "a private address"
    assert policy.refusal("crm.internal", ip("192.168.0.1")) is None
    assert policy.refusal("CRM.Internal.", ip("192.168.0.1")) is None
    assert policy.refusal("billing.corp.example", ip("172.16.0.9")) is None
    assert policy.refusal("corp.example.evil", ip("172.16.0.9")) == "a private address"


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://x", ""])
def test_an_invalid_allowlist_entry_is_refused_by_settings(entry):
    with pytest.raises(ValueError):
        parse_allow([entry])
    with pytest.raises(ValidationError, match="neither an address"):
        Settings(outbound_allow=[entry])


def test_the_allowlist_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("FOLLOWTHROUGH_OUTBOUND_ALLOW", '["10.0.0.0/8", "crm.internal"]')
    assert Settings().outbound_allow == ["10.0.0.0/8", "crm.internal"]


@pytest.mark.parametrize("url, refusal", [
    ("http://127.0.0.1:8080/x", "refused: 127.0.0.1 is a loopback address; allow it with FOLLOWTHROUGH_OUTBOUND_ALLOW"),
    ("http://[::1]/", "refused: ::1 is a loopback address; allow it with FOLLOWTHROUGH_OUTBOUND_ALLOW"),
    ("https://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a cloud metadata address; "
                                                  "allow it with FOLLOWTHROUGH_OUTBOUND_ALLOW"),
    ("http://10.0.0.5/", "refused: 10.0.0.5 is a private address; allow it with FOLLOWTHROUGH_OUTBOUND_ALLOW"),
    ("ftp://example.com/f", "must be an absolute http:// or https:// URL"),
    ("file:///etc/passwd", "must be an absolute http:// or https:// URL"),
    ("https://example.com/hook", None),
    ("http://localhost:9/", None),  # a name: checked on its addresses when connecting
])
def test_urls_are_checked_early_on_scheme_and_literal_addresses(url, refusal):
    assert OutboundPolicy().refusal_for_url(url) == refusal


async def test_the_guarded_client_refuses_a_loopback_address_before_connecting(receiver):
    async with guarded_client([]) as client:
        with pytest.raises(OutboundRefused, match="127.0.0.1 is a loopback address"):
            await client.get(receiver.url)
    assert receiver.requests == []


async def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(receiver):
    """`localhost` passes the early check (it is a name) and is caught on the address it resolves to."""
    url = receiver.url.replace("127.0.0.1", "localhost")
    assert OutboundPolicy().refusal_for_url(url) is None
    async with guarded_client([]) as client:
        with pytest.raises(OutboundRefused, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback address"):
            await client.get(url)
    assert receiver.requests == []


async def test_every_resolved_address_is_checked_and_a_checked_one_is_connected_to(receiver, monkeypatch):
    """A public name with one internal answer among its addresses is refused; an allowed one connects to the
    address that was checked, with the name kept in the Host header."""
    port = int(receiver.url.rsplit(":", 1)[1])
    answers = {"mixed.example": ["93.184.215.14", "127.0.0.1"], "rebind.example": ["127.0.0.1"]}

    async def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    async with guarded_client([]) as client:
        with pytest.raises(OutboundRefused, match="mixed.example resolves to 127.0.0.1, a loopback address"):
            await client.get(f"http://mixed.example:{port}/")
    async with guarded_client(["127.0.0.1"]) as client:
        response = await client.get(f"http://rebind.example:{port}/path")
    assert response.status_code == 200
    [got] = receiver.requests
    assert (got.path, got.headers["host"]) == ("/path", f"rebind.example:{port}")


async def test_an_allowed_loopback_address_is_reached(receiver):
    async with guarded_client(["127.0.0.1/32"]) as client:
        response = await client.get(f"{receiver.url}/ok")
    assert response.status_code == 200 and [r.path for r in receiver.requests] == ["/ok"]


async def test_redirects_are_not_followed(receiver):
    for _ in range(2):
        receiver.answer(302, "", headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    async with guarded_client(["127.0.0.1"]) as client:
        response = await client.get(receiver.url)
        assert response.status_code == 302  # an answer, not followed
        with pytest.raises(OutboundRefused, match="169.254.169.254 is a cloud metadata address"):
            await client.get(receiver.url, follow_redirects=True)  # and a followed hop is checked too
    assert len(receiver.requests) == 2


async def test_a_name_that_does_not_resolve_is_a_connect_error_left_to_retries():
    async with guarded_client([]) as client:
        with pytest.raises(httpx.ConnectError, match="cannot resolve"):
            await client.get("http://name-that-does-not-exist.invalid/")


async def test_a_proxy_in_the_environment_is_not_used(receiver, monkeypatch):
    """A proxy would connect on the client's behalf, past the guard."""
    monkeypatch.setenv("HTTP_PROXY", receiver.url)
    monkeypatch.setenv("ALL_PROXY", receiver.url)
    async with guarded_client([]) as client:
        with pytest.raises(OutboundRefused, match="10.9.9.9 is a private address"):
            await client.get("http://10.9.9.9/")
    assert receiver.requests == []


# IANA's IPv4 and IPv6 Special-Purpose Address Registries (not globally reachable entries), and multicast.
# IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96) addresses reach the IPv4 address inside and are judged by
# it (below): ::ffff:8.8.8.8 is public.
SPECIAL_PURPOSE = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
]


@pytest.mark.parametrize("network", SPECIAL_PURPOSE)
def test_every_special_purpose_range_is_refused_from_end_to_end(network):
    """Our own table, not the running Python's idea of "private" (3.11.7 takes 192.0.0.192 for public)."""
    net = ipaddress.ip_network(network)
    for address in (net[0], net[net.num_addresses // 2], net[-1]):
        assert blocked_reason(address) is not None, address


@pytest.mark.parametrize("address, reason", [
    ("192.0.0.192", "an IETF protocol assignment"),
    ("fec0::1", "a site-local address"),
    ("2002:7f00:1::", "a loopback address (as 127.0.0.1)"),  # 6to4: 2002:AABB:CCDD:: carries AA.BB.CC.DD
    ("2002:a00:1:5::9", "a private address (as 10.0.0.1)"),
    ("2002:a9fe:a9fe::1", "a cloud metadata address (as 169.254.169.254)"),
    ("2002:808:808::1", "a 6to4 address"),  # a public address inside: refused for the range itself
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a loopback address (as 127.0.0.1)"),  # Teredo: client inverted
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a private address (as 10.0.0.1)"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "a Teredo address"),
    ("64:ff9b::c0a8:1", "a private address (as 192.168.0.1)"),  # NAT64
    ("64:ff9b::c000:c0", "an IETF protocol assignment (as 192.0.0.192)"),
    ("::ffff:10.0.0.1", "a private address (as 10.0.0.1)"),  # IPv4-mapped
    ("::127.0.0.1", "a loopback address (as 127.0.0.1)"),  # IPv4-compatible (deprecated)
    ("::8.8.8.8", "not a public address"),
    ("4000::1", "not a public address"),  # outside 2000::/3, the only global unicast block
])
def test_the_ipv4_address_inside_an_ipv6_one_is_checked(address, reason):
    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_nat64_of_a_public_address_passes_and_the_allowlist_admits_embedded_forms_that_reach_it():
    ip = ipaddress.ip_address
    assert blocked_reason(ip("64:ff9b::808:808")) is None  # reaches 8.8.8.8
    policy = OutboundPolicy.from_entries(["127.0.0.1"])
    assert policy.refusal("x", ip("64:ff9b::7f00:1")) is None
    # A 6to4 address does not reach the IPv4 address inside it; an entry for that address does not admit it.
    assert policy.refusal("x", ip("2002:7f00:1::")) == "a loopback address (as 127.0.0.1)"
    assert OutboundPolicy.from_entries(["2002::/16"]).refusal("x", ip("2002:7f00:1::")) is None


def test_the_transport_is_our_own_on_httpx_public_interfaces():
    transport = GuardedTransport(OutboundPolicy())
    assert isinstance(transport, httpx.AsyncBaseTransport)
    assert not isinstance(transport, httpx.AsyncHTTPTransport)  # nothing of httpx's own transport to replace


async def test_the_guard_holds_whatever_httpx_does_inside_its_own_transport(receiver, monkeypatch):
    """A release of httpx whose transport keeps its pool under another name than ``_pool``: the guard must not
    depend on it. Here httpx's transport is made to do that, and a name that resolves to loopback is tried."""
    real_init, real_handle = httpx.AsyncHTTPTransport.__init__, httpx.AsyncHTTPTransport.handle_async_request

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.renamed_pool = self._pool

    async def handle(self, request):
        self._pool = self.renamed_pool
        return await real_handle(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "__init__", init)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle)
    async with guarded_client([]) as client:
        with pytest.raises(OutboundRefused, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback address"):
            await client.get(receiver.url.replace("127.0.0.1", "localhost"))
    assert receiver.requests == []


async def test_the_self_test_passes_with_the_guard_in_place():
    await self_test()


def _bypass_the_backend(monkeypatch):
    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return await httpcore.AnyIOBackend().connect_tcp(host, port, timeout=timeout)

    monkeypatch.setattr(GuardedBackend, "connect_tcp", connect_tcp)


def _forget_the_table(monkeypatch):
    monkeypatch.setattr(outbound, "_listed", lambda address: None)


@pytest.mark.parametrize("break_guard, message", [
    (_bypass_the_backend, "let a connection to http://127.0.0.1:9/ be tried"),
    (_forget_the_table, "counts 127.0.0.1 as public"),
])
async def test_the_self_test_and_the_worker_refuse_to_start_when_the_guard_lets_loopback_through(
        monkeypatch, break_guard, message):
    break_guard(monkeypatch)
    with pytest.raises(GuardBroken, match=message):
        await self_test()
    # The worker stops before it connects anywhere (no Temporal server is needed to see it).
    with pytest.raises(GuardBroken, match=message):
        await run_worker(Settings())
