"""Seed 001 (agent tasks of a Supabase engine, its workers API under /api/agents/tasks): its list filters on
our list, and its own paths answered with the call to make instead, against the real dev server and worker, on
every configured database."""

import uuid
from datetime import datetime, timedelta, timezone

from tests.conftest import Stack
from tests.helpers import invoice_payload, until_status


async def agent_task(stack: Stack, agent: str, type_: str = "invoice_follow_up") -> str:
    due = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    payload = invoice_payload() if type_ == "invoice_follow_up" else {
        "message": "Check the mission plan", "email": {"to": ["climate@zora.example"]}}
    response = await stack.http.post("/tasks", json={
        "type": type_, "mode": "autonomous", "owner_type": "agent", "owner_id": agent, "due_at": due,
        "subject_ref_id": f"M-{uuid.uuid4().hex[:6]}", "payload": payload, "tenant_id": stack.tenant})
    assert response.status_code == 201, response.text
    await until_status(stack, response.json()["id"], "scheduled")
    return response.json()["id"]


async def ids(stack: Stack, **query: str) -> list[str]:
    response = await stack.http.get("/tasks", params={"tenant_id": stack.tenant, "order": "oldest"} | query)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()["items"]]


async def test_agent_id_and_task_type_filter_our_list(stack: Stack):
    lumina = await agent_task(stack, "LUMINA")
    lumina_reminder = await agent_task(stack, "LUMINA", "reminder")
    connor = await agent_task(stack, "CONNOR")
    assert await ids(stack, agent_id="LUMINA") == [lumina, lumina_reminder]
    assert await ids(stack, task_type="reminder") == [lumina_reminder]
    assert await ids(stack, agent_id="LUMINA", task_type="invoice_follow_up") == [lumina]
    assert await ids(stack, agent_id="CONNOR", status="pending") == []
    assert await ids(stack, agent_id="CONNOR", status="scheduled") == [connor]
    # limit and offset page as the seed's do.
    assert await ids(stack, limit="2", offset="1") == [lumina_reminder, connor]
    # The seed's statuses are ours; one it lacks is refused, naming ours.
    refused = await stack.http.get("/tasks", params={"status": "queued"})
    assert refused.status_code == 422 and "'scheduled'" in refused.text


async def test_its_paths_answer_with_the_call_to_make(stack: Stack):
    task_id = await agent_task(stack, "EIVOR")
    listed = await stack.http.get("http://testserver/api/agents/tasks?status=pending&limit=10&agent_id=EIVOR")
    assert listed.status_code == 404
    use = listed.json()["use"]
    assert use == "GET /api/v1/tasks?status=pending&limit=10&owner_id=EIVOR", use
    # ... which works as written.
    path = use.split(" ", 1)[1].removeprefix("/api/v1") + f"&tenant_id={stack.tenant}&status=scheduled"
    assert [t["id"] for t in (await stack.http.get(path)).json()["items"]] == [task_id]
    detail = await stack.http.get(f"http://testserver/api/agents/tasks/{task_id}")
    assert detail.status_code == 404 and detail.json()["use"] == f"GET /api/v1/tasks/{task_id}"
    types = await stack.http.get("http://testserver/api/agents/tasks/types")
    assert types.status_code == 404 and types.json()["use"] == "GET /api/v1/task-types"
    run = await stack.http.post(f"http://testserver/api/agents/tasks/{task_id}/run")
    assert run.status_code == 404 and f"POST /api/v1/tasks/{task_id}/run" in run.json()["use"]
    assert f"/tasks/{task_id}/retry" in run.json()["detail"]


async def test_run_now_starts_a_task_waiting_for_its_due_time(stack: Stack):
    task_id = await agent_task(stack, "LUMINA", "reminder")  # due in a day
    run = await stack.http.post(f"/tasks/{task_id}/run", headers={"X-Actor-Id": "LUMINA"})
    assert run.status_code == 200, run.text
    await until_status(stack, task_id, "completed")  # sent now, not in a day
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    assert [e["data"].get("run_now") for e in events if e["type"] == "TASK_RESCHEDULED"] == [True]
    # The seed also runs a task again by this call; ours says a finished one is retried instead.
    again = await stack.http.post(f"/tasks/{task_id}/run")
    assert again.status_code == 409, again.text
