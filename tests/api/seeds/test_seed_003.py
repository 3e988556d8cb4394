"""Seed 003 (a FastAPI service whose "tasks" are prompt templates run on demand): its template tasks are our
task definitions, so its list filters (tags, is_scheduled, page) work on GET /definitions, and its calls on
/api/v1/tasks that mean a definition answer with the definition's call; against the real dev server and worker,
on every configured database."""

import uuid

from tests.conftest import Stack


async def definition(stack: Stack, tags: list[str], cron: str | None = None, type_: str = "reminder") -> str:
    response = await stack.http.post("/definitions", json={
        "tenant_id": stack.tenant, "name": f"check-{uuid.uuid4().hex[:6]}", "type": type_,
        "mode": "autonomous", "tags": tags, "cron": cron,
        "variables": {"environment": "staging", "service": "api-gateway"} if cron else {},
        "payload": {"message": "Check {{ environment }} deployment for {{ service }}",
                    "email": {"to": ["ops@example.com"]}}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def names(stack: Stack, query: str) -> list[str]:
    response = await stack.http.get(f"/definitions?{query}&tenant_id={stack.tenant}")
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["items"]]


async def test_definition_filters_as_written(stack: Stack):
    nightly = await definition(stack, ["ops", "deploy"], cron="0 3 * * *")
    ops = await definition(stack, ["ops"])
    bare = await definition(stack, [])
    newest_first = [bare, ops, nightly]
    assert await names(stack, "tags=&is_scheduled=&page=1") == newest_first  # the seed's call: no filter
    assert await names(stack, "tags=ops") == [ops, nightly]
    assert await names(stack, "tags=ops,deploy") == [nightly]
    assert await names(stack, "tags=ops&tags=deploy") == [nightly]
    assert await names(stack, "is_scheduled=true") == [nightly]
    assert await names(stack, "is_scheduled=false&tags=ops") == [ops]
    assert await names(stack, "page=1&limit=2") == [bare, ops]
    assert await names(stack, "page=2&limit=2") == [nightly]
    assert await names(stack, "page=3&limit=2") == []
    second = (await stack.http.get(f"/definitions?page=2&limit=2&tenant_id={stack.tenant}")).json()
    assert (second["offset"], second["next_offset"], second["total"]) == (2, None, 3)
    refused = await stack.http.get(f"/definitions?is_scheduled=maybe&tenant_id={stack.tenant}")
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "scheduled"]
    assert (await stack.http.delete(f"/definitions/{nightly}")).status_code == 204  # and its schedule


async def test_its_calls_on_tasks_answer_with_the_definition_calls(stack: Stack):
    # Its list on /api/v1/tasks: the filters it names are the definitions' ones.
    listed = await stack.http.get("/tasks?tags=&is_scheduled=&page=1")
    assert listed.status_code == 422
    problems = {p["loc"][1]: p["msg"] for p in listed.json()["detail"]}
    assert set(problems) == {"tags", "is_scheduled"}
    assert all("GET /api/v1/definitions" in msg for msg in problems.values())
    # Its create: a template with {{variables}} is a definition.
    created = await stack.http.post("/tasks", json={
        "name": "Check Deployment Status", "prompt_template": "Check {{environment}} deployment for {{service}}",
        "allowed_tools": ["ssh", "curl", "bash"], "sdk_options": {"model": "claude-3-5-sonnet", "max_turns": 10}})
    assert created.status_code == 422 and "POST /api/v1/definitions" in created.text
    ident = await definition(stack, ["ops"])
    execute = await stack.http.post(f"/tasks/{ident}/execute",
                                    json={"variables": {"environment": "production", "service": "api-gateway"}})
    assert execute.status_code == 404 and execute.json()["use"].startswith(f"POST /api/v1/definitions/{ident}/run")
    runs = await stack.http.get(f"/tasks/{ident}/executions?page=1")
    assert runs.status_code == 404 and runs.json()["use"] == f"GET /api/v1/definitions/{ident}/runs"
    run = await stack.http.post(f"/definitions/{ident}/run",
                                json={"variables": {"environment": "production", "service": "api-gateway"}})
    assert run.status_code == 201, run.text
    execution = await stack.http.get(f"/task-executions/{run.json()['id']}")
    assert execution.status_code == 404 and execution.json()["use"] == f"GET /api/v1/tasks/{run.json()['id']}"
    page = await stack.http.get(f"/definitions/{ident}/runs?page=1")
    assert [t["id"] for t in page.json()["items"]] == [run.json()["id"]]
    # Its update of a template task is a definition's PATCH.
    update = await stack.http.patch(f"/tasks/{run.json()['id']}", json={"name": "Check", "schedule_cron": "0 * * * *"})
    assert update.status_code == 422 and "PATCH /api/v1/definitions/{id}" in update.text
    deleted = await stack.http.delete(f"/tasks/{run.json()['id']}")
    assert deleted.status_code == 405 and f"/tasks/{run.json()['id']}/cancel" in deleted.json()["use"]
    assert (await stack.http.delete(f"/definitions/{ident}")).status_code == 204
    # A type named as the seeds spell them is recorded under ours, so the type filter finds it either way.
    upper = await definition(stack, ["ops"], type_="REMINDER")
    assert (await stack.http.get(f"/definitions/{upper}")).json()["type"] == "reminder"
    assert await names(stack, "type=REMINDER") == await names(stack, "type=reminder") == [upper]
