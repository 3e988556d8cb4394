"""Tasks split into subtasks, on the time-skipping server: each subtask a child
TaskWorkflow with its own mirror row; parallel and sequential; fail_fast and
continue; cancel reaching the children; a type that plans."""

import asyncio
from typing import Any

from sqlalchemy import select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from followthrough.domain import activity_names
from followthrough.domain.contracts import CancelRequest, DecisionAck, PauseRequest, SendRequest, SendResult
from followthrough.db.database import session_factory
from followthrough.db.tables import Task
from tests.helpers import event_types, eventually, task_input, task_row
from tests.workflows.test_task_workflow import start, state
from tests.workflows.test_time import worker_replacing
from followthrough.worker import build_worker


def email(to: str, mode: str = "autonomous", **extra: Any) -> dict[str, Any]:
    return {"type": "email", "mode": mode, "title": f"Mail {to}",
            "payload": {"to": [to], "subject": "Hello", "body": "Hi {{ name }}", "variables": {"name": to}}} | extra


def group(subtasks: list[dict], execution: str = "parallel", failure_policy: str = "fail_fast", **fields):
    return task_input("autonomous", type="group", title="Onboard ACME", subject_ref_id=None, decompose=True,
                      payload={"subtasks": subtasks, "execution": execution, "failure_policy": failure_policy},
                      **fields)


@activity.defn(name=activity_names.SEND)
async def refuses_bad_addresses(request: SendRequest) -> SendResult:
    if any(a.startswith("bad") for a in request.draft.to):
        raise ApplicationError("mailbox does not exist", {"attempt": activity.info().attempt},
                               type="DeliveryRefused", non_retryable=True)
    return SendResult(delivery_id=f"d-{request.task_id}", channel="email", attempt=activity.info().attempt)


def refuses_bad_addresses_after_a_sibling_completed(client: Client):
    """As refuses_bad_addresses, but a bad address is refused only once the parent has recorded a sibling's
    completion: fail_fast then finds one subtask completed however slowly the machine runs the others."""

    @activity.defn(name=activity_names.SEND)
    async def send(request: SendRequest) -> SendResult:
        if any(a.startswith("bad") for a in request.draft.to):
            parent = client.get_workflow_handle(activity.info().workflow_id.rsplit(".", 1)[0])
            async with asyncio.timeout(60):
                while EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED not in [
                        e.event_type async for e in parent.fetch_history_events()]:
                    await asyncio.sleep(0.05)
        return await refuses_bad_addresses(request)

    return send


async def children(engine, parent_id: str) -> list[Task]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(Task).where(Task.parent_id == parent_id).order_by(Task.subtask_index))
        return list(rows.scalars())


async def test_parallel_fail_fast_cancels_the_rest_and_fails_the_parent(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("ok@acme.example"), email("bad@acme.example"), email("boss@acme.example", "review")])
    async with worker_replacing(env, settings, sqlite_engine,
                                refuses_bad_addresses_after_a_sibling_completed(env.client)):
        # Nothing here waits on a timer: with time skipping on, a slow machine lets the review subtask's day-long
        # approval expire before the refusal arrives.
        with env.auto_time_skipping_disabled():
            outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "failed"
    assert outcome.error.startswith("subtasks failed: subtask 2 (Mail bad@acme.example) ended failed")
    statuses = {s["index"]: s["status"] for s in outcome.result["subtasks"]}
    assert statuses == {1: "completed", 2: "failed", 3: "cancelled"}
    rows = await eventually(lambda: children(sqlite_engine, parent.task_id),
                            lambda rs: [r.status for r in rs] == ["completed", "failed", "cancelled"])
    assert [r.subtask_index for r in rows] == [1, 2, 3] and rows[2].mode == "review"
    assert all(r.tenant_id == parent.tenant_id for r in rows)
    row = await task_row(sqlite_engine, parent.task_id)
    assert row.status == "failed" and row.progress == {"done": 1, "failed": 2, "total": 3}
    types = await event_types(sqlite_engine, parent.task_id)
    assert "TASK_SUBTASKS_PLANNED" in types and types[-1] == "TASK_EXECUTION_FAILED"


async def test_parallel_continue_runs_every_subtask_and_completes(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("bad@acme.example"), email("ok@acme.example"), email("also-ok@acme.example")],
                   failure_policy="continue")
    async with worker_replacing(env, settings, sqlite_engine, refuses_bad_addresses):
        outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "completed"
    assert (outcome.result["done"], outcome.result["failed"], outcome.result["total"]) == (2, 1, 3)
    assert outcome.result["subtasks"][0]["error"] == "send failed: mailbox does not exist"
    assert outcome.result["subtasks"][1]["result"]["sent"] is True
    row = await task_row(sqlite_engine, parent.task_id)
    assert row.progress == {"done": 2, "failed": 1, "total": 3}


async def test_sequential_fail_fast_never_starts_the_rest(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("ok@acme.example"), email("bad@acme.example"), email("later@acme.example")],
                   execution="sequential")
    async with worker_replacing(env, settings, sqlite_engine, refuses_bad_addresses):
        outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "failed"
    assert [s["status"] for s in outcome.result["subtasks"]] == ["completed", "failed", "not_started"]
    assert outcome.result["not_started"] == 1
    assert len(await children(sqlite_engine, parent.task_id)) == 2


async def test_sequential_continue_runs_them_in_order(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("bad@acme.example"), email("ok@acme.example")], execution="sequential",
                   failure_policy="continue")
    async with worker_replacing(env, settings, sqlite_engine, refuses_bad_addresses):
        outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "completed"
    rows = await children(sqlite_engine, parent.task_id)
    assert [r.status for r in rows] == ["failed", "completed"]
    assert rows[0].finished_at <= rows[1].started_at


async def test_cancelling_the_parent_cancels_its_children(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("a@acme.example", "review"), email("b@acme.example", "review")])
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, parent)
        await eventually(lambda: children(sqlite_engine, parent.task_id),
                         lambda rs: [r.status for r in rs] == ["awaiting_approval"] * 2)
        assert (await state(handle)).stage == "waiting_on_subtasks"
        ack = await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert ack.status == "cancelled"
    rows = await eventually(lambda: children(sqlite_engine, parent.task_id),
                            lambda rs: [r.status for r in rs] == ["cancelled"] * 2)
    assert all(r.parent_id == parent.task_id for r in rows)


async def test_pause_holds_a_sequence_before_its_next_subtask(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("a@acme.example", "review"), email("b@acme.example")], execution="sequential")
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, parent)
        rows = await eventually(lambda: children(sqlite_engine, parent.task_id),
                                lambda rs: [r.status for r in rs] == ["awaiting_approval"])
        ack = await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert (ack.status, ack.stage) == ("paused", "waiting_on_subtasks")
        child = env.client.get_workflow_handle(rows[0].workflow_id)
        await child.execute_update("approve", {"actor_id": "alice"}, result_type=DecisionAck)
        await eventually(lambda: event_types(sqlite_engine, parent.task_id),
                         lambda t: "TASK_SUBTASK_COMPLETED" in t)
        # Unpaused, the next subtask would start at once; give it a moment (time skipping's own sleep
        # here, with a child just finished, intermittently breaks the test server's connection).
        await asyncio.sleep(1)
        assert len(await children(sqlite_engine, parent.task_id)) == 1
        assert (await handle.query("state", result_type=DecisionAck)).status == "paused"
        await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert (await handle.result()).status == "completed"
    assert [r.status for r in await children(sqlite_engine, parent.task_id)] == ["completed", "completed"]


async def test_a_campaign_plans_one_email_subtask_per_recipient(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = task_input("autonomous", type="campaign", title="Renewal notice", subject_ref_id=None, decompose=True,
                        payload={"subject": "Your renewal, {{ name }}", "body": "Dear {{ name }}, {{ offer }}",
                                 "variables": {"offer": "10% off"}, "message_mode": "autonomous",
                                 "recipients": [{"to": "ada@acme.example", "variables": {"name": "Ada"}},
                                                {"to": "bob@acme.example", "variables": {"name": "Bob"}}]})
    async with build_worker(env.client, settings, sqlite_engine):
        outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "completed" and outcome.result["done"] == 2
    rows = await children(sqlite_engine, parent.task_id)
    assert [r.type for r in rows] == ["email", "email"]
    assert rows[1].draft["subject"] == "Your renewal, Bob" and rows[1].draft["body"] == "Dear Bob, 10% off"
    assert rows[0].title == "Renewal notice: ada@acme.example"


async def test_a_plan_nested_too_deep_fails_the_task(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    parent = group([email("a@acme.example")], depth=3)
    async with build_worker(env.client, settings, sqlite_engine):
        outcome = await (await start(env, settings, parent)).result()
    assert outcome.status == "failed" and "nest at most 3 levels" in outcome.error
