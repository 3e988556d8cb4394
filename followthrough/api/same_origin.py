"""Refusing a state-changing request a browser sends on another site's behalf (cross-site request forgery).

Browsers say where a request comes from: ``Origin`` on every POST of a form or a fetch, else ``Referer``,
and ``Sec-Fetch-Site``. An unsafe request (POST, PUT, PATCH, DELETE) that names another origin is answered
403 before any handler runs: the inbox's forms, the approval-link pages' forms and, on a dev server with
anonymous access, the JSON API. A request that names no origin at all (a script, curl, an old browser) goes
on: the inbox's forms still need their CSRF token (followthrough/api/routes/inbox.py). The codec endpoints are called
from the Temporal Web UI's origin on purpose; their CORS allow-list (followthrough/api/codec_cors.py) governs them.
"""

import html
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from followthrough.api.middleware import json_answer

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]``, lower-case, the default port left out; None for anything else ("null")."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    netloc = parts.hostname.lower() if port in (None, _DEFAULT_PORTS[parts.scheme]) else f"{parts.hostname.lower()}:{port}"
    return f"{parts.scheme}://{netloc}"


class RefuseCrossSiteRequests:
    def __init__(self, app: ASGIApp, public_url: str, exempt_prefix: str) -> None:
        self.app, self.exempt_prefix = app, exempt_prefix
        self.public_origin = origin_of(public_url)

    def _ours(self, origin: str | None, host: str) -> bool:
        if origin is None:
            return False
        if origin == self.public_origin:
            return True
        # The origin the browser addressed: the Host it sent (either scheme, for a proxy ending TLS in front).
        return any(origin == origin_of(f"{scheme}://{host}") for scheme in _DEFAULT_PORTS) if host else False

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        fetch_site = headers.get("sec-fetch-site", "").lower()
        if fetch_site in ("cross-site", "same-site"):
            return f"the browser sent it from another site (Sec-Fetch-Site: {fetch_site})"
        if "origin" in headers:
            if not self._ours(origin_of(headers["origin"]), host):
                return f"it came from another site (Origin: {headers['origin'][:200]})"
        elif "referer" in headers and not self._ours(origin_of(headers["referer"]), host):
            return f"it came from another site (Referer: {origin_of(headers['referer']) or 'unknown'})"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in UNSAFE
                and not scope.get("path", "").startswith(self.exempt_prefix)):
            reason = self.refusal(scope)
            if reason is not None:
                message = (f"This request was refused because {reason}. Open this server's own page "
                           f"({self.public_origin or 'its address'}) and submit the form from there.")
                if scope.get("path", "").startswith("/ui") or "/approval-links/" in scope.get("path", ""):
                    await _html_answer(send, 403, message)
                else:
                    await json_answer(send, 403, {"detail": message})
                return
        await self.app(scope, receive, send)


async def _html_answer(send: Send, status: int, message: str) -> None:
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Refused</title></head>'
            f'<body><h1>Refused</h1><p role="alert">{html.escape(message)}</p></body></html>').encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(page)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": page})
