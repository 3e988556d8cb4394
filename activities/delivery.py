"""Sending: hand a drafted message to its channel exactly once per idempotency key."""

import uuid
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.errors import permanent, reports_attempt
from followthrough import activity_names, policies
from followthrough.contracts import SendRequest, SendResult
from followthrough.tables import OutboxMessage


class DeliveryActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

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
        """Insert into the outbox once per idempotency key; a repeat returns the first row."""
        for _ in range(2):
            async with self._sessions() as session:
                existing = (await session.execute(
                    select(OutboxMessage.id).where(OutboxMessage.idempotency_key == request.idempotency_key)
                )).scalar_one_or_none()
                if existing is not None:
                    return existing, True
                message = OutboxMessage(
                    id=str(uuid.uuid4()), idempotency_key=request.idempotency_key, task_id=request.task_id,
                    tenant_id=request.tenant_id, channel=request.draft.channel, recipients=request.draft.to,
                    subject=request.draft.subject, body=request.draft.body,
                    created_at=datetime.now(timezone.utc),
                )
                session.add(message)
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    continue  # a concurrent attempt won; read its row
                return message.id, False
        raise RuntimeError(f"outbox row for {request.idempotency_key} neither inserted nor found")
