"""The outbox of subscribers' notifications.

A notification is recorded in the transaction that writes its event, so it exists exactly when the event does.
Every mirror write answers with the undelivered notifications of the events it carries, whether it inserted
them or found them written: a write retried after its answer was lost (a worker killed after the commit, a
timeout) still hands the workflow what it owes. The sender marks each one delivered under its delivery key,
and skips one already marked. What the workflow could not deliver, the worker's sweep re-sends under the same key
(followthrough/services/notification_sweep.py).
"""

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from followthrough.domain.approver_ids import EMAIL_PATTERN
from followthrough.domain.contracts import MirrorEvent, Notification
from followthrough.db.tables import NotificationOutbox

OUTBOX: Table = NotificationOutbox.__table__  # type: ignore[attr-defined]


# A notification owed to no subscription: an email to one person (named by the event or the task's ``notify``)
# under ``to:<hash of the address>``, or the task's own ``notify`` webhook.
EMAIL_PREFIX = "to:"
TASK_WEBHOOK = "task:webhook"
_ADDRESS = re.compile(EMAIL_PATTERN)


def is_address(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _ADDRESS.match(value) is not None


def email_subscription(address: str) -> str:
    return EMAIL_PREFIX + hashlib.sha256(address.lower().encode()).hexdigest()[:32]


def is_direct(subscription_id: str) -> bool:
    """Owed to a person or the task's own webhook, not to a subscription (none can be deleted under it)."""
    return subscription_id.startswith(EMAIL_PREFIX) or subscription_id == TASK_WEBHOOK


def delivery_key(event_id: str, subscription_id: str) -> str:
    """One delivery per event and subscriber, however often it is retried or re-handed."""
    return f"notify:{event_id}:{subscription_id}"


def row_of(notification: Notification, tenant_id: str, now: datetime) -> dict[str, Any]:
    return dict(id=delivery_key(notification.event_id, notification.subscription_id),
                event_id=notification.event_id, task_id=notification.task["id"], tenant_id=tenant_id,
                subscription_id=notification.subscription_id, event=notification.event, url=notification.url,
                secret=notification.secret, task=notification.task, created_at=now, delivered_at=None)


async def undelivered(conn: AsyncConnection, events: list[MirrorEvent]) -> dict[str, list[Notification]]:
    """The notifications of these events not yet delivered, by event id, each event's in a stable order."""
    if not events:
        return {}
    rows = (await conn.execute(select(OUTBOX).where(OUTBOX.c.event_id.in_({e.id for e in events}),
                                                    OUTBOX.c.delivered_at.is_(None)).order_by(OUTBOX.c.id))).all()
    owed: dict[str, list[Notification]] = {}
    for r in rows:
        owed.setdefault(r.event_id, []).append(notification_of(r))
    return owed


def notification_of(row: Any) -> Notification:
    return Notification(subscription_id=row.subscription_id, url=row.url, secret=row.secret, event=row.event,
                        event_id=row.event_id, task=row.task)


async def is_delivered(engine: AsyncEngine, key: str) -> bool:
    async with engine.connect() as conn:
        return (await conn.execute(select(OUTBOX.c.delivered_at).where(OUTBOX.c.id == key))).scalar() is not None


async def mark_delivered(engine: AsyncEngine, key: str, at: datetime | None = None) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(OUTBOX).where(OUTBOX.c.id == key, OUTBOX.c.delivered_at.is_(None))
                           .values(delivered_at=at or datetime.now(timezone.utc)))
