"""A task that waits long (before its draft, paused and resumed or rescheduled again and again; or for a
decision on its draft, signalled again and again) continues as new when Temporal suggests it, so its history
never reaches Temporal's limit (which terminates the run).

On its own dev server whose suggestion comes after HISTORY_SUGGESTS events rather than the default 4,096
(Temporal's dynamic config ``limit.historyCount.suggestContinueAsNew``): the real suggestion path, crossed in
a few dozen updates instead of thousands. The extra server costs a few seconds; it is the only way to show
the handover the SDK itself asks for, and what the task does after it, end to end.
"""

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from followthrough.domain import search_attributes
from followthrough.infra.binaries import find_binary
from followthrough.domain.contracts import ApprovalDecision, DecisionAck, TaskInput
from followthrough.db.database import session_factory
from followthrough.services.reconcile import _truth as reconcile_truth, reconcile
from followthrough.db.tables import Task, TaskEvent
from tests.conftest import TEST_CONVERTER, Stack, running_stack
from tests.helpers import eventually, get_task, outbox_rows, task_body, until_status
from tests.llm_server import FakeLlm, llm  # noqa: F401 - llm is a fixture
from tests.receivers import Receiver
from followthrough.worker import SANDBOX
from followthrough.workflows.all import ALL_WORKFLOWS

HISTORY_SUGGESTS = 100


@pytest_asyncio.fixture(scope="module")
async def short_history_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"), data_converter=TEST_CONVERTER,
        search_attributes=search_attributes.ALL,
        dev_server_extra_args=["--dynamic-config-value",
                               f"limit.historyCount.suggestContinueAsNew={HISTORY_SUGGESTS}"])
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def stack(short_history_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(short_history_env, engine, tmp_path) as running:
        yield running


async def _run_id(stack: Stack, workflow_id: str) -> str:
    return (await stack.client.get_workflow_handle(workflow_id).describe()).run_id


async def _started_input(stack: Stack, workflow_id: str, run_id: str) -> TaskInput:
    handle = stack.client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        [task] = await stack.client.data_converter.decode(payloads, [TaskInput])
        return task
    raise AssertionError("no start event")


async def _post(stack: Stack, path: str, **body: object) -> dict:
    response = await stack.http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_long_wait_continues_as_new_and_the_task_still_decides(stack: Stack):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    response = await stack.http.post("/tasks", json=task_body(
        tenant_id=stack.tenant, mode="review", due_at=(datetime.now(timezone.utc) + timedelta(days=3)).isoformat()))
    assert response.status_code == 201, response.text
    task_id, workflow_id = response.json()["id"], response.json()["workflow_id"]
    await until_status(stack, task_id, "scheduled")
    first_run = await _run_id(stack, workflow_id)

    # Pause, resume and reschedule until the run has handed over twice; each cycle adds some twenty events.
    runs, cycles = [first_run], 0
    while len(runs) < 3:
        assert cycles < HISTORY_SUGGESTS // 5, f"no continue-as-new after {cycles} pause/resume/reschedule cycles"
        await _post(stack, f"/tasks/{task_id}/pause", reason=f"hold {cycles}")
        await _post(stack, f"/tasks/{task_id}/resume")
        await _post(stack, f"/tasks/{task_id}/reschedule",
                    due_at=(datetime.now(timezone.utc) + timedelta(days=3, hours=cycles)).isoformat())
        cycles += 1
        if (current := await _run_id(stack, workflow_id)) != runs[-1]:
            runs.append(current)
    # Once more, ending paused and moved: a run continued from this state keeps it.
    await _post(stack, f"/tasks/{task_id}/pause", reason="quarter close")
    moved = datetime.now(timezone.utc) + timedelta(days=5)
    await _post(stack, f"/tasks/{task_id}/reschedule", due_at=moved.isoformat())

    handle = stack.client.get_workflow_handle(workflow_id)
    described = await handle.describe()
    assert described.status is WorkflowExecutionStatus.RUNNING
    old = await stack.client.get_workflow_handle(workflow_id, run_id=first_run).describe()
    assert old.status is WorkflowExecutionStatus.CONTINUED_AS_NEW
    # A run visibility still lists though it has handed over reads as the task's current run, not a failure.
    truth = await reconcile_truth(stack.client, old)
    assert (truth.run_id, truth.status, truth.closed) == (runs[-1], "paused", False)
    # Each run's history stays near the suggestion, however many cycles the task has been through, and a
    # handover replays on today's code like any other history.
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER,
                        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX))
    for run_id in runs[:-1]:
        history = await stack.client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        assert len(history.events) < HISTORY_SUGGESTS + 30
        assert history.events[-1].event_type is EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        await replayer.replay_workflow(history)
    # The new run's input (what the Web UI shows) is the task's, with what it carried over.
    started = await _started_input(stack, workflow_id, runs[-1])
    assert started.task_id == task_id and started.carried is not None and started.carried.continued == 2
    assert started.carried.stage == "waiting_until_due" and started.carried.seq > cycles
    assert (await handle.query("state", result_type=DecisionAck)).status == "paused"
    assert described.typed_search_attributes.get(search_attributes.TASK_STATUS) == "paused"

    # The mirror keeps one row, its events numbered on across the runs, and the API shows the task.
    task = await get_task(stack, task_id)
    assert task["status"] == "paused" and datetime.fromisoformat(task["due_at"]) == moved
    await _post(stack, f"/tasks/{task_id}/resume")
    await _post(stack, f"/tasks/{task_id}/reschedule", due_at=(datetime.now(timezone.utc)
                                                             - timedelta(seconds=1)).isoformat())
    await until_status(stack, task_id, "awaiting_approval")
    approved = await stack.http.post(f"/tasks/{task_id}/approve", json={}, headers={"X-Actor-Id": "alice"})
    assert approved.status_code == 200, approved.text
    task = await until_status(stack, task_id, "completed")
    assert task["result"]["sent"] is True
    assert len(await outbox_rows(stack.engine, task_id)) == 1
    assert [(r["number"], r["status"]) for r in task["runs"]] == [(1, "completed")]
    assert task["runs"][0]["workflow_run_id"] == (await _run_id(stack, workflow_id))

    async with session_factory(stack.engine)() as session:
        assert await session.scalar(select(func.count()).select_from(Task)
                                    .where(Task.workflow_id == workflow_id)) == 1
        events = (await session.execute(select(TaskEvent.seq, TaskEvent.id, TaskEvent.type)
                                        .where(TaskEvent.task_id == task_id).order_by(TaskEvent.seq))).all()
    assert [e.seq for e in events] == list(range(len(events)))
    assert {e.id.split(":")[0] for e in events if e.seq} >= set(runs)
    types = [e.type for e in events]
    assert types.count("TASK_PAUSED") == cycles + 1 and types.count("TASK_RESUMED") == cycles + 1
    assert types.count("TASK_RESCHEDULED") == cycles + 2
    assert types.count("TASK_APPROVED") == 1 and types[-1] == "TASK_EXECUTION_COMPLETED"

    # Temporal and the mirror agree: the continued runs are the one task.
    report = await reconcile(stack.client, stack.engine, task_queue=stack.settings.task_queue, since=since,
                             tenant=stack.tenant, settle_seconds=0.5)
    assert report.drift == [] and report.unverified == [] and report.workflows == 1
    await eventually(lambda: handle.describe(), lambda d: d.status is WorkflowExecutionStatus.COMPLETED)


async def test_a_draft_waiting_for_approvals_continues_as_new_and_keeps_them(stack: Stack):
    response = await stack.http.post("/tasks", json=task_body(
        tenant_id=stack.tenant, mode="review", approval={"approvers": ["alice", "bob"], "required": 2}))
    assert response.status_code == 201, response.text
    task_id, workflow_id = response.json()["id"], response.json()["workflow_id"]
    await until_status(stack, task_id, "awaiting_approval")
    first_run = await _run_id(stack, workflow_id)
    request = (await stack.http.get(f"/tasks/{task_id}/approval")).json()
    first = await stack.http.post(f"/tasks/{task_id}/approve", json={"comment": "fine by me"},
                                  headers={"X-Actor-Id": "alice"})
    assert first.status_code == 200 and first.json()["status"] == "awaiting_approval", first.text

    # Decisions signalled by someone who may not decide (the Web UI's signal, say) are dropped, yet each one
    # adds to the history: enough of them and the run hands over.
    handle = stack.client.get_workflow_handle(workflow_id)
    signals = 0
    while await _run_id(stack, workflow_id) == first_run:
        assert signals < HISTORY_SUGGESTS, f"no continue-as-new after {signals} signals"
        await handle.signal("approve", ApprovalDecision(actor_id="mallory"))
        signals += 1
    history = await stack.client.get_workflow_handle(workflow_id, run_id=first_run).fetch_history()
    await Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER,
                   workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX)).replay_workflow(history)
    started = await _started_input(stack, workflow_id, await _run_id(stack, workflow_id))
    assert started.carried is not None and started.carried.draft is not None
    assert [a.actor_id for a in started.carried.approvals] == ["alice"]
    assert (await handle.query("state", result_type=DecisionAck)).status == "awaiting_approval"

    # The new run knows alice's approval and the open request: her second one is refused, bob's decides it.
    again = await stack.http.post(f"/tasks/{task_id}/approve", json={}, headers={"X-Actor-Id": "alice"})
    assert again.status_code == 409 and "already approved" in again.json()["detail"]
    second = await stack.http.post(f"/tasks/{task_id}/approve", json={"approvalId": request["id"]},
                                   headers={"X-Actor-Id": "bob"})
    assert second.status_code == 200, second.text
    task = await until_status(stack, task_id, "completed")
    assert task["result"]["sent"] is True and len(await outbox_rows(stack.engine, task_id)) == 1
    approval = await eventually(lambda: stack.http.get(f"/tasks/{task_id}/approval"),
                                lambda r: r.json()["status"] == "approved")
    assert approval.json()["id"] == request["id"]
    assert [d["actor_id"] for d in approval.json()["decisions"]] == ["alice", "bob"]
    async with session_factory(stack.engine)() as session:
        types = list((await session.execute(select(TaskEvent.type).where(TaskEvent.task_id == task_id)
                                            .order_by(TaskEvent.seq))).scalars())
    assert types.count("TASK_APPROVAL_REQUESTED") == 1 and types.count("TASK_APPROVED") == 1
    assert types[-1] == "TASK_EXECUTION_COMPLETED"


@pytest_asyncio.fixture
async def agent_stack(short_history_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                      llm: FakeLlm) -> AsyncIterator[Stack]:
    async with running_stack(short_history_env, engine, tmp_path, llm_base_url=llm.url, llm_model="fake-gpt-1",
                             llm_api_key_secret="llm_key", llm_timeout_seconds=10) as running:
        yield running


async def _agent(stack: Stack, payload: dict, **fields: object) -> tuple[str, str]:
    response = await stack.http.post("/tasks", json={"type": "agent", "tenant_id": stack.tenant, "title": "INV-1",
                                                     "payload": payload} | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["workflow_id"]


async def _signal_until_handover(stack: Stack, workflow_id: str) -> str:
    """Signal decisions nobody may take (each dropped, each in the history) until the run hands over."""
    first_run, handle, signals = await _run_id(stack, workflow_id), stack.client.get_workflow_handle(workflow_id), 0
    while (current := await _run_id(stack, workflow_id)) == first_run:
        assert signals < HISTORY_SUGGESTS, f"no continue-as-new after {signals} signals"
        await handle.signal("approve", ApprovalDecision(actor_id="mallory"))
        signals += 1
    history = await stack.client.get_workflow_handle(workflow_id, run_id=first_run).fetch_history()
    assert history.events[-1].event_type is EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    await Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER,
                   workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX)).replay_workflow(history)
    return current


async def _types(stack: Stack, task_id: str) -> list[str]:
    async with session_factory(stack.engine)() as session:
        return list((await session.execute(select(TaskEvent.type).where(TaskEvent.task_id == task_id)
                                           .order_by(TaskEvent.seq))).scalars())


async def test_an_agent_waiting_for_a_risky_calls_decision_continues_as_new_mid_turn(agent_stack: Stack, llm: FakeLlm):
    stack = agent_stack
    with Receiver() as receiver:
        receiver.answer(200, '{"status": "paid"}')
        receiver.answer(201, '{"note": "n-1"}')
        llm.call_tools(("http_request", {"url": f"{receiver.url}/invoices/INV-1"}),
                       ("http_request", {"method": "POST", "url": f"{receiver.url}/notes", "json": {"t": "paid"}}),
                       ("http_request", {"url": f"{receiver.url}/invoices/INV-1/history"}))
        receiver.answer(200, '{"history": []}')
        llm.answer("Paid, noted.")
        task_id, workflow_id = await _agent(stack, {"prompt": "Is INV-1 paid? Note it.",
                                                    "allowed_tools": ["http_request"]},
                                            approval={"approvers": ["alice"]})
        await until_status(stack, task_id, "awaiting_approval")
        request = (await stack.http.get(f"/tasks/{task_id}/approval")).json()

        current = await _signal_until_handover(stack, workflow_id)
        started = await _started_input(stack, workflow_id, current)
        assert started.carried is not None and started.carried.agent is not None
        assert (started.carried.agent.turn, started.carried.agent.index) == (1, 2)
        assert started.carried.approval_id == request["id"]

        # The open request still decides the call; the loop goes on with the turn's third call, then answers.
        approved = await stack.http.post(f"/tasks/{task_id}/approve", json={"approvalId": request["id"]},
                                         headers={"X-Actor-Id": "alice"})
        assert approved.status_code == 200, approved.text
        task = await until_status(stack, task_id, "completed")
        result = task["result"]
        assert (result["ended_by"], result["answer"], result["turns"], result["tool_calls"]) == (
            "answer", "Paid, noted.", 2, 3)
        assert [m["role"] for m in result["transcript"]] == ["user", "assistant", "tool", "tool", "tool", "assistant"]
        # Nothing ran twice: one model call per turn, each request to the receiver once.
        assert len(llm.requests) == 2
        assert [(r.method, r.path) for r in receiver.requests] == [
            ("GET", "/invoices/INV-1"), ("POST", "/notes"), ("GET", "/invoices/INV-1/history")]
    types = await _types(stack, task_id)
    assert types.count("TASK_APPROVAL_REQUESTED") == 1 and types.count("TASK_DRAFTED") == 1
    assert types.count("TASK_AGENT_TURN") == 2 and types.count("TASK_AGENT_TOOL_CALLED") == 3
    assert types[-1] == "TASK_EXECUTION_COMPLETED"


async def test_an_agent_paused_between_turns_continues_as_new_and_goes_on(agent_stack: Stack, llm: FakeLlm):
    stack = agent_stack
    with Receiver() as receiver:
        receiver.answer(200, '{"status": "paid"}', delay=2.0)
        llm.call_tools(("http_request", {"url": f"{receiver.url}/invoices/INV-1"}), content="Looking it up.")
        llm.answer("INV-1 is paid.")
        task_id, workflow_id = await _agent(stack, {"prompt": "Is INV-1 paid?", "allowed_tools": ["http_request"]})
        # Paused while the turn's call runs: the loop holds before its next turn.
        await eventually(lambda: _count(receiver), lambda n: n == 1)
        await _post(stack, f"/tasks/{task_id}/pause", reason="month end")
        await eventually(lambda: _types(stack, task_id), lambda t: "TASK_AGENT_TOOL_CALLED" in t)

        current = await _signal_until_handover(stack, workflow_id)
        started = await _started_input(stack, workflow_id, current)
        assert started.carried is not None and started.carried.agent is not None
        assert (started.carried.agent.turn, started.carried.agent.calls) == (2, None)
        assert started.carried.paused is not None and started.carried.paused.reason == "month end"
        assert (await stack.client.get_workflow_handle(workflow_id).query(
            "state", result_type=DecisionAck)).status == "paused"

        await _post(stack, f"/tasks/{task_id}/resume")
        task = await until_status(stack, task_id, "completed")
        assert (task["result"]["answer"], task["result"]["turns"]) == ("INV-1 is paid.", 2)
        assert len(llm.requests) == 2 and len(receiver.requests) == 1
        assert [m["role"] for m in llm.messages(1)] == ["user", "assistant", "tool"]


async def _count(receiver: Receiver) -> int:
    return len(receiver.requests)
