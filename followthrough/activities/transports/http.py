"""HTTP calls: one request per idempotency key, recorded in the ``deliveries`` table.

Also the machinery the webhook transport shares: recording a delivery once per
key, sending with the retry/permanent split, and the shape of the result.
"""

import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Table, select, update

from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError, SecretRefused, TargetRefused
from followthrough.infra import redaction
from followthrough.domain.contracts import Draft
from followthrough.infra.outbound import OutboundRefused
from followthrough.db.mirror import insert_ignoring_duplicates
from followthrough.db.tables import Delivery
from followthrough.domain.http_rules import TRANSPORT_HEADERS
from followthrough.infra.task_secrets import TaskSecretError

log = logging.getLogger("followthrough.delivery")

DELIVERIES: Table = Delivery.__table__  # type: ignore[attr-defined]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HEADERS_OF_INTEREST = ("content-type", "location", "retry-after", "etag", "x-request-id")
BODY_LIMIT = 2000
# 4xx answers that mean "later", not "never".
RETRYABLE_4XX = frozenset({408, 425, 429})
# Fixed forever: delivery ids are derived from idempotency keys under it, so a retry (or a
# new release) computes the same id the receiver already saw.
_ID_NAMESPACE = uuid.UUID("5b0f7c1e-3d2a-4c51-9a57-0d3c6b8f2e11")


class TransientDeliveryError(Exception):
    """A 5xx, a timeout or a lost connection: Temporal retries the send."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RefusedResponse(PermanentDeliveryError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def delivery_id_for(idempotency_key: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, idempotency_key))


@dataclass(frozen=True)
class Claim:
    delivery_id: str
    created_at: datetime
    stored: dict[str, Any] | None  # the recorded result when already delivered


async def claim(ctx: DeliveryContext, channel: str, target: str) -> Claim:
    """Create or find the row for this key and count the attempt, unless it was already delivered."""
    key = ctx.idempotency_key
    row = dict(id=delivery_id_for(key), idempotency_key=key, task_id=ctx.task_id, tenant_id=ctx.tenant_id,
               channel=channel, target=target, status="sending", attempts=0, response_status=None, detail={},
               created_at=datetime.now(timezone.utc), delivered_at=None)
    async with ctx.engine.begin() as conn:
        await insert_ignoring_duplicates(conn, DELIVERIES, [row])
        found = (await conn.execute(select(DELIVERIES).where(DELIVERIES.c.idempotency_key == key)
                                    .with_for_update())).one()
        if found.status == "delivered":
            return Claim(found.id, found.created_at, dict(found.detail))
        await conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == found.id)
                           .values(attempts=DELIVERIES.c.attempts + 1))
        return Claim(found.id, found.created_at, None)


async def _record(ctx: DeliveryContext, delivery_id: str, **values: Any) -> None:
    async with ctx.engine.begin() as conn:
        await conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id).values(**values))


async def deliver_once(ctx: DeliveryContext, channel: str, target: str,
                       attempt: Callable[[Claim], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    claimed = await claim(ctx, channel, target)
    if claimed.stored is not None:
        return claimed.stored | {"duplicate": True}
    try:
        result = await attempt(claimed)
    except Exception as err:
        try:  # the row explains the last failure; recording it must not hide the error itself
            await _record(ctx, claimed.delivery_id, response_status=getattr(err, "status", None),
                          detail={"error": redaction.redact(str(err)), "attempt": ctx.attempt})
        except Exception:
            log.exception("could not record the failed attempt of delivery %s", claimed.delivery_id)
        raise
    # If this write fails the send is retried and calls again; the receiver sees the same key.
    await _record(ctx, claimed.delivery_id, status="delivered", response_status=result["status"],
                  delivered_at=datetime.now(timezone.utc), detail=result)
    return result


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without these values (forms a receiver may echo back: the base64 of basic auth) nor any other
    secret this process resolved."""
    for value in secrets:
        if value:
            text = text.replace(value, redaction.REDACTED)
    return redaction.redact(text)


async def exchange(ctx: DeliveryContext, request: httpx.Request, expected: set[int] | None,
                   secrets: list[str]) -> dict[str, Any]:
    """Send ``request``; the result of an accepted answer, else the right exception."""
    what = f"{request.method} {request.url}"
    started = time.perf_counter()
    try:
        response = await ctx.http.send(request, stream=True, follow_redirects=False)
        try:
            raw, cut = b"", False
            async for chunk in response.aiter_bytes():  # read only what the result can hold
                raw += chunk
                if len(raw) > BODY_LIMIT * 4:
                    cut = True
                    break
        finally:
            await response.aclose()
    except OutboundRefused as err:
        raise TargetRefused(f"{what} {err}") from err
    except httpx.TimeoutException as err:
        raise TransientDeliveryError(f"{what} timed out ({type(err).__name__})") from err
    except httpx.TransportError as err:
        raise TransientDeliveryError(f"{what} failed: {type(err).__name__}: {err}") from err
    text = redact(raw.decode(response.encoding or "utf-8", errors="replace"), secrets)
    status = response.status_code
    result = {
        "status": status,
        "headers": {h: redact(response.headers[h], secrets) for h in HEADERS_OF_INTEREST if h in response.headers},
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "body": text[:BODY_LIMIT], "body_truncated": cut or len(text) > BODY_LIMIT, "duplicate": False,
    }
    accepted = status in expected if expected else 200 <= status < 300
    if accepted:
        return result
    message = f"{what} answered {status} {response.reason_phrase}".rstrip() + (f": {text[:300]}" if text else "")
    if status >= 500 or status in RETRYABLE_4XX:
        raise TransientDeliveryError(message, status)
    raise RefusedResponse(message, status)


def check_url(url: Any) -> str:
    parts = urlsplit(str(url or ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentDeliveryError(f"not an http(s) URL: {url!r}")
    return str(url)


def _auth(auth: dict[str, Any], ctx: DeliveryContext, host: str) -> tuple[dict[str, str], list[str]]:
    """Headers for the auth block, and the values to keep out of results; secrets are read only here, from the
    task's tenant's secrets, for the host the request goes to (redirects are not followed)."""
    kind = auth.get("type") or "none"
    if kind == "none":
        return {}, []
    if not auth.get("secret"):
        raise PermanentDeliveryError(f"auth type {kind!r} needs the name of a secret")
    try:
        value = ctx.task_secret(str(auth["secret"]), host, header=kind != "basic")
    except TaskSecretError as err:
        raise SecretRefused(str(err)) from None
    if kind == "bearer":
        return {"Authorization": f"Bearer {value}"}, [value]
    if kind == "api_key":
        return {auth.get("header") or "X-API-Key": value}, [value]
    if kind == "basic":
        token = redaction.remember(base64.b64encode(f"{auth.get('username', '')}:{value}".encode()).decode())
        return {"Authorization": f"Basic {token}"}, [value, token]
    raise PermanentDeliveryError(f"unknown auth type {kind!r}")


class HttpTransport:
    channel = "http"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        data = draft.data
        method = str(data.get("method") or "GET").upper()
        if method not in METHODS:
            raise PermanentDeliveryError(f"unsupported method {method!r}")
        url = check_url(data.get("url"))
        timeout = min(float(data.get("timeout_seconds") or ctx.timeout_seconds), ctx.timeout_seconds)
        expected = set(data.get("expected_statuses") or [])

        async def attempt(claimed: Claim) -> dict[str, Any]:
            auth_headers, secrets = _auth(data.get("auth") or {}, ctx, httpx.URL(url).host)
            # A connector may name the header its API reads the key from.
            ours = auth_headers | {str(data.get("idempotency_header") or "Idempotency-Key"): ctx.idempotency_key}
            # Ours win over a same-named header in the request, whatever its case.
            # Headers the client derives from the URL and body are dropped too: payloads are checked for
            # them at creation, and a draft made before that check must not route by its own Host.
            taken = {name.lower() for name in ours} | TRANSPORT_HEADERS
            headers = {k: str(v) for k, v in (data.get("headers") or {}).items() if k.lower() not in taken} | ours
            body: dict[str, Any] = {}
            if data.get("json") is not None:
                body["json"] = data["json"]
            elif data.get("text") is not None:
                body["content"] = str(data["text"]).encode()
                if not any(h.lower() == "content-type" for h in headers):
                    headers["Content-Type"] = "text/plain; charset=utf-8"
            request = ctx.http.build_request(method, url, params=data.get("query") or None, headers=headers,
                                             timeout=timeout, **body)
            result = await exchange(ctx, request, expected, secrets)
            return {"delivery_id": claimed.delivery_id, "method": method, "url": url} | result

        return await deliver_once(ctx, self.channel, f"{method} {url}", attempt)


TRANSPORT = HttpTransport()
