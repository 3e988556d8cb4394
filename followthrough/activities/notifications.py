"""Notifying subscribers of task events with signed webhooks."""

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from followthrough.activities.errors import permanent, reports_attempt
from followthrough.activities.transports import DeliveryContext, PermanentDeliveryError, Transport
from followthrough.db import notification_outbox
from followthrough.domain import activity_names, policies
from followthrough.infra.approval_links import links_for
from followthrough.domain.contracts import Draft, Notification
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.config.settings import Settings
from followthrough.infra.task_secrets import task_secrets_for


class NotificationActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient, secrets: SecretStore,
                 webhook: Transport) -> None:
        self._settings, self._engine, self._http, self._secrets = settings, engine, http, secrets
        self._task_secrets = task_secrets_for(settings)
        self._webhook = webhook

    @activity.defn(name=activity_names.NOTIFY)
    @reports_attempt
    async def notify(self, notification: Notification) -> dict[str, Any]:
        key = notification_outbox.delivery_key(notification.event_id, notification.subscription_id)
        # A notification handed on again (the mirror write retried after its answer was lost) is sent once.
        if await notification_outbox.is_delivered(self._engine, key):
            return {"duplicate": True, "delivery_key": key}
        info = activity.info()
        timeout = (info.start_to_close_timeout or policies.NOTIFY_TIMEOUT).total_seconds()
        result = await self._send(notification, key, info.attempt, timeout)
        await notification_outbox.mark_delivered(self._engine, key)
        return result

    async def resend(self, notification: Notification, key: str, attempt: int) -> dict[str, Any]:
        """The outbox sweep's re-send (followthrough/services/notification_sweep.py), outside any activity: the same
        webhook under the same delivery key. The sweep marks the row."""
        return await self._send(notification, key, attempt, policies.NOTIFY_TIMEOUT.total_seconds())

    async def _send(self, notification: Notification, key: str, attempt: int, timeout: float) -> dict[str, Any]:
        task = notification.task
        link = f"{self._settings.effective_public_url}/api/v1/tasks/{task['id']}"
        payload: dict[str, Any] = {"event_id": notification.event_id, "task": task | {"link": link}}
        if notification.event == "task.awaiting_approval" and task.get("approvers"):
            # Each named approver gets signed links to decide from the message itself, bound to this request:
            # the event is the TASK_APPROVAL_REQUESTED one, whose id is the approval request's.
            payload["approval_links"] = {a: links_for(self._settings, task["id"], notification.event_id, a)
                                         for a in task["approvers"]}
        draft = Draft(channel="webhook", subject=notification.event, body="", data={
            "url": notification.url, "secret": notification.secret, "event": notification.event, "payload": payload,
        })
        ctx = DeliveryContext(
            settings=self._settings, engine=self._engine, http=self._http, secrets=self._secrets,
            task_secrets=self._task_secrets,
            task_id=task["id"], task_type=task["type"], tenant_id=task["tenant_id"],
            idempotency_key=key,  # one delivery per event and subscriber, however often this is retried
            attempt=attempt,
            timeout_seconds=max(1.0, timeout - 2),  # room to record the outcome within the caller's deadline
        )
        try:
            return await self._webhook.deliver(draft, ctx)
        except (PermanentDeliveryError, SecretNotFound) as err:
            error_type = getattr(err, "error_type", policies.DELIVERY_REFUSED)
            raise permanent(str(err), error_type) from err
