"""Tenant isolation: with another tenant's key every id-bearing endpoint answers 404 (exactly as
for an id that does not exist), lists and bulk selections never show another tenant's rows,
and nothing the other key tries changes anything.

The endpoints are read off the app itself, so a new route with a task, definition or
subscription id in its path is walked without this test changing.
"""

import re
import uuid

import httpx

from tests.api.test_keys_and_roles import bearer, keyed, make_key  # noqa: F401 - keyed is a fixture
from tests.conftest import Stack
from tests.helpers import add_task_secret, eventually, form_token, sign_in, task_body

OWNED = {"task_id", "definition_id", "subscription_id", "artifact_id"}


async def _own_objects(stack: Stack, key: str) -> dict[str, str]:
    task = await stack.http.post("/tasks", json=task_body(), headers=bearer(key))
    assert task.status_code == 201, task.text
    task_id = task.json()["id"]
    definition = await stack.http.post("/definitions", headers=bearer(key), json={
        "name": "weekly-check", "type": "invoice_follow_up", "title": "Check {{ invoice }}", "mode": "review",
        "payload": task_body()["payload"] | {"invoice_number": "{{ invoice }}"}, "cron": "0 9 * * 1",
        "variables": {"invoice": "INV-1"}})
    assert definition.status_code == 201, definition.text
    subscription = await stack.http.post("/subscriptions", headers=bearer(key), json={
        "url": "https://hooks.example.com/followthrough", "secret": "hook_secret", "events": ["task.completed"]})
    assert subscription.status_code == 201, subscription.text
    await eventually(lambda: stack.http.get(f"/tasks/{task_id}/approval", headers=bearer(key)),
                     lambda r: r.status_code == 200)
    # An invoice task has no artifacts: the task's own guard answers first (the artifact's is tested with real
    # artifacts in tests/api/test_browser_tasks.py).
    return {"task_id": task_id, "definition_id": definition.json()["id"],
            "subscription_id": subscription.json()["id"], "artifact_id": str(uuid.uuid4())}


async def test_another_tenants_key_finds_nothing_and_changes_nothing(keyed: Stack, engine):  # noqa: F811
    tenant_a = keyed.tenant
    key_a = await make_key(engine, tenant_a, "ann", "admin")
    key_b = await make_key(engine, f"{tenant_a}-b", "bob", "admin", "finance")
    add_task_secret(keyed.settings, tenant_a, "hook_secret", "whsec-tenant-a")  # the subscription signs with it
    ids = await _own_objects(keyed, key_a)

    schema = (await keyed.http.get("http://testserver/openapi.json")).json()
    walked = []
    for template, operations in schema["paths"].items():
        params = set(re.findall(r"{(\w+)}", template))
        if not params or not params <= OWNED:
            continue
        path = template.removeprefix("/api/v1").format(**ids)
        for method in operations:
            answer = await keyed.http.request(method.upper(), path, json={}, headers=bearer(key_b))
            assert answer.status_code == 404, (method, template, answer.status_code, answer.text)
            assert "not found" in answer.json()["detail"]
            walked.append(f"{method.upper()} {template}")
    assert len(walked) >= 20, walked  # tasks, decisions, approvals, links, definitions, runs, schedules, subscriptions
    assert {"POST /api/v1/tasks/{task_id}/approve", "DELETE /api/v1/definitions/{definition_id}",
            "POST /api/v1/definitions/{definition_id}/schedule/trigger",
            "DELETE /api/v1/subscriptions/{subscription_id}", "GET /api/v1/tasks/{task_id}/artifacts",
            "GET /api/v1/tasks/{task_id}/artifacts/{artifact_id}"} <= set(walked)

    # The same ids unknown outright answer the same way: nothing tells the two apart.
    missing = await keyed.http.get("/tasks/00000000-0000-0000-0000-000000000000", headers=bearer(key_b))
    foreign = await keyed.http.get(f"/tasks/{ids['task_id']}", headers=bearer(key_b))
    assert missing.status_code == foreign.status_code == 404
    assert missing.json()["detail"].replace("00000000-0000-0000-0000-000000000000", "X") == \
        foreign.json()["detail"].replace(ids["task_id"], "X")

    for listing in ("/tasks", "/approvals", "/definitions", "/subscriptions"):
        seen = (await keyed.http.get(listing, headers=bearer(key_b))).json()
        assert seen["total"] == 0 and seen["items"] == [], listing
        asked = await keyed.http.get(f"{listing}?tenant_id={tenant_a}", headers=bearer(key_b))
        assert asked.status_code == 403, listing
    preview = await keyed.http.post("/approvals/bulk", headers=bearer(key_b), json={
        "filter": {"type": "invoice_follow_up"}, "decision": "approve", "preview": True})
    assert preview.status_code == 200 and preview.json()["total"] == 0
    elsewhere = await keyed.http.post("/tasks", json=task_body(tenant_id=tenant_a), headers=bearer(key_b))
    assert elsewhere.status_code == 403

    async with httpx.AsyncClient(transport=keyed.http._transport, base_url="http://testserver") as browser:
        assert (await sign_in(browser, key_b)).status_code == 303
        inbox = await browser.get("/ui")
        assert inbox.status_code == 200 and ids["task_id"] not in inbox.text
        decided = await browser.post(f"/ui/tasks/{ids['task_id']}/decide",
                                     data={"action": "approve", "csrf": form_token(inbox.text)})
        assert decided.status_code == 404

    # Tenant A still has all of it, untouched.
    task = (await keyed.http.get(f"/tasks/{ids['task_id']}", headers=bearer(key_a))).json()
    assert task["status"] == "awaiting_approval"
    assert (await keyed.http.get(f"/definitions/{ids['definition_id']}", headers=bearer(key_a))).status_code == 200
    assert (await keyed.http.get(f"/subscriptions/{ids['subscription_id']}",
                                 headers=bearer(key_a))).status_code == 200
    mine = (await keyed.http.get("/tasks", headers=bearer(key_a))).json()
    assert [t["id"] for t in mine["items"]] == [ids["task_id"]]
