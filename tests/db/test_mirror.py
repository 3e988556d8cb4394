"""The mirror writer on SQLite and PostgreSQL: one transaction per batch,
idempotent on event ids, safe against concurrent and out-of-order writers."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from followthrough.db import notification_outbox
from followthrough.domain.contracts import MirrorBatch, MirrorEvent, RetrySpec, SlaPolicy, TaskChanges, TaskOrigin
from followthrough.db.database import session_factory
from followthrough.db.mirror import insert_created, record_batch
from followthrough.domain.run_inputs import RecordMismatch, input_from
from followthrough.db.tables import Subscription, TaskEvent
from tests.helpers import task_input, task_row


def _batch(task, *events: tuple[str, str, int]) -> MirrorBatch:
    run = uuid.uuid4().hex
    return MirrorBatch(task_id=task.task_id, task=task, workflow_id=f"task-{task.task_id}", events=[
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
    task = task_input()
    batch = _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1), ("TASK_DRAFTED", None, 2))
    first = await record_batch(engine, batch)
    assert (first.written, first.skipped) == (2, 0)
    again = await record_batch(engine, batch)
    assert (again.written, again.skipped) == (0, 2)
    row = await task_row(engine, task.task_id)
    assert (row.status, row.stage, row.attempts) == ("in_progress", "drafting", 2)
    assert row.updated_at == task.created_at + timedelta(seconds=2)
    assert row.created_at == task.created_at and row.created_at.tzinfo is not None
    assert await _count_events(engine, task.task_id) == 3  # TASK_CREATED + the two


async def test_a_partly_written_batch_writes_only_the_rest(engine):
    task = task_input()
    batch = _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1), ("TASK_DRAFTED", None, 2))
    await record_batch(engine, MirrorBatch(task_id=task.task_id, task=task, workflow_id=batch.workflow_id,
                                           events=batch.events[:1]))
    ack = await record_batch(engine, batch)
    assert (ack.written, ack.skipped) == (1, 1)
    assert await _count_events(engine, task.task_id) == 3


async def test_concurrent_duplicate_writes_land_once(engine):
    task = task_input()
    batch = _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1))
    acks = await asyncio.gather(*[record_batch(engine, batch) for _ in range(8)])
    assert sum(a.written for a in acks) == 1
    assert await _count_events(engine, task.task_id) == 2


async def test_api_insert_after_the_workflow_wrote_changes_nothing(engine):
    task = task_input()
    await record_batch(engine, _batch(task, ("TASK_STATUS_CHANGED", "in_progress", 1)))
    async with engine.begin() as conn:
        assert await insert_created(conn, task, f"task-{task.task_id}") is False
    assert (await task_row(engine, task.task_id)).status == "in_progress"
    assert await _count_events(engine, task.task_id) == 2


async def test_group_writer_coalesces_and_isolates_a_bad_batch(engine):
    from followthrough.activities.mirror import GroupWriter

    writer = GroupWriter(engine)
    good = [task_input() for _ in range(20)]
    bad = task_input(priority="not-a-priority")  # cannot become a row: fails on its own
    results = await asyncio.gather(
        *[writer.write(_batch(t, ("TASK_STATUS_CHANGED", "in_progress", 1))) for t in good],
        writer.write(_batch(bad, ("TASK_STATUS_CHANGED", "in_progress", 1))),
        return_exceptions=True)
    assert [r.written for r in results[:-1]] == [1] * 20
    assert isinstance(results[-1], Exception)
    for task in good:
        assert (await task_row(engine, task.task_id)).status == "in_progress"
    assert await task_row(engine, bad.task_id) is None


def _every_field_set():
    """A run input with every field away from its default, so a field the mirror dropped would show."""
    return task_input(
        mode="assisted", priority="high", owner_type="USER", owner_id="dana", subject_ref_type="INVOICE",
        source="DETECTOR", due_at=datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc), created_by="ops",
        send_retry=RetrySpec(max_attempts=3, initial_interval_seconds=0.5, backoff_coefficient=1.5,
                             maximum_interval_seconds=40), send_timeout_seconds=17, run_number=3,
        approvers=["dana", "erin"], approvals_required=2, approver_roles=["finance"],
        sla=SlaPolicy(remind_after_seconds=60, escalate_after_seconds=120, escalate_to=["boss"],
                      on_deadline="reject"),
        decompose=True, parent_id=str(uuid.uuid4()), subtask_index=2, depth=1,
        origin=TaskOrigin(trigger="schedule", definition_id="d-1", definition_version=4, schedule_run_id="s-1",
                          variables={"month": "May", "n": 2.5}))


async def test_the_row_keeps_the_whole_run_input_for_a_retry(engine):
    """Written by the API or by the run's first batch, the row gives back exactly the input the run had."""
    by_api, by_run = _every_field_set(), _every_field_set()
    async with engine.begin() as conn:
        await insert_created(conn, by_api, f"task-{by_api.task_id}")
    await record_batch(engine, _batch(by_run, ("TASK_STATUS_CHANGED", "in_progress", 1)))
    for task in (by_api, by_run):
        row = await task_row(engine, task.task_id)
        assert "payload" not in row.run_input  # the row's payload column holds it once
        assert input_from(row.run_input, row.payload, task_id=row.id, tenant_id=row.tenant_id,
                          type_name=row.type) == task


async def test_an_input_the_mirror_would_alter_is_not_kept(engine):
    """A NUL character is replaced in the row's payload: a retry from it would not be exact, so none is kept."""
    task = task_input(payload={"customer_email": "a@b.example", "note": "x\x00y"})
    async with engine.begin() as conn:
        await insert_created(conn, task, f"task-{task.task_id}")
    row = await task_row(engine, task.task_id)
    assert row.payload["note"] == "x\ufffdy" and row.run_input is None


async def test_a_run_input_is_only_good_for_its_own_row(engine):
    task = _every_field_set()
    async with engine.begin() as conn:
        await insert_created(conn, task, f"task-{task.task_id}")
    row = await task_row(engine, task.task_id)
    for other in ({"task_id": str(uuid.uuid4())}, {"tenant_id": "someone-else"}, {"type": "http_request"}):
        with pytest.raises(RecordMismatch):
            input_from(row.run_input | other, row.payload, task_id=row.id, tenant_id=row.tenant_id,
                       type_name=row.type)


async def test_a_retried_write_hands_back_the_notifications_it_owes_until_delivered(engine):
    # The first write's answer may be lost after its commit: the retry inserts nothing, yet owes the same.
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    task = task_input(tenant_id=tenant)
    async with session_factory(engine)() as session:
        session.add(Subscription(id=str(uuid.uuid4()), tenant_id=tenant, url="http://127.0.0.1:9/hooks",
                                 events=["task.awaiting_approval"], secret="hooks",
                                 created_at=datetime.now(timezone.utc)))
        await session.commit()
    batch = _batch(task, ("TASK_APPROVAL_REQUESTED", "awaiting_approval", 1), ("TASK_DRAFTED", None, 2))
    batch.tenant_id = tenant
    batch.events[0].data = {"approvers": ["alice"]}
    first = await record_batch(engine, batch)
    [owed] = first.notifications
    assert (owed.event, owed.event_id, owed.task["approvers"]) == ("task.awaiting_approval", batch.events[0].id,
                                                                   ["alice"])
    again = await record_batch(engine, batch)
    assert (again.written, again.notifications) == (0, [owed])
    await notification_outbox.mark_delivered(engine, notification_outbox.delivery_key(owed.event_id,
                                                                                      owed.subscription_id))
    assert (await record_batch(engine, batch)).notifications == []
