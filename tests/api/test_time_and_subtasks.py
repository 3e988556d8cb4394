"""Reschedule, pause, resume and subtasks through the HTTP API, against the real dev server
and worker, on every configured database."""

from datetime import datetime, timedelta, timezone

from tests.conftest import Stack
from tests.helpers import eventually, get_task, task_body, until_status


async def create(stack: Stack, **overrides) -> dict:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


def later(**delta: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(**delta)).isoformat()


async def event_types(stack: Stack, task_id: str) -> list[str]:
    return [e["type"] for e in (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]]


async def test_reschedule_moves_the_due_time_and_a_past_time_starts_now(stack: Stack):
    created = await create(stack, mode="autonomous", due_at=later(hours=1))
    await until_status(stack, created["id"], "scheduled")
    new_due = later(hours=5)
    response = await stack.http.post(f"/tasks/{created['id']}/reschedule",
                                     json={"due_at": new_due, "reason": "customer asked"},
                                     headers={"X-Actor-Id": "alice"})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": created["id"], "status": "scheduled", "stage": "waiting_until_due"}
    task = await eventually(lambda: get_task(stack, created["id"]),
                            lambda t: datetime.fromisoformat(t["due_at"]) == datetime.fromisoformat(new_due))
    assert task["status"] == "scheduled"
    response = await stack.http.post(f"/tasks/{created['id']}/reschedule", json={"due_at": later(seconds=-5)})
    assert response.status_code == 200, response.text
    await until_status(stack, created["id"], "completed")
    events = (await stack.http.get(f"/tasks/{created['id']}/events")).json()["items"]
    moved = [e for e in events if e["type"] == "TASK_RESCHEDULED"]
    assert len(moved) == 2 and moved[0]["actor_id"] == "alice" and moved[0]["data"]["reason"] == "customer asked"
    refused = await stack.http.post(f"/tasks/{created['id']}/reschedule", json={"due_at": later(hours=1)})
    assert refused.status_code == 409 and "completed" in refused.json()["detail"]


async def test_reschedule_refuses_what_it_cannot_take(stack: Stack):
    created = await create(stack)  # review: no due date, waits for approval
    await until_status(stack, created["id"], "awaiting_approval")
    refused = await stack.http.post(f"/tasks/{created['id']}/reschedule", json={"due_at": later(hours=1)})
    assert refused.status_code == 409
    assert "only a task still waiting for its due time can be rescheduled" in refused.json()["detail"]
    for body in ({"due_at": "next tuesday"}, {"due_at": "2026-02-30T10:00:00Z"}, {},
                 {"due_at": later(days=365 * 11)}):
        invalid = await stack.http.post(f"/tasks/{created['id']}/reschedule", json=body)
        assert invalid.status_code == 422, (body, invalid.text)
    missing = await stack.http.post("/tasks/00000000-0000-0000-0000-000000000000/reschedule",
                                    json={"due_at": later(hours=1)})
    assert missing.status_code == 404


async def test_pause_and_resume_a_scheduled_task(stack: Stack):
    created = await create(stack, mode="autonomous", due_at=later(hours=1))
    await until_status(stack, created["id"], "scheduled")
    paused = await stack.http.post(f"/tasks/{created['id']}/pause", json={"reason": "waiting on finance"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    again = await stack.http.post(f"/tasks/{created['id']}/pause")
    assert again.status_code == 409 and again.json()["detail"] == "task is already paused"
    # Moved to a time already past while paused: it still waits for resume.
    assert (await stack.http.post(f"/tasks/{created['id']}/reschedule",
                                  json={"due_at": later(seconds=-1)})).status_code == 200
    await until_status(stack, created["id"], "paused")
    resumed = await stack.http.post(f"/tasks/{created['id']}/resume", headers={"X-Actor-Id": "bob"})
    assert resumed.status_code == 200, resumed.text
    await until_status(stack, created["id"], "completed")
    types = await event_types(stack, created["id"])
    assert types.index("TASK_PAUSED") < types.index("TASK_RESUMED") < types.index("TASK_DRAFTED")
    refused = await stack.http.post(f"/tasks/{created['id']}/resume")
    assert refused.status_code == 409


async def test_pause_is_refused_while_awaiting_approval_and_a_paused_task_can_be_cancelled(stack: Stack):
    waiting = await create(stack)
    await until_status(stack, waiting["id"], "awaiting_approval")
    refused = await stack.http.post(f"/tasks/{waiting['id']}/pause")
    assert refused.status_code == 409 and "waiting for a decision" in refused.json()["detail"]
    not_paused = await stack.http.post(f"/tasks/{waiting['id']}/resume")
    assert not_paused.status_code == 409 and "not paused" in not_paused.json()["detail"]
    assert (await stack.http.post(f"/tasks/{waiting['id']}/pause", json={"reason": 1})).status_code == 422
    assert (await stack.http.post("/tasks/nope/pause")).status_code == 404

    scheduled = await create(stack, mode="autonomous", due_at=later(hours=1))
    await until_status(stack, scheduled["id"], "scheduled")
    assert (await stack.http.post(f"/tasks/{scheduled['id']}/pause")).status_code == 200
    cancelled = await stack.http.post(f"/tasks/{scheduled['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def email(to: str, **extra) -> dict:
    return {"type": "email", "mode": "autonomous", "title": f"Mail {to}",
            "payload": {"to": [to], "subject": "Welcome", "body": "Hello {{ name }}", "variables": {"name": to}}
            } | extra


async def test_a_group_runs_its_subtasks_and_shows_progress(stack: Stack):
    # An autonomous subtask needs a parent that allows it: an autonomous group.
    created = await create(stack, type="group", title="Onboard ACME", mode="autonomous", subject_ref_id=None,
                           payload={"execution": "sequential", "failure_policy": "continue", "subtasks": [
                               email("ada@acme.example"), email("bob@acme.example", mode="suggest")]})
    task = await until_status(stack, created["id"], "completed")
    assert task["progress"] == {"done": 2, "failed": 0, "total": 2}
    assert task["parent_id"] is None and task["result"]["total"] == 2
    listed = await stack.http.get(f"/tasks/{created['id']}/subtasks")
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 2 and body["progress"] == {"done": 2, "failed": 0, "total": 2}
    assert [(s["title"], s["mode"], s["status"], s["parent_id"], s["subtask_index"]) for s in body["items"]] == [
        ("Mail ada@acme.example", "autonomous", "completed", created["id"], 1),
        ("Mail bob@acme.example", "suggest", "completed", created["id"], 2)]
    child = await get_task(stack, body["items"][0]["id"])
    assert child["tenant_id"] == stack.tenant and child["result"]["sent"] is True
    types = await event_types(stack, created["id"])
    assert types.count("TASK_SUBTASK_COMPLETED") == 2 and "TASK_SUBTASKS_PLANNED" in types
    assert (await stack.http.get("/tasks/00000000-0000-0000-0000-000000000000/subtasks")).status_code == 404


async def test_cancelling_a_group_cancels_its_subtasks(stack: Stack):
    created = await create(stack, type="group", subject_ref_id=None, payload={
        "subtasks": [email("ada@acme.example", mode="review"), email("bob@acme.example", mode="review")]})
    await eventually(lambda: stack.http.get(f"/tasks/{created['id']}/subtasks"),
                     lambda r: [s["status"] for s in r.json()["items"]] == ["awaiting_approval"] * 2)
    paused = await stack.http.post(f"/tasks/{created['id']}/pause")
    assert paused.status_code == 409 and "subtasks are running" in paused.json()["detail"]
    cancelled = await stack.http.post(f"/tasks/{created['id']}/cancel", json={"reason": "customer left"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    listed = await eventually(lambda: stack.http.get(f"/tasks/{created['id']}/subtasks"),
                              lambda r: [s["status"] for s in r.json()["items"]] == ["cancelled"] * 2)
    assert listed.json()["progress"]["failed"] == 2


async def test_subtasks_that_cannot_run_are_refused_with_a_reason(stack: Stack):
    async def refused(payload: dict) -> list:
        response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, type="group",
                                                                   subject_ref_id=None, payload=payload))
        assert response.status_code == 422, response.text
        return response.json()["detail"]

    assert (await refused({"subtasks": []}))[0]["loc"] == ["body", "payload", "subtasks"]
    too_many = await refused({"subtasks": [email(f"u{i}@acme.example") for i in range(51)]})
    assert "at most 50" in too_many[0]["msg"]
    unknown = await refused({"subtasks": [{"type": "fax", "payload": {}}]})
    assert "unknown task type 'fax'" in unknown[0]["msg"]
    bad = await refused({"subtasks": [email("not-an-address")]})
    assert "payload of a email subtask is invalid: to.0" in bad[0]["msg"]
    assert await refused({"subtasks": [email("a@acme.example")], "execution": "sideways"})
    nested = {"type": "group", "payload": {"subtasks": [email("a@acme.example")]}}
    for _ in range(3):
        nested = {"type": "group", "payload": {"subtasks": [nested]}}
    assert "nest at most 3 levels" in str(await refused({"subtasks": [nested]}))
