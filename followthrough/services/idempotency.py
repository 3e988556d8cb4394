"""Refusing duplicate tasks and replaying repeated requests.

Two mechanisms, both safe under concurrent requests because each claim is a
single ``INSERT … ON CONFLICT DO NOTHING`` on a primary key:

- Deduplication: a task with the same (tenant, type, subject_ref_type,
  subject_ref_id, source) as one created inside the window is refused with 409
  and the existing task's id. Tasks without a subject are never deduplicated.
- ``Idempotency-Key``: the first answer to a request with that key (per
  tenant) is stored and replayed for every repeat inside the window; after
  it, the key is free again and creates a new task.
"""

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.db.mirror import TASKS, insert_ignoring_duplicates
from followthrough.db.tables import IdempotencyRecord, TaskDedupe

DEDUPE: Table = TaskDedupe.__table__  # type: ignore[attr-defined]
# A request still unanswered after this long is taken to have died with its process.
ABANDONED_AFTER = timedelta(seconds=60)
# The same for a request with an Idempotency-Key: sooner, since taking over its key is safe even while the
# first is alive; both create the one task whose id the record holds (begin).
KEY_ABANDONED_AFTER = timedelta(seconds=15)
# Task ids derived from Idempotency-Keys live in their own UUID namespace.
_KEYED_TASKS = uuid.UUID("5d0c6c3e-6f1b-4b8e-9a57-3f0e2f8b1c44")
KEYS: Table = IdempotencyRecord.__table__  # type: ignore[attr-defined]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def dedupe_key(tenant_id: str, task_type: str, subject_ref_type: str | None, subject_ref_id: str | None,
               source: str | None) -> str | None:
    if not subject_ref_id:
        return None
    return _digest([tenant_id, task_type, subject_ref_type, subject_ref_id, source])


async def claim_subject(engine: AsyncEngine, key: str, task_id: str, window: timedelta) -> str | None:
    """Claim ``key`` for ``task_id``; None when claimed, else the id of the task holding it."""
    now = datetime.now(timezone.utc)
    async with engine.begin() as conn:
        if await insert_ignoring_duplicates(conn, DEDUPE, [{"key": key, "task_id": task_id, "created_at": now}]):
            return None
        # An expired claim is taken over; only one concurrent request can match the old timestamp.
        taken = await conn.execute(update(DEDUPE).where(DEDUPE.c.key == key, DEDUPE.c.created_at < now - window)
                                   .values(task_id=task_id, created_at=now))
        if taken.rowcount == 1:
            return None
        holder = (await conn.execute(select(DEDUPE.c.task_id).where(DEDUPE.c.key == key))).scalar_one()
        # A claim whose task never came to exist (its request died before starting it) is taken over.
        if (await conn.execute(select(TASKS.c.id).where(TASKS.c.id == holder))).first() is None:
            orphan = await conn.execute(update(DEDUPE).where(
                DEDUPE.c.key == key, DEDUPE.c.task_id == holder, DEDUPE.c.created_at < now - ABANDONED_AFTER,
            ).values(task_id=task_id, created_at=now))
            if orphan.rowcount == 1:
                return None
        return holder


async def release_subject(engine: AsyncEngine, key: str, task_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(DEDUPE).where(DEDUPE.c.key == key, DEDUPE.c.task_id == task_id))


@dataclass
class StoredResponse:
    status_code: int
    body: dict[str, Any]


class KeyReused(Exception):
    """The key was first used for a different request."""


class KeyInFlight(Exception):
    """The first request with this key has not finished."""


def task_id_for_key(tenant_id: str, key: str) -> str:
    """The id of the task the first request with this Idempotency-Key creates (later uses of the key past its
    window get fresh ids): a repeat that takes over the key of a request that died after starting the task's
    workflow finds that task instead of starting a second."""
    return str(uuid.uuid5(_KEYED_TASKS, f"{tenant_id}\n{key}"))


def request_hash(body: Any) -> str:
    return _digest(body)


@dataclass
class Claimed:
    """This request owns the key and must ``finish`` it, creating its task under ``task_id``."""
    task_id: str


def _claimed_id(tenant_id: str, key: str, digest: str, old: Any, window: timedelta, now: datetime) -> str | None:
    """The task id a request takes the key over with, or None when the key is not free to take.

    Past its window the key starts afresh: a new task, whatever the old request's body. A request that died
    unanswered inside the window leaves the id it was creating in ``response``; the same request again takes
    that id, to find the task if it was started; a different one gets its own task."""
    if old.created_at < now - window:
        return str(uuid.uuid4())
    if old.status_code is None and old.created_at < now - KEY_ABANDONED_AFTER:
        if old.request_hash != digest:
            return str(uuid.uuid4())
        return (old.response or {}).get("task_id") or task_id_for_key(tenant_id, key)
    return None


async def begin(engine: AsyncEngine, tenant_id: str, key: str, digest: str, window: timedelta,
                wait_seconds: float = 10.0) -> StoredResponse | Claimed:
    """Claimed: this request owns the key and must ``finish`` it; otherwise the answer to replay."""
    now = datetime.now(timezone.utc)
    match = (KEYS.c.tenant_id == tenant_id) & (KEYS.c.key == key)
    async with engine.begin() as conn:
        # While unanswered, ``response`` holds the id of the task the request creates.
        task_id = task_id_for_key(tenant_id, key)
        row = {"tenant_id": tenant_id, "key": key, "request_hash": digest, "status_code": None,
               "response": {"task_id": task_id}, "created_at": now}
        if await insert_ignoring_duplicates(conn, KEYS, [row]):
            return Claimed(task_id)
        old = (await conn.execute(select(KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.response,
                                         KEYS.c.created_at).where(match))).one_or_none()
        taking = _claimed_id(tenant_id, key, digest, old, window, now) if old is not None else None
        if taking is not None:
            # Only one concurrent request can match the old timestamp.
            taken = await conn.execute(update(KEYS).where(match, KEYS.c.created_at == old.created_at).values(
                request_hash=digest, status_code=None, response={"task_id": taking}, created_at=now))
            if taken.rowcount == 1:
                return Claimed(taking)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        async with engine.connect() as conn:
            stored = (await conn.execute(select(KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.response)
                                         .where(match))).one_or_none()
        if stored is None:  # the first request failed and let the key go: take it
            return await begin(engine, tenant_id, key, digest, window, wait_seconds)
        if stored.request_hash != digest:
            raise KeyReused()
        if stored.status_code is not None:
            return StoredResponse(stored.status_code, stored.response or {})
        if asyncio.get_running_loop().time() > deadline:
            raise KeyInFlight()
        await asyncio.sleep(0.05)


async def finish(engine: AsyncEngine, tenant_id: str, key: str, response: StoredResponse | None) -> None:
    """Store the answer to replay, or (None) let the key go so the request can be tried again."""
    match = (KEYS.c.tenant_id == tenant_id) & (KEYS.c.key == key)
    async with engine.begin() as conn:
        if response is None:
            await conn.execute(delete(KEYS).where(match))
        else:
            await conn.execute(update(KEYS).where(match).values(status_code=response.status_code,
                                                                response=response.body))
