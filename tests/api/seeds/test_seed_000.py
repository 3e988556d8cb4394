"""Seed 000 (a NestJS task engine under /api/v1/tasks): its POST, GET filters and PATCH status changes as
written, against the real dev server and worker, on every configured database."""

import uuid
from datetime import datetime, timedelta, timezone

from tests.conftest import Stack
from tests.helpers import eventually, get_task, invoice_payload, until_status


def later(**delta: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def seed_body(stack: Stack, **overrides) -> dict:
    """The seed's POST /tasks body, in a tenant of the test's own."""
    return {
        "type": "INVOICE_FOLLOW_UP", "mode": "ASSISTED", "priority": "HIGH", "ownerType": "AI",
        "ownerId": "ACTION_AI", "subjectRefType": "INVOICE", "subjectRefId": f"INV-{uuid.uuid4().hex[:6]}",
        "dueAt": "2026-01-05T12:00:00Z", "source": "OVERDUE_INVOICE_DETECTOR",
        "payload": invoice_payload(customer_email="billing@acme.example"), "tenantId": stack.tenant,
    } | overrides


async def created(stack: Stack, **overrides) -> str:
    response = await stack.http.post("/tasks", json=seed_body(stack, **overrides))
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def listed(stack: Stack, query: str) -> set[str]:
    response = await stack.http.get(f"/tasks?{query}&tenantId={stack.tenant}")
    assert response.status_code == 200, response.text
    return {t["id"] for t in response.json()["items"]}


async def test_create_task_as_written(stack: Stack):
    response = await stack.http.post("/tasks", json=seed_body(stack))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"
    task = await get_task(stack, response.json()["id"])
    assert (task["type"], task["mode"], task["priority"], task["owner_type"], task["owner_id"], task["source"]) == (
        "invoice_follow_up", "assisted", "high", "AI", "ACTION_AI", "OVERDUE_INVOICE_DETECTOR")
    assert datetime.fromisoformat(task["due_at"]) == datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
    # The seed's idempotency guardrail: the same type, subject and source within the window is refused.
    again = await stack.http.post("/tasks", json=seed_body(stack, subjectRefId=task["subject_ref_id"]))
    assert again.status_code == 409 and again.json()["task_id"] == task["id"]


async def test_list_filters_as_written(stack: Stack):
    soon = await created(stack, dueAt=later(days=2))
    far = await created(stack, dueAt=later(days=30), ownerId="SOMEONE_ELSE")
    reminder = await created(stack, type="reminder", mode="AUTONOMOUS", dueAt=later(days=3),
                             payload={"message": "Call ACME", "email": {"to": ["ops@acme.example"]}})
    for task_id in (soon, far, reminder):
        await until_status(stack, task_id, "scheduled")
    assert await listed(stack, "status=SCHEDULED") == {soon, far, reminder}
    assert await listed(stack, "status=PENDING") == set()  # every one of them waits for its due time
    assert await listed(stack, "ownerId=ACTION_AI") == {soon, reminder}
    assert await listed(stack, f"before={later(days=10)}") == {soon, reminder}
    assert await listed(stack, "status=SCHEDULED&type=INVOICE_FOLLOW_UP") == {soon, far}
    assert await listed(stack, "ownerId=ACTION_AI&before=2026-01-10T00:00:00Z") == set()


async def test_patch_scheduled_with_scheduled_at_reschedules(stack: Stack):
    task_id = await created(stack, dueAt=later(hours=1))
    await until_status(stack, task_id, "scheduled")
    new_due = later(hours=6)
    response = await stack.http.patch(f"/tasks/{task_id}", json={
        "newStatus": "SCHEDULED", "scheduledAt": new_due, "actorType": "SYSTEM", "actorId": "FOLLOW_UP_SCHEDULER"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "scheduled"
    task = await eventually(lambda: get_task(stack, task_id),
                            lambda t: datetime.fromisoformat(t["due_at"]) == datetime.fromisoformat(new_due))
    assert task["status"] == "scheduled"
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    [moved] = [e for e in events if e["type"] == "TASK_RESCHEDULED"]
    assert moved["actor_id"] == "FOLLOW_UP_SCHEDULER"
    # Without scheduledAt there is no time to move it to: the answer says what to send.
    bare = await stack.http.patch(f"/tasks/{task_id}", json={
        "newStatus": "SCHEDULED", "actorType": "SYSTEM", "actorId": "FOLLOW_UP_SCHEDULER"})
    assert bare.status_code == 422 and bare.json()["detail"][0]["loc"] == ["body", "scheduledAt"]
    assert f"/tasks/{task_id}/run" in bare.json()["detail"][0]["msg"]
    # The seed's own time is past by now: the task starts at once.
    past = await stack.http.patch(f"/tasks/{task_id}", json={
        "newStatus": "SCHEDULED", "scheduledAt": "2026-01-01T12:00:00Z", "actorType": "SYSTEM",
        "actorId": "FOLLOW_UP_SCHEDULER"})
    assert past.status_code == 200, past.text
    await eventually(lambda: get_task(stack, task_id), lambda t: t["status"] not in ("pending", "scheduled"))


async def test_patch_refuses_what_the_engine_does_itself(stack: Stack):
    task_id = await created(stack, mode="REVIEW", dueAt=None)
    await until_status(stack, task_id, "awaiting_approval")
    moved = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "IN_PROGRESS", "actorType": "SYSTEM"})
    assert moved.status_code == 409 and "moves a task to 'in_progress' itself" in moved.json()["detail"]
    too_late = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "SCHEDULED",
                                                                 "scheduledAt": later(hours=1)})
    assert too_late.status_code == 409, too_late.text
    misplaced = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "CANCELLED",
                                                                  "scheduledAt": later(hours=1)})
    assert misplaced.status_code == 422 and misplaced.json()["detail"][0]["loc"] == ["body", "scheduledAt"]
    cancelled = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "CANCELLED", "actorType": "AI",
                                                                  "actorId": "ACTION_AI"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    locked = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "CANCELLED"})
    assert locked.status_code == 409 and "terminal state" in locked.json()["detail"]


async def test_patch_failed_with_error_marks_a_manual_task_failed(stack: Stack):
    task_id = await created(stack, mode="MANUAL", dueAt=None)
    await until_status(stack, task_id, "awaiting_approval")  # waiting for a person to do it
    bare = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "FAILED", "actorType": "AI"})
    assert bare.status_code == 422 and "error" in bare.text, bare.text
    failed = await stack.http.patch(f"/tasks/{task_id}", json={
        "newStatus": "FAILED", "actorType": "AI", "actorId": "ACTION_AI_FOLLOW_UP_WORKER",
        "error": "SMTP server unreachable"})
    assert failed.status_code == 200 and failed.json()["status"] == "failed", failed.text
    task = await until_status(stack, task_id, "failed")
    assert task["error"] == "SMTP server unreachable"
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    [event] = [e for e in events if e["type"] == "TASK_EXECUTION_FAILED"]
    assert event["actor_id"] == "ACTION_AI_FOLLOW_UP_WORKER", event
    again = await stack.http.patch(f"/tasks/{task_id}", json={"newStatus": "FAILED", "error": "again"})
    assert again.status_code == 409, again.text
    # A task the engine runs itself is not a person's to report failed.
    running = await created(stack, mode="REVIEW", dueAt=None)
    await until_status(stack, running, "awaiting_approval")
    refused = await stack.http.patch(f"/tasks/{running}", json={"newStatus": "FAILED", "error": "x"})
    assert refused.status_code == 409, refused.text
