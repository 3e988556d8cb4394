"""Email: into the outbox table, and over SMTP when a host is configured."""

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.transports.base import DeliveryContext, PermanentDeliveryError
from followthrough.contracts import Draft
from followthrough.mirror import insert_ignoring_duplicates
from followthrough.tables import Contact, OutboxMessage

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
CONTACTS: Table = Contact.__table__  # type: ignore[attr-defined]


class EmailTransport:
    channel = "email"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        if not draft.to:
            raise PermanentDeliveryError("the message has no recipients")
        now = datetime.now(timezone.utc)
        row = dict(id=str(uuid.uuid4()), idempotency_key=ctx.idempotency_key, task_id=ctx.task_id,
                   tenant_id=ctx.tenant_id, channel="email", recipients=draft.to, subject=draft.subject,
                   body=draft.body, status="queued", created_at=now, sent_at=None)
        async with ctx.engine.begin() as conn:
            inserted = await insert_ignoring_duplicates(conn, OUTBOX, [row])
            if not inserted:
                existing = (await conn.execute(select(OUTBOX.c.id, OUTBOX.c.status)
                                               .where(OUTBOX.c.idempotency_key == ctx.idempotency_key))).one()
                return {"message_id": existing.id, "status": existing.status, "duplicate": True,
                        "recipients": draft.to}
            await _remember_contacts(conn, ctx.tenant_id, draft.to, now)
        return {"message_id": row["id"], "status": "queued", "duplicate": False, "recipients": draft.to}


async def _remember_contacts(conn: AsyncConnection, tenant_id: str, addresses: list[str], now: datetime) -> None:
    await insert_ignoring_duplicates(conn, CONTACTS, [
        {"tenant_id": tenant_id, "address": a.lower(), "first_contacted_at": now} for a in addresses])


TRANSPORT = EmailTransport()
