"""Sending: hand a drafted message to its channel exactly once per idempotency key."""

import uuid
from datetime import datetime, timezone

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.errors import permanent, reports_attempt
from followthrough import activity_names, policies
from followthrough.contracts import SendRequest, SendResult
from followthrough.mirror import insert_ignoring_duplicates
from followthrough.tables import OutboxMessage

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]


class DeliveryActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @activity.defn(name=activity_names.SEND)
    @reports_attempt
    async def send(self, request: SendRequest) -> SendResult:
        if request.draft.channel != "email":
            raise permanent(f"no transport for channel {request.draft.channel!r}", policies.DELIVERY_REFUSED)
        if not request.draft.to:
            raise permanent("the message has no recipients", policies.DELIVERY_REFUSED)
        message_id, duplicate = await self._enqueue(request)
        return SendResult(delivery_id=message_id, channel="outbox", attempt=activity.info().attempt,
                          duplicate=duplicate, detail={"recipients": request.draft.to})

    async def _enqueue(self, request: SendRequest) -> tuple[str, bool]:
        """Insert into the outbox once per idempotency key; a repeat returns the first row's id."""
        row = dict(id=str(uuid.uuid4()), idempotency_key=request.idempotency_key, task_id=request.task_id,
                   tenant_id=request.tenant_id, channel=request.draft.channel, recipients=request.draft.to,
                   subject=request.draft.subject, body=request.draft.body, status="queued",
                   created_at=datetime.now(timezone.utc))
        async with self._engine.begin() as conn:
            if await insert_ignoring_duplicates(conn, OUTBOX, [row]):
                return row["id"], False
            existing = await conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.idempotency_key == row["idempotency_key"]))
            return existing.scalar_one(), True
