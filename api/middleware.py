"""Refusing requests no handler should see."""

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class RefuseNulInUrl:
    """A NUL character in a path or query can be stored by no database: answer 400 before any handler runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope.get("path", "")
                                        or b"%00" in scope.get("query_string", b"").lower()):
            await json_answer(send, 400, {"detail": "NUL characters are not allowed in URLs"})
            return
        await self.app(scope, receive, send)


async def json_answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
