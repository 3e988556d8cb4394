"""An event that came before the task it would stop: a task created with ``stop_on`` looks for an event of its
subject, of a type it names, received within FOLLOWTHROUGH_EVENT_LOOKBACK_SECONDS; when there is one, it is
created stopped (its workflow ends cancelled, the event recorded, before its first step: it never sends)."""

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.config.settings import Settings
from followthrough.db.tables import InboundEvent
from followthrough.domain.contracts import StopRequest, TaskInput

EVENTS = InboundEvent.__table__  # type: ignore[attr-defined]


async def earlier_stop(settings: Settings, engine: AsyncEngine, task: TaskInput) -> StopRequest | None:
    """The earliest event within the lookback that stops ``task``, or None."""
    if not task.stop_on or not settings.event_lookback_seconds or not task.subject_ref_id:
        return None
    since = datetime.now(timezone.utc) - timedelta(seconds=settings.event_lookback_seconds)
    query = (select(EVENTS.c.id, EVENTS.c.type, EVENTS.c.source, EVENTS.c.received_at)
             .where(EVENTS.c.tenant_id == task.tenant_id, EVENTS.c.subject_ref_type == task.subject_ref_type,
                    EVENTS.c.subject_ref_id == task.subject_ref_id, EVENTS.c.type.in_(task.stop_on),
                    EVENTS.c.received_at >= since)
             .order_by(EVENTS.c.received_at, EVENTS.c.id).limit(1))
    async with engine.connect() as conn:
        found = (await conn.execute(query)).first()
    if found is None:
        return None
    return StopRequest(event_id=found.id, event_type=found.type, received_at=found.received_at, source=found.source)
