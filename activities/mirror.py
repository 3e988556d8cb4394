"""Recording task events into the SQL mirror (called as a local activity)."""

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from followthrough import activity_names
from followthrough.contracts import MirrorAck, MirrorBatch
from followthrough.mirror import record_batch


class MirrorActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name=activity_names.RECORD)
    async def record(self, batch: MirrorBatch) -> MirrorAck:
        return await record_batch(self._sessions, batch)
