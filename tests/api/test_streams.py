"""Live updates over real HTTP: the API under uvicorn with a worker behind it, its server-sent event streams
read with httpx as a client reads them, on every configured database."""

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.api.streams import EventReader, Scope
from followthrough.db import api_keys
from followthrough.db.mirror import EVENTS, insert_created
from tests.conftest import served_api
from tests.helpers import eventually, sign_in, task_body, task_input, until_status


@dataclass
class Message:
    event: str
    id: str | None
    data: dict[str, Any]


class Stream:
    """One open SSE response, read message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, timeout: float = 20) -> Message | None:
        """The next message; None once the server has closed the stream."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    if "data" in fields:
                        return Message(fields.get("event", "message"), fields.get("id"), json.loads(fields["data"]))
                    fields = {}
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        return None

    async def until(self, check: Any, timeout: float = 20) -> list[Message]:
        """Messages up to and including the first that ``check`` accepts."""
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                assert message is not None, f"the stream ended before the awaited message; got {seen}"
                seen.append(message)
                if check(message):
                    return seen


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient
    engine: AsyncEngine

    async def create(self, headers: dict[str, str] | None = None, **overrides: Any) -> str:
        response = await self.http.post("/tasks", json=task_body(**overrides), headers=headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def until(self, task_id: str, status: str, headers: dict[str, str] | None = None) -> dict:
        if headers is None:
            return await until_status(self, task_id, status)
        saved = self.http.headers.copy()
        self.http.headers.update(headers)
        try:
            return await until_status(self, task_id, status)
        finally:
            self.http.headers = saved

    @asynccontextmanager
    async def stream(self, path: str, **kwargs: Any) -> AsyncIterator[Stream]:
        async with httpx.AsyncClient(base_url=f"{self.url}/api/v1", timeout=httpx.Timeout(30, read=60)) as http:
            async with http.stream("GET", path, **kwargs) as response:
                assert response.status_code == 200, (await response.aread()).decode()
                assert response.headers["content-type"].startswith("text/event-stream")
                yield Stream(response)


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    async with served_api(dev_env, engine, tmp_path, stream_poll_seconds=0.1) as (url, _settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield Api(url, http, engine)


@pytest_asyncio.fixture
async def keyed(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    async with served_api(dev_env, engine, tmp_path, stream_poll_seconds=0.1, anonymous_access=False,
                          stream_max_connections=2) as (url, _settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield Api(url, http, engine)


def changes(messages: list[Message]) -> list[tuple[str | None, str | None]]:
    return [(m.data["old_status"], m.data["new_status"]) for m in messages
            if m.event == "task_event" and m.data["new_status"]]


async def test_a_tasks_stream_sends_its_events_in_order_and_ends_when_it_is_terminal(api: Api):
    task_id = await api.create()
    async with api.stream(f"/tasks/{task_id}/stream") as stream:
        before = await stream.until(lambda m: m.data.get("new_status") == "awaiting_approval")
        # Events arrive as the mirror records them: the API's TASK_CREATED and the worker's first write race
        # under load, so the order within the task is the events' seq.
        if not any(m.data.get("type") == "TASK_CREATED" for m in before):
            before += await stream.until(lambda m: m.data.get("type") == "TASK_CREATED")
        in_order = sorted(before, key=lambda m: m.data["seq"])
        assert in_order[0].data["type"] == "TASK_CREATED" and in_order[0].data["task_id"] == task_id
        assert changes(in_order) == [(None, "pending"), ("pending", "in_progress"),
                                     ("in_progress", "awaiting_approval")]
        assert all(m.id for m in before) and len({m.id for m in before}) == len(before)
        assert {"id", "task_id", "type", "old_status", "new_status", "stage", "occurred_at"} <= before[-1].data.keys()

        approved = await api.http.post(f"/tasks/{task_id}/approve", json={"comment": "ok"})
        assert approved.status_code == 200, approved.text
        after = await stream.until(lambda m: m.event == "end")
        assert after[-1].data == {"task_id": task_id, "status": "completed"}
        assert changes(after) == [("awaiting_approval", "in_progress"), ("in_progress", "completed")]
        assert await stream.next() is None  # the server closed it

    # A stream of a task that has ended replays its events and ends at once.
    async with api.stream(f"/tasks/{task_id}/stream") as stream:
        replay = await stream.until(lambda m: m.event == "end")
        assert sorted(m.data["id"] for m in replay[:-1]) == sorted(m.data["id"] for m in before + after[:-1])


async def test_last_event_id_resumes_after_the_last_event_received(api: Api):
    task_id = await api.create()
    async with api.stream(f"/tasks/{task_id}/stream") as stream:
        before = await stream.until(lambda m: m.data.get("new_status") == "awaiting_approval")
    assert (await api.http.post(f"/tasks/{task_id}/reject", json={"reason": "no"})).status_code == 200
    await api.until(task_id, "rejected")

    async with api.stream(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": before[-1].id}) as stream:
        rest = await stream.until(lambda m: m.event == "end")
    assert not {m.data["id"] for m in before} & {m.data.get("id") for m in rest}
    assert changes(rest) == [("awaiting_approval", "rejected")]

    # Resuming on the whole-tenant stream works the same way.
    async with api.stream("/events/stream", headers={"Last-Event-ID": before[-2].id}) as stream:
        again = await stream.until(lambda m: m.data["task_id"] == task_id and m.data["new_status"] == "rejected")
    ours = [m.data["id"] for m in again if m.data["task_id"] == task_id]
    assert ours[0] == before[-1].data["id"] and ours[-1] == rest[-2].data["id"]

    bad = await api.http.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
    assert (await api.http.get("/tasks/no-such-task/stream")).status_code == 404


async def test_the_event_stream_sends_new_events_filtered(api: Api):
    old = await api.create()
    await api.until(old, "awaiting_approval")
    async with api.stream("/events/stream", params={"status": "completed", "type": "invoice_follow_up"}) as stream:
        task_id = await api.create()
        await api.until(task_id, "awaiting_approval")
        assert (await api.http.post(f"/tasks/{task_id}/approve", json={})).status_code == 200
        done = await stream.until(lambda m: m.data["task_id"] == task_id)
    # Nothing from before the stream opened, only events into or out of `completed`.
    assert all(m.data["task_id"] != old for m in done)
    assert [(m.data["type"], m.data["new_status"]) for m in done] == [("TASK_EXECUTION_COMPLETED", "completed")]


async def test_a_key_streams_its_own_tenant_only_and_streams_are_capped(keyed: Api):
    keys = {}
    for tenant in ("acme", "globex"):
        _row, keys[tenant] = await api_keys.create(keyed.engine, tenant_id=f"{tenant}-{id(keyed)}", actor_id="ann",
                                                   name="ann", roles=["submitter", "approver"])
    acme, globex = ({"Authorization": f"Bearer {keys[t]}"} for t in ("acme", "globex"))
    theirs = await keyed.create(headers=globex)
    assert (await keyed.http.get(f"/tasks/{theirs}/stream", headers=acme)).status_code == 404
    assert (await keyed.http.get("/events/stream", headers=acme,
                                 params={"tenant_id": f"globex-{id(keyed)}"})).status_code == 403
    assert (await keyed.http.get("/events/stream")).status_code == 401

    async with keyed.stream("/events/stream", headers=acme) as stream:
        async with keyed.stream("/events/stream", headers=globex):
            await asyncio.sleep(0.3)  # both streams have started
            over = await keyed.http.get("/events/stream", headers=acme)
            assert over.status_code == 503 and over.headers["retry-after"] == "5"
        other = await keyed.create(headers=globex)
        ours = await keyed.create(headers=acme)
        await keyed.until(other, "awaiting_approval", headers=globex)
        seen = await stream.until(lambda m: m.data["task_id"] == ours and m.data["new_status"] == "awaiting_approval")
    assert {m.data["task_id"] for m in seen} == {ours}

    # Closed streams give their places back: two may be open again.
    async def open_two() -> bool:
        async with httpx.AsyncClient(base_url=f"{keyed.url}/api/v1", timeout=30) as http:
            async with http.stream("GET", "/events/stream", headers=acme) as one, \
                    http.stream("GET", "/events/stream", headers=globex) as two:
                return one.status_code == two.status_code == 200
    await eventually(open_two, bool)


async def test_an_open_stream_ends_once_its_key_is_revoked(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                           tmp_path: Path):
    async with served_api(dev_env, engine, tmp_path, stream_poll_seconds=0.1, anonymous_access=False,
                          stream_key_check_seconds=0.2) as (url, _settings), httpx.AsyncClient() as http:
        api = Api(url, http, engine)
        row, key = await api_keys.create(engine, tenant_id=f"acme-{id(api)}", actor_id="ann", name="ann",
                                         roles=["viewer"])
        async with api.stream("/events/stream", headers={"Authorization": f"Bearer {key}"}) as stream:
            await asyncio.sleep(0.5)  # a few key checks pass while the key is live
            assert stream.response.is_closed is False
            assert await api_keys.revoke(engine, row["id"])
            end = await stream.next(timeout=10)
            assert end is not None and end.event == "end" and "revoked" in end.data["reason"]
            assert await stream.next(timeout=10) is None  # and the server closed it


# ---- bounds: memory, places, how far back, late commits ---------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def cursor_at(when: datetime) -> str:
    """A Last-Event-ID just before ``when`` (the format the API sends: microseconds, seq, event id)."""
    return f"{(when - _EPOCH) // timedelta(microseconds=1) - 1}.0.x"


async def task_with_events(engine: AsyncEngine, count: int, start: datetime,
                           step: timedelta = timedelta(microseconds=1), tenant_id: str | None = None
                           ) -> tuple[str, list[str]]:
    """A task row and ``count`` events recorded from ``start`` on, written as a worker writes them."""
    task = task_input(tenant_id=tenant_id or f"streams-{uuid.uuid4().hex[:8]}")
    ids = [f"{task.task_id}:note-{i:06d}" for i in range(count)]
    async with engine.begin() as conn:
        await insert_created(conn, task, f"task-{task.task_id}")
        if ids:
            await conn.execute(EVENTS.insert(), [
                dict(id=event_id, task_id=task.task_id, seq=i + 1, type="TASK_NOTE", actor_type="system", data={},
                     occurred_at=start + i * step, recorded_at=start + i * step) for i, event_id in enumerate(ids)])
    return task.task_id, ids


async def add_event(engine: AsyncEngine, task_id: str, event_id: str, seq: int, recorded_at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(EVENTS.insert(), [dict(id=event_id, task_id=task_id, seq=seq, type="TASK_NOTE",
                                                  actor_type="system", data={}, occurred_at=recorded_at,
                                                  recorded_at=recorded_at)])


def held(value: Any, seen: set[int] | None = None) -> int:
    """Bytes a structure holds, its contents included."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(held(k, seen) + held(v, seen) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        size += sum(held(v, seen) for v in value)
    elif is_dataclass(value) and not isinstance(value, type):
        size += sum(held(getattr(value, f.name), seen) for f in fields(value))
    return size


async def test_catching_up_on_a_long_backlog_holds_the_same_memory_as_on_a_short_one(engine: AsyncEngine):
    # 3,000 events: six pages, enough to see whether what a stream holds grows with what it has replayed.
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    task_id, ids = await task_with_events(engine, 3000, start)
    reader = EventReader(engine, Scope(task_id=task_id), timedelta(seconds=2))
    reader.resume(cursor_at(start))
    state = lambda: held({k: v for k, v in vars(reader).items() if k not in ("engine", "scope")})  # noqa: E731
    got: list[str] = []
    sizes = []
    for _ in range(50):
        got += [data["id"] for data, _cursor in await reader.read() if data["id"] in set(ids)]
        sizes.append(state())
        if len(got) >= len(ids):
            break
    assert got == ids  # every event once, in order
    assert max(sizes) <= sizes[0], sizes  # the last page's state is no larger than the first's


async def test_an_event_committed_late_is_not_missed_across_a_reconnect(engine: AsyncEngine):
    overlap = timedelta(seconds=1)
    task_id, _ = await task_with_events(engine, 0, datetime.now(timezone.utc))
    start = cursor_at(datetime.now(timezone.utc) - timedelta(minutes=1))
    first = datetime.now(timezone.utc)
    await add_event(engine, task_id, f"{task_id}:quick", 2, first)  # a write that committed at once
    reader = EventReader(engine, Scope(task_id=task_id), overlap)
    reader.resume(start)
    received = await reader.read()
    last = received[-1][1] if received else start
    # Another worker's write that recorded its time before the first one's, committed only now; the client has
    # disconnected meanwhile and comes back with the last cursor it received.
    await add_event(engine, task_id, f"{task_id}:late", 1, first - timedelta(milliseconds=300))
    again = EventReader(engine, Scope(task_id=task_id), overlap)
    again.resume(last)

    async def read() -> list[str]:
        received.extend(await again.read())
        return [data["id"] for data, _cursor in received]
    ids = await eventually(read, lambda ids: f"{task_id}:quick" in ids and len(ids) >= 3, timeout=15)
    assert f"{task_id}:late" in ids, ids
    assert len(ids) == len(set(ids))  # and nothing twice


@pytest_asyncio.fixture
async def bounded(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    async with served_api(dev_env, engine, tmp_path, stream_poll_seconds=0.1, anonymous_access=False,
                          stream_overlap_seconds=0.5, stream_max_connections=10, stream_max_per_key=2,
                          stream_max_per_tenant=3, stream_resume_max_events=50) as (url, _settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield Api(url, http, engine)


async def test_one_key_or_tenant_cannot_take_every_stream(bounded: Api):
    suffix = uuid.uuid4().hex[:8]

    async def key(tenant: str) -> dict[str, str]:
        _row, token = await api_keys.create(bounded.engine, tenant_id=f"{tenant}-{suffix}", actor_id="ann",
                                            name="ann", roles=["viewer"])
        return {"Authorization": f"Bearer {token}"}
    first, second, other = await key("acme"), await key("acme"), await key("globex")
    async with contextlib.AsyncExitStack() as held_open, httpx.AsyncClient(
            base_url=f"{bounded.url}/api/v1", timeout=30, limits=httpx.Limits(max_connections=None)) as http:
        async def open_one(headers: dict[str, str]) -> httpx.Response:
            return await held_open.enter_async_context(http.stream("GET", "/events/stream", headers=headers))
        # Six at once from one key: two places (per key), whatever the order they arrive in.
        answers = await asyncio.gather(*(open_one(first) for _ in range(6)))
        assert sorted(a.status_code for a in answers) == [200, 200, 429, 429, 429, 429]
        over = next(a for a in answers if a.status_code == 429)
        assert over.headers["retry-after"] == "5" and json.loads(await over.aread())["limit"] == "streams_per_key"
        # Another key of the tenant has the tenant's third place, not a fourth.
        answers = await asyncio.gather(*(open_one(second) for _ in range(2)))
        assert sorted(a.status_code for a in answers) == [200, 429]
        refused = next(a for a in answers if a.status_code == 429)
        assert json.loads(await refused.aread())["limit"] == "streams_per_tenant"
        # Another tenant's viewer still gets a stream.
        assert (await open_one(other)).status_code == 200
    # Closed streams give their places back (once the server has seen the client go).
    async def open_two() -> bool:
        async with httpx.AsyncClient(base_url=f"{bounded.url}/api/v1", timeout=30) as http:
            async with http.stream("GET", "/events/stream", headers=first) as one, \
                    http.stream("GET", "/events/stream", headers=first) as two:
                return one.status_code == two.status_code == 200
    await eventually(open_two, bool)


async def test_a_resume_from_too_far_back_is_told_to_fetch_again(bounded: Api):
    tenant = f"resumes-{uuid.uuid4().hex[:8]}"
    _row, token = await api_keys.create(bounded.engine, tenant_id=tenant, actor_id="ann", name="ann",
                                        roles=["viewer"])
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    task_id, ids = await task_with_events(bounded.engine, 80, start, step=timedelta(seconds=1), tenant_id=tenant)
    headers = {"Authorization": f"Bearer {token}"}
    # Within the cap (50 events back): the events after the cursor, in order.
    near = cursor_at(start + timedelta(seconds=40))
    async with bounded.stream("/events/stream", headers=headers | {"Last-Event-ID": near}) as stream:
        replay = await stream.until(lambda m: m.data.get("id") == ids[-1])
    assert [m.data["id"] for m in replay] == ids[40:]

    # Beyond it: a reset, with a cursor to go on from, and then the events from now on.
    async with bounded.stream(f"/tasks/{task_id}/stream", headers=headers | {"Last-Event-ID": cursor_at(start)}) \
            as stream:
        reset = await stream.next()
        assert reset is not None and reset.event == "reset" and "fetch" in reset.data["reason"], reset
        assert reset.id
        await add_event(bounded.engine, task_id, f"{task_id}:after", 1000, datetime.now(timezone.utc))
        after = await stream.until(lambda m: m.data.get("id") == f"{task_id}:after")
    assert [m.data["id"] for m in after] == [f"{task_id}:after"]  # nothing from before the reset


async def test_the_inbox_live_page_catches_up_after_a_reconnect(bounded: Api):
    # EventSource reconnects by itself with the last id it received: the inbox's stream resumes after it.
    tenant = f"inbox-{uuid.uuid4().hex[:8]}"
    _row, token = await api_keys.create(bounded.engine, tenant_id=tenant, actor_id="fiona", name="fiona",
                                        roles=["approver", "viewer"])
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    _task_id, ids = await task_with_events(bounded.engine, 10, start, step=timedelta(seconds=1), tenant_id=tenant)
    async with httpx.AsyncClient(base_url=bounded.url, timeout=httpx.Timeout(30, read=60)) as browser:
        assert (await sign_in(browser, token, Origin=bounded.url)).status_code == 303
        resume = {"Last-Event-ID": cursor_at(start + timedelta(seconds=5))}
        async with browser.stream("GET", "/ui/events", headers=resume) as response:
            assert response.status_code == 200
            missed = await Stream(response).until(lambda m: m.data.get("id") == ids[-1])
        assert [m.data["id"] for m in missed] == ids[5:]
        async with browser.stream("GET", "/ui/events", headers={"Last-Event-ID": cursor_at(start)}) as response:
            first = await Stream(response).next()
        assert first is not None and first.data.get("id") == ids[0]
        # A cursor the page cannot have had from us: it is told to reload, as after a reset.
        async with browser.stream("GET", "/ui/events", headers={"Last-Event-ID": "nonsense"}) as response:
            reset = await Stream(response).next()
        assert reset is not None and reset.event == "reset"
