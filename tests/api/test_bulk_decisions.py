"""POST /approvals/bulk: preview, approve and reject many waiting tasks, each answered on its own."""

import asyncio
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.domain.naming import workflow_id_for
from tests.conftest import Stack, running_stack
from tests.helpers import eventually, get_task, task_body, until_status


async def _create(stack: Stack, **fields) -> str:
    response = await stack.http.post("/tasks", json=task_body(**{"tenant_id": stack.tenant} | fields))
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _waiting(stack: Stack, *task_ids: str) -> None:
    for task_id in task_ids:
        await until_status(stack, task_id, "awaiting_approval")


async def _bulk(stack: Stack, body: dict, who: str | None = None):
    return await stack.http.post("/approvals/bulk", json=body, headers={"X-Actor-Id": who} if who else {})


async def _preview(stack: Stack, filter_: dict) -> dict:
    response = await _bulk(stack, {"filter": filter_, "decision": "approve", "preview": True})
    assert response.status_code == 200, response.text
    return response.json()


async def test_preview_decides_nothing_then_approve_by_subject(stack: Stack):
    subject = f"INV-{uuid.uuid4().hex[:8]}"
    # The same subject from three sources: three tasks, as the dedupe key includes the source.
    ours = [await _create(stack, subject_ref_id=subject, source=f"SRC-{n}") for n in range(3)]
    other = await _create(stack, subject_ref_id=f"INV-{uuid.uuid4().hex[:8]}")
    await _waiting(stack, *ours, other)
    where = {"tenant_id": stack.tenant, "subject_ref_id": subject}

    preview = await eventually(lambda: _preview(stack, where), lambda p: p["total"] == 3)
    assert preview["preview"] is True
    assert sorted(i["task_id"] for i in preview["items"]) == sorted(ours)
    assert {i["subject_ref_id"] for i in preview["items"]} == {subject}
    assert all(i["title"] and i["type"] == "invoice_follow_up" and i["requested_at"] for i in preview["items"])
    stamps = [i["requested_at"] for i in preview["items"]]
    assert stamps == sorted(stamps)
    for task_id in [*ours, other]:
        assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    limited = await _bulk(stack, {"filter": where, "decision": "approve", "preview": True, "limit": 2})
    assert (limited.json()["total"], len(limited.json()["items"])) == (3, 2)

    response = await _bulk(stack, {"filter": where, "decision": "approve", "comment": "all paid up"}, who="carol")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["preview"] is False and result["total"] == 3
    assert sorted(i["task_id"] for i in result["items"]) == sorted(ours)
    assert all(i["status_code"] == 200 and i["status"] == "in_progress" for i in result["items"]), result
    for task_id in ours:
        await until_status(stack, task_id, "completed")
    assert (await get_task(stack, other))["status"] == "awaiting_approval"
    approval = (await stack.http.get(f"/tasks/{ours[0]}/approval")).json()
    assert [(d["actor_id"], d["comment"]) for d in approval["decisions"]] == [("carol", "all paid up")]
    after = await eventually(lambda: _preview(stack, where), lambda p: p["total"] == 0)
    assert after["items"] == []


async def test_a_person_not_allowed_gets_a_403_for_that_task_only(stack: Stack):
    subject = f"INV-{uuid.uuid4().hex[:8]}"
    for_alice = await _create(stack, subject_ref_id=subject, source="SRC-A", approval={"approvers": ["alice"]})
    for_anyone = [await _create(stack, subject_ref_id=subject, source=f"SRC-{n}") for n in range(2)]
    await _waiting(stack, for_alice, *for_anyone)
    where = {"tenant_id": stack.tenant, "subject_ref_id": subject}
    await eventually(lambda: _preview(stack, where), lambda p: p["total"] == 3)

    response = await _bulk(stack, {"filter": where, "decision": "approve", "actor_id": "bob"})
    assert response.status_code == 200, response.text
    by_task = {i["task_id"]: i for i in response.json()["items"]}
    assert set(by_task) == {for_alice, *for_anyone}
    assert by_task[for_alice]["status_code"] == 403 and "may not decide" in by_task[for_alice]["detail"]
    assert by_task[for_alice]["status"] is None
    assert all(by_task[t]["status_code"] == 200 for t in for_anyone)
    for task_id in for_anyone:
        await until_status(stack, task_id, "completed")
    assert (await get_task(stack, for_alice))["status"] == "awaiting_approval"
    await stack.http.post(f"/tasks/{for_alice}/cancel")


async def test_reject_by_task_ids_needs_a_reason_and_filters_must_say_something(stack: Stack):
    first, second, untouched = [await _create(stack) for _ in range(3)]
    await _waiting(stack, first, second, untouched)
    where = {"task_ids": [first, second]}
    await eventually(lambda: _preview(stack, where), lambda p: p["total"] == 2)

    no_reason = await _bulk(stack, {"filter": where, "decision": "reject"})
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.text
    for body in ({"filter": {}, "decision": "approve"},
                 {"filter": {"tenant_id": None}, "decision": "approve"},
                 {"filter": {"task_ids": []}, "decision": "approve"},
                 {"filter": {"tenant_id": stack.tenant, "status": "pending"}, "decision": "approve"},
                 {"filter": {"tenant_id": stack.tenant}, "decision": "approve", "everything": True},
                 {"filter": {"tenant_id": stack.tenant}, "decision": "maybe"},
                 {"filter": {"tenant_id": stack.tenant}, "decision": "approve", "limit": 501}):
        response = await _bulk(stack, body)
        assert response.status_code == 422, (body, response.text)
    empty = await _bulk(stack, {"filter": {}, "decision": "approve"})
    assert "at least one criterion" in empty.text
    for task_id in (first, second, untouched):
        assert (await get_task(stack, task_id))["status"] == "awaiting_approval"

    response = await _bulk(stack, {"filter": where, "decision": "reject", "reason": "customer paid"}, who="dora")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert sorted(i["task_id"] for i in items) == sorted([first, second])
    assert all(i["status_code"] == 200 and i["status"] == "rejected" for i in items), items
    for task_id in (first, second):
        await until_status(stack, task_id, "rejected")
    assert (await get_task(stack, untouched))["status"] == "awaiting_approval"
    approval = await eventually(lambda: stack.http.get(f"/tasks/{first}/approval"),
                                lambda r: r.json()["status"] == "rejected")
    assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval.json()["decisions"]] == [
        ("dora", "reject", "customer paid")]

    # Decided already: nothing pending matches any more, so nothing is decided twice.
    await eventually(lambda: _preview(stack, where), lambda p: p["total"] == 0)
    again = await _bulk(stack, {"filter": where, "decision": "approve"})
    assert again.status_code == 200 and again.json() == {"preview": False, "total": 0, "items": []}
    old = await _preview(stack, {"task_ids": [untouched], "older_than_seconds": 3600})
    assert old["total"] == 0
    assert (await _preview(stack, {"task_ids": [untouched], "older_than_seconds": 0}))["total"] == 1
    await stack.http.post(f"/tasks/{untouched}/cancel")


async def test_tasks_whose_worker_is_gone_get_504_within_the_deadline(dev_env: WorkflowEnvironment,
                                                                       engine: AsyncEngine, tmp_path: Path):
    """Tasks whose worker has stopped never accept an update, for real: the request still answers by its
    deadline, the others decided and each stuck one told so. (Two stacks, as the stuck tasks need a queue with
    no worker left; worth its seconds: it is the only test of the deadline.)"""
    subject = f"INV-{uuid.uuid4().hex[:8]}"
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    async with running_stack(dev_env, engine, tmp_path / "gone") as gone:
        stuck = [await _create(gone, tenant_id=tenant, subject_ref_id=subject, source=f"OLD-{n}") for n in range(3)]
        await _waiting(gone, *stuck)
    try:
        async with running_stack(dev_env, engine, tmp_path / "live", bulk_decision_deadline_seconds=3) as live:
            alive = [await _create(live, tenant_id=tenant, subject_ref_id=subject, source=f"NEW-{n}")
                     for n in range(2)]
            await _waiting(live, *alive)
            where = {"tenant_id": tenant, "subject_ref_id": subject}
            await eventually(lambda: _preview(live, where), lambda p: p["total"] == 5)
            # Deciding one after another, 30 s a stuck task, would take 90 s and more: give up at 30 (the
            # in-process transport has no timeout of its own).
            async with asyncio.timeout(30):
                response = await live.http.post("/approvals/bulk", json={"filter": where, "decision": "approve"})
            assert response.status_code == 200, response.text
            by_task = {i["task_id"]: i for i in response.json()["items"]}
            assert set(by_task) == {*stuck, *alive}
            assert all(by_task[t]["status_code"] == 200 and by_task[t]["status"] == "in_progress" for t in alive)
            for task_id in stuck:
                assert by_task[task_id]["status_code"] == 504, by_task[task_id]
                assert "deadline (3 s)" in by_task[task_id]["detail"]
            for task_id in alive:
                await until_status(live, task_id, "completed")
    finally:
        for task_id in stuck:  # nothing will ever run them: end them rather than leave them to the server
            workflow_id = workflow_id_for(task_id, "invoice_follow_up", subject)
            await dev_env.client.get_workflow_handle(workflow_id).terminate("test over")
