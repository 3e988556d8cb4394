"""The mirror writer on SQLite and PostgreSQL: one transaction per batch,
idempotent on event ids, safe against concurrent and out-of-order writers."""

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import func, select

from followthrough.contracts import MirrorBatch, MirrorEvent, TaskChanges
from followthrough.database import session_factory
from followthrough.mirror import insert_created, record_batch
from followthrough.tables import TaskEvent
from tests.helpers import task_input, task_row


def _batch(task, *events: tuple[str, str, int]) -> MirrorBatch:
    run = uuid.uuid4().hex
    return MirrorBatch(task=task, workflow_id=f"task-{task.task_id}", events=[
        MirrorEvent(id=f"{run}:{seq}", task_id=task.task_id, seq=seq, type=kind,
                    occurred_at=task.created_at + timedelta(seconds=seq), old_status=None, new_status=status,
                    changes=TaskChanges(status=status, stage="drafting", attempts=seq))
        for kind, status, seq in events
    ])


async def _count_events(engine, task_id: str) -> int:
    async with session_factory(engine)() as session:
        return (await session.execute(
            select(func.count()).select_from(TaskEvent).where(TaskEvent.task_id == task_id))).scalar_one()


async def test_batch_creates_the_row_and_is_idempotent(engine):
    sessions = session_factory(engine)
    task = task_input()
    batch = _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1), ("TASK_DRAFTED", None, 2))
    first = await record_batch(sessions, batch)
    assert (first.written, first.skipped) == (2, 0)
    again = await record_batch(sessions, batch)
    assert (again.written, again.skipped) == (0, 2)
    row = await task_row(engine, task.task_id)
    assert (row.status, row.stage, row.attempts) == ("in_progress", "drafting", 2)
    assert row.updated_at == task.created_at + timedelta(seconds=2)
    assert row.created_at == task.created_at and row.created_at.tzinfo is not None
    assert await _count_events(engine, task.task_id) == 3  # TASK_CREATED + the two


async def test_a_partly_written_batch_writes_only_the_rest(engine):
    sessions = session_factory(engine)
    task = task_input()
    batch = _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1), ("TASK_DRAFTED", None, 2))
    await record_batch(sessions, MirrorBatch(task=task, workflow_id=batch.workflow_id, events=batch.events[:1]))
    ack = await record_batch(sessions, batch)
    assert (ack.written, ack.skipped) == (1, 1)
    assert await _count_events(engine, task.task_id) == 3


async def test_concurrent_duplicate_writes_land_once(engine):
    sessions = session_factory(engine)
    task = task_input()
    batch = _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1))
    acks = await asyncio.gather(*[record_batch(sessions, batch) for _ in range(8)])
    assert sum(a.written for a in acks) == 1
    assert await _count_events(engine, task.task_id) == 2


async def test_api_insert_after_the_workflow_wrote_changes_nothing(engine):
    sessions = session_factory(engine)
    task = task_input()
    await record_batch(sessions, _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1)))
    async with sessions() as session:
        assert await insert_created(session, task, f"task-{task.task_id}") is False
        await session.commit()
    assert (await task_row(engine, task.task_id)).status == "in_progress"
    assert await _count_events(engine, task.task_id) == 2
