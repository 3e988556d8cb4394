"""Due dates, reschedule, pause and resume, and cancel during a running draft, on the
time-skipping server: a week passes in moments."""

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from followthrough.activities import build_activities
from followthrough.domain import activity_names
from followthrough.domain.contracts import (
    CancelRequest,
    DecisionAck,
    Draft,
    DraftRequest,
    DraftResult,
    PauseRequest,
    RescheduleRequest,
)
from followthrough.config.settings import Settings
from tests.helpers import event_types, eventually, outbox_rows, task_input, task_row, with_activities
from tests.workflows.test_task_workflow import start, state, until_status
from followthrough.worker import build_worker
from followthrough.workflows.all import ALL_WORKFLOWS


def worker_replacing(env: WorkflowEnvironment, settings: Settings, engine: AsyncEngine, *replacements) -> Worker:
    """The real worker's activities, with those named like a replacement replaced."""
    activities = with_activities(build_activities(settings, engine, httpx.AsyncClient(), env.client), *replacements)
    return Worker(env.client, task_queue=settings.task_queue, workflows=ALL_WORKFLOWS, activities=activities,
                  max_heartbeat_throttle_interval=timedelta(seconds=2))


async def test_due_a_week_out_starts_within_a_second_of_its_due_time(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    due = await env.get_current_time() + timedelta(days=7)
    task = task_input("autonomous", due_at=due)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        await env.sleep(timedelta(days=6, hours=23))
        assert (await state(handle)).status == "scheduled"
        assert (await handle.result()).status == "completed"
    row = await task_row(sqlite_engine, task.task_id)
    assert timedelta(0) <= row.started_at - due < timedelta(seconds=1)


async def test_reschedule_earlier_and_later_moves_the_timer(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    now = await env.get_current_time()
    task = task_input("autonomous", due_at=now + timedelta(days=7))
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        earlier = now + timedelta(days=2)
        ack = await handle.execute_update("reschedule", RescheduleRequest(due_at=earlier, actor_id="ops"),
                                          result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("scheduled", "waiting_until_due")
        later = now + timedelta(days=3)
        await handle.execute_update("reschedule", RescheduleRequest(due_at=later, reason="customer asked"),
                                    result_type=DecisionAck)
        await env.sleep(timedelta(days=2, hours=12))
        assert (await state(handle)).status == "scheduled"
        assert (await handle.result()).status == "completed"
    row = await task_row(sqlite_engine, task.task_id)
    assert timedelta(0) <= row.started_at - later < timedelta(seconds=1)
    assert row.due_at == later
    types = await event_types(sqlite_engine, task.task_id)
    assert types.count("TASK_RESCHEDULED") == 2


async def test_reschedule_is_refused_once_the_task_is_past_waiting(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("reschedule", RescheduleRequest(
                due_at=await env.get_current_time() + timedelta(days=1)), result_type=DecisionAck)
        assert "only a task still waiting for its due time" in str(refused.value.cause)
        await handle.execute_update("cancel", CancelRequest(), result_type=DecisionAck)


async def test_a_paused_scheduled_task_waits_past_its_due_time_until_resumed(time_skipping_env, settings,
                                                                             sqlite_engine):
    env = time_skipping_env
    due = await env.get_current_time() + timedelta(days=1)
    task = task_input("autonomous", due_at=due)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        ack = await handle.execute_update("pause", PauseRequest(actor_id="ops", reason="hold on"),
                                          result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("paused", "waiting_until_due")
        with pytest.raises(WorkflowUpdateFailedError):  # twice is refused
            await handle.execute_update("pause", PauseRequest(), result_type=DecisionAck)
        await env.sleep(timedelta(days=3))
        assert (await state(handle)).status == "paused"
        assert await outbox_rows(sqlite_engine, task.task_id) == []
        resumed_at = await env.get_current_time()
        await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert (await handle.result()).status == "completed"
    row = await task_row(sqlite_engine, task.task_id)
    assert row.started_at >= resumed_at >= due + timedelta(days=2)
    types = await event_types(sqlite_engine, task.task_id)
    assert types[:5] == ["TASK_CREATED", "TASK_STATUS_CHANGED", "TASK_PAUSED", "TASK_RESUMED", "TASK_STATUS_CHANGED"]


async def test_pause_holds_the_task_after_the_step_under_way(time_skipping_env, settings, sqlite_engine):
    """Paused while drafting: the draft finishes, the send waits for resume."""
    release = asyncio.Event()
    drafting = asyncio.Event()

    @activity.defn(name=activity_names.DRAFT)
    async def slow_draft(request: DraftRequest) -> DraftResult:
        drafting.set()
        await release.wait()
        return DraftResult(draft=Draft(channel="email", to=["ap@acme.example"], subject="Reminder", body="Hi"))

    env = time_skipping_env
    task = task_input("autonomous")
    async with worker_replacing(env, settings, sqlite_engine, slow_draft):
        handle = await start(env, settings, task)
        await drafting.wait()
        ack = await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("paused", "drafting")
        release.set()
        await eventually(lambda: event_types(sqlite_engine, task.task_id), lambda t: "TASK_DRAFTED" in t)
        await env.sleep(timedelta(hours=1))
        assert (await state(handle)).status == "paused"
        assert await outbox_rows(sqlite_engine, task.task_id) == []
        ack = await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "in_progress"
        assert (await handle.result()).status == "completed"
    assert len(await outbox_rows(sqlite_engine, task.task_id)) == 1


async def test_cancel_while_paused(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("autonomous", due_at=await env.get_current_time() + timedelta(hours=2))
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        await handle.execute_update("pause", PauseRequest(), result_type=DecisionAck)
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "cancelled"
    assert (await event_types(sqlite_engine, task.task_id))[-1] == "TASK_CANCELLED"


async def test_cancel_stops_a_running_draft(time_skipping_env, settings, sqlite_engine):
    """A draft (say, a slow model call) heartbeats; cancelling the task stops it."""
    drafting, stopped = asyncio.Event(), asyncio.Event()

    @activity.defn(name=activity_names.DRAFT)
    async def endless_draft(request: DraftRequest) -> DraftResult:
        drafting.set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            stopped.set()
            raise

    env = time_skipping_env
    task = task_input("autonomous")
    async with worker_replacing(env, settings, sqlite_engine, endless_draft):
        handle = await start(env, settings, task)
        await drafting.wait()
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "cancelled"
        await asyncio.wait_for(stopped.wait(), timeout=15)
    assert await outbox_rows(sqlite_engine, task.task_id) == []
