"""Headers every answer carries, so no other site can frame a page, and no browser guesses a type.

HTML pages get a Content-Security-Policy that runs no inline script: the inbox (/ui) loads its script and
style from its own files; other pages (approval links) run no script at all. The OpenAPI pages (/docs,
/redoc) load Swagger's script from its CDN, so they only get ``frame-ancestors``. A route that sets its
own header keeps it.
"""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_PAGE = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
           "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
OTHER_PAGE = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
              "base-uri 'none'; frame-ancestors 'none'")
NOT_A_PAGE = "default-src 'none'; frame-ancestors 'none'"
DOCS = "frame-ancestors 'none'"
_DOCS_PATHS = ("/docs", "/redoc")

ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",  # frame-ancestors, for browsers that predate it
    # same-origin, not no-referrer: a form posted under no-referrer carries "Origin: null", which the
    # same-origin check (followthrough/api/same_origin.py) must refuse.
    "referrer-policy": "same-origin",
}


def policy_for(path: str, content_type: str) -> str:
    if path.startswith(_DOCS_PATHS):
        return DOCS
    if content_type.startswith("text/html"):
        return UI_PAGE if path == "/ui" or path.startswith("/ui/") else OTHER_PAGE
    return NOT_A_PAGE


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy",
                                   policy_for(scope.get("path", ""), headers.get("content-type", "")))
            await send(message)

        await self.app(scope, receive, with_headers)
