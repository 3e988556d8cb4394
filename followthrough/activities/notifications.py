"""Notifying subscribers of task events with signed webhooks."""

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from followthrough.activities.errors import permanent, reports_attempt
from followthrough.activities.transports import DeliveryContext, PermanentDeliveryError, Transport
from followthrough.activities.transports.email import EmailTransport
from followthrough.db import notification_outbox
from followthrough.domain import activity_names, policies
from followthrough.infra.approval_links import links_for
from followthrough.domain.contracts import Draft, Notification
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.config.settings import Settings
from followthrough.infra.task_secrets import task_secrets_for
from followthrough.tasktypes import get_type


class NotificationActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient, secrets: SecretStore,
                 webhook: Transport) -> None:
        self._settings, self._engine, self._http, self._secrets = settings, engine, http, secrets
        self._task_secrets = task_secrets_for(settings)
        self._webhook = webhook
        self._email = EmailTransport()

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
        if notification.url.startswith("mailto:"):
            return await self._send_email(notification, key, attempt, timeout, link)
        payload: dict[str, Any] = {"event_id": notification.event_id, "task": task | {"link": link}}
        if (notification.event == "task.awaiting_approval" and task.get("approvers")
                and not notification_outbox.is_direct(notification.subscription_id)):
            # Each named approver gets signed links to decide from the message itself, bound to this request:
            # the event is the TASK_APPROVAL_REQUESTED one, whose id is the approval request's. Only an
            # operator's subscription carries them: the task's own webhook is its submitter's, who may not
            # decide for the approvers.
            payload["approval_links"] = {a: links_for(self._settings, task["id"], notification.event_id, a)
                                         for a in task["approvers"]}
        draft = Draft(channel="webhook", subject=notification.event, body="", data={
            "url": notification.url, "secret": notification.secret, "event": notification.event, "payload": payload,
        })
        try:
            return await self._webhook.deliver(draft, self._context(task, key, attempt, timeout))
        except (PermanentDeliveryError, SecretNotFound) as err:
            error_type = getattr(err, "error_type", policies.DELIVERY_REFUSED)
            raise permanent(str(err), error_type) from err

    async def _send_email(self, notification: Notification, key: str, attempt: int, timeout: float,
                          link: str) -> dict[str, Any]:
        """One person's email of a task event, when SMTP is configured; sent once per delivery key (the email
        outbox's idempotency key: one per event and address, however often retried or replayed)."""
        if not self._settings.smtp_host:
            return {"skipped": "no SMTP server is configured"}
        task, address = notification.task, notification.url.removeprefix("mailto:")
        # An approver named by an address outside the tenant's allowed domains is not written to: naming
        # one cannot take a task (or links to decide it) where the tenant's email may not go.
        allowed = {d.lower() for d in get_type("email").guardrail_params(self._settings, task["tenant_id"])
                   .get("allowed_domains") or []}
        if allowed and address.rsplit("@", 1)[-1].lower() not in allowed:
            return {"skipped": "the address is outside the tenant's allowed domains"}
        # Signed links let whoever reads the mailbox decide without a key. A submitter names the approvers, so
        # links go only where the operator has said the tenant's people are (its allowed email domains): with
        # no such list, naming one's own address would be a way to approve without the approver role.
        links = self._links(task, address) if allowed else None
        draft = Draft(channel="email", to=[address], subject=_subject(notification.event, task["title"]),
                      body=_email_body(notification.event, task, link, links))
        try:
            return await self._email.deliver(draft, self._context(task, key, attempt, timeout))
        except PermanentDeliveryError as err:
            raise permanent(str(err), policies.DELIVERY_REFUSED) from err

    def _links(self, task: dict[str, Any], address: str) -> dict[str, str] | None:
        """Signed approve and reject links, only for a person the event names as one who may decide."""
        if address not in (task.get("deciders") or []) or not task.get("approval_id"):
            return None
        return links_for(self._settings, task["id"], task["approval_id"], address)

    def _context(self, task: dict[str, Any], key: str, attempt: int, timeout: float) -> DeliveryContext:
        return DeliveryContext(
            settings=self._settings, engine=self._engine, http=self._http, secrets=self._secrets,
            task_secrets=self._task_secrets,
            task_id=task["id"], task_type=task["type"], tenant_id=task["tenant_id"],
            idempotency_key=key,  # one delivery per event and subscriber, however often this is retried
            attempt=attempt,
            timeout_seconds=max(1.0, timeout - 2),  # room to record the outcome within the caller's deadline
            # Telling someone about a task is not writing to them: the first-contact guardrail still holds the
            # task's own first message to an address a notification reached.
            contact=False,
        )


_SUBJECTS = {"task.awaiting_approval": "Waiting for you: {title}", "task.approval_reminder": "Reminder: {title}",
             "task.approval_escalated": "Escalated to you: {title}", "task.created": "New task: {title}",
             "task.approved": "Approved: {title}", "task.rejected": "Rejected: {title}",
             "task.expired": "Expired: {title}", "task.cancelled": "Cancelled: {title}",
             "task.failed": "Failed: {title}", "task.completed": "Done: {title}"}


def _subject(event: str, title: str) -> str:
    return _SUBJECTS.get(event, "{title}: " + event).format(title=title)


def _email_body(event: str, task: dict[str, Any], link: str, links: dict[str, str] | None) -> str:
    lines = [f"{_subject(event, task['title'])} (task {task['id']}, {task['type']}, now {task['status']}).", "",
             f"The task: {link}"]
    if links:
        lines += ["", f"Approve (or mark done): {links['approve']}", f"Reject: {links['reject']}",
                  f"These links are yours alone and work once, until {links['expires_at']}."]
    return "\n".join(lines) + "\n"
