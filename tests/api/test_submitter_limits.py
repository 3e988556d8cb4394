"""What a submitter sets per task may tighten the type's and tenant's policy, never loosen it: a deadline never
approves what a guardrail or a block held, and the per-task fields are bounded by the policy they override.
Through the HTTP API on the dev server."""

import pytest_asyncio

from tests.conftest import running_stack
from tests.helpers import add_task_secret, eventually, invoice_payload, outbox_rows, task_body

STRICT = "strict-modes"


async def _events(stack, task_id: str) -> list[dict]:
    return (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]


async def test_a_deadline_never_approves_what_a_guardrail_flagged(stack):
    # Autonomous, approve at the deadline, a 2 s deadline: all the submitter's choice. The amount is far
    # above the invoice guardrail's limit (10,000), so the task waits, and the deadline must not send it.
    body = task_body(tenant_id=stack.tenant, mode="autonomous", approval_timeout_seconds=2,
                     sla={"on_deadline": "approve"}, payload=invoice_payload(invoice_amount=999_999))
    created = await stack.http.post("/tasks", json=body)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    task = await eventually(lambda: stack.http.get(f"/tasks/{task_id}"),
                            lambda r: r.json()["status"] not in ("pending", "in_progress", "awaiting_approval"),
                            timeout=30)
    assert task.json()["status"] == "expired", task.text
    types = [e["type"] for e in await _events(stack, task_id)]
    assert "TASK_GUARDRAIL_FLAGGED" in types and "TASK_APPROVED" not in types
    expired = next(e for e in await _events(stack, task_id) if e["type"] == "TASK_EXPIRED")
    assert any("above the limit" in r for r in expired["data"]["held_by"])
    assert await outbox_rows(stack.engine, task_id) == []


async def test_retries_may_be_tightened_not_loosened(stack):
    # invoice_follow_up sends with at most 8 attempts, waiting at most 300 s between them.
    for field, value in (("max_attempts", 100), ("maximum_interval_seconds", 86_400)):
        response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, retry={field: value}))
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "retry", field] and "at most the type's" in error["msg"], error
    fewer = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, retry={
        "max_attempts": 2, "maximum_interval_seconds": 10, "initial_interval_seconds": 0.5}))
    assert fewer.status_code == 201, fewer.text
    await stack.http.post(f"/tasks/{fewer.json()['id']}/cancel")


@pytest_asyncio.fixture
async def limited(dev_env, engine, tmp_path):
    limits = {"*": {"email": "review"}, STRICT: {"*": "assisted", "invoice_follow_up": "review"}}
    async with running_stack(dev_env, engine, tmp_path, mode_limits=limits) as running:
        yield running


async def test_a_mode_looser_than_the_tenants_policy_is_refused(limited):
    refused = await limited.http.post("/tasks", json=task_body(tenant_id=STRICT, mode="autonomous"))
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "mode"]
    assert "at most review" in error["msg"] and "suggest, review, manual" in error["msg"], error
    # Another tenant, no entry for the type: any mode.
    elsewhere = await limited.http.post("/tasks", json=task_body(tenant_id=limited.tenant, mode="autonomous"))
    assert elsewhere.status_code == 201, elsewhere.text
    # Without a mode a task takes its type's, tightened to the policy: an autonomous-by-default webhook
    # runs assisted for this tenant.
    add_task_secret(limited.settings, STRICT, "hooks", "hook-key-1", hosts=["hooks.example"])
    hook = await limited.http.post("/tasks", json={"type": "webhook", "tenant_id": STRICT, "payload": {
        "url": "https://hooks.example/in", "secret": "hooks", "event": "x"}})
    assert hook.status_code == 201, hook.text
    assert (await limited.http.get(f"/tasks/{hook.json()['id']}")).json()["mode"] == "assisted"
    for created in (elsewhere, hook):
        await limited.http.post(f"/tasks/{created.json()['id']}/cancel")


async def test_subtasks_listed_looser_than_their_parent_are_refused(limited):
    email = {"type": "email", "mode": "autonomous", "payload": {"to": ["a@acme.example"], "subject": "Hi",
                                                                "body": "Hello"}}
    group = await limited.http.post("/tasks", json=task_body(
        tenant_id=limited.tenant, type="group", mode="assisted", subject_ref_id=None,
        payload={"subtasks": [email | {"mode": "review"}, {"type": "group", "payload": {"subtasks": [email]}}]}))
    assert group.status_code == 422, group.text
    [error] = group.json()["detail"]
    assert error["loc"] == ["body", "payload", "subtasks", 1, "payload", "subtasks", 0, "mode"], error
    assert "looser than its parent task (assisted)" in error["msg"], error
    campaign = await limited.http.post("/tasks", json={"type": "campaign", "tenant_id": limited.tenant, "payload": {
        "subject": "Hi", "body": "Hello", "recipients": [{"to": "a@acme.example"}], "message_mode": "assisted"}})
    assert campaign.status_code == 422, campaign.text
    assert campaign.json()["detail"][0]["loc"] == ["body", "payload", "message_mode"]
    assert "at most review" in campaign.json()["detail"][0]["msg"]


async def test_planned_subtasks_run_no_looser_than_their_parent(stack):
    # A review-mode group whose webhook subtask takes its type's default (autonomous): it runs in review, and
    # naming no approvers of its own it has the parent's.
    hook = {"type": "webhook", "payload": {"url": "https://hooks.example/in", "secret": "hooks", "event": "x"}}
    add_task_secret(stack.settings, stack.tenant, "hooks", "hook-key-1", hosts=["hooks.example"])
    created = await stack.http.post("/tasks", json=task_body(
        tenant_id=stack.tenant, type="group", mode="review", subject_ref_id=None,
        approval={"approvers": ["cfo"], "roles": ["finance"]}, payload={"subtasks": [hook]}))
    assert created.status_code == 201, created.text
    parent = created.json()["id"]
    children = await eventually(lambda: stack.http.get(f"/tasks/{parent}/subtasks"),
                                lambda r: r.json()["items"] and r.json()["items"][0]["status"] == "awaiting_approval",
                                timeout=20)
    [child] = children.json()["items"]
    assert child["mode"] == "review"
    approval = (await stack.http.get(f"/tasks/{child['id']}/approval")).json()
    assert approval["approvers"] == ["cfo"] and approval["approver_roles"] == ["finance"], approval
    refused = await stack.http.post(f"/tasks/{child['id']}/approve", json={"actor_id": "mallory"})
    assert refused.status_code == 403, refused.text
    await stack.http.post(f"/tasks/{parent}/cancel")


async def test_a_definitions_settings_are_held_to_the_same_limits(limited):
    async def run(name: str, **fields) -> list[dict]:
        definition = await limited.http.post("/definitions", json={
            "tenant_id": STRICT, "name": f"{name}-{limited.tenant}", "type": "invoice_follow_up",
            "title": "Follow up", "payload": invoice_payload()} | fields)
        assert definition.status_code == 201, definition.text  # unscheduled: checked when it runs
        ran = await limited.http.post(f"/definitions/{definition.json()['id']}/run", json={})
        assert ran.status_code == 422, ran.text
        return ran.json()["detail"]

    [retry] = await run("retries", defaults={"retry": {"max_attempts": 50}})
    assert retry["loc"][-2:] == ["retry", "max_attempts"] and "at most the type's 8" in retry["msg"], retry
    [mode] = await run("autonomous", mode="autonomous")
    assert mode["loc"][-1] == "mode" and "at most review" in mode["msg"], mode
