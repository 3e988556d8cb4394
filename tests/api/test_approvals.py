"""Approvals as records: N-of-M approvers, refusals of people not allowed to
decide, an approver's queue, and the decision trail with edits and diffs."""

import asyncio

from tests.conftest import Stack
from tests.helpers import eventually, get_task, task_body, until_status


async def _create(stack: Stack, **fields) -> str:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _approval(stack: Stack, task_id: str) -> dict:
    response = await stack.http.get(f"/tasks/{task_id}/approval")
    assert response.status_code == 200, response.text
    return response.json()


async def _approve(stack: Stack, task_id: str, who: str, **body):
    return await stack.http.post(f"/tasks/{task_id}/approve", json=body, headers={"X-Actor-Id": who})


async def test_two_of_three_approvers_with_an_edit_and_a_refused_outsider(stack: Stack):
    task_id = await _create(stack, approval={"approvers": ["alice", "bob", "carol"], "required": 2})
    await until_status(stack, task_id, "awaiting_approval")
    approval = await eventually(lambda: _approval(stack, task_id), lambda a: a["status"] == "pending")
    assert (approval["required"], approval["approvers"], approval["decisions"]) == (2, ["alice", "bob", "carol"], [])

    first = await _approve(stack, task_id, "alice", comment="fine by me")
    assert first.status_code == 200 and first.json()["status"] == "awaiting_approval"
    again = await _approve(stack, task_id, "alice")
    assert again.status_code == 409 and "already approved" in again.json()["detail"]
    outsider = await _approve(stack, task_id, "mallory")
    assert outsider.status_code == 403 and "may not decide" in outsider.json()["detail"]
    assert (await stack.http.post(f"/tasks/{task_id}/reject", json={"reason": "no"},
                                  headers={"X-Actor-Id": "mallory"})).status_code == 403

    second = await _approve(stack, task_id, "bob", body="Dear ACME,\n\nA gentle reminder about INV-123.")
    assert second.status_code == 200 and second.json()["status"] == "in_progress"
    task = await until_status(stack, task_id, "completed")
    assert task["draft"]["body"] == "Dear ACME,\n\nA gentle reminder about INV-123."

    approval = await eventually(lambda: _approval(stack, task_id), lambda a: a["status"] == "approved")
    assert [(d["actor_id"], d["decision"]) for d in approval["decisions"]] == [("alice", "approve"), ("bob", "approve")]
    assert approval["decisions"][0]["comment"] == "fine by me"
    edit = approval["decisions"][1]
    assert edit["edited"]["body"].startswith("Dear ACME,\n\nA gentle reminder")
    assert "+A gentle reminder about INV-123." in edit["diff"] and "-Our records show" in edit["diff"]
    events = [e["type"] for e in (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]]
    assert events.count("TASK_APPROVAL_RECORDED") == 1 and events.count("TASK_APPROVED") == 1


async def test_an_approvers_queue_lists_what_they_may_decide(stack: Stack):
    for_alice = await _create(stack, approval={"approvers": ["alice"]})
    for_bob = await _create(stack, approval={"approvers": ["bob"]})
    for_anyone = await _create(stack)
    for task_id in (for_alice, for_bob, for_anyone):
        await until_status(stack, task_id, "awaiting_approval")

    async def queue(who: str) -> list[str]:
        response = await stack.http.get(f"/approvals?status=pending&approver={who}&tenant_id={stack.tenant}")
        assert response.status_code == 200, response.text
        return sorted(a["task_id"] for a in response.json()["items"])

    await eventually(lambda: queue("alice"), lambda q: len(q) == 2)
    assert await queue("alice") == sorted([for_alice, for_anyone])
    assert await queue("bob") == sorted([for_bob, for_anyone])
    assert (await _approve(stack, for_alice, "alice")).status_code == 200
    await until_status(stack, for_alice, "completed")
    await eventually(lambda: queue("alice"), lambda q: q == [for_anyone])
    for task_id in (for_bob, for_anyone):
        await stack.http.post(f"/tasks/{task_id}/cancel")
    cancelled = await eventually(lambda: _approval(stack, for_bob), lambda a: a["status"] == "cancelled")
    assert cancelled["decided_at"] is not None


async def test_rejection_and_expiry_close_the_approval(stack: Stack):
    rejected = await _create(stack, approval={"approvers": ["alice", "bob"], "required": 2})
    expiring = await _create(stack, approval_timeout_seconds=2)
    await until_status(stack, rejected, "awaiting_approval")
    response = await stack.http.post(f"/tasks/{rejected}/reject", json={"reason": "customer paid"},
                                     headers={"X-Actor-Id": "bob"})
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    approval = await eventually(lambda: _approval(stack, rejected), lambda a: a["status"] == "rejected")
    assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval["decisions"]] == [
        ("bob", "reject", "customer paid")]
    await until_status(stack, expiring, "expired")
    assert (await eventually(lambda: _approval(stack, expiring), lambda a: a["status"] == "expired"))["decisions"] == []


async def test_approval_policy_is_validated_and_a_task_without_one_has_no_record(stack: Stack):
    too_many = await stack.http.post("/tasks", json=task_body(approval={"approvers": ["a"], "required": 2}))
    assert too_many.status_code == 422 and "exceeds the number of approvers" in too_many.text
    autonomous = await _create(stack, mode="autonomous")
    await until_status(stack, autonomous, "completed")
    missing = await stack.http.get(f"/tasks/{autonomous}/approval")
    assert missing.status_code == 404 and "has not asked" in missing.json()["detail"]
    assert (await stack.http.get("/tasks/nope/approval")).status_code == 404


async def test_signals_from_people_not_allowed_to_decide_are_ignored(stack: Stack):
    task_id = await _create(stack, approval={"approvers": ["alice"]})
    task = await until_status(stack, task_id, "awaiting_approval")
    handle = stack.client.get_workflow_handle(task["workflow_id"])
    await handle.signal("approve", {"actor_id": "mallory"})
    await asyncio.sleep(1)
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    await handle.signal("approve", {"actor_id": "alice", "comment": "from the Web UI"})
    await until_status(stack, task_id, "completed")
    approval = await eventually(lambda: _approval(stack, task_id), lambda a: a["status"] == "approved")
    assert [(d["actor_id"], d["comment"]) for d in approval["decisions"]] == [("alice", "from the Web UI")]


async def test_sla_is_validated(stack: Stack):
    cases = [
        ({"mode": "review", "sla": {"on_deadline": "approve"}}, ["body", "sla", "on_deadline"]),
        ({"sla": {"remind_after_seconds": 100}, "approval_timeout_seconds": 50}, ["body", "sla", "remind_after_seconds"]),
        ({"sla": {"escalate_after_seconds": 10}}, ["body", "sla"]),
        ({"sla": {"on_deadline": "explode"}}, ["body", "sla", "on_deadline"]),
    ]
    for fields, loc in cases:
        response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][:len(loc)] == loc, response.text
    fine = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="autonomous", sla={
        "remind_after_seconds": 60, "escalate_after_seconds": 120, "escalate_to": ["boss"], "on_deadline": "approve"}))
    assert fine.status_code == 201, fine.text


async def test_a_decision_naming_its_approval_request_is_refused_once_another_is_open(stack: Stack):
    task_id = await _create(stack)
    await until_status(stack, task_id, "awaiting_approval")
    current = (await eventually(lambda: _approval(stack, task_id), lambda a: a["status"] == "pending"))["id"]
    run_id = current.split(":")[0]
    for verb, body in (("approve", {}), ("reject", {"reason": "no"})):
        stale = await stack.http.post(f"/tasks/{task_id}/{verb}", json=body | {"approval_id": f"{run_id}:1"})
        assert stale.status_code == 409 and "no longer open" in stale.json()["detail"], stale.text
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    approved = await stack.http.post(f"/tasks/{task_id}/approve", json={"approvalId": current})
    assert approved.status_code == 200, approved.text
    await until_status(stack, task_id, "completed")
