"""Refusing requests no handler should see."""

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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


class LimitBodySize:
    """Refuse a request body over ``limit`` bytes with 413: at once when Content-Length says so, else
    (a chunked body) as soon as the bytes read pass it. 0 turns the limit off."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit:
            await self.app(scope, receive, send)
            return
        detail = {"detail": f"the request body is larger than {self.limit} bytes (FOLLOWTHROUGH_MAX_BODY_BYTES)"}
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                await json_answer(send, 400, {"detail": "Content-Length is not a number"})
                return
            if too_big:
                await json_answer(send, 413, detail)
                return
        received = 0
        started = answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if not started and not answered:
                        answered = True
                        await json_answer(send, 413, detail)
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:  # the handler's own answer to a body cut short: the 413 went first
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not answered:
                raise


class _TooLarge(Exception):
    """The body read so far passes the limit."""


async def json_answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
