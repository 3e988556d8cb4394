"""Webhooks: a signed JSON POST, once per idempotency key.

``draft.data`` = {"url", "secret": <secret name>, "event", "payload"}. The body is
``{"id", "event", "created_at", "data"}``; ``id`` and ``created_at`` come from the
delivery row, so every retry sends the same event and a receiver can drop repeats by id.
"""

import json
from typing import Any

import httpx

from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError, SecretRefused
from followthrough.activities.transports.http import Claim, check_url, deliver_once, exchange
from followthrough.infra import signing
from followthrough.domain.contracts import Draft
from followthrough.infra.task_secrets import TaskSecretError

USER_AGENT = "followthrough-webhooks/1"


class WebhookTransport:
    channel = "webhook"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        data = draft.data
        url = check_url(data.get("url"))
        event, secret_name, payload = data.get("event"), data.get("secret"), data.get("payload")
        if not isinstance(event, str) or not event or not isinstance(secret_name, str) or not secret_name:
            raise PermanentDeliveryError("a webhook needs an event name and the name of its signing secret")
        if not isinstance(payload, dict):
            raise PermanentDeliveryError("a webhook payload must be a JSON object")

        async def attempt(claimed: Claim) -> dict[str, Any]:
            # The tenant's task secret, for the receiver's host (redirects are not followed).
            try:
                secret = ctx.task_secret(secret_name, httpx.URL(url).host)
            except TaskSecretError as err:
                raise SecretRefused(str(err)) from None
            # Built once per attempt and signed as these exact bytes: re-serialising could change them.
            body = json.dumps({"id": claimed.delivery_id, "event": event,
                               "created_at": claimed.created_at.isoformat(), "data": payload},
                              separators=(",", ":"), ensure_ascii=False).encode()
            headers = {
                "Content-Type": "application/json", "User-Agent": USER_AGENT,
                signing.HEADER: signing.sign(secret, body),
                "X-Followthrough-Delivery": claimed.delivery_id, "X-Followthrough-Event": event,
                "Idempotency-Key": ctx.idempotency_key,
            }
            request = ctx.http.build_request("POST", url, content=body, headers=headers,
                                             timeout=ctx.timeout_seconds)
            result = await exchange(ctx, request, None, [secret])
            return {"delivery_id": claimed.delivery_id, "event": event, "url": url} | result

        return await deliver_once(ctx, self.channel, url, attempt)


TRANSPORT = WebhookTransport()
