"""The ``stop`` update (an inbound event a task's stop_on names) on the time-skipping server: a task waiting for
its due time days out, or for a decision, ends cancelled with the event recorded; one created after the event
(TaskInput.stopped_by) ends before its first step; a task not subscribed, or ended, is untouched."""

import asyncio
from datetime import timedelta

from sqlalchemy import select

from followthrough.db.database import session_factory
from followthrough.db.tables import TaskEvent
from followthrough.domain.contracts import DecisionAck, PauseRequest, StopRequest, StopResult
from followthrough.worker import build_worker
from tests.helpers import event_types, eventually, outbox_rows, task_input, task_row
from tests.workflows.test_task_workflow import start, state, until_status


async def cancelled_event(engine, task_id: str) -> TaskEvent:
    async def probe() -> list[TaskEvent]:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(TaskEvent).where(
                TaskEvent.task_id == task_id, TaskEvent.type == "TASK_CANCELLED"))).scalars())
    [event] = await eventually(probe, lambda found: len(found) == 1)
    return event


async def stop(handle, event_id: str = "evt-1", event_type: str = "invoice.paid") -> StopResult:
    return await handle.execute_update("stop", StopRequest(event_id=event_id, event_type=event_type),
                                       result_type=StopResult)


async def test_a_task_waiting_days_for_its_due_time_is_stopped(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("autonomous", due_at=await env.get_current_time() + timedelta(days=3),
                      subject_ref_type="INVOICE", stop_on=["invoice.paid"])
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        await env.sleep(timedelta(days=2))
        assert (await stop(handle)).outcome == "stopped"
        assert (await handle.result()).status == "cancelled"
        # The same event again: the same answer, nothing more recorded (the run has closed: Temporal says so).
        event = await cancelled_event(sqlite_engine, task.task_id)
    assert event.actor_type == "system" and event.actor_id == "event:evt-1"
    assert event.data["stopped_by_event"]["id"] == "evt-1" and event.data["stopped_by_event"]["type"] == "invoice.paid"
    assert "TASK_DRAFTED" not in await event_types(sqlite_engine, task.task_id)
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_a_task_waiting_for_approval_is_stopped_and_its_request_closed(time_skipping_env, settings,
                                                                              sqlite_engine):
    env = time_skipping_env
    task = task_input("review", subject_ref_type="INVOICE", stop_on=["invoice.paid", "customer.replied"])
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        await env.sleep(timedelta(hours=20))
        result = await stop(handle, "reply-1", "customer.replied")
        assert (result.outcome, result.status) == ("stopped", "cancelled")
        assert (await handle.result()).status == "cancelled"
        event = await cancelled_event(sqlite_engine, task.task_id)
    assert event.data["approval_id"] and event.data["stopped_by_event"]["type"] == "customer.replied"
    assert (await task_row(sqlite_engine, task.task_id)).status == "cancelled"


async def test_an_event_the_task_does_not_name_changes_nothing(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review", subject_ref_type="INVOICE", stop_on=["invoice.paid"])
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        assert (await stop(handle, "x", "invoice.disputed")).outcome == "not_subscribed"
        assert (await state(handle)).status == "awaiting_approval"
        await handle.terminate()


async def test_a_task_created_after_its_event_ends_before_its_first_step(time_skipping_env, settings,
                                                                          sqlite_engine):
    env = time_skipping_env
    task = task_input("autonomous", subject_ref_type="INVOICE", stop_on=["invoice.paid"],
                      stopped_by=StopRequest(event_id="early-1", event_type="invoice.paid", source="api"))
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        assert (await handle.result()).status == "cancelled"
        event = await cancelled_event(sqlite_engine, task.task_id)
    assert event.data["stopped_by_event"]["id"] == "early-1"
    assert await event_types(sqlite_engine, task.task_id) == ["TASK_CREATED", "TASK_CANCELLED"]
    assert await outbox_rows(sqlite_engine, task.task_id) == []


async def test_a_task_paused_past_its_due_time_is_stopped(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("autonomous", due_at=await env.get_current_time() + timedelta(days=1),
                      subject_ref_type="INVOICE", stop_on=["invoice.paid"])
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "scheduled")
        await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        await env.sleep(timedelta(days=2))  # past its due time, still paused
        result = await stop(handle)
        assert (result.outcome, result.status) == ("stopped", "cancelled")
        assert (await handle.result()).status == "cancelled"


async def test_two_events_at_once_stop_the_task_once(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review", subject_ref_type="INVOICE", stop_on=["invoice.paid", "customer.replied"])
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        results = await asyncio.gather(stop(handle, "a", "invoice.paid"), stop(handle, "b", "customer.replied"))
        assert sorted(r.outcome for r in results) == ["already_ended", "stopped"]
        assert {r.status for r in results} == {"cancelled"}
        assert (await handle.result()).status == "cancelled"
        await cancelled_event(sqlite_engine, task.task_id)
