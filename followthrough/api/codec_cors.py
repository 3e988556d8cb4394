"""CORS for the codec endpoints, and only for the Temporal Web UI's origin.

The UI (a page served from FOLLOWTHROUGH_TEMPORAL_UI_URL) calls ``/codec/decode`` from the
browser: a preflight OPTIONS first, then the POST with ``Content-Type``, ``X-Namespace`` and,
when the UI is set to pass its access token, ``Authorization``. With "include cross-origin
credentials" set in the UI, the inbox page's sign-in cookie goes along (it must be a key with the codec
role, followthrough/api/routes/codec.py), so allow credentials.
Any other origin gets no CORS headers and a 403 preflight; the browser then refuses the call.
"""

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from followthrough.api.middleware import json_answer

ALLOWED_HEADERS = "content-type, x-namespace, authorization, x-api-key"
ALLOWED_METHODS = "POST, OPTIONS"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


class CodecCors:
    def __init__(self, app: ASGIApp, path_prefix: str, allowed_origin: str) -> None:
        self.app, self.prefix, self.allowed = app, path_prefix.rstrip("/") + "/", origin_of(allowed_origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = origin is not None and self.allowed != "" and origin.lower() == self.allowed
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await (self._preflight(send, origin) if allowed else
                   json_answer(send, 403, {"detail": "cross-origin calls to the codec are allowed only from the "
                                                 "Temporal UI's origin (FOLLOWTHROUGH_TEMPORAL_UI_URL)"}))
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = origin
                out["Access-Control-Allow-Credentials"] = "true"
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, with_cors)

    @staticmethod
    async def _preflight(send: Send, origin: str) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin")]})
        await send({"type": "http.response.body", "body": b""})
