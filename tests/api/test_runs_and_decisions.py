"""Failed attempts as events, retrying a failed task as a new run, manual
completion and the seed-style PATCH, through the HTTP API on the dev server."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy import update
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from followthrough.activities.delivery import DeliveryActivities
from followthrough.activities.drafting import DraftingActivities
from followthrough.activities.mirror import MirrorActivities
from followthrough.activities.transports import DeliveryContext, PermanentDeliveryError
from followthrough.api.main import create_app
from followthrough.domain.contracts import Draft, TaskInput
from followthrough.db.mirror import TASKS
from followthrough.infra.secrets import SecretStore
from followthrough.tasktypes import REGISTRY, get_type
from tests.conftest import Stack, make_settings
from tests.helpers import eventually, task_body, task_row
from followthrough.workflows.all import ALL_WORKFLOWS


class ScriptedEmail:
    """An email transport that fails as told: per (task, run), a list of outcomes."""

    channel = "email"

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.delivered: list[str] = []

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict:
        outcomes = self.script.get(draft.to[0], [])
        outcome = outcomes.pop(0) if outcomes else "ok"
        if outcome == "transient":
            raise ConnectionError("mail server unreachable")
        if outcome == "permanent":
            raise PermanentDeliveryError("mailbox does not exist")
        self.delivered.append(ctx.idempotency_key)
        return {"message_id": ctx.idempotency_key}


@pytest_asyncio.fixture
async def scripted(dev_env, engine, tmp_path: Path) -> AsyncIterator[tuple[Stack, ScriptedEmail]]:
    settings = make_settings(str(engine.url.render_as_string(hide_password=False)), tmp_path)
    transport = ScriptedEmail()
    async with httpx.AsyncClient() as outgoing:
        worker = Worker(dev_env.client, task_queue=settings.task_queue, workflows=ALL_WORKFLOWS, activities=[
            DraftingActivities(settings, engine).draft,
            DeliveryActivities(settings, engine, outgoing, SecretStore(), {"email": transport}).send,
            MirrorActivities(engine).record])
        app = create_app(settings, temporal=dev_env.client)
        async with worker, app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://testserver/api/v1") as http:
                yield Stack(settings, dev_env.client, engine, http), transport


async def _task(stack: Stack, task_id: str) -> dict:
    return (await stack.http.get(f"/tasks/{task_id}")).json()


async def _until(stack: Stack, task_id: str, status: str) -> dict:
    return await eventually(lambda: _task(stack, task_id), lambda t: t["status"] == status, timeout=30)


async def _events(stack: Stack, task_id: str) -> list[dict]:
    return (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]


async def test_each_failed_attempt_is_an_event_and_per_task_retry_overrides_apply(scripted):
    stack, transport = scripted
    address = "flaky@acme.example"
    transport.script[address] = ["transient", "transient"]
    body = task_body(tenant_id=stack.tenant, mode="autonomous",
                     retry={"max_attempts": 5, "initial_interval_seconds": 0.1, "backoff_coefficient": 1},
                     payload=task_body()["payload"] | {"customer_email": address})
    created = (await stack.http.post("/tasks", json=body)).json()
    task = await _until(stack, created["id"], "completed")
    assert task["attempts"] == 3
    failed = [e for e in await _events(stack, created["id"]) if e["type"] == "TASK_ATTEMPT_FAILED"]
    assert [(e["data"]["attempt"], e["data"]["will_retry"], e["data"]["error_type"]) for e in failed] == [
        (1, True, "ConnectionError"), (2, True, "ConnectionError")]


async def test_retry_starts_a_new_run_and_keeps_the_failed_one(scripted):
    stack, transport = scripted
    address = "gone@acme.example"
    transport.script[address] = ["permanent"]
    body = task_body(tenant_id=stack.tenant, mode="autonomous", payload=task_body()["payload"] | {
        "customer_email": address})
    created = (await stack.http.post("/tasks", json=body)).json()
    failed = await _until(stack, created["id"], "failed")
    assert "mailbox does not exist" in failed["error"]
    assert (await stack.http.post(f"/tasks/{created['id']}/approve", json={})).status_code == 409

    retried = await stack.http.post(f"/tasks/{created['id']}/retry", headers={"X-Actor-Id": "ops"})
    assert retried.status_code == 202, retried.text
    task = await _until(stack, created["id"], "completed")
    assert task["run_number"] == 2 and task["error"] is None
    assert [(r["number"], r["status"]) for r in task["runs"]] == [(1, "failed"), (2, "completed")]
    assert "mailbox does not exist" in task["runs"][0]["error"]
    types = [e["type"] for e in await _events(stack, created["id"])]
    assert "TASK_RETRIED" in types and types.count("TASK_EXECUTION_FAILED") == 1
    assert types[-1] == "TASK_EXECUTION_COMPLETED"
    again = await stack.http.post(f"/tasks/{created['id']}/retry")
    assert again.status_code == 409 and "completed" in again.json()["detail"]


async def test_a_new_run_is_charged_to_the_tenants_rate(scripted):
    stack, transport = scripted
    address = "gone-for-good@acme.example"
    transport.script[address] = ["permanent"]
    body = task_body(tenant_id=stack.tenant, mode="autonomous", payload=task_body()["payload"] | {
        "customer_email": address})
    created = (await stack.http.post("/tasks", json=body)).json()
    await _until(stack, created["id"], "failed")
    # From now on one task a minute: the new run takes the token, so the next creation waits.
    stack.settings.rate_limit_per_minute = 1
    retried = await stack.http.post(f"/tasks/{created['id']}/retry")
    assert retried.status_code == 202, retried.text
    refused = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
    assert refused.status_code == 429 and refused.json()["limit"] == "rate", refused.text


async def test_manual_task_is_completed_by_a_person_with_a_result(scripted):
    stack, _ = scripted
    created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="manual"))).json()
    waiting = await _until(stack, created["id"], "awaiting_approval")
    assert waiting["stage"] == "awaiting_person"
    done = await stack.http.post(f"/tasks/{created['id']}/complete",
                                 json={"comment": "called them", "result": {"promised_payment": "2026-12-01"}},
                                 headers={"X-Actor-Id": "dana"})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    task = await _until(stack, created["id"], "completed")
    assert task["result"]["result"] == {"promised_payment": "2026-12-01"} and task["result"]["done_by"] == "dana"


async def test_complete_is_refused_for_a_task_that_is_not_manual(scripted):
    stack, _ = scripted
    created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="review"))).json()
    await _until(stack, created["id"], "awaiting_approval")
    refused = await stack.http.post(f"/tasks/{created['id']}/complete", json={})
    assert refused.status_code == 409 and "manual" in refused.json()["detail"]


async def test_seed_style_patch_maps_onto_cancel_and_complete(scripted):
    stack, _ = scripted
    manual = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="manual"))).json()
    await _until(stack, manual["id"], "awaiting_approval")
    patched = await stack.http.patch(f"/tasks/{manual['id']}", json={
        "newStatus": "COMPLETED", "actorType": "USER", "actorId": "erin"})
    assert patched.status_code == 200 and patched.json()["status"] == "completed"
    terminal = await stack.http.patch(f"/tasks/{manual['id']}", json={"newStatus": "CANCELLED"})
    assert terminal.status_code == 409 and "terminal" in terminal.json()["detail"]

    later = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant,
                                                            due_at="2030-01-01T00:00:00Z"))).json()
    await _until(stack, later["id"], "scheduled")
    not_by_hand = await stack.http.patch(f"/tasks/{later['id']}", json={"newStatus": "IN_PROGRESS"})
    assert not_by_hand.status_code == 409
    no_time = await stack.http.patch(f"/tasks/{later['id']}", json={"newStatus": "SCHEDULED"})
    assert no_time.status_code == 422 and no_time.json()["detail"][0]["loc"] == ["body", "scheduledAt"]
    cancelled = await stack.http.patch(f"/tasks/{later['id']}", json={"newStatus": "cancelled", "reason": "paid"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await stack.http.patch("/tasks/nope", json={"newStatus": "CANCELLED"})).status_code == 404
    assert (await stack.http.patch(f"/tasks/{later['id']}", json={})).status_code == 422


async def test_a_new_run_is_held_to_todays_mode_policy(scripted, monkeypatch):
    stack, transport = scripted
    address = "gone-again@acme.example"
    transport.script[address] = ["permanent"]
    body = task_body(tenant_id=stack.tenant, mode="autonomous", retry={"max_attempts": 3}, payload=task_body()[
        "payload"] | {"customer_email": address})
    created = (await stack.http.post("/tasks", json=body)).json()
    await _until(stack, created["id"], "failed")
    # Since the first run the operator allows this tenant no more than review: the new run asks a person.
    stack.settings.mode_limits = {stack.tenant: {"*": "review"}}
    # And the type now allows fewer attempts and shorter waits than the task asked for.
    kind = get_type("invoice_follow_up")
    monkeypatch.setitem(REGISTRY, kind.name, replace(kind, retry=replace(kind.retry, max_attempts=2,
                                                                          maximum_interval_seconds=7)))
    retried = await stack.http.post(f"/tasks/{created['id']}/retry")
    assert retried.status_code == 202, retried.text
    task = await _until(stack, created["id"], "awaiting_approval")
    assert task["run_number"] == 2 and task["mode"] == "review"
    second = await _latest_input(stack, task["workflow_id"])
    assert (second.mode, second.send_retry.max_attempts, second.send_retry.maximum_interval_seconds) == (
        "review", 2, 7)
    await stack.http.post(f"/tasks/{created['id']}/cancel")


async def _latest_input(stack: Stack, workflow_id: str) -> TaskInput:
    """The input the task's latest run was started with, from its history."""
    async for event in stack.client.get_workflow_handle(workflow_id).fetch_history_events():
        [task] = await stack.client.data_converter.decode(
            event.workflow_execution_started_event_attributes.input.payloads, [TaskInput])
        return task
    raise AssertionError(f"{workflow_id} has no history")


async def _forget_in_temporal(stack: Stack, task_id: str) -> None:
    """Delete the task's run from Temporal, as the namespace's retention does once a closed run is old enough."""
    row = await task_row(stack.engine, task_id)
    handle = stack.client.get_workflow_handle(row.workflow_id)
    run_id = (await handle.describe()).run_id
    await stack.client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
        namespace=stack.client.namespace, workflow_execution=WorkflowExecution(workflow_id=row.workflow_id,
                                                                                run_id=run_id)))

    async def gone() -> bool:
        try:
            await handle.describe()
        except RPCError as err:
            return err.status == RPCStatusCode.NOT_FOUND
        return False

    await eventually(gone, bool, timeout=30)


async def test_a_task_whose_history_is_gone_is_retried_from_the_mirror(scripted):
    stack, transport = scripted
    address = "retention@acme.example"
    transport.script[address] = ["permanent"]
    body = task_body(tenant_id=stack.tenant, mode="autonomous", title="after retention",
                     approval={"approvers": ["dana"], "required": 1}, sla={"remind_after_seconds": 600},
                     retry={"max_attempts": 2, "initial_interval_seconds": 0.1, "backoff_coefficient": 1},
                     payload=task_body()["payload"] | {"customer_email": address})
    created = (await stack.http.post("/tasks", json=body)).json()
    await _until(stack, created["id"], "failed")
    await _forget_in_temporal(stack, created["id"])
    for decision in ("approve", "cancel"):  # decisions on it say how it ended, from the mirror
        refused = await stack.http.post(f"/tasks/{created['id']}/{decision}", json={})
        assert refused.status_code == 409 and "failed" in refused.json()["detail"], refused.text

    retried = await stack.http.post(f"/tasks/{created['id']}/retry", headers={"X-Actor-Id": "ops"})
    assert retried.status_code == 202, retried.text
    task = await _until(stack, created["id"], "completed")
    assert task["run_number"] == 2 and [(r["number"], r["status"]) for r in task["runs"]] == [
        (1, "failed"), (2, "completed")]
    # The new run had the first run's whole input, which only the mirror still holds.
    second = await _latest_input(stack, task["workflow_id"])
    assert (second.task_id, second.tenant_id, second.title, second.payload["customer_email"]) == (
        created["id"], stack.tenant, "after retention", address)
    assert second.approvers == ["dana"] and second.sla.remind_after_seconds == 600
    assert second.send_retry.max_attempts == 2 and second.run_number == 2 and second.created_by == "anonymous"
    assert transport.delivered == [f"{created['id']}:send"]


async def test_a_task_the_mirror_has_no_input_for_is_a_409_once_its_history_is_gone(scripted):
    stack, transport = scripted
    address = "older@acme.example"
    transport.script[address] = ["permanent"]
    body = task_body(tenant_id=stack.tenant, mode="autonomous", payload=task_body()["payload"] | {
        "customer_email": address})
    created = (await stack.http.post("/tasks", json=body)).json()
    await _until(stack, created["id"], "failed")
    # A row written before the mirror kept a run's input: only the history had it, and it is gone.
    async with stack.engine.begin() as conn:
        await conn.execute(update(TASKS).where(TASKS.c.id == created["id"]).values(run_input=None))
    await _forget_in_temporal(stack, created["id"])

    refused = await stack.http.post(f"/tasks/{created['id']}/retry")
    assert refused.status_code == 409, refused.text
    assert "no longer in Temporal" in refused.json()["detail"]
    assert (await _task(stack, created["id"]))["status"] == "failed"


async def test_a_retry_waits_for_the_failed_run_to_close(scripted):
    """The mirror shows a run's end a moment before Temporal closes it: a retry in that moment waits for the close
    and starts the new run, instead of answering that one has already started."""
    stack, _ = scripted
    created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="review"))).json()
    await _until(stack, created["id"], "awaiting_approval")
    # The run as it stands just after recording its failure: ended in the mirror, still open in Temporal.
    async with stack.engine.begin() as conn:
        await conn.execute(update(TASKS).where(TASKS.c.id == created["id"]).values(status="failed", error="boom"))
    handle = stack.client.get_workflow_handle(created["workflow_id"])

    async def close_soon() -> None:
        await asyncio.sleep(1)
        await handle.cancel()

    closing = asyncio.create_task(close_soon())
    retried = await stack.http.post(f"/tasks/{created['id']}/retry")
    await closing
    assert retried.status_code == 202, retried.text
    task = await _until(stack, created["id"], "awaiting_approval")
    assert task["run_number"] == 2
