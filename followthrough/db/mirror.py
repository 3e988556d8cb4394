"""Writes to the status mirror.

Each group of task event batches is one transaction that appends the events
and updates the task rows. Inserts are ``ON CONFLICT DO NOTHING`` and row
changes are applied only for events not seen before, so a retried or
concurrent write of the same events changes nothing.
"""

import math
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from followthrough.db import approval_records
from followthrough.db import notification_outbox
from followthrough.db.task_metrics import Observed
from followthrough.domain.contracts import MirrorAck, MirrorBatch, MirrorEvent, Notification, TaskChanges, TaskInput
from followthrough.domain.lifecycle import TERMINAL_STATUSES, EventType, Priority, Stage, TaskStatus
from followthrough.domain.run_inputs import record_of
from followthrough.db.tables import Subscription, Task, TaskEvent, TaskRun

TASKS: Table = Task.__table__  # type: ignore[attr-defined]
EVENTS: Table = TaskEvent.__table__  # type: ignore[attr-defined]
RUNS: Table = TaskRun.__table__  # type: ignore[attr-defined]
SUBSCRIPTIONS: Table = Subscription.__table__  # type: ignore[attr-defined]
_CHANGE_FIELDS = [f.name for f in fields(TaskChanges)]
TERMINAL_VALUES = {s.value for s in TERMINAL_STATUSES}
APPROVAL_EVENTS = {EventType.TASK_APPROVAL_REQUESTED.value, EventType.TASK_APPROVAL_RECORDED.value,
                   EventType.TASK_APPROVED.value, EventType.TASK_REJECTED.value, EventType.TASK_EXPIRED.value,
                   EventType.TASK_CANCELLED.value, EventType.TASK_EXECUTION_COMPLETED.value,
                   EventType.TASK_APPROVAL_ESCALATED.value, EventType.TASK_EXECUTION_FAILED.value}
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def storable(value: Any) -> Any:
    """What a SQL column can hold: NUL characters and non-finite numbers (which can
    reach us in a receiver's answer or an error message) are replaced, not refused,
    so that one odd value can never stop the mirror."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def created_event(task: TaskInput) -> MirrorEvent:
    data = {"mode": task.mode, "source": task.source, "due_at": task.due_at.isoformat() if task.due_at else None}
    origin = task.origin
    if origin is not None and origin.trigger != "api":
        data |= {"trigger": origin.trigger, "definition_id": origin.definition_id,
                 "definition_version": origin.definition_version, "variables": origin.variables}
        if origin.schedule_run_id:
            data["schedule_run_id"] = origin.schedule_run_id
    return MirrorEvent(
        id=f"{task.task_id}:created", task_id=task.task_id, seq=0, type=EventType.TASK_CREATED.value,
        occurred_at=task.created_at,
        actor_type="system" if task.parent_id else "schedule" if origin and origin.trigger == "schedule" else "api",
        actor_id=task.created_by, new_status=TaskStatus.PENDING.value,
        data=data | ({"parent_id": task.parent_id, "subtask_index": task.subtask_index} if task.parent_id else {}),
    )


def _task_values(task: TaskInput, workflow_id: str) -> dict[str, Any]:
    return storable(dict(
        id=task.task_id, tenant_id=task.tenant_id, type=task.type, title=task.title, mode=task.mode,
        priority=task.priority, priority_rank=Priority(task.priority).rank,
        status=TaskStatus.PENDING.value, stage=Stage.QUEUED.value, payload=task.payload,
        owner_type=task.owner_type, owner_id=task.owner_id, subject_ref_type=task.subject_ref_type,
        subject_ref_id=task.subject_ref_id, source=task.source, due_at=task.due_at, draft=None, result=None,
        error=None, attempts=0, run_number=1, workflow_id=workflow_id, workflow_run_id=None,
        approval_timeout_seconds=task.approval_timeout_seconds, approval_deadline=None,
        created_by=task.created_by, created_at=task.created_at, updated_at=task.created_at,
        started_at=None, finished_at=None, parent_id=task.parent_id, subtask_index=task.subtask_index,
        progress=None, trigger=task.origin.trigger if task.origin else "api",
        definition_id=task.origin.definition_id if task.origin else None,
        schedule_run_id=task.origin.schedule_run_id if task.origin else None, run_input=record_of(task),
    ))


def _event_values(event: MirrorEvent, now: datetime) -> dict[str, Any]:
    return storable(dict(
        id=event.id, task_id=event.task_id, seq=event.seq, type=event.type, old_status=event.old_status,
        new_status=event.new_status, actor_type=event.actor_type, actor_id=event.actor_id, data=event.data,
        occurred_at=event.occurred_at, recorded_at=now,
    ))


async def insert_ignoring_duplicates(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    statement = _INSERT[conn.dialect.name](table).on_conflict_do_nothing()
    result = await conn.execute(statement, rows)
    return max(result.rowcount, 0)


async def insert_created(conn: AsyncConnection, task: TaskInput, workflow_id: str) -> bool:
    """Insert a new task row and its TASK_CREATED event unless the row exists.

    The API and the workflow's first mirror write may race; whichever comes
    second finds the row and changes nothing.
    """
    created = await insert_ignoring_duplicates(conn, TASKS, [_task_values(task, workflow_id)])
    await insert_ignoring_duplicates(conn, EVENTS, [_event_values(created_event(task), datetime.now(timezone.utc))])
    return created == 1


def _merged_changes(events: list[MirrorEvent]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for event in events:
        for name in _CHANGE_FIELDS:
            value = getattr(event.changes, name)
            if value is not None:
                merged[name] = value
    merged = storable(merged)
    merged["updated_at"] = max(e.occurred_at for e in events)
    return merged


async def write_group(conn: AsyncConnection, batches: list[MirrorBatch],
                      observed: Observed | None = None) -> list[MirrorAck]:
    """Append every batch's new events and update their task rows, in the caller's transaction; what the new
    events mean for the task metrics goes to ``observed``, for the caller to publish once it has committed."""
    now = datetime.now(timezone.utc)
    # The row may not exist yet if the API's own insert was lost; a run's first batch carries what it needs.
    first = [b for b in batches if b.task is not None]
    await insert_ignoring_duplicates(conn, TASKS, [_task_values(b.task, b.workflow_id) for b in first])
    await insert_ignoring_duplicates(conn, EVENTS, [_event_values(created_event(b.task), now) for b in first])
    rows = [_event_values(e, now) for b in batches for e in b.events]
    statement = _INSERT[conn.dialect.name](EVENTS).on_conflict_do_nothing().returning(EVENTS.c.id)
    # Only the writer that actually inserted an event applies its changes, so a
    # concurrent or retried duplicate can neither double-count nor reorder anything.
    inserted = set((await conn.execute(statement, rows)).scalars()) if rows else set()
    acks = []
    for batch in batches:
        fresh = [e for e in batch.events if e.id in inserted]
        if fresh:
            changes = _merged_changes(fresh)
            if batch.run_number > 1:
                # A new run's first write clears what the failed run left, unless the API already did; it runs
                # in the mode it was given (the policy of the day may have tightened it).
                mode = {"mode": batch.task.mode} if batch.task is not None else {}
                await conn.execute(update(TASKS).where(TASKS.c.id == batch.task_id,
                                                       TASKS.c.run_number < batch.run_number)
                                   .values(error=None, result=None, finished_at=None, approval_deadline=None, **mode))
            await conn.execute(update(TASKS).where(TASKS.c.id == batch.task_id)
                               .values(**changes, run_number=batch.run_number))
            if changes.get("status") in TERMINAL_VALUES:
                await _record_run(conn, batch)
                if observed is not None:
                    observed.run_ended(batch, changes["status"])
            if any(e.type in APPROVAL_EVENTS for e in fresh):
                await approval_records.record(conn, batch, fresh, insert_ignoring_duplicates)
                if observed is not None:
                    observed.events_written(batch, fresh)
        acks.append(MirrorAck(written=len(fresh), skipped=len(batch.events) - len(fresh)))
    await _attach_notifications(conn, batches, inserted, acks)
    if observed is not None:
        await observed.resolve(conn)
    return acks


_KINDS = {EventType.TASK_APPROVAL_REQUESTED.value: "task.awaiting_approval",
          EventType.TASK_APPROVAL_REMINDED.value: "task.approval_reminder",
          EventType.TASK_APPROVAL_ESCALATED.value: "task.approval_escalated",
          EventType.TASK_CREATED.value: "task.created",
          EventType.TASK_APPROVED.value: "task.approved",
          EventType.TASK_REJECTED.value: "task.rejected",
          EventType.TASK_EXPIRED.value: "task.expired",
          EventType.TASK_CANCELLED.value: "task.cancelled"}


def notification_kind(event: MirrorEvent) -> str | None:
    if event.type in _KINDS:
        return _KINDS[event.type]
    if event.new_status in (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value):
        return f"task.{event.new_status}"
    return None


def _notified_events(batch: MirrorBatch) -> list[MirrorEvent]:
    """The batch's events that may owe notifications: its own, and for a task's first run its TASK_CREATED
    (written by the API or by this batch, whichever came first; the delivery key keeps it to one send)."""
    created = [created_event(batch.task)] if batch.task is not None and batch.run_number == 1 else []
    return created + list(batch.events)


async def _attach_notifications(conn: AsyncConnection, batches: list[MirrorBatch], inserted: set[str],
                                acks: list[MirrorAck]) -> None:
    """Record in the outbox what each newly written event owes its subscribers, then tell each workflow what its
    events owe and is not yet delivered.

    The outbox rows commit with the events, and a write that finds its events already there (a retry after its
    answer was lost) still hands back their undelivered notifications: none is lost, and the delivery key keeps
    each to one send (docs/concepts.md, "The task").
    """
    now = datetime.now(timezone.utc)
    owed = [(b, e, kind) for b in batches for e in _notified_events(b)
            if (e.id in inserted or e.type == EventType.TASK_CREATED.value) and (kind := notification_kind(e))]
    if owed:
        await insert_ignoring_duplicates(conn, notification_outbox.OUTBOX,
                                         [notification_outbox.row_of(n, b.tenant_id, now)
                                          for b, n in await _notifications_of(conn, owed)])
    pending = await notification_outbox.undelivered(
        conn, [e for b in batches for e in _notified_events(b) if notification_kind(e)])
    for batch, ack in zip(batches, acks):
        ack.notifications += [n for e in _notified_events(batch) for n in pending.get(e.id, [])]


# Who an event tells directly, by email, besides the subscribers: the people it names (data field).
_PEOPLE = {EventType.TASK_APPROVAL_REQUESTED.value: "approvers", EventType.TASK_APPROVAL_REMINDED.value: "approvers",
           EventType.TASK_APPROVAL_ESCALATED.value: "escalate_to"}


def _deciders(event: MirrorEvent) -> list[str]:
    """The people the event names as ones who may decide, whose id is an email address."""
    named = event.data.get(_PEOPLE[event.type]) if event.type in _PEOPLE else None
    return [p for p in named or [] if notification_outbox.is_address(p)]


def _direct(event: MirrorEvent, kind: str, run_input: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(subscription id, url, secret) of the event's direct notifications: the people it names whose id is an
    email address (only theirs: a name that is not an address is told through the subscribers), and what the
    task's own ``notify`` asks for this kind of event."""
    addresses = _deciders(event)
    notify = (run_input or {}).get("notify") or {}
    if kind in (notify.get("on") or []):
        addresses += notify.get("email") or []
    direct = [(notification_outbox.email_subscription(a), f"mailto:{a}", "") for a in dict.fromkeys(addresses)]
    if kind in (notify.get("on") or []) and notify.get("webhook_url"):
        direct.append((notification_outbox.TASK_WEBHOOK, notify["webhook_url"], notify.get("webhook_secret") or ""))
    return direct


async def _notifications_of(conn: AsyncConnection, owed: list[tuple[MirrorBatch, MirrorEvent, str]]
                            ) -> list[tuple[MirrorBatch, Notification]]:
    """The notifications that these new events owe the tenants' active subscribers, the people they name and
    the tasks' own ``notify`` targets."""
    tenants = {b.tenant_id for b, _, _ in owed}
    subscriptions = (await conn.execute(select(SUBSCRIPTIONS).where(
        SUBSCRIPTIONS.c.tenant_id.in_(tenants), SUBSCRIPTIONS.c.active.is_(True)))).all()
    rows = {r.id: r for r in (await conn.execute(select(TASKS.c.id, TASKS.c.type, TASKS.c.title, TASKS.c.status,
                                                        TASKS.c.workflow_id, TASKS.c.run_input).where(
        TASKS.c.id.in_({b.task_id for b, _, _ in owed})))).all()}
    notifications = []
    for batch, event, kind in owed:
        row = rows.get(batch.task_id)
        if row is None:
            continue
        snapshot = {"id": row.id, "type": row.type, "title": row.title, "status": event.new_status or row.status,
                    "tenant_id": batch.tenant_id, "workflow_id": row.workflow_id}
        if event.type == EventType.TASK_APPROVAL_REQUESTED.value:
            snapshot["approvers"] = list(event.data.get("approvers") or [])
        notifications += [
            (batch, Notification(subscription_id=s.id, url=s.url, secret=s.secret, event=kind, event_id=event.id,
                                 task=storable(snapshot)))
            for s in subscriptions if s.tenant_id == batch.tenant_id and kind in s.events]
        # A person the event names may decide from the email itself (signed links for the open request).
        deciders = _deciders(event)
        personal = snapshot | ({"deciders": deciders, "approval_id": event.data.get("approval_id") or event.id}
                               if deciders else {})
        notifications += [
            (batch, Notification(subscription_id=sid, url=url, secret=secret, event=kind, event_id=event.id,
                                 task=storable(personal if url.startswith("mailto:") else snapshot)))
            for sid, url, secret in _direct(event, kind, row.run_input)]
    return notifications


async def _record_run(conn: AsyncConnection, batch: MirrorBatch) -> None:
    """A run that has ended is copied, as the task row now stands, into task_runs.

    Only ended runs are stored: the run under way is the task row itself, so
    this costs one statement per run rather than one per write.
    """
    copy = select(TASKS.c.id, literal(batch.run_number), TASKS.c.workflow_run_id, TASKS.c.status, TASKS.c.error,
                  TASKS.c.attempts, func.coalesce(TASKS.c.started_at, TASKS.c.created_at), TASKS.c.finished_at
                  ).where(TASKS.c.id == batch.task_id)
    columns = ["task_id", "number", "workflow_run_id", "status", "error", "attempts", "started_at", "finished_at"]
    await conn.execute(_INSERT[conn.dialect.name](RUNS).from_select(columns, copy).on_conflict_do_nothing())


async def record_batches(engine: AsyncEngine, batches: list[MirrorBatch]) -> list[MirrorAck]:
    observed = Observed()
    async with engine.begin() as conn:
        acks = await write_group(conn, batches, observed)
    observed.publish()  # after the commit: a write rolled back (and retried) counts nothing
    return acks


async def record_batch(engine: AsyncEngine, batch: MirrorBatch) -> MirrorAck:
    return (await record_batches(engine, [batch]))[0]
