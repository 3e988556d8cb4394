"""A follow-up cadence and an inbound event through the HTTP API with a real worker, on every configured database.
On the time-skipping server: three reminders with two three-day waits run to the end when nothing happens, and
an ``invoice.paid`` posted during the second wait ends the cadence cancelled, with the event in its events and no
third reminder sent, even once its time has long passed. On the real dev server the same, the first wait ended
by run-now."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Stack, running_stack
from tests.helpers import add_task_secret, eventually, get_task, until_status
from tests.receivers import Receiver


@pytest_asyncio.fixture
async def hook() -> AsyncIterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest_asyncio.fixture
async def dev_stack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, engine, tmp_path) as running:
        add_task_secret(running.settings, running.tenant, "dunning_hook", "dunning-secret")
        yield running


@pytest_asyncio.fixture
async def stack(time_skipping_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(time_skipping_env, engine, tmp_path) as running:
        add_task_secret(running.settings, running.tenant, "dunning_hook", "dunning-secret")
        yield running


def reminder(hook: Receiver, title: str, wait: dict | None = None) -> dict[str, Any]:
    step = {"type": "reminder", "title": title, "mode": "autonomous",
            "payload": {"message": title, "webhook": {"url": f"{hook.url}/remind", "secret": "dunning_hook"}}}
    return step | ({"wait": wait} if wait else {})


def dunning(stack: Stack, hook: Receiver, invoice: str) -> dict[str, Any]:
    return {"type": "cadence", "tenant_id": stack.tenant, "title": f"Dunning {invoice}", "mode": "autonomous",
            "subject_ref_type": "INVOICE", "subject_ref_id": invoice, "stop_on": ["invoice.paid"],
            "payload": {"steps": [reminder(hook, "First reminder"),
                                  reminder(hook, "Second reminder", {"for": "P3D"}),
                                  reminder(hook, "Last reminder", {"for": "P3D"})]}}


async def in_wait_before(stack: Stack, task_id: str, step: int) -> dict[str, Any]:
    return await eventually(lambda: get_task(stack, task_id),
                            lambda t: t["stage"] == "waiting" and (t["progress"] or {}).get("step") == step,
                            timeout=30)


def sent(hook: Receiver) -> list[str]:
    return [request.json()["data"]["message"] for request in hook.requests]


async def create(stack: Stack, hook: Receiver) -> tuple[str, str]:
    invoice = f"INV-{uuid.uuid4().hex[:8]}"
    created = await stack.http.post("/tasks", json=dunning(stack, hook, invoice))
    assert created.status_code == 201, created.text
    return created.json()["id"], invoice


async def test_a_cadence_of_three_steps_and_two_waits_runs_to_its_end(
        stack: Stack, hook: Receiver, time_skipping_env: WorkflowEnvironment):
    task_id, _ = await create(stack, hook)
    await in_wait_before(stack, task_id, 2)
    assert sent(hook) == ["First reminder"]
    await time_skipping_env.sleep(timedelta(days=3, minutes=1))
    await in_wait_before(stack, task_id, 3)
    assert sent(hook) == ["First reminder", "Second reminder"]
    await time_skipping_env.sleep(timedelta(days=3, minutes=1))
    task = await until_status(stack, task_id, "completed", timeout=30)
    assert task["progress"]["done"] == 3 and sent(hook) == ["First reminder", "Second reminder", "Last reminder"]


async def test_invoice_paid_during_the_second_wait_cancels_the_cadence(
        stack: Stack, hook: Receiver, time_skipping_env: WorkflowEnvironment):
    task_id, invoice = await create(stack, hook)
    await in_wait_before(stack, task_id, 2)
    await time_skipping_env.sleep(timedelta(days=3, minutes=1))
    await in_wait_before(stack, task_id, 3)  # the second wait
    await stopped_by_invoice_paid(stack, task_id, invoice)
    await time_skipping_env.sleep(timedelta(days=7))  # long past the third step's time: it never comes
    assert sent(hook) == ["First reminder", "Second reminder"]
    assert (await get_task(stack, task_id))["status"] == "cancelled"


async def test_on_the_dev_server_invoice_paid_in_the_second_wait_cancels_the_cadence(dev_stack: Stack,
                                                                                     hook: Receiver):
    task_id, invoice = await create(dev_stack, hook)
    await in_wait_before(dev_stack, task_id, 2)
    ran = await dev_stack.http.post(f"/tasks/{task_id}/run", headers={"X-Actor-Id": "dana"})  # ends the first wait
    assert ran.status_code == 200, ran.text
    await in_wait_before(dev_stack, task_id, 3)
    assert sent(hook) == ["First reminder", "Second reminder"]
    await stopped_by_invoice_paid(dev_stack, task_id, invoice)
    assert sent(hook) == ["First reminder", "Second reminder"]


async def stopped_by_invoice_paid(stack: Stack, task_id: str, invoice: str) -> None:
    posted = await stack.http.post("/events", json={
        "id": f"evt-{uuid.uuid4().hex}", "type": "invoice.paid", "subject_ref_type": "INVOICE",
        "subject_ref_id": invoice, "data": {"amount": 1200}, "tenant_id": stack.tenant})
    assert posted.status_code == 201, posted.text
    assert [(t["task_id"], t["outcome"]) for t in posted.json()["tasks"]] == [(task_id, "stopped")]

    task = await until_status(stack, task_id, "cancelled", timeout=30)
    assert task["progress"]["done"] == 2
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    cancelled = [e for e in events if e["type"] == "TASK_CANCELLED"]
    assert len(cancelled) == 1 and cancelled[0]["data"]["stopped_by_event"]["type"] == "invoice.paid"
    assert not any(e["type"] == "TASK_CADENCE_STEP_STARTED" and e["data"]["index"] == 3 for e in events)
