"""Live updates: task events as server-sent events, read from the mirror as workers write them.

Workers (any number of processes, on any machine) write events to the mirror, and nothing tells an API
process when they do; so a stream reads ``task_events`` every ``stream_poll_seconds``, in the order the
mirror recorded them (``recorded_at``, then ``seq`` and ``id``). A worker's transaction commits a little
after the time it recorded, and workers' clocks differ, so an event recorded in the last
``stream_overlap_seconds`` may still be followed by one recorded before it. A stream therefore sends an
event once it is older than the overlap: everything before that point has committed, and the stream's
position is one keyset cursor, the same whether it has sent ten events or a million, and exact across a
reconnect (a late event lies after the cursor, never behind it).

Each message's ``id:`` is that cursor (the mirror time in microseconds, the event's seq and its id). A client
that reconnects with ``Last-Event-ID`` gets the events after it, unless more than ``stream_resume_max_events``
came after it: then an ``event: reset`` tells it to fetch the current state again, and the stream goes on
from now.
"""

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from followthrough.api.errors import ApiError
from followthrough.domain.lifecycle import TERMINAL_STATUSES
from followthrough.config.settings import Settings
from followthrough.db.tables import Task, TaskEvent

log = logging.getLogger("followthrough.api")

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffering either
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PAGE = 500  # events read at most per query; a longer backlog is read page by page
_RECONNECT_MS = 2000
_TERMINAL = {s.value for s in TERMINAL_STATUSES}
_BEFORE = -1  # the seq of a position before every event of its instant (a stream's start, a reset)


@dataclass(frozen=True, order=True)
class Position:
    """Where an event stands in the mirror's order: when it was recorded, its seq, its id."""

    recorded_at: datetime
    seq: int
    id: str

    @classmethod
    def before(cls, when: datetime) -> "Position":
        return cls(when, _BEFORE, "")

    def cursor(self) -> str:
        return f"{(self.recorded_at - _EPOCH) // timedelta(microseconds=1)}.{self.seq}.{self.id}"

    @classmethod
    def parse(cls, cursor: str) -> "Position":
        """A ``Last-Event-ID``; a 422 for anything this API did not send."""
        micros, _, rest = cursor.partition(".")
        seq, _, event_id = rest.partition(".")
        try:
            if (not event_id and seq != str(_BEFORE)) or len(cursor) > 200:
                raise ValueError(cursor)
            return cls(_EPOCH + timedelta(microseconds=int(micros)), int(seq), event_id)
        except (ValueError, OverflowError) as err:
            raise ApiError(422, "Last-Event-ID is not a cursor this API sent; reconnect without it") from err

    def later(self) -> ColumnElement[bool]:
        """Events after this position, in a form the ``recorded_at`` index serves."""
        return and_(TaskEvent.recorded_at >= self.recorded_at,
                    or_(TaskEvent.recorded_at > self.recorded_at, TaskEvent.seq > self.seq,
                        and_(TaskEvent.seq == self.seq, TaskEvent.id > self.id)))


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


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class EventReader:
    """Reads a scope's events after a keyset cursor, page by page, each once. It holds the cursor and two
    flags, nothing per event: its memory is the same whatever the history."""

    engine: AsyncEngine
    scope: Scope
    overlap: timedelta
    cursor: Position | None = None  # every event of the scope up to here is sent (None: from the first)
    catching_up: bool = False  # the last read filled a page: read on at once
    pending: bool = False  # events past the cursor too recent to send yet
    reset: bool = False  # the resume went back too far: the stream started from now instead

    async def start_at_now(self) -> None:
        """Send only events recorded from now on."""
        self.cursor = Position.before(_now())

    def resume(self, cursor: str) -> None:
        self.cursor = Position.parse(cursor)

    async def beyond(self, limit: int) -> bool:
        """Whether more than ``limit`` of the scope's events lie after the cursor (counted up to limit + 1)."""
        if not limit or self.cursor is None:
            return False
        later = self._query(select(TaskEvent.id)).limit(limit + 1).subquery()
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(later))).scalar_one() > limit

    def restart(self) -> None:
        """A resume past the cap: go on from now, and say so first."""
        self.cursor, self.reset = Position.before(_now()), True

    async def task_status(self) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(Task.status).where(Task.id == self.scope.task_id))).scalar()

    def _query(self, columns: Select) -> Select:
        query = self.scope.narrow(columns.join(Task, Task.id == TaskEvent.task_id))
        return query if self.cursor is None else query.where(self.cursor.later())

    async def read(self) -> list[tuple[dict[str, Any], str]]:
        """The scope's events after the cursor that are older than the overlap (at most a page), in the
        mirror's order, each with its cursor."""
        horizon = _now() - self.overlap
        query = self._query(select(TaskEvent, Task.type, Task.stage))
        ordered = query.order_by(TaskEvent.recorded_at, TaskEvent.seq, TaskEvent.id).limit(_PAGE)
        async with AsyncSession(self.engine) as session:
            rows = (await session.execute(ordered)).all()
        new = []
        for event, task_type, stage in rows:
            if event.recorded_at >= horizon:  # rows come in order: the rest are as recent
                break
            self.cursor = Position(event.recorded_at, event.seq, event.id)
            new.append((message(event, task_type, stage), self.cursor.cursor()))
        self.catching_up = len(rows) == _PAGE and len(new) == len(rows)
        self.pending = len(new) < len(rows)
        if not self.catching_up:  # every event before the horizon is sent: start the next read there
            self.cursor = max(self.cursor, Position.before(horizon)) if self.cursor else Position.before(horizon)
        return new


def message(event: TaskEvent, task_type: str, stage: str) -> dict[str, Any]:
    return {"id": event.id, "task_id": event.task_id, "task_type": task_type, "seq": event.seq,
            "type": event.type, "old_status": event.old_status, "new_status": event.new_status,
            "stage": stage, "actor_type": event.actor_type, "actor_id": event.actor_id, "data": event.data,
            "occurred_at": event.occurred_at.isoformat(), "recorded_at": event.recorded_at.isoformat()}


def frame(event: str, data: dict[str, Any], cursor: str | None) -> str:
    lines = [f"event: {event}"] + ([f"id: {cursor}"] if cursor else [])
    return "\n".join(lines + [f"data: {json.dumps(data, ensure_ascii=False, default=str)}"]) + "\n\n"


class StreamSlots:
    """How many streams this process holds open: in all, against ``stream_max_connections``, and per key and
    per tenant, against ``stream_max_per_key`` and ``stream_max_per_tenant``, so that one caller cannot take
    every place. A place is taken when the request is admitted, before any await, so requests arriving
    together cannot pass a cap, and given back when its response ends (``EventStream``)."""

    def __init__(self, limit: int, per_tenant: int = 0, per_key: int = 0) -> None:
        self.limit, self.per_tenant, self.per_key, self.open = limit, per_tenant, per_key, 0
        self.held: Counter[tuple[str, str]] = Counter()

    def take(self, tenant_id: str | None = None, key_id: str | None = None) -> Callable[[], None]:
        """Take a place, or refuse over a cap; returns what gives it back (once, however often called)."""
        owners = tuple((kind, name) for kind, name in (("tenant", tenant_id), ("key", key_id)) if name)
        for kind, name in owners:
            cap = self.per_tenant if kind == "tenant" else self.per_key
            if cap and self.held[kind, name] >= cap:
                raise ApiError(429, f"this {kind} holds its most streams ({cap}) open on this server; close one "
                                    f"or retry shortly (docs/api.md, \"Live updates\")",
                               headers={"Retry-After": "5"}, limit=f"streams_per_{kind}")
        if self.limit and self.open >= self.limit:
            raise ApiError(503, f"this server holds its most streams ({self.limit}) open; retry shortly",
                           headers={"Retry-After": "5"})
        self.open += 1
        self.held.update(owners)
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            self.open -= 1
            self.held.subtract(owners)
            for owner in owners:
                if self.held[owner] <= 0:
                    del self.held[owner]
        return give_back


class EventStream(StreamingResponse):
    """A stream's response: gives its place back however it ends, also when its body never started (the
    client went away first)."""

    def __init__(self, body: AsyncIterator[str], give_back: Callable[[], None]) -> None:
        super().__init__(body, media_type=MEDIA_TYPE, headers=HEADERS)
        self.give_back = give_back

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.give_back()


async def events(request: Request, reader: EventReader, settings: Settings,
                 key_live: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[str]:
    """The stream's body; a one-task stream ends with an ``end`` message once the task is terminal and all its
    events are sent. A stream opened with a key asks ``key_live`` every ``stream_key_check_seconds`` and ends
    once the key is revoked."""
    loop = asyncio.get_running_loop()
    yield f"retry: {_RECONNECT_MS}\n\n"
    if reader.reset:
        yield frame("reset", {"reason": "the Last-Event-ID is too far back to resume from; fetch the current "
                                        "state again, this stream goes on from now (docs/api.md, \"Live updates\")"},
                    reader.cursor.cursor() if reader.cursor else None)
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
        if status in _TERMINAL and not reader.catching_up and not reader.pending:
            yield frame("end", {"task_id": reader.scope.task_id, "status": status},
                        reader.cursor.cursor() if reader.cursor else None)
            return
        if loop.time() - quiet_since >= settings.stream_keepalive_seconds:
            yield ": keep-alive\n\n"
            quiet_since = loop.time()
        if not reader.catching_up:
            await asyncio.sleep(settings.stream_poll_seconds)


async def _still_live(key_live: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await key_live()
    except (DBAPIError, SQLAlchemyError, OSError):
        return True  # the database is away: the stream's reads wait for it too; check again later
