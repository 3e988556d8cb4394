"""Writes to the status mirror: each batch of task events is one transaction
that appends the events and updates the task row, idempotent on event ids."""

from dataclasses import fields
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from followthrough.contracts import MirrorAck, MirrorBatch, MirrorEvent, TaskChanges, TaskInput
from followthrough.lifecycle import EventType, Priority, Stage, TaskStatus
from followthrough.tables import Task, TaskEvent

_CHANGE_FIELDS = [f.name for f in fields(TaskChanges)]


def created_event(task: TaskInput) -> MirrorEvent:
    return MirrorEvent(
        id=f"{task.task_id}:created", task_id=task.task_id, seq=0, type=EventType.TASK_CREATED.value,
        occurred_at=task.created_at, actor_type="api", actor_id=task.created_by,
        new_status=TaskStatus.PENDING.value,
        data={"mode": task.mode, "source": task.source, "due_at": task.due_at.isoformat() if task.due_at else None},
    )


def new_task_row(task: TaskInput, workflow_id: str) -> Task:
    return Task(
        id=task.task_id, tenant_id=task.tenant_id, type=task.type, title=task.title, mode=task.mode,
        priority=task.priority, priority_rank=Priority(task.priority).rank,
        status=TaskStatus.PENDING.value, stage=Stage.QUEUED.value, payload=task.payload,
        owner_type=task.owner_type, owner_id=task.owner_id, subject_ref_type=task.subject_ref_type,
        subject_ref_id=task.subject_ref_id, source=task.source, due_at=task.due_at,
        workflow_id=workflow_id, approval_timeout_seconds=task.approval_timeout_seconds,
        created_by=task.created_by, created_at=task.created_at, updated_at=task.created_at,
    )


def _event_row(event: MirrorEvent, now: datetime) -> TaskEvent:
    return TaskEvent(
        id=event.id, task_id=event.task_id, seq=event.seq, type=event.type, old_status=event.old_status,
        new_status=event.new_status, actor_type=event.actor_type, actor_id=event.actor_id, data=event.data,
        occurred_at=event.occurred_at, recorded_at=now,
    )


def _apply(row: Task, event: MirrorEvent) -> None:
    for name in _CHANGE_FIELDS:
        value = getattr(event.changes, name)
        if value is not None:
            setattr(row, name, value)
    if event.occurred_at > row.updated_at:
        row.updated_at = event.occurred_at


async def insert_created(session: AsyncSession, task: TaskInput, workflow_id: str) -> bool:
    """Insert a new task row and its TASK_CREATED event unless the row exists.

    The API and the workflow's first mirror write may race; whichever comes
    second finds the row and changes nothing.
    """
    if await session.get(Task, task.task_id) is not None:
        return False
    session.add(new_task_row(task, workflow_id))
    await session.flush()
    session.add(_event_row(created_event(task), datetime.now(timezone.utc)))
    return True


async def _write(session: AsyncSession, batch: MirrorBatch) -> MirrorAck:
    ids = [e.id for e in batch.events]
    seen = set((await session.execute(select(TaskEvent.id).where(TaskEvent.id.in_(ids)))).scalars())
    fresh = [e for e in batch.events if e.id not in seen]
    if not fresh:
        return MirrorAck(written=0, skipped=len(ids))
    await insert_created(session, batch.task, batch.workflow_id)
    row = await session.get(Task, batch.task.task_id)
    assert row is not None
    now = datetime.now(timezone.utc)
    for event in fresh:
        session.add(_event_row(event, now))
        _apply(row, event)
    return MirrorAck(written=len(fresh), skipped=len(seen))


async def record_batch(sessions: async_sessionmaker[AsyncSession], batch: MirrorBatch) -> MirrorAck:
    """Append the batch's new events and update the task row in one transaction."""
    for attempt in range(3):
        try:
            async with sessions() as session, session.begin():
                return await _write(session, batch)
        except IntegrityError:
            # A concurrent writer inserted the same row or events first; the
            # next pass sees them and writes only what is still missing.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
