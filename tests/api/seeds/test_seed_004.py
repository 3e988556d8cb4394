"""Seed 004 (a tRPC agency task service): its api_call task with executionType, executionConfig and
scheduledFor, as a POST /tasks body, against the real dev server and worker, on every configured database."""

from datetime import datetime, timedelta, timezone

from tests.conftest import Stack
from tests.helpers import add_task_secret, get_task, until_status


def fetch_users(stack: Stack, **overrides) -> dict:
    """The seed's "Fetch user data" task."""
    return {"title": "Fetch user data", "taskType": "api_call", "executionType": "automatic",
            "assignedToBot": True, "tenantId": stack.tenant,
            "executionConfig": {"apiEndpoint": "http://127.0.0.1:9/users", "apiMethod": "GET",
                                "authType": "bearer", "bearerToken": "token-here"}} | overrides


async def test_api_call_as_written_says_what_to_send_instead(stack: Stack):
    response = await stack.http.post("/tasks", json=fetch_users(stack))
    assert response.status_code == 422 and "assignedToBot: not needed" in response.text
    body = fetch_users(stack)
    del body["assignedToBot"]
    response = await stack.http.post("/tasks", json=body)
    assert response.status_code == 422
    assert "payload.authType" in response.text and '"secret": "<name of a task secret>"' in response.text.replace(
        '\\"', '"')


async def test_api_call_with_a_secret_runs_when_scheduled_for(stack: Stack):
    add_task_secret(stack.settings, stack.tenant, "users_api", "token-here", hosts=["127.0.0.1"])
    scheduled_for = datetime.now(timezone.utc) + timedelta(days=1)
    body = fetch_users(stack, scheduledFor=scheduled_for.isoformat(), executionConfig={
        "apiEndpoint": "http://127.0.0.1:9/users", "apiMethod": "get", "auth": {"type": "bearer",
                                                                                "secret": "users_api"}})
    del body["assignedToBot"]
    response = await stack.http.post("/tasks", json=body)
    assert response.status_code == 201, response.text
    task = await until_status(stack, response.json()["id"], "scheduled")
    assert (task["type"], task["mode"], task["title"]) == ("http_request", "autonomous", "Fetch user data")
    assert datetime.fromisoformat(task["due_at"]) == scheduled_for
    assert (task["payload"]["url"], task["payload"]["method"]) == ("http://127.0.0.1:9/users", "GET")
    listed = await stack.http.get("/tasks", params={"tenant_id": stack.tenant, "type": "api_call"})
    assert [t["id"] for t in listed.json()["items"]] == [task["id"]]
    both = await stack.http.post("/tasks", json=body | {"dueAt": scheduled_for.isoformat()})
    assert both.status_code == 422 and "send one of them" in both.text
    cancelled = await stack.http.post(f"/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200
    assert (await get_task(stack, task["id"]))["status"] == "cancelled"


async def test_a_type_it_names_that_we_lack_lists_ours(stack: Stack):
    response = await stack.http.post("/tasks", json={
        "title": "Add new lead to GHL", "taskType": "ghl_action", "executionType": "automatic",
        "tenantId": stack.tenant, "executionConfig": {"ghlAction": "add_contact", "firstName": "John"}})
    assert response.status_code == 422
    assert "unknown task type 'ghl_action'" in response.text and "http_request" in response.text
