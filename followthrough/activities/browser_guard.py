"""The SSRF guard in front of Chromium: every request a browser task's page makes passes it first.

Playwright's request routing hands each request (navigations, redirect hops, subresources, fetch/XHR,
frames, popups) to ``_request`` before Chromium sends it: its host is resolved and every address checked
with the policy of followthrough/infra/outbound.py, and a refused one is aborted. WebSockets are routed the same
way; service workers are blocked when the context is made (their requests would bypass routing).

What this cannot do, unlike the guarded HTTP client: make Chromium connect to the address it checked.
Chromium resolves the name again, so a name whose DNS answer changes between the two lookups (rebinding)
could still reach a refused address. Address literals and names that resolve consistently are covered.
"""

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
from playwright.async_api import BrowserContext, Route, WebSocketRoute

from followthrough.infra.outbound import OutboundPolicy, OutboundRefused

log = logging.getLogger("followthrough.browser")

# Schemes that never leave the browser.
_LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome-error"})
_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
RESOLVE_TIMEOUT = 5.0


@dataclass
class RequestGuard:
    policy: OutboundPolicy
    # What was refused, in order: {"url", "reason"}; reported in the result.
    refused: list[dict[str, str]] = field(default_factory=list)
    # Targets the proxy could not connect to (followthrough/activities/browser_proxy.py), to explain a failed navigation.
    unreachable: list[dict[str, str]] = field(default_factory=list)

    async def install(self, context: BrowserContext) -> None:
        await context.route("**/*", self._request)
        await context.route_web_socket(lambda _url: True, self._web_socket)

    async def refusal(self, url: str) -> str | None:
        """Why ``url`` must not be fetched, or None when it may be."""
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            return "not a valid URL"
        if scheme in _LOCAL_SCHEMES:
            return None
        if scheme not in _PORTS or not host:
            return f"the scheme {scheme!r} is not allowed"
        try:
            await self.policy.vet(host, port or _PORTS[scheme], RESOLVE_TIMEOUT)
        except OutboundRefused as err:
            return str(err)
        except (httpcore.ConnectError, httpcore.ConnectTimeout):
            return None  # unresolvable: Chromium fails it on its own, as an ordinary network error
        return None

    def refusal_of(self, url: str) -> str | None:
        """The reason a request for ``url`` was refused, if it was."""
        return next((r["reason"] for r in reversed(self.refused) if r["url"] == url), None)

    async def _request(self, route: Route) -> None:
        url = route.request.url
        reason = await self.refusal(url)
        if reason is None:
            await route.continue_()
            return
        log.warning("browser request refused: %s", reason)
        self.refused.append({"url": url[:500], "reason": reason})
        await route.abort("blockedbyclient")

    async def _web_socket(self, ws: WebSocketRoute) -> None:
        reason = await self.refusal(ws.url)
        if reason is None:
            ws.connect_to_server()
            return
        self.refused.append({"url": ws.url[:500], "reason": reason})
        await ws.close(code=1008, reason="refused")
