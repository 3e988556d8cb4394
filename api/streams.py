"""Live updates: task events as server-sent events, read from the mirror as workers write them.

Workers (any number of processes, on any machine) write events to the mirror, and nothing tells an API
process when they do; so a stream reads ``task_events`` every ``stream_poll_seconds``, in the order the
mirror recorded them (``recorded_at``, then ``seq`` and ``id``). A worker's transaction commits a little
after the time it recorded, and workers' clocks differ, so each read looks back ``stream_overlap_seconds``
before the newest event the database holds and skips the ids this stream has sent already: within one
connection every event is sent once, even one committed late.

Each message's ``id:`` is a cursor: the newest position sent so far (the mirror time in microseconds, the
event's seq and its id). A client that reconnects with ``Last-Event-ID`` gets the events after it.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import Request
from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.errors import ApiError
from followthrough.lifecycle import TERMINAL_STATUSES
from followthrough.settings import Settings
from followthrough.tables import Task, TaskEvent

log = logging.getLogger("followthrough.api")

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffering either
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PAGE = 500  # events read at most per query; a longer backlog is read page by page
_RECONNECT_MS = 2000
_TERMINAL = {s.value for s in TERMINAL_STATUSES}


@dataclass(frozen=True, order=True)
class Position:
    """Where an event stands in the mirror's order: when it was recorded, its seq, its id."""

    recorded_at: datetime
    seq: int
    id: str

    def cursor(self) -> str:
        return f"{(self.recorded_at - _EPOCH) // timedelta(microseconds=1)}.{self.seq}.{self.id}"

    @classmethod
    def parse(cls, cursor: str) -> "Position":
        """A ``Last-Event-ID``; a 422 for anything this API did not send."""
        micros, _, rest = cursor.partition(".")
        seq, _, event_id = rest.partition(".")
        try:
            if not event_id or len(cursor) > 200:
                raise ValueError(cursor)
            return cls(_EPOCH + timedelta(microseconds=int(micros)), int(seq), event_id)
        except (ValueError, OverflowError) as err:
            raise ApiError(422, "Last-Event-ID is not a cursor this API sent; reconnect without it") from err


@dataclass
class Scope:
    """Which events a stream sends: one task's, or a tenant's (None: every tenant) narrowed by filters."""

    task_id: str | None = None
    tenant_id: str | None = None
    task_type: str | None = None
    statuses: Sequence[str] = ()  # events into or out of any of these statuses
    event_types: Sequence[str] = ()

    def narrow(self, query: Select) -> Select:
        if self.task_id is not None:
            query = query.where(TaskEvent.task_id == self.task_id)
        if self.tenant_id is not None:
            query = query.where(Task.tenant_id == self.tenant_id)
        if self.task_type is not None:
            query = query.where(Task.type == self.task_type)
        if self.statuses:
            query = query.where(or_(TaskEvent.new_status.in_(self.statuses),
                                    TaskEvent.old_status.in_(self.statuses)))
        if self.event_types:
            query = query.where(TaskEvent.type.in_(self.event_types))
        return query


@dataclass
class EventReader:
    """Reads a scope's new events, page by page, each once."""

    engine: AsyncEngine
    scope: Scope
    overlap: timedelta
    after: Position | None = None  # resuming: send only what comes after this
    newest: datetime | None = None  # the newest recorded_at the database held at the last read
    seen: dict[str, datetime] = field(default_factory=dict)  # ids sent (or skipped) within the overlap
    sent: Position | None = None  # the newest position sent: the cursor of every message
    _from: tuple[datetime, bool] | None = None  # catching up on a backlog: (time, inclusive)

    async def start_at_now(self) -> None:
        """Send only events recorded from now on: everything the mirror holds already counts as seen."""
        async with self.engine.connect() as conn:
            self.newest = (await conn.execute(select(func.max(TaskEvent.recorded_at)))).scalar()
            if self.newest is not None:
                recent = await conn.execute(select(TaskEvent.id, TaskEvent.recorded_at)
                                            .where(TaskEvent.recorded_at >= self.newest - self.overlap))
                self.seen = {event_id: when for event_id, when in recent.all()}

    def resume(self, cursor: str) -> None:
        self.after = self.sent = Position.parse(cursor)
        self.newest = self.after.recorded_at

    @property
    def catching_up(self) -> bool:
        return self._from is not None

    async def task_status(self) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(Task.status).where(Task.id == self.scope.task_id))).scalar()

    async def read(self) -> list[tuple[dict[str, Any], str]]:
        """The scope's events not sent yet, in the mirror's order (at most a page or so per call), each with
        its cursor: the newest position sent once it is."""
        async with AsyncSession(self.engine) as session:
            newest = (await session.execute(select(func.max(TaskEvent.recorded_at)))).scalar()
            rows = await self._page(session)
        new = []
        for event, task_type, stage in rows:
            position = Position(event.recorded_at, event.seq, event.id)
            if event.id in self.seen or (self.after is not None and position <= self.after):
                continue
            self.seen[event.id] = event.recorded_at
            self.sent = max(self.sent, position) if self.sent else position
            new.append((message(event, task_type, stage), self.sent.cursor()))
        if newest is not None and not self.catching_up:
            self.newest = max(self.newest, newest) if self.newest else newest
        if self.newest is not None:
            horizon = self.newest - self.overlap
            self.seen = {k: v for k, v in self.seen.items() if v >= horizon}
        return new

    async def _page(self, session: AsyncSession) -> list[Any]:
        query = self.scope.narrow(select(TaskEvent, Task.type, Task.stage).join(Task, Task.id == TaskEvent.task_id))
        if self._from is not None:
            since, inclusive = self._from
            query = query.where(TaskEvent.recorded_at >= since if inclusive else TaskEvent.recorded_at > since)
        elif self.newest is not None:
            query = query.where(TaskEvent.recorded_at >= self.newest - self.overlap)
        ordered = query.order_by(TaskEvent.recorded_at, TaskEvent.seq, TaskEvent.id)
        rows = (await session.execute(ordered.limit(_PAGE + 1))).all()
        if len(rows) <= _PAGE:
            self._from = None
            return rows
        last = rows[-1][0].recorded_at
        if rows[0][0].recorded_at == last:  # one write of more than a page: take that instant whole
            self._from = (last, False)
            return (await session.execute(ordered.where(TaskEvent.recorded_at == last))).all()
        self._from = (last, True)  # the last instant may go on past the page: read it again next time
        return [row for row in rows if row[0].recorded_at != last]


def message(event: TaskEvent, task_type: str, stage: str) -> dict[str, Any]:
    return {"id": event.id, "task_id": event.task_id, "task_type": task_type, "seq": event.seq,
            "type": event.type, "old_status": event.old_status, "new_status": event.new_status,
            "stage": stage, "actor_type": event.actor_type, "actor_id": event.actor_id, "data": event.data,
            "occurred_at": event.occurred_at.isoformat(), "recorded_at": event.recorded_at.isoformat()}


def frame(event: str, data: dict[str, Any], cursor: str | None) -> str:
    lines = [f"event: {event}"] + ([f"id: {cursor}"] if cursor else [])
    return "\n".join(lines + [f"data: {json.dumps(data, ensure_ascii=False, default=str)}"]) + "\n\n"


class StreamSlots:
    """How many streams this process holds open, against ``stream_max_connections``. A stream counts from
    its first byte to its end, so requests arriving at the same instant may pass the cap by a few."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0

    def check(self) -> None:
        if self.limit and self.open >= self.limit:
            raise ApiError(503, f"this server holds its most streams ({self.limit}) open; retry shortly",
                           headers={"Retry-After": "5"})


async def events(request: Request, reader: EventReader, settings: Settings, slots: StreamSlots,
                 key_live: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[str]:
    """The stream's body; a one-task stream ends with an ``end`` message once the task is terminal. A stream
    opened with a key asks ``key_live`` every ``stream_key_check_seconds`` and ends once the key is revoked."""
    loop = asyncio.get_running_loop()
    slots.open += 1
    try:
        yield f"retry: {_RECONNECT_MS}\n\n"
        quiet_since = key_checked = loop.time()
        while not await request.is_disconnected():
            if key_live is not None and loop.time() - key_checked >= settings.stream_key_check_seconds:
                key_checked = loop.time()
                if not await _still_live(key_live):
                    yield frame("end", {"reason": "the API key has been revoked"}, None)
                    return
            try:
                # The task's status first: its terminal event commits with it, so the read after sees that event.
                status = await reader.task_status() if reader.scope.task_id is not None else None
                batch = await reader.read()
            except (DBAPIError, SQLAlchemyError, OSError) as err:
                log.warning("event stream: the mirror could not be read (%s); trying again", type(err).__name__)
                status, batch = None, []
            for data, cursor in batch:
                yield frame("task_event", data, cursor)
            if batch:
                quiet_since = loop.time()
            if status in _TERMINAL and not reader.catching_up:
                yield frame("end", {"task_id": reader.scope.task_id, "status": status},
                            reader.sent.cursor() if reader.sent else None)
                return
            if loop.time() - quiet_since >= settings.stream_keepalive_seconds:
                yield ": keep-alive\n\n"
                quiet_since = loop.time()
            if not reader.catching_up:
                await asyncio.sleep(settings.stream_poll_seconds)
    finally:
        slots.open -= 1


async def _still_live(key_live: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await key_live()
    except (DBAPIError, SQLAlchemyError, OSError):
        return True  # the database is away: the stream's reads wait for it too; check again later
