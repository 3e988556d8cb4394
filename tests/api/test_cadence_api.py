"""Cadences through the HTTP API against the real dev server and worker, on every configured database: one
task whose steps run in order after their waits, with its per-step progress, a reschedule that ends a wait, a
cancel in the second wait that starts no third step, strict validation, and a definition that holds one."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest_asyncio

from tests.conftest import Stack, running_stack
from tests.helpers import add_task_secret, eventually, get_task, until_status
from tests.receivers import Receiver


@pytest_asyncio.fixture
async def hook():
    with Receiver() as receiver:
        yield receiver


@pytest_asyncio.fixture
async def stack(dev_env, engine, tmp_path):
    async with running_stack(dev_env, engine, tmp_path) as running:
        add_task_secret(running.settings, running.tenant, "dunning_hook", "dunning-secret")
        yield running


def reminder(hook: Receiver, title: str, wait: dict | None = None, **fields: Any) -> dict:
    step = {"type": "reminder", "title": title, "mode": "autonomous",
            "payload": {"message": f"{title} for {{{{ invoice }}}}", "variables": {"invoice": "INV-123"},
                        "webhook": {"url": f"{hook.url}/remind", "secret": "dunning_hook"}}} | fields
    return step | ({"wait": wait} if wait is not None else {})


def dunning(stack: Stack, hook: Receiver, **overrides: Any) -> dict:
    return {"type": "cadence", "tenant_id": stack.tenant, "title": "Dunning INV-123", "subject_ref_type": "INVOICE",
            "subject_ref_id": f"INV-{uuid.uuid4().hex[:6]}", "mode": "autonomous",
            "payload": {"steps": [
                reminder(hook, "First reminder"),
                reminder(hook, "Second reminder", {"for": "P3D"}),
                reminder(hook, "Call the customer", {"for": "P3D", "business_hours": {
                    "timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "09:00", "end": "17:00"}}, mode="manual", owner_id="dana")]}} | overrides


async def events(stack: Stack, task_id: str) -> list[dict]:
    return (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]


async def subtasks(stack: Stack, task_id: str) -> dict:
    response = await stack.http.get(f"/tasks/{task_id}/subtasks")
    assert response.status_code == 200, response.text
    return response.json()


async def waiting_before(stack: Stack, task_id: str, step: int) -> dict:
    return await eventually(lambda: get_task(stack, task_id), lambda t: t["stage"] == "waiting" and
                            (t["progress"] or {}).get("step") == step, timeout=30)


async def test_a_cadence_runs_step_by_step_and_a_cancel_in_its_second_wait_stops_it(stack: Stack, hook: Receiver):
    created = await stack.http.post("/tasks", json=dunning(stack, hook))
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    # The first step ran; the cadence waits three days before the second.
    task = await waiting_before(stack, task_id, 2)
    assert task["status"] == "scheduled" and task["type"] == "cadence"
    assert task["progress"] == {"done": 1, "failed": 0, "total": 3, "step": 2}
    due = datetime.fromisoformat(task["due_at"])
    assert timedelta(days=3) - timedelta(minutes=1) < due - datetime.now(timezone.utc) <= timedelta(days=3)
    listed = await subtasks(stack, task_id)
    assert [(s["subtask_index"], s["title"], s["status"]) for s in listed["items"]] == [
        (1, "First reminder", "completed")]
    assert listed["progress"] == task["progress"]
    assert len(hook.requests) == 1 and hook.requests[0].json()["data"]["message"] == "First reminder for INV-123"

    # Rescheduling the wait to a moment past ends it: the second step runs, then the second wait begins.
    moved = await stack.http.post(f"/tasks/{task_id}/reschedule",
                                  json={"due_at": (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat(),
                                        "reason": "customer asked for it now"})
    assert moved.status_code == 200, moved.text
    task = await waiting_before(stack, task_id, 3)
    assert task["progress"] == {"done": 2, "failed": 0, "total": 3, "step": 3}
    assert [s["status"] for s in (await subtasks(stack, task_id))["items"]] == ["completed", "completed"]
    assert len(hook.requests) == 2

    # Paid: cancelled during the second wait, and the third step never starts.
    cancelled = await stack.http.post(f"/tasks/{task_id}/cancel", json={"reason": "invoice paid"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    task = await until_status(stack, task_id, "cancelled")
    timeline = await eventually(lambda: events(stack, task_id), lambda es: es[-1]["type"] == "TASK_CANCELLED")
    cadence = [(e["type"], e["data"]["index"]) for e in timeline if e["type"].startswith("TASK_CADENCE")]
    assert cadence == [("TASK_CADENCE_STEP_STARTED", 1), ("TASK_CADENCE_STEP_ENDED", 1),
                       ("TASK_CADENCE_WAITING", 2), ("TASK_CADENCE_STEP_STARTED", 2),
                       ("TASK_CADENCE_STEP_ENDED", 2), ("TASK_CADENCE_WAITING", 3)]
    waiting = [e for e in timeline if e["type"] == "TASK_CADENCE_WAITING"]
    assert waiting[1]["data"]["wait"]["business_hours"]["timezone"] == "Europe/Berlin"
    position = {(e["type"], e["data"].get("index")): n for n, e in enumerate(timeline)}
    assert position[("TASK_CADENCE_WAITING", 2)] < position[("TASK_RESCHEDULED", None)] < \
        position[("TASK_CADENCE_STEP_STARTED", 2)]
    await asyncio.sleep(1)
    assert len((await subtasks(stack, task_id))["items"]) == 2 and len(hook.requests) == 2
    again = await stack.http.post(f"/tasks/{task_id}/reschedule",
                                  json={"due_at": datetime.now(timezone.utc).isoformat()})
    assert again.status_code == 409


async def test_pause_and_resume_during_a_wait(stack: Stack, hook: Receiver):
    body = dunning(stack, hook)
    body["payload"]["steps"] = body["payload"]["steps"][:2]
    task_id = (await stack.http.post("/tasks", json=body)).json()["id"]
    await waiting_before(stack, task_id, 2)
    paused = await stack.http.post(f"/tasks/{task_id}/pause", json={"reason": "customer on holiday"})
    assert paused.status_code == 200, paused.text
    assert (paused.json()["status"], paused.json()["stage"]) == ("paused", "waiting")
    assert (await stack.http.post(f"/tasks/{task_id}/reschedule", json={
        "due_at": (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()})).status_code == 200
    await asyncio.sleep(1)
    assert (await get_task(stack, task_id))["status"] == "paused" and len(hook.requests) == 1
    resumed = await stack.http.post(f"/tasks/{task_id}/resume")
    assert resumed.status_code == 200, resumed.text
    task = await until_status(stack, task_id, "completed", timeout=30)
    assert task["progress"]["done"] == 2 and task["result"]["total"] == 2
    assert len(hook.requests) == 2


async def test_a_cadence_is_checked_strictly(stack: Stack, hook: Receiver):
    async def refused(body: dict) -> list[dict]:
        response = await stack.http.post("/tasks", json=body)
        assert response.status_code == 422, response.text
        return response.json()["detail"]

    body = dunning(stack, hook)
    body["payload"]["steps"][1]["wait"] = {"for": "P3D", "jitter": 60}
    detail = await refused(body)
    assert detail[0]["loc"][:5] == ["body", "payload", "steps", 1, "wait"] and "jitter" in detail[0]["loc"]
    body["payload"]["steps"][1]["wait"] = {"for": "P3D", "until": "2026-12-24T09:00:00Z"}
    assert "not both" in (await refused(body))[0]["msg"]
    body["payload"]["steps"][1]["wait"] = {"until": "2026-12-24T09:00:00"}
    assert (await refused(body))[0]["loc"][-1] == "until"
    body["payload"]["steps"][1]["wait"] = {"for": "P3D", "business_hours": {"timezone": "Europe/Bonn"}}
    assert "unknown time zone" in (await refused(body))[0]["msg"]
    body = dunning(stack, hook)
    body["payload"]["execution"] = "parallel"
    assert (await refused(body))[0]["loc"] == ["body", "payload", "execution"]
    assert (await refused(dunning(stack, hook, payload={"steps": []})))[0]["loc"] == ["body", "payload", "steps"]
    # A step looser than its cadence is refused where it is written.
    body = dunning(stack, hook, mode="review")
    assert (await refused(body))[0]["loc"] == ["body", "payload", "steps", 0, "mode"]
    # A step's URL is checked by the outbound guard when the cadence is created.
    body = dunning(stack, hook)
    body["payload"]["steps"][2]["payload"]["webhook"]["url"] = "http://169.254.169.254/latest/meta-data"
    detail = (await refused(body))[0]
    assert [str(p) for p in detail["loc"]] == ["body", "payload", "steps", "2", "payload", "webhook", "url"]
    # A group's subtasks take no wait.
    grouped = {"type": "group", "tenant_id": stack.tenant, "payload": {
        "execution": "sequential", "subtasks": [reminder(hook, "Later", {"for": 60})]}}
    assert "cadence" in (await refused(grouped))[0]["msg"]


async def test_a_definition_holds_a_cadence(stack: Stack, hook: Receiver):
    definition = await stack.http.post("/definitions", json={
        "tenant_id": stack.tenant, "name": f"dunning-{uuid.uuid4().hex[:6]}", "type": "cadence",
        "mode": "autonomous", "title": "Dunning {{ invoice }}",
        "payload": {"steps": [
            {"type": "reminder", "title": "Remind {{ customer }}", "payload": {
                "message": "Please pay {{ invoice }}", "webhook": {"url": f"{hook.url}/remind",
                                                                   "secret": "dunning_hook"}}},
            {"type": "reminder", "title": "Remind {{ customer }} again", "wait": {"for": "{{ pause }}"},
             "payload": {"message": "Still unpaid: {{ invoice }}",
                         "webhook": {"url": f"{hook.url}/remind", "secret": "dunning_hook"}}}]},
        "variables": {"pause": "PT2S"},
        "defaults": {"subject_ref_type": "INVOICE", "subject_ref_id": "{{ invoice }}"}})
    assert definition.status_code == 201, definition.text
    assert definition.json()["variables_required"] == ["customer", "invoice"]
    run = await stack.http.post(f"/definitions/{definition.json()['id']}/run", json={
        "variables": {"customer": "ACME", "invoice": f"INV-{uuid.uuid4().hex[:6]}"}})
    assert run.status_code == 201, run.text
    task = await until_status(stack, run.json()["id"], "completed", timeout=30)
    assert task["type"] == "cadence" and task["trigger"] == "definition"
    assert task["payload"]["steps"][1]["wait"]["for"] == "PT2S"
    items = (await subtasks(stack, task["id"]))["items"]
    assert [s["title"] for s in items] == ["Remind ACME", "Remind ACME again"]
    assert [r.json()["data"]["message"] for r in hook.requests] == [
        f"Please pay {task['subject_ref_id']}", f"Still unpaid: {task['subject_ref_id']}"]
