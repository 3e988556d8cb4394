"""TaskWorkflow on the time-skipping server: long waits pass in moments."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from followthrough.activities.drafting import DraftingActivities
from followthrough.activities.mirror import MirrorActivities
from followthrough.domain import activity_names
from followthrough.domain.contracts import (
    ApprovalDecision,
    CancelRequest,
    DecisionAck,
    Rejection,
    SendRequest,
    SendResult,
    TaskInput,
    TaskOutcome,
)
from followthrough.config.settings import Settings
from followthrough.db.tables import Approval, ApprovalDecisionRecord
from tests.helpers import event_types, eventually, invoice_payload, outbox_rows, task_input, task_row
from followthrough.worker import build_worker
from followthrough.workflows.all import ALL_WORKFLOWS


async def start(env: WorkflowEnvironment, settings: Settings, task: TaskInput) -> WorkflowHandle:
    return await env.client.start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                           task_queue=settings.task_queue, result_type=TaskOutcome)


async def state(handle: WorkflowHandle) -> DecisionAck:
    return await handle.query("state", result_type=DecisionAck)


async def until_status(handle: WorkflowHandle, status: str) -> DecisionAck:
    return await eventually(lambda: state(handle), lambda s: s.status == status)


async def test_approval_wait_expires_after_24_hours(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        await env.sleep(timedelta(hours=23))
        assert (await state(handle)).status == "awaiting_approval"
        outcome = await handle.result()
    assert outcome.status == "expired"
    row = await task_row(sqlite_engine, task.task_id)
    assert row.status == "expired" and row.finished_at is not None
    assert row.finished_at - row.started_at >= timedelta(hours=24)
    assert (await event_types(sqlite_engine, task.task_id))[-1] == "TASK_EXPIRED"
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_per_task_approval_timeout_overrides_the_default(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review", approval_timeout_seconds=3600)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        outcome = await handle.result()
    assert outcome.status == "expired"
    row = await task_row(sqlite_engine, task.task_id)
    assert timedelta(hours=1) <= row.finished_at - row.started_at < timedelta(hours=2)


async def test_due_date_next_week_waits_scheduled_then_runs(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    due = await env.get_current_time() + timedelta(days=7)
    task = task_input("autonomous", due_at=due)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        await env.sleep(timedelta(days=6))
        assert (await state(handle)).status == "scheduled"
        outcome = await handle.result()
    assert outcome.status == "completed"
    row = await task_row(sqlite_engine, task.task_id)
    assert row.started_at >= due
    assert len(await outbox_rows(sqlite_engine, task.task_id)) == 1
    assert (await event_types(sqlite_engine, task.task_id))[:3] == [
        "TASK_CREATED", "TASK_STATUS_CHANGED", "TASK_STATUS_CHANGED"]


async def test_cancel_while_waiting_for_approval(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops", reason="paid already"),
                                          result_type=DecisionAck)
        assert ack.status == "cancelled"
        assert (await handle.result()).status == "cancelled"
        with pytest.raises(RPCError) as closed:  # the API turns this into a 409
            await handle.execute_update("approve", ApprovalDecision(), result_type=DecisionAck)
        assert closed.value.status == RPCStatusCode.NOT_FOUND
    row = await task_row(sqlite_engine, task.task_id)
    assert row.status == "cancelled"
    assert (await event_types(sqlite_engine, task.task_id))[-1] == "TASK_CANCELLED"
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_cancel_while_scheduled(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("autonomous", due_at=await env.get_current_time() + timedelta(days=3))
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "cancelled"
        assert (await handle.result()).status == "cancelled"
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_temporal_native_cancel_is_recorded(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        await handle.cancel()
        assert (await handle.result()).status == "cancelled"
    row = await task_row(sqlite_engine, task.task_id)
    assert row.status == "cancelled"


async def test_approve_with_edits_sends_the_edited_text(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        ack = await handle.execute_update(
            "approve", ApprovalDecision(actor_id="alice", comment="softer tone", body="Hi ACME, a gentle nudge."),
            result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("in_progress", "sending")
        assert (await handle.result()).status == "completed"
    [message] = await outbox_rows(sqlite_engine, task.task_id)
    assert message.body == "Hi ACME, a gentle nudge."
    assert message.subject.startswith("Reminder: invoice INV-123")
    row = await task_row(sqlite_engine, task.task_id)
    assert row.draft["body"] == "Hi ACME, a gentle nudge." and row.attempts == 1


async def test_reject_ends_rejected_without_sending(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        ack = await handle.execute_update("reject", Rejection(actor_id="bob", reason="customer disputes it"),
                                          result_type=DecisionAck)
        assert ack.status == "rejected"
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_approve_signal_works_like_the_update(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        await handle.signal("approve", ApprovalDecision(actor_id="carol"))
        await handle.signal("reject", Rejection(reason="too late"))  # ignored: already decided
        assert (await handle.result()).status == "completed"
    assert len(await outbox_rows(sqlite_engine, task.task_id)) == 1


async def test_a_decision_signal_without_input_decides_nothing(time_skipping_env, settings, sqlite_engine):
    """An input-less `approve` carries no payload for the codec to refuse and names no decider: it is dropped,
    so it cannot approve as "anonymous" a task that any approver may decide."""
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        await handle.signal("approve")
        await handle.signal("reject")
        await handle.signal("approve", ApprovalDecision(actor_id="carol"))
        assert (await handle.result()).status == "completed"
    async with sqlite_engine.connect() as conn:
        deciders = (await conn.execute(select(ApprovalDecisionRecord.actor_id, ApprovalDecisionRecord.decision)
                                       .join(Approval, Approval.id == ApprovalDecisionRecord.approval_id)
                                       .where(Approval.task_id == task.task_id))).all()
    assert [tuple(d) for d in deciders] == [("carol", "approve")]


async def test_decisions_are_refused_before_approval_is_requested(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review", due_at=await env.get_current_time() + timedelta(days=1))
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve", ApprovalDecision(), result_type=DecisionAck)
        assert "not awaiting_approval" in str(refused.value.cause)
        await handle.execute_update("cancel", CancelRequest(), result_type=DecisionAck)


async def test_a_decision_for_another_approval_request_is_refused(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        run_id = (await handle.describe()).run_id
        [request] = await eventually(lambda: _approval_ids(sqlite_engine, task.task_id), lambda ids: len(ids) == 1)
        assert request.startswith(f"{run_id}:")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve", ApprovalDecision(actor_id="alice", approval_id="old-run:4"),
                                        result_type=DecisionAck)
        assert "approval request old-run:4, which is no longer open" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("reject", Rejection(reason="no", approval_id=f"{run_id}:999"),
                                        result_type=DecisionAck)
        await handle.signal("reject", Rejection(reason="no", approval_id="old-run:4"))  # ignored
        assert (await state(handle)).status == "awaiting_approval"
        ack = await handle.execute_update("approve", ApprovalDecision(actor_id="alice", approval_id=request),
                                          result_type=DecisionAck)
        assert ack.status != "awaiting_approval"
        assert (await handle.result()).status == "completed"


async def _approval_ids(engine: AsyncEngine, task_id: str) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Approval.id).where(Approval.task_id == task_id))).scalars())


@pytest.mark.parametrize("amount, expected_events", [
    (500, ["TASK_DRAFTED", "TASK_EXECUTION_STARTED", "TASK_EXECUTION_COMPLETED"]),
    (50_000, ["TASK_DRAFTED", "TASK_GUARDRAIL_FLAGGED", "TASK_APPROVAL_REQUESTED"]),
])
async def test_assisted_mode_sends_unless_a_guardrail_flags(time_skipping_env, settings, sqlite_engine,
                                                            amount, expected_events):
    env = time_skipping_env
    task = task_input("assisted", payload=invoice_payload(invoice_amount=amount))
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        if amount > 10_000:
            await until_status(handle, "awaiting_approval")
            await eventually(lambda: event_types(sqlite_engine, task.task_id),
                             lambda types: "TASK_APPROVAL_REQUESTED" in types)
            await handle.execute_update("cancel", CancelRequest(), result_type=DecisionAck)
        else:
            assert (await handle.result()).status == "completed"
    types = await event_types(sqlite_engine, task.task_id)
    assert types[2:5] == expected_events


async def test_suggest_mode_completes_with_the_draft_only(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("suggest")
    async with build_worker(env.client, settings, sqlite_engine):
        outcome = await (await start(env, settings, task)).result()
    assert outcome.status == "completed" and outcome.result["sent"] is False
    assert "INV-123" in outcome.result["draft"]["subject"]
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_manual_task_completes_when_a_person_marks_it_done(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("manual")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        ack = await until_status(handle, "awaiting_approval")
        assert ack.stage == "awaiting_person"
        await handle.execute_update("approve", ApprovalDecision(actor_id="dana", comment="called them"),
                                    result_type=DecisionAck)
        outcome = await handle.result()
    assert outcome.status == "completed" and outcome.result["done_by"] == "dana"
    assert await outbox_rows(sqlite_engine, task.task_id) == []


def _worker_with_send(env: WorkflowEnvironment, settings: Settings, engine: AsyncEngine, send) -> Worker:
    """The real draft and mirror activities, with ``send`` replaced by name."""
    return Worker(env.client, task_queue=settings.task_queue, workflows=ALL_WORKFLOWS,
                  activities=[DraftingActivities(settings, engine).draft, MirrorActivities(engine).record, send])


async def test_non_retryable_send_failure_ends_failed_with_the_error(time_skipping_env, settings, sqlite_engine):
    calls = []

    @activity.defn(name=activity_names.SEND)
    async def refused(request: SendRequest) -> SendResult:
        calls.append(activity.info().attempt)
        raise ApplicationError("mailbox does not exist", {"attempt": activity.info().attempt},
                               type="DeliveryRefused", non_retryable=True)

    env = time_skipping_env
    task = task_input("autonomous")
    async with _worker_with_send(env, settings, sqlite_engine, refused):
        outcome = await (await start(env, settings, task)).result()
    assert outcome.status == "failed" and calls == [1]
    row = await task_row(sqlite_engine, task.task_id)
    assert row.status == "failed" and row.error == "send failed: mailbox does not exist" and row.attempts == 1
    assert (await event_types(sqlite_engine, task.task_id))[-1] == "TASK_EXECUTION_FAILED"


async def test_transient_send_failures_are_retried(time_skipping_env, settings, sqlite_engine):
    @activity.defn(name=activity_names.SEND)
    async def flaky(request: SendRequest) -> SendResult:
        if activity.info().attempt < 3:
            raise RuntimeError("SMTP server unreachable")
        return SendResult(delivery_id=str(uuid.uuid4()), channel="test", attempt=activity.info().attempt)

    env = time_skipping_env
    task = task_input("autonomous")
    async with _worker_with_send(env, settings, sqlite_engine, flaky):
        outcome = await (await start(env, settings, task)).result()
    assert outcome.status == "completed"
    assert (await task_row(sqlite_engine, task.task_id)).attempts == 3


async def test_invalid_payload_fails_without_retrying(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("autonomous", payload=invoice_payload(customer_email="not-an-address"))
    async with build_worker(env.client, settings, sqlite_engine):
        outcome = await (await start(env, settings, task)).result()
    assert outcome.status == "failed"
    row = await task_row(sqlite_engine, task.task_id)
    assert row.error.startswith("draft failed: payload is invalid") and row.attempts == 1


async def test_cancel_during_a_send_never_leaves_an_unknown_send(time_skipping_env, settings, sqlite_engine):
    """A send in flight finishes before the cancel is weighed: the task reports what really happened."""
    import asyncio

    started = asyncio.Event()

    @activity.defn(name=activity_names.SEND)
    async def slow(request: SendRequest) -> SendResult:
        started.set()
        await asyncio.sleep(1)
        return SendResult(delivery_id="d-1", channel="test", attempt=activity.info().attempt)

    env = time_skipping_env
    task = task_input("autonomous")
    async with _worker_with_send(env, settings, sqlite_engine, slow):
        handle = await start(env, settings, task)
        await started.wait()
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        outcome = await handle.result()
    assert ack.status == outcome.status == "completed"
    assert outcome.result["delivery"]["delivery_id"] == "d-1"
