"""Task definitions through the HTTP API on the dev server: CRUD with soft delete, runs with variables,
and the tasks a definition created, on every configured database."""

import uuid

from tests.conftest import Stack
from tests.helpers import until_status


def welcome(stack: Stack, **overrides) -> dict:
    return {
        "tenant_id": stack.tenant, "name": f"welcome-{uuid.uuid4().hex[:6]}", "type": "email",
        "mode": "autonomous", "title": "Welcome {{ name }}", "tags": ["onboarding", "email"],
        "payload": {"to": "{{ recipients }}", "subject": "Welcome, {{ name }}",
                    "body": "Hello {{ name }},\nyour account {{ account.id }} is ready.\n{{ signature }}"},
        "variables": {"signature": "The team"},
        "defaults": {"priority": "high", "source": "ONBOARDING", "subject_ref_type": "ACCOUNT",
                     "subject_ref_id": "{{ account.id }}"},
    } | overrides


async def create(stack: Stack, **overrides) -> dict:
    response = await stack.http.post("/definitions", json=welcome(stack, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_definition_runs_with_variables_into_a_task_marked_with_it(stack: Stack):
    definition = await create(stack)
    assert definition["variables_used"] == ["account", "name", "recipients", "signature"]
    assert definition["variables_required"] == ["account", "name", "recipients"]
    assert definition["schedule"] is None and definition["version"] == 1

    run = await stack.http.post(f"/definitions/{definition['id']}/run", headers={"X-Actor-Id": "ops"}, json={
        "variables": {"name": "Ada", "recipients": ["ada@example.com"], "account": {"id": "AC-7"}}})
    assert run.status_code == 201, run.text
    task = await until_status(stack, run.json()["id"], "completed")
    assert task["title"] == "Welcome Ada" and task["priority"] == "high" and task["subject_ref_id"] == "AC-7"
    assert task["payload"]["to"] == ["ada@example.com"]
    assert task["payload"]["body"] == "Hello Ada,\nyour account AC-7 is ready.\nThe team"
    assert (task["trigger"], task["definition_id"], task["schedule_run_id"]) == (
        "definition", definition["id"], None)
    created = (await stack.http.get(f"/tasks/{task['id']}/events")).json()["items"][0]
    assert created["data"]["variables"]["name"] == "Ada" and created["data"]["definition_version"] == 1

    runs = (await stack.http.get(f"/definitions/{definition['id']}/runs")).json()
    assert [r["id"] for r in runs["items"]] == [task["id"]] and runs["total"] == 1
    by_trigger = (await stack.http.get("/tasks", params={"tenant_id": stack.tenant, "trigger": "definition"})).json()
    assert [t["id"] for t in by_trigger["items"]] == [task["id"]]


async def test_running_without_a_variable_is_a_422_naming_it(stack: Stack):
    definition = await create(stack)
    response = await stack.http.post(f"/definitions/{definition['id']}/run",
                                     json={"variables": {"name": "Ada", "account": {"id": "AC-8"}}})
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
        (["body", "variables", "recipients"], "missing_variable")]
    # No body at all: every required variable is named.
    bare = await stack.http.post(f"/definitions/{definition['id']}/run")
    assert [e["loc"][-1] for e in bare.json()["detail"]] == ["account", "name", "recipients"]
    # An attribute the variable lacks, and a rendered payload that fails the type's model.
    lacking = await stack.http.post(f"/definitions/{definition['id']}/run", json={"variables": {
        "name": "Ada", "recipients": ["ada@example.com"], "account": {}}})
    assert lacking.status_code == 422 and lacking.json()["detail"][0]["type"] == "template_error"
    invalid = await stack.http.post(f"/definitions/{definition['id']}/run", json={"variables": {
        "name": "Ada", "recipients": ["not an address"], "account": {"id": "AC-9"}}})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"][:3] == ["definition", "payload", "to"]
    assert (await stack.http.get(f"/definitions/{definition['id']}/runs")).json()["total"] == 0


async def test_definitions_are_checked_when_created_and_updated(stack: Stack):
    unknown = await stack.http.post("/definitions", json=welcome(stack, type="fax"))
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "type"]
    mode = await stack.http.post("/definitions", json=welcome(stack, mode="sometimes"))
    assert mode.status_code == 422 and mode.json()["detail"][0]["loc"] == ["body", "mode"]
    broken = await stack.http.post("/definitions", json=welcome(stack, payload={
        "to": ["a@example.com"], "subject": "Hi {{ name", "body": "x"}))
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["loc"] == ["body", "payload", "subject"]
    assert broken.json()["detail"][0]["type"] == "template_error"
    bad_variable = await stack.http.post("/definitions", json=welcome(stack, variables={"not a name": 1}))
    assert bad_variable.status_code == 422

    definition = await create(stack)
    patched = await stack.http.patch(f"/definitions/{definition['id']}", json={"title": "Hi {% if %}"})
    assert patched.status_code == 422 and patched.json()["detail"][0]["loc"] == ["body", "title"]
    nulled = await stack.http.patch(f"/definitions/{definition['id']}", json={"type": None})
    assert nulled.status_code == 422
    assert (await stack.http.get(f"/definitions/{definition['id']}")).json()["version"] == 1


async def test_crud_with_unique_names_paging_and_soft_delete(stack: Stack):
    first = await create(stack, name="weekly-digest", tags=["digest"])
    duplicate = await stack.http.post("/definitions", json=welcome(stack, name="weekly-digest"))
    assert duplicate.status_code == 409 and duplicate.json()["definition_id"] == first["id"]
    other_tenant = await stack.http.post("/definitions", json=welcome(stack, name="weekly-digest",
                                                                      tenant_id=f"{stack.tenant}-b"))
    assert other_tenant.status_code == 201
    second = await create(stack, name="welcome-new")

    page = (await stack.http.get("/definitions", params={"tenant_id": stack.tenant, "limit": 1})).json()
    assert (page["total"], len(page["items"]), page["next_offset"]) == (2, 1, 1)
    assert page["items"][0]["id"] == second["id"]  # newest first
    tagged = (await stack.http.get("/definitions", params={"tenant_id": stack.tenant, "tag": "digest"})).json()
    assert [d["id"] for d in tagged["items"]] == [first["id"]]
    assert (await stack.http.get("/definitions", params={"tenant_id": stack.tenant,
                                                          "scheduled": True})).json()["total"] == 0

    renamed = await stack.http.patch(f"/definitions/{second['id']}", json={"name": "weekly-digest"})
    assert renamed.status_code == 409
    stale = await stack.http.patch(f"/definitions/{second['id']}", json={"description": "x", "version": 7})
    assert stale.status_code == 409 and stale.json()["version"] == 1
    updated = await stack.http.patch(f"/definitions/{second['id']}", json={
        "description": "Greets new accounts", "tags": ["onboarding"], "version": 1})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["description"], updated.json()["tags"], updated.json()["version"]) == (
        "Greets new accounts", ["onboarding"], 2)

    run = await stack.http.post(f"/definitions/{first['id']}/run", json={"variables": {
        "name": "Bo", "recipients": ["bo@example.com"], "account": {"id": "AC-10"}}})
    assert run.status_code == 201, run.text
    assert (await stack.http.delete(f"/definitions/{first['id']}")).status_code == 204
    assert (await stack.http.get(f"/definitions/{first['id']}")).status_code == 404
    assert (await stack.http.delete(f"/definitions/{first['id']}")).status_code == 404
    assert (await stack.http.post(f"/definitions/{first['id']}/run", json={})).status_code == 404
    listed = (await stack.http.get("/definitions", params={"tenant_id": stack.tenant})).json()
    assert [d["id"] for d in listed["items"]] == [second["id"]]
    runs = (await stack.http.get(f"/definitions/{first['id']}/runs")).json()  # still listed by id
    assert [r["id"] for r in runs["items"]] == [run.json()["id"]]
    reused = await stack.http.post("/definitions", json=welcome(stack, name="weekly-digest"))  # the name is free
    assert reused.status_code == 201

    missing = await stack.http.get(f"/definitions/{uuid.uuid4()}")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert (await stack.http.get(f"/definitions/{uuid.uuid4()}/runs")).status_code == 404
    assert (await stack.http.get("/definitions/" + "x" * 300)).status_code == 404
