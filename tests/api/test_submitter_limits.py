"""What a submitter sets per task may tighten the type's and tenant's policy, never loosen it: a deadline never
approves what a guardrail or a block held, and the per-task fields are bounded by the policy they override.
Through the HTTP API on the dev server."""

from tests.helpers import eventually, invoice_payload, outbox_rows, task_body


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
