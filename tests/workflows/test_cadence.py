"""Cadences on the time-skipping server: steps run in order as one task, each after its wait (a durable timer
computed from the workflow's clock, business hours included); pause, resume, reschedule and cancel during a
wait; the Web UI's summaries and details."""

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from followthrough.config.settings import Settings
from followthrough.db.database import session_factory
from followthrough.db.tables import Task, TaskEvent
from followthrough.domain import activity_names
from followthrough.domain.contracts import (CancelRequest, DecisionAck, PauseRequest, RescheduleRequest, SendRequest,
                                            SendResult)
from followthrough.domain.waits import BusinessHours, StepWait, next_open, wait_end
from followthrough.tasktypes import get_type
from tests.conftest import make_settings
from tests.helpers import eventually, task_input, task_row
from tests.workflows.test_run_texts import details, summaries
from tests.workflows.test_task_workflow import start, state
from tests.workflows.test_time import worker_replacing

BERLIN = BusinessHours(timezone="Europe/Berlin", days=["mon", "tue", "wed", "thu", "fri"], start="09:00",
                       end="17:00")
SENT: list[tuple[str, datetime]] = []


@activity.defn(name=activity_names.SEND)
async def records_sends(request: SendRequest) -> SendResult:
    SENT.append((request.task_id, datetime.now(timezone.utc)))
    return SendResult(delivery_id=f"d-{request.task_id}", channel="email", attempt=activity.info().attempt)


def email(to: str, wait: dict | None = None, mode: str = "autonomous") -> dict[str, Any]:
    step: dict[str, Any] = {"type": "email", "mode": mode, "title": f"Mail {to}",
                            "payload": {"to": [to], "subject": "Invoice INV-123", "body": "Please pay"}}
    return step | ({"wait": wait} if wait is not None else {})


def cadence(steps: list[dict], **fields: Any):
    payload = get_type("cadence").payload_model.model_validate({"steps": steps}).model_dump(mode="json")
    return task_input("autonomous", type="cadence", title="Dunning INV-123", subject_ref_id=None, decompose=True,
                      payload=payload, **fields)


@pytest.fixture
def any_settings(engine: AsyncEngine, tmp_path: Path) -> Settings:
    return make_settings(str(engine.url), tmp_path)


async def steps(engine: AsyncEngine, parent_id: str) -> list[Task]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(Task).where(Task.parent_id == parent_id).order_by(Task.subtask_index))
        return list(rows.scalars())


async def events(engine: AsyncEngine, task_id: str) -> list[TaskEvent]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.seq))
        return list(rows.scalars())


async def waiting_before(handle: WorkflowHandle, step: int) -> None:
    """Until the cadence waits before ``step`` (its stage and details say so)."""
    await eventually(lambda: state(handle), lambda s: (s.status, s.stage) == ("scheduled", "waiting"))
    await eventually(lambda: details(handle), lambda d: f"before step {step} of" in d)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


# ---- the wait's arithmetic ---------------------------------------------------------------

def test_a_wait_for_a_duration_ends_that_long_after_it_begins():
    begins = utc("2026-12-02T10:00:00+00:00")
    assert wait_end(StepWait(seconds=3 * 86400), begins) == utc("2026-12-05T10:00:00+00:00")
    assert wait_end(StepWait(until=utc("2026-12-03T08:00:00+00:00")), begins) == utc("2026-12-03T08:00:00+00:00")
    # A moment already past: the wait ends as it begins.
    assert wait_end(StepWait(until=utc("2026-12-01T08:00:00+00:00")), begins) == begins


def test_business_hours_push_the_end_into_the_next_open_window():
    # Friday 4 December 2026, 16:30 in Berlin (UTC+1): an hour on is after closing, so Monday 09:00.
    friday = utc("2026-12-04T16:30:00+01:00")
    assert wait_end(StepWait(seconds=3600, business_hours=BERLIN), friday) == utc("2026-12-07T09:00:00+01:00")
    # Inside the window: unchanged.
    assert next_open(utc("2026-12-04T16:59:00+01:00"), BERLIN) == utc("2026-12-04T16:59:00+01:00")
    # Closing time itself is closed; before opening on a weekday: that day's opening.
    assert next_open(utc("2026-12-04T17:00:00+01:00"), BERLIN) == utc("2026-12-07T09:00:00+01:00")
    assert next_open(utc("2026-12-02T06:15:00+01:00"), BERLIN) == utc("2026-12-02T09:00:00+01:00")
    # Saturday: Monday's opening.
    assert next_open(utc("2026-12-05T12:00:00+01:00"), BERLIN) == utc("2026-12-07T09:00:00+01:00")
    # Only business hours: at once when open, else the next opening.
    assert wait_end(StepWait(business_hours=BERLIN), utc("2026-12-02T11:00:00+01:00")) == \
        utc("2026-12-02T11:00:00+01:00")
    # Across the change to summer time (Sunday 29 March 2026): Monday 09:00 is UTC+2.
    assert next_open(utc("2026-03-27T18:00:00+01:00"), BERLIN) == utc("2026-03-30T09:00:00+02:00")
    # Another zone and days: New York, Tuesdays and Thursdays 10:00-12:00.
    new_york = BusinessHours(timezone="America/New_York", days=["tue", "thu"], start="10:00", end="12:00")
    assert next_open(utc("2026-12-02T15:00:00+00:00"), new_york) == utc("2026-12-03T10:00:00-05:00")


def test_a_wait_inside_business_hours_keeps_its_end():
    friday = utc("2026-12-04T16:00:00+01:00")
    assert wait_end(StepWait(seconds=1800, business_hours=BERLIN), friday) == utc("2026-12-04T16:30:00+01:00")


@pytest.mark.parametrize("wait, reason", [
    ({"for": "P3D", "until": "2026-12-03T09:00:00Z"}, "not both"),
    ({}, "give `for`, `until` or `business_hours`"),
    ({"for": "P3D", "jitter": 5}, "Extra inputs are not permitted"),
    ({"for": 0}, "between 1 second"),
    ({"for": "three days"}, "for"),
    ({"until": "2026-12-03T09:00:00"}, "timezone"),
    ({"business_hours": {"timezone": "Mars/Olympus"}}, "unknown time zone"),
    ({"business_hours": {"timezone": "UTC", "start": "17:00", "end": "09:00"}}, "start before they end"),
    ({"business_hours": {"timezone": "UTC", "days": ["monday"]}}, "days"),
    ({"business_hours": {"timezone": "UTC", "start": "9am"}}, "start"),
    ({"business_hours": {"timezone": "UTC", "lunch": "12:00"}}, "Extra inputs are not permitted"),
])
def test_a_bad_wait_is_refused_with_its_reason(wait: dict, reason: str):
    with pytest.raises(ValidationError) as raised:
        get_type("cadence").payload_model.model_validate({"steps": [email("a@acme.example", wait)]})
    assert reason in str(raised.value)


def test_only_a_cadence_waits():
    with pytest.raises(ValidationError, match="take no `wait`"):
        get_type("group").payload_model.model_validate(
            {"execution": "sequential", "subtasks": [email("a@acme.example", {"for": 60})]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        get_type("cadence").payload_model.model_validate({"steps": [email("a@acme.example")], "execution": "x"})


def test_a_wait_is_stored_as_written():
    payload = get_type("cadence").payload_model.model_validate(
        {"steps": [email("a@acme.example", {"for": 259200, "business_hours": {"timezone": "Europe/Berlin"}})]})
    wait = payload.model_dump(mode="json")["steps"][0]["wait"]
    assert wait == {"for": "P3D", "until": None, "business_hours": {
        "timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}}


# ---- runs -----------------------------------------------------------------------------------

async def test_three_steps_two_waits_run_in_order_as_one_task(time_skipping_env, any_settings, engine):
    env, settings = time_skipping_env, any_settings
    hours = {"timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00",
             "end": "17:00"}
    parent = cadence([email("ada@acme.example"), email("ada@acme.example", {"for": "P3D"}),
                      email("calls@acme.example", {"for": "PT1H", "business_hours": hours})])
    SENT.clear()
    async with worker_replacing(env, settings, engine, records_sends):
        handle = await start(env, settings, parent)
        await waiting_before(handle, 2)
        assert (await details(handle)).startswith("Waiting until ")
        row = await eventually(lambda: task_row(engine, parent.task_id), lambda r: r.progress and
                               r.progress.get("step") == 2 and r.stage == "waiting")
        assert row.status == "scheduled" and row.progress == {"done": 1, "failed": 0, "total": 3, "step": 2}
        assert len(await steps(engine, parent.task_id)) == 1
        outcome = await handle.result()
    assert outcome.status == "completed", outcome
    assert [s["status"] for s in outcome.result["subtasks"]] == ["completed"] * 3
    rows = await steps(engine, parent.task_id)
    assert [r.subtask_index for r in rows] == [1, 2, 3] and all(r.status == "completed" for r in rows)
    assert rows[1].started_at - rows[0].finished_at >= timedelta(days=3)
    timeline = await eventually(lambda: events(engine, parent.task_id),
                                lambda es: es and es[-1].type == "TASK_EXECUTION_COMPLETED")
    cadence_events = [(e.type, e.data.get("index")) for e in timeline if e.type.startswith("TASK_CADENCE")]
    assert cadence_events == [
        ("TASK_CADENCE_STEP_STARTED", 1), ("TASK_CADENCE_STEP_ENDED", 1),
        ("TASK_CADENCE_WAITING", 2), ("TASK_CADENCE_STEP_STARTED", 2), ("TASK_CADENCE_STEP_ENDED", 2),
        ("TASK_CADENCE_WAITING", 3), ("TASK_CADENCE_STEP_STARTED", 3), ("TASK_CADENCE_STEP_ENDED", 3)]
    # The third wait: an hour after the second step ended, pushed into Berlin's business hours.
    ended_2 = next(e for e in timeline if e.type == "TASK_CADENCE_STEP_ENDED" and e.data["index"] == 2)
    waited_3 = next(e for e in timeline if e.type == "TASK_CADENCE_WAITING" and e.data["index"] == 3)
    begins = ended_2.occurred_at.replace(tzinfo=ended_2.occurred_at.tzinfo or timezone.utc)
    expected = next_open(begins + timedelta(hours=1), BERLIN)
    assert abs(utc(waited_3.data["until"]) - expected) < timedelta(seconds=2)
    assert waited_3.data["wait"] == {"seconds": 3600.0, "business_hours": hours}
    assert waited_3.new_status == "scheduled" and waited_3.data["subtask_id"] == rows[2].id
    started_3 = rows[2].started_at.replace(tzinfo=timezone.utc) if rows[2].started_at.tzinfo is None \
        else rows[2].started_at
    assert started_3 >= utc(waited_3.data["until"])
    row = await task_row(engine, parent.task_id)
    assert row.status == "completed" and row.progress["done"] == 3
    assert len(SENT) == 3
    wait_summaries = [s for s in await summaries(env, handle) if s.startswith("Wait before step")]
    assert len(wait_summaries) == 2 and wait_summaries[0].startswith("Wait before step 2 of 3, email (")


async def test_a_failed_step_stops_the_cadence(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env

    @activity.defn(name=activity_names.SEND)
    async def refuses(request: SendRequest) -> SendResult:
        from temporalio.exceptions import ApplicationError
        raise ApplicationError("mailbox does not exist", type="DeliveryRefused", non_retryable=True)

    parent = cadence([email("bad@acme.example"), email("ada@acme.example", {"for": "P1D"})])
    async with worker_replacing(env, settings, sqlite_engine, refuses):
        outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "failed" and outcome.error.startswith("subtasks failed: subtask 1 (Mail bad")
    assert [s["status"] for s in outcome.result["subtasks"]] == ["failed", "not_started"]
    assert len(await steps(sqlite_engine, parent.task_id)) == 1


async def test_pause_during_a_wait_holds_the_next_step_until_resumed(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = cadence([email("ada@acme.example"), email("ada@acme.example", {"for": "P1D"})])
    async with worker_replacing(env, settings, sqlite_engine, records_sends):
        handle = await start(env, settings, parent)
        await waiting_before(handle, 2)
        ack = await handle.execute_update("pause", PauseRequest(actor_id="ops", reason="customer on holiday"),
                                          result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("paused", "waiting")
        assert (await details(handle)).startswith("Paused by ops: customer on holiday (was scheduled)")
        await env.sleep(timedelta(days=2))
        assert (await state(handle)).status == "paused"
        assert len(await steps(sqlite_engine, parent.task_id)) == 1
        # Moved while paused: still held.
        await handle.execute_update("reschedule", RescheduleRequest(
            due_at=await env.get_current_time() - timedelta(seconds=1), actor_id="ops"), result_type=DecisionAck)
        assert (await state(handle)).status == "paused"
        ack = await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status in ("scheduled", "in_progress")
        assert (await handle.result()).status == "completed"
    types = [e.type for e in await events(sqlite_engine, parent.task_id)]
    assert types.index("TASK_PAUSED") < types.index("TASK_RESUMED") < \
        max(i for i, t in enumerate(types) if t == "TASK_CADENCE_STEP_STARTED")


async def test_reschedule_moves_the_current_wait(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = cadence([email("ada@acme.example", mode="review"), email("ada@acme.example", {"for": "P3D"})])
    async with worker_replacing(env, settings, sqlite_engine, records_sends):
        handle = await start(env, settings, parent)
        # While a step runs there is no wait to move.
        first = await eventually(lambda: steps(sqlite_engine, parent.task_id),
                                 lambda rs: [r.status for r in rs] == ["awaiting_approval"])
        assert await details(handle) == "Running step 1 of 2 (0 done)"
        planned = next(e for e in await events(sqlite_engine, parent.task_id) if e.type == "TASK_SUBTASKS_PLANNED")
        assert [s.get("wait") for s in planned.data["subtasks"]] == [None, {"seconds": 259200.0}]
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("reschedule", RescheduleRequest(
                due_at=await env.get_current_time() + timedelta(hours=1)), result_type=DecisionAck)
        assert "a cadence during a wait" in str(refused.value.cause)
        await env.client.get_workflow_handle(first[0].workflow_id).execute_update(
            "approve", {"actor_id": "alice"}, result_type=DecisionAck)
        await waiting_before(handle, 2)
        moved = await env.get_current_time() + timedelta(hours=2)
        ack = await handle.execute_update("reschedule", RescheduleRequest(due_at=moved, actor_id="ops",
                                                                          reason="call first"),
                                          result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("scheduled", "waiting")
        row = await eventually(lambda: task_row(sqlite_engine, parent.task_id),
                               lambda r: r.due_at is not None and abs(
                                   r.due_at.replace(tzinfo=timezone.utc) - moved) < timedelta(seconds=1))
        assert row.status == "scheduled"
        await env.sleep(timedelta(hours=1))
        assert len(await steps(sqlite_engine, parent.task_id)) == 1
        await env.sleep(timedelta(hours=1, minutes=1))
        await eventually(lambda: steps(sqlite_engine, parent.task_id), lambda rs: len(rs) == 2)
        assert (await handle.result()).status == "completed"
    rows = await steps(sqlite_engine, parent.task_id)
    waited = rows[1].started_at - rows[0].finished_at
    assert timedelta(hours=2) - timedelta(seconds=5) <= waited < timedelta(hours=3)
    moved_event = next(e for e in await events(sqlite_engine, parent.task_id) if e.type == "TASK_RESCHEDULED")
    assert moved_event.data["reason"] == "call first" and moved_event.data["from"] is not None


async def test_cancel_during_a_wait_cancels_the_cadence_and_starts_no_further_step(time_skipping_env, settings,
                                                                                   sqlite_engine):
    env = time_skipping_env
    parent = cadence([email("ada@acme.example"), email("ada@acme.example", {"for": "P3D"}),
                      email("calls@acme.example", {"for": "P3D"})])
    async with worker_replacing(env, settings, sqlite_engine, records_sends):
        handle = await start(env, settings, parent)
        await waiting_before(handle, 2)
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops", reason="invoice paid"),
                                          result_type=DecisionAck)
        assert ack.status == "cancelled"
        assert (await handle.result()).status == "cancelled"
    assert [r.status for r in await steps(sqlite_engine, parent.task_id)] == ["completed"]
    timeline = await eventually(lambda: events(sqlite_engine, parent.task_id),
                                lambda es: es and es[-1].type == "TASK_CANCELLED")
    assert timeline[-1].data == {"reason": "invoice paid"}
    assert [e.data["index"] for e in timeline if e.type == "TASK_CADENCE_STEP_STARTED"] == [1]
    assert (await task_row(sqlite_engine, parent.task_id)).status == "cancelled"


async def test_cancel_during_a_later_wait_while_paused(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = cadence([email("ada@acme.example", {"until": "2020-01-01T00:00:00Z"}),
                      email("ada@acme.example", {"for": "P3D"})])
    async with worker_replacing(env, settings, sqlite_engine, records_sends):
        handle = await start(env, settings, parent)
        await waiting_before(handle, 2)
        await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "cancelled"
    assert len(await steps(sqlite_engine, parent.task_id)) == 1


async def test_cancel_while_a_step_runs_cancels_the_step_and_starts_no_later_one(time_skipping_env, settings,
                                                                                  sqlite_engine):
    env = time_skipping_env
    parent = cadence([email("ada@acme.example", mode="review"), email("ada@acme.example", {"for": "P1D"})])
    async with worker_replacing(env, settings, sqlite_engine, records_sends):
        handle = await start(env, settings, parent)
        await eventually(lambda: steps(sqlite_engine, parent.task_id),
                         lambda rs: [r.status for r in rs] == ["awaiting_approval"])
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "cancelled"
    rows = await eventually(lambda: steps(sqlite_engine, parent.task_id),
                            lambda rs: [r.status for r in rs] == ["cancelled"])
    assert len(rows) == 1
    types = [e.type for e in await events(sqlite_engine, parent.task_id)]
    assert "TASK_CADENCE_WAITING" not in types and types[-1] == "TASK_CANCELLED"
