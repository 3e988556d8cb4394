"""POST /approvals/bulk: preview, approve and reject many waiting tasks, each answered on its own; POST /tasks/bulk:
any action on the tasks a query selects, previewed first."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from followthrough.domain.naming import workflow_id_for
from tests.api.test_keys_and_roles import bearer, keyed, make_key  # noqa: F401 - keyed is a fixture
from tests.conftest import Stack, running_stack
from tests.helpers import eventually, free_port, get_task, task_body, until_status


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


# ---- POST /tasks/bulk: any action on what a GET /tasks query selects ------------------------------------------

def _in(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()


async def _tasks_bulk(stack: Stack, body: dict, headers: dict | None = None):
    return await stack.http.post("/tasks/bulk", json=body, headers=headers or {})


async def _selects(stack: Stack, filter_: dict, action: str = "cancel", **extra) -> dict:
    response = await _tasks_bulk(stack, {"filter": filter_, "action": action, "preview": True} | extra)
    assert response.status_code == 200, response.text
    return response.json()


def _by_task(result: dict) -> dict[str, dict]:
    return {i["task_id"]: i for i in result["items"]}


async def test_preview_acts_on_nothing_then_cancel_acts_on_what_the_query_selects(stack: Stack):
    subject = f"INV-{uuid.uuid4().hex[:8]}"
    waiting = [await _create(stack, subject_ref_id=subject, source=f"SRC-{n}") for n in range(2)]
    scheduled = await _create(stack, subject_ref_id=subject, source="SRC-later", due_at=_in(1))
    other = await _create(stack, subject_ref_id=f"INV-{uuid.uuid4().hex[:8]}")
    await _waiting(stack, *waiting, other)
    await until_status(stack, scheduled, "scheduled")
    where = {"tenant_id": stack.tenant, "subject_ref_id": subject, "status": ["awaiting_approval"]}

    preview = await _selects(stack, where)
    assert (preview["preview"], preview["action"], preview["total"], preview["over_limit"]) == (True, "cancel", 2, False)
    assert sorted(i["task_id"] for i in preview["items"]) == sorted(waiting)
    assert {(i["status"], i["subject_ref_id"]) for i in preview["items"]} == {("awaiting_approval", subject)}
    for task_id in [*waiting, other]:
        assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    assert (await get_task(stack, scheduled))["status"] == "scheduled"
    # Every status of the subject: the scheduled one too; another subject never.
    assert (await _selects(stack, {"tenant_id": stack.tenant, "subject_ref_id": subject}))["total"] == 3

    response = await _tasks_bulk(stack, {"filter": where, "action": "cancel", "reason": "paid"},
                                 headers={"X-Actor-Id": "olga"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["preview"], result["total"], result["done"], result["skipped"], result["failed"]) == (
        False, 2, 2, 0, 0)
    assert all(i["outcome"] == "done" and i["status"] == "cancelled" for i in result["items"]), result
    for task_id in waiting:
        events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
        assert [(e["actor_id"], e["data"].get("reason")) for e in events if e["type"] == "TASK_CANCELLED"] == [
            ("olga", "paid")]
    assert (await get_task(stack, other))["status"] == "awaiting_approval"
    assert (await get_task(stack, scheduled))["status"] == "scheduled"

    # The same query again selects nothing; cancelling by id what has ended is skipped with why.
    await eventually(lambda: _selects(stack, where), lambda p: p["total"] == 0)
    again = (await _tasks_bulk(stack, {"filter": {"task_ids": [*waiting, other]}, "action": "cancel"})).json()
    assert again["done"] == 1 and again["skipped"] == 2
    for task_id in waiting:
        item = _by_task(again)[task_id]
        assert item["status_code"] == 409 and "already cancelled" in item["detail"], item
    await stack.http.post(f"/tasks/{scheduled}/cancel")


async def test_pause_resume_reschedule_and_run_now_by_query(stack: Stack):
    subject = f"INV-{uuid.uuid4().hex[:8]}"
    ours = [await _create(stack, subject_ref_id=subject, source=f"SRC-{n}", due_at=_in(1)) for n in range(2)]
    later = await _create(stack, subject_ref_id=subject, source="SRC-later", due_at=_in(5))
    for task_id in (*ours, later):
        await until_status(stack, task_id, "scheduled")
    # Due within two days: the one due in five is excluded by the filter.
    where = {"tenant_id": stack.tenant, "subject_ref_id": subject, "due_before": _in(2)}
    assert sorted(i["task_id"] for i in (await _selects(stack, where, "pause"))["items"]) == sorted(ours)

    paused = (await _tasks_bulk(stack, {"filter": where, "action": "pause", "reason": "holiday"})).json()
    assert paused["done"] == 2 and {i["status"] for i in paused["items"]} == {"paused"}, paused
    for task_id in ours:
        await until_status(stack, task_id, "paused")
    # Run now on a paused task is skipped, with why.
    refused = (await _tasks_bulk(stack, {"filter": where, "action": "run"})).json()
    assert refused["skipped"] == 2 and all("paused" in i["detail"] for i in refused["items"]), refused
    resumed = (await _tasks_bulk(stack, {"filter": where, "action": "resume"})).json()
    assert resumed["done"] == 2 and {i["status"] for i in resumed["items"]} == {"scheduled"}, resumed
    for task_id in ours:
        await until_status(stack, task_id, "scheduled")

    moved_to = _in(1.5)
    moved = (await _tasks_bulk(stack, {"filter": where, "action": "reschedule", "due_at": moved_to})).json()
    assert moved["done"] == 2, moved
    for task_id in ours:
        task = await eventually(lambda: get_task(stack, task_id), lambda t: t["due_at"][:16] == moved_to[:16])
        assert task["status"] == "scheduled"

    ran = (await _tasks_bulk(stack, {"filter": where, "action": "run"}, headers={"X-Actor-Id": "olga"})).json()
    assert ran["done"] == 2, ran
    for task_id in ours:
        await until_status(stack, task_id, "awaiting_approval")
        events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
        assert [e["actor_id"] for e in events if e["data"].get("run_now")] == ["olga"]
    twice = (await _tasks_bulk(stack, {"filter": {"task_ids": ours}, "action": "run"})).json()
    assert twice["skipped"] == 2 and all("waiting for its due time" in i["detail"] for i in twice["items"]), twice
    assert (await get_task(stack, later))["status"] == "scheduled"
    for task_id in (*ours, later):
        await stack.http.post(f"/tasks/{task_id}/cancel")


async def test_retry_approve_and_reject_by_query(stack: Stack):
    subject = f"HOOK-{uuid.uuid4().hex[:8]}"
    closed = f"http://127.0.0.1:{free_port()}/nothing-listens"
    failing = [(await stack.http.post("/tasks", json={
        "type": "http_request", "tenant_id": stack.tenant, "subject_ref_type": "HOOK", "subject_ref_id": subject,
        "source": f"SRC-{n}", "mode": "autonomous", "retry": {"max_attempts": 1},
        "payload": {"method": "POST", "url": closed, "json": {"n": n}}})).json()["id"] for n in range(2)]
    for task_id in failing:
        task = await until_status(stack, task_id, "failed", timeout=30)
        # The mirror reads failed a moment before the run has closed; a retry needs it closed.
        handle = stack.client.get_workflow_handle(task["workflow_id"])
        await eventually(handle.describe, lambda d: d.status != WorkflowExecutionStatus.RUNNING)
    retried = (await _tasks_bulk(stack, {"filter": {"tenant_id": stack.tenant, "subject_ref_id": subject},
                                         "action": "retry"}, headers={"X-Actor-Id": "ops"})).json()
    assert retried["done"] == 2 and all(i["status_code"] == 202 for i in retried["items"]), retried["items"]
    for task_id in failing:
        task = await eventually(lambda: get_task(stack, task_id), lambda t: t["run_number"] == 2)
        assert task["status"] in ("pending", "in_progress", "failed")

    first, second = [await _create(stack, subject_ref_id=subject, source=f"APP-{n}") for n in range(2)]
    await _waiting(stack, first, second)
    where = {"tenant_id": stack.tenant, "subject_ref_id": subject, "type": "invoice_follow_up"}
    not_failed = (await _tasks_bulk(stack, {"filter": where, "action": "retry"})).json()
    assert not_failed["skipped"] == 2 and all(
        "only a failed task can be retried; this one is awaiting_approval" in i["detail"]
        for i in not_failed["items"]), not_failed
    no_reason = await _tasks_bulk(stack, {"filter": where, "action": "reject"})
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.text
    rejected = (await _tasks_bulk(stack, {"filter": {"task_ids": [first]}, "action": "reject",
                                          "reason": "paid"})).json()
    assert rejected["done"] == 1 and rejected["items"][0]["status"] == "rejected", rejected
    await until_status(stack, first, "rejected")
    approved = (await _tasks_bulk(stack, {"filter": where | {"status": ["awaiting_approval"]},
                                          "action": "approve", "comment": "ok"}, headers={"X-Actor-Id": "ann"})).json()
    assert [i["task_id"] for i in approved["items"]] == [second] and approved["done"] == 1, approved
    await until_status(stack, second, "completed")


async def test_over_the_limit_is_a_422_and_nothing_is_done(stack: Stack):
    subject = f"INV-{uuid.uuid4().hex[:8]}"
    ours = [await _create(stack, subject_ref_id=subject, source=f"SRC-{n}") for n in range(3)]
    await _waiting(stack, *ours)
    where = {"tenant_id": stack.tenant, "subject_ref_id": subject}
    preview = await _selects(stack, where, limit=2)
    assert (preview["total"], len(preview["items"]), preview["over_limit"]) == (3, 2, True)
    over = await _tasks_bulk(stack, {"filter": where, "action": "cancel", "limit": 2})
    assert over.status_code == 422, over.text
    assert "selects 3 tasks, more than the limit of 2" in over.json()["detail"]
    for task_id in ours:
        assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    for body in ({"filter": {}, "action": "cancel"},
                 {"filter": {"tenant_id": stack.tenant}, "action": "explode"},
                 {"filter": {"tenant_id": stack.tenant, "colour": "red"}, "action": "cancel"},
                 {"filter": {"tenant_id": stack.tenant}, "action": "cancel", "everything": True},
                 {"filter": {"tenant_id": stack.tenant}, "action": "reschedule"},
                 {"filter": {"tenant_id": stack.tenant}, "action": "cancel", "due_at": _in(1)},
                 {"filter": {"tenant_id": stack.tenant, "status": ["sleeping"]}, "action": "cancel"},
                 {"filter": {"tenant_id": stack.tenant}, "action": "cancel", "limit": 501}):
        response = await _tasks_bulk(stack, body)
        assert response.status_code == 422, (body, response.text)
    assert "at least one criterion" in (await _tasks_bulk(stack, {"filter": {}, "action": "cancel"})).text
    done = (await _tasks_bulk(stack, {"filter": where, "action": "cancel", "limit": 3})).json()
    assert done["done"] == 3, done


async def test_a_key_acts_in_its_own_tenant_only_and_needs_each_actions_role(keyed: Stack, engine):  # noqa: F811
    tenant_a, tenant_b = keyed.tenant, f"{keyed.tenant}-b"
    sam = await make_key(engine, tenant_a, "sam", "submitter")
    vera = await make_key(engine, tenant_a, "vera", "viewer")
    bob = await make_key(engine, tenant_b, "bob", "admin")
    subject = f"INV-{uuid.uuid4().hex[:8]}"

    async def made(key: str) -> str:
        response = await keyed.http.post("/tasks", json=task_body(subject_ref_id=subject), headers=bearer(key))
        assert response.status_code == 201, response.text
        return response.json()["id"]

    ours, theirs = await made(sam), await made(bob)
    for task_id, key in ((ours, sam), (theirs, bob)):
        await eventually(lambda: keyed.http.get(f"/tasks/{task_id}", headers=bearer(key)),
                         lambda r: r.json()["status"] == "awaiting_approval")
    where = {"subject_ref_id": subject}
    seen = await keyed.http.post("/tasks/bulk", json={"filter": where, "action": "cancel", "preview": True},
                                 headers=bearer(sam))
    assert [i["task_id"] for i in seen.json()["items"]] == [ours], seen.text
    by_id = await keyed.http.post("/tasks/bulk", json={"filter": {"task_ids": [theirs]}, "action": "cancel"},
                                  headers=bearer(sam))
    assert by_id.status_code == 200 and by_id.json()["total"] == 0, by_id.text
    elsewhere = await keyed.http.post("/tasks/bulk", json={"filter": {"tenant_id": tenant_b}, "action": "cancel"},
                                      headers=bearer(sam))
    assert elsewhere.status_code == 403, elsewhere.text
    approving = await keyed.http.post("/tasks/bulk", json={"filter": where, "action": "approve"}, headers=bearer(sam))
    assert approving.status_code == 403 and "approver" in approving.text
    for action in ("cancel", "run", "retry"):
        viewing = await keyed.http.post("/tasks/bulk", json={"filter": where, "action": action, "preview": True},
                                        headers=bearer(vera))
        assert viewing.status_code == 403 and "submitter" in viewing.text, viewing.text
    assert (await keyed.http.post("/tasks/bulk", json={"filter": where, "action": "cancel"})).status_code == 401

    cancelled = await keyed.http.post("/tasks/bulk", json={"filter": where, "action": "cancel"}, headers=bearer(sam))
    assert cancelled.status_code == 200, cancelled.text
    assert [(i["task_id"], i["outcome"]) for i in cancelled.json()["items"]] == [(ours, "done")]
    theirs_now = await keyed.http.get(f"/tasks/{theirs}", headers=bearer(bob))
    assert theirs_now.json()["status"] == "awaiting_approval"
    await keyed.http.post(f"/tasks/{theirs}/cancel", headers=bearer(bob))
