"""A guarded forward proxy that Chromium sends all its traffic through, for the requests routing cannot see.

Playwright's routing (followthrough/activities/browser_guard.py) is never asked about a redirect's next hop: Chromium follows
redirects itself. So Chromium is launched with this proxy (loopback included), which checks every request's
host with the SSRF policy and connects to an address it checked, never to the name again: redirect hops are
checked like any request, and a name that resolves differently a second time (DNS rebinding) cannot lead to a
refused address. Plain HTTP is forwarded one request per connection; HTTPS and WebSockets go through CONNECT
tunnels. A refusal answers 403 with ``X-Followthrough-Refused`` and is recorded with the guard's.
"""

import asyncio
import logging
from contextlib import suppress
from urllib.parse import urlsplit

import httpcore

from followthrough.activities.browser_guard import RESOLVE_TIMEOUT, RequestGuard
from followthrough.infra.outbound import Address, OutboundRefused

log = logging.getLogger("followthrough.browser")

REFUSED_HEADER = "X-Followthrough-Refused"
HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
# Hop-by-hop headers the proxy sets itself.
_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "upgrade"})

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _answer(status: str, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()


def _split_authority(authority: str) -> tuple[str, int]:
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


class GuardedProxy:
    def __init__(self, guard: RequestGuard) -> None:
        self._guard = guard
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> "GuardedProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, port = _split_authority(target)
            upstream = await self._open(writer, host, port, target)
            if upstream is None:
                return
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await self._pipe((reader, writer), upstream)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            writer.write(_answer("400 Bad Request"))
            return
        upstream = await self._open(writer, parts.hostname, parts.port or 80, target)
        if upstream is None:
            return
        path = parts.path or "/"
        headers = [h for h in lines if h and h.split(":", 1)[0].strip().lower() not in _HOP]
        # One request per connection: Connection: close both ways, so nothing else travels on this tunnel.
        upstream[1].write(f"{method} {path}{'?' + parts.query if parts.query else ''} {version}\r\n"
                          .encode("latin-1") + "".join(f"{h}\r\n" for h in headers).encode("latin-1")
                          + b"Connection: close\r\n\r\n")
        # The request's body (if any) flows while the answer is awaited.
        sending = asyncio.ensure_future(_copy(reader, upstream[1]))
        try:
            response_head = await asyncio.wait_for(upstream[0].readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
            status_line, *response_lines = response_head.decode("latin-1").split("\r\n")
            kept = [h for h in response_lines if h and h.split(":", 1)[0].strip().lower() not in _HOP]
            writer.write(f"{status_line}\r\n".encode("latin-1") + "".join(f"{h}\r\n" for h in kept).encode("latin-1")
                         + b"Connection: close\r\nProxy-Connection: close\r\n\r\n")
            await asyncio.wait_for(_copy(upstream[0], writer), IDLE_TIMEOUT)
        finally:
            sending.cancel()
            upstream[1].close()

    async def _open(self, writer: asyncio.StreamWriter, host: str, port: int, what: str) -> Stream | None:
        """A connection to a checked address of ``host``, or None once the client has been answered."""
        try:
            addresses: list[Address] = await self._guard.policy.vet(host, port, RESOLVE_TIMEOUT)
        except OutboundRefused as err:
            log.warning("browser request refused: %s", err)
            self._guard.refused.append({"url": what[:500], "reason": str(err)})
            writer.write(_answer("403 Forbidden", f"{REFUSED_HEADER}: 1\r\n"))
            return None
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
            return self._unreachable(writer, what, str(err))
        cause = ""
        for address in addresses:
            try:
                return await asyncio.wait_for(asyncio.open_connection(str(address), port, limit=HEAD_LIMIT),
                                              CONNECT_TIMEOUT)
            except TimeoutError:
                cause = f"connecting to {address} port {port} timed out"
            except OSError as err:
                cause = f"cannot connect to {address} port {port}: {err.strerror or err}"
        return self._unreachable(writer, what, cause)

    def _unreachable(self, writer: asyncio.StreamWriter, what: str, cause: str) -> None:
        self._guard.unreachable.append({"url": what[:500], "reason": cause})
        writer.write(_answer("502 Bad Gateway"))
        return None

    async def _pipe(self, client: Stream, upstream: Stream) -> None:
        """A tunnel: copy both ways until the upstream side ends (or the client gives up)."""
        up = asyncio.ensure_future(_copy(client[0], upstream[1]))
        down = asyncio.ensure_future(_copy(upstream[0], client[1]))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            if up.done() and not down.done():
                # The client finished sending (a half-closed tunnel): the answer may still come.
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(down), IDLE_TIMEOUT)
        finally:
            for task in (up, down):
                task.cancel()
            upstream[1].close()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
