"""Decisions that reach a task before its workflow has run at all.

Temporal hands a run's first workflow task the start together with every update and signal sent while no
worker had polled yet, and the SDK applies those before ``run`` begins. These tests start tasks with no
worker on their queue, send the decisions, wait until the server holds them, and only then start a worker,
so its first activation carries both. On the real dev server, whose updates wait for a worker as a
cluster's do; each test shares one worker start among all its tasks.
"""

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from followthrough.api.main import create_app
from followthrough.domain.contracts import (
    ApprovalDecision,
    CancelRequest,
    CarriedState,
    Completion,
    DecisionAck,
    PauseRequest,
    Rejection,
    RescheduleRequest,
    TaskOutcome,
)
from tests.conftest import make_settings
from tests.helpers import event_types, eventually, task_body, task_input, task_row
from followthrough.worker import build_worker

# A failed first workflow task is retried for ever: without a bound a regression would hang the test.
BOUND = 60


async def admitted(client: Client, workflow_id: str, update_id: str) -> bool:
    """Whether the server holds the update (admitted, not yet delivered to a worker)."""
    request = PollWorkflowExecutionUpdateRequest(
        namespace=client.namespace, identity=client.identity,
        update_ref=UpdateRef(workflow_execution=WorkflowExecution(workflow_id=workflow_id), update_id=update_id),
        wait_policy=WaitPolicy(lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.
                               UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED))
    try:
        await client.workflow_service.poll_workflow_execution_update(request, timeout=timedelta(seconds=2))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _state(handle: WorkflowHandle) -> str:
    return (await handle.query("state", result_type=DecisionAck)).status


async def test_every_decision_before_the_first_workflow_task_is_applied_or_refused(dev_env: WorkflowEnvironment,
                                                                                 settings, sqlite_engine):
    client = dev_env.client
    due = datetime.now(timezone.utc) + timedelta(days=1)
    ann = {"actor_id": "ann"}
    decisions = {
        "cancel": CancelRequest(**ann, reason="changed my mind"),
        "approve": ApprovalDecision(**ann),
        "reject": Rejection(**ann, reason="no"),
        "complete": Completion(**ann),
        "reschedule": RescheduleRequest(due_at=due + timedelta(hours=1), **ann),
        "pause": PauseRequest(**ann),
        "resume": PauseRequest(**ann),
    }
    handles: dict[str, WorkflowHandle] = {}
    for name in [*decisions, "approve-signal", "reject-signal"]:
        task = task_input("review", due_at=due)
        handles[name] = await client.start_workflow(
            "TaskWorkflow", task, id=f"task-{task.task_id}", task_queue=settings.task_queue, result_type=TaskOutcome)
    sent = {name: asyncio.create_task(handles[name].start_update(
        name, arg, id=f"early-{name}", wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=DecisionAck))
        for name, arg in decisions.items()}
    await handles["approve-signal"].signal("approve", ApprovalDecision(**ann))
    await handles["reject-signal"].signal("reject", Rejection(**ann, reason="no"))
    for name in decisions:
        await eventually(lambda name=name: admitted(client, handles[name].id, f"early-{name}"), bool)

    async with build_worker(client, settings, sqlite_engine), asyncio.timeout(BOUND):
        cancel: WorkflowUpdateHandle = await sent.pop("cancel")
        assert (await cancel.result()).status == "cancelled"
        assert (await handles["cancel"].result()).status == "cancelled"
        for name, update in sent.items():
            try:  # a refusal is the update's outcome: its handle's result raises it
                await (await update).result()
            except WorkflowUpdateFailedError as err:
                assert isinstance(err.cause, ApplicationError) and err.cause.type == "InvalidTransition", name
            else:
                raise AssertionError(f"{name} before the run started was accepted")
        # Every other task ran on as if nothing had come: scheduled, and still taking decisions.
        for name, handle in handles.items():
            if name != "cancel":
                assert await eventually(lambda h=handle: _state(h), lambda s: s == "scheduled") == "scheduled"
                ack = await handle.execute_update("cancel", CancelRequest(**ann), result_type=DecisionAck)
                assert ack.status == "cancelled", name
    cancelled = handles["cancel"].id.removeprefix("task-")
    types = await event_types(sqlite_engine, cancelled)
    assert types[-1] == "TASK_CANCELLED" and "TASK_DRAFTED" not in types
    row = await task_row(sqlite_engine, cancelled)
    assert row is not None and row.status == "cancelled"


class _NamesUpdates(Interceptor):
    """Gives every update the API sends an id the test knows, to see when the server holds it."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}  # workflow id -> update id

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        ids = self.ids

        class Outbound(OutboundInterceptor):
            async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle:
                input = dataclasses.replace(input, update_id=input.update_id or str(uuid.uuid4()))
                ids[input.id] = input.update_id  # type: ignore[assignment]
                return await super().start_workflow_update(input)

        return Outbound(next)

    async def sent(self, workflow_id: str) -> bool:
        return workflow_id in self.ids


async def test_a_cancel_sent_through_the_api_before_the_first_workflow_task(dev_env: WorkflowEnvironment,
                                                                          sqlite_engine: AsyncEngine,
                                                                          tmp_path: Path):
    names = _NamesUpdates()
    client = Client(**(dev_env.client.config() | {"interceptors": [names]}))
    settings = make_settings(str(sqlite_engine.url), tmp_path)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    app = create_app(settings, temporal=client)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver/api/v1") as http:
        created = []
        for _ in range(2):  # no worker yet: the tasks exist, their runs have not begun
            response = await http.post("/tasks", json=task_body(tenant_id=tenant))
            assert response.status_code == 201, response.text
            created.append(response.json())
        patched = asyncio.create_task(http.patch(f"/tasks/{created[0]['id']}", json={"newStatus": "CANCELLED"}))
        posted = asyncio.create_task(http.post(f"/tasks/{created[1]['id']}/cancel", json={"reason": "not needed"}))
        for task in created:
            await eventually(lambda: names.sent(task["workflow_id"]), bool)
            await eventually(lambda: admitted(client, task["workflow_id"], names.ids[task["workflow_id"]]), bool)
        async with build_worker(client, settings, sqlite_engine), asyncio.timeout(BOUND):
            for answer in [await patched, await posted]:
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "cancelled"
            for task in created:
                row = await eventually(lambda: task_row(sqlite_engine, task["id"]),
                                       lambda r: r is not None and r.status == "cancelled")
                assert row.status == "cancelled"
    assert (await event_types(sqlite_engine, created[1]["id"]))[-1] == "TASK_CANCELLED"


async def test_a_reschedule_that_reaches_a_continued_run_before_it_starts_is_kept(dev_env: WorkflowEnvironment,
                                                                                settings, sqlite_engine):
    """A run that continued as new while waiting for its due time may get a reschedule in its first workflow
    task, with its carried state: the reschedule wins over the carried due time."""
    client = dev_env.client
    later = datetime.now(timezone.utc) + timedelta(days=2)
    task = task_input("review", due_at=later - timedelta(days=1), carried=CarriedState(
        seq=3, status="scheduled", stage="waiting_until_due", due_at=later, status_before_pause="scheduled"))
    handle = await client.start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                         task_queue=settings.task_queue, result_type=TaskOutcome)
    sent = asyncio.create_task(handle.execute_update(
        "reschedule", RescheduleRequest(due_at=datetime.now(timezone.utc) - timedelta(seconds=1), actor_id="ann"),
        id="early-reschedule", result_type=DecisionAck))
    await eventually(lambda: admitted(client, handle.id, "early-reschedule"), bool)
    async with build_worker(client, settings, sqlite_engine), asyncio.timeout(BOUND):
        assert (await sent).status == "scheduled"
        assert await eventually(lambda: _state(handle), lambda s: s == "awaiting_approval", timeout=20)
        await handle.execute_update("cancel", CancelRequest(actor_id="ann"), result_type=DecisionAck)
