"""Recording task events into the SQL mirror (called as a local activity).

Concurrent workflows' writes are coalesced: while one transaction is being
written, new batches queue up and go together in the next one (group commit).
That keeps a single writer per worker process, which matters for SQLite, and
cuts transactions under load for any database.
"""

import asyncio
import contextvars
import logging

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from followthrough.infra import tracing
from followthrough.domain import activity_names
from followthrough.domain.contracts import MirrorAck, MirrorBatch
from followthrough.db.mirror import record_batches

log = logging.getLogger("followthrough.db.mirror")

MAX_GROUP = 256


class GroupWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Each batch with its waiting activity's future and, tracing on, that activity's span.
        self._queue: list[tuple[MirrorBatch, asyncio.Future[MirrorAck], object]] = []
        self._flusher: asyncio.Task | None = None

    async def write(self, batch: MirrorBatch) -> MirrorAck:
        future: asyncio.Future[MirrorAck] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, future, tracing.current_span_context()))
        if self._flusher is None or self._flusher.done():
            # In a context of its own: it writes for every task, not for the activity that happened to start it
            # (whose task id would otherwise mark the flusher's log records).
            self._flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            queued, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            # One transaction for many tasks: with tracing on, a trace of its own that each task's links to.
            with tracing.linked_span("mirror group write", [span for _, _, span in queued], batches=len(queued)):
                await self._write([(batch, future) for batch, future, _ in queued])

    async def _write(self, group: list[tuple[MirrorBatch, asyncio.Future[MirrorAck]]]) -> None:
        try:
            _settle(group, await record_batches(self._engine, [b for b, _ in group]))
        except Exception as err:  # noqa: BLE001 - isolate the batch at fault below
            if len(group) == 1:
                _fail(group[0][1], err)
                return
            log.warning("group write of %d batches failed (%s); writing them one by one", len(group), err)
            for batch, future in group:
                try:
                    _settle([(batch, future)], await record_batches(self._engine, [batch]))
                except Exception as single:  # noqa: BLE001 - reported to that batch's activity
                    _fail(future, single)


def _settle(group: list[tuple[MirrorBatch, asyncio.Future[MirrorAck]]], acks: list[MirrorAck]) -> None:
    for (_, future), ack in zip(group, acks):
        if not future.done():  # the activity may have timed out meanwhile
            future.set_result(ack)


def _fail(future: asyncio.Future[MirrorAck], err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)


class MirrorActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self._writer = GroupWriter(engine)

    @activity.defn(name=activity_names.RECORD)
    async def record(self, batch: MirrorBatch) -> MirrorAck:
        return await self._writer.write(batch)
