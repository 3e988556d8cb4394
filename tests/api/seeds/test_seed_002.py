"""Seed 002 (a Next.js task table with execution types and an execute endpoint): its execution types as our
modes and its execute calls answered with ours, against the real dev server and worker, on every configured
database."""

import uuid

from tests.conftest import Stack
from tests.helpers import get_task, task_body


async def test_execution_types_are_modes(stack: Stack):
    for execution_type, mode in (("manual", "manual"), ("semi_automated", "review"),
                                 ("fully_automated", "autonomous")):
        body = task_body(tenant_id=stack.tenant, subject_ref_id=f"INV-{uuid.uuid4().hex[:6]}")
        del body["mode"]
        response = await stack.http.post("/tasks", json=body | {"execution_type": execution_type})
        assert response.status_code == 201, response.text
        assert (await get_task(stack, response.json()["id"]))["mode"] == mode
    both = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, execution_type="manual"))
    assert both.status_code == 422 and "send one of them" in both.text


async def test_its_execute_endpoint_answers_with_ours(stack: Stack):
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
    task_id = created.json()["id"]
    execute = await stack.http.post("http://testserver/api/tasks/execute", json={"taskId": task_id})
    assert execute.status_code == 404
    assert execute.json()["use"] == "POST /api/v1/tasks/{taskId}/run (or /retry for a failed task)"
    executable = await stack.http.get("http://testserver/api/tasks/execute")
    assert executable.status_code == 404
    use = executable.json()["use"].split(" ", 1)[1].removeprefix("/api/v1")
    listed = await stack.http.get(f"{use}&tenant_id={stack.tenant}")  # works as named
    assert listed.status_code == 200 and all(t["status"] in ("pending", "scheduled") for t in listed.json()["items"])
