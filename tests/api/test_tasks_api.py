"""The HTTP API against the real dev server and worker, on every configured database."""

import asyncio

from tests.conftest import Stack
from tests.helpers import eventually, outbox_rows, task_body, until_status


async def create(stack: Stack, **overrides) -> dict:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_approve_complete(stack: Stack):
    created = await create(stack)
    assert created["status"] == "pending"
    links = created["links"]
    assert links["self"].endswith(f"/api/v1/tasks/{created['id']}")
    assert links["events"].endswith("/events")
    assert created["workflow_id"] in links["temporal_ui"]
    assert links["operator"] == f"http://testserver/ui/tasks/{created['id']}"

    task = await until_status(stack, created["id"], "awaiting_approval")
    assert task["stage"] == "awaiting_approval"
    assert "INV-" not in task["draft"]["to"][0] and task["draft"]["to"] == ["billing@acme.example"]
    assert task["approval_deadline"] is not None

    response = await stack.http.post(f"/tasks/{created['id']}/approve",
                                     json={"comment": "looks right"}, headers={"X-Actor-Id": "alice"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "in_progress"

    task = await until_status(stack, created["id"], "completed")
    assert task["result"]["sent"] is True and task["attempts"] == 1
    assert task["finished_at"] is not None and task["started_at"] is not None
    events = (await stack.http.get(f"/tasks/{created['id']}/events")).json()["items"]
    assert [e["type"] for e in events] == [
        "TASK_CREATED", "TASK_STATUS_CHANGED", "TASK_DRAFTED", "TASK_APPROVAL_REQUESTED", "TASK_APPROVED",
        "TASK_EXECUTION_COMPLETED"]
    approved = events[4]
    assert (approved["actor_id"], approved["old_status"], approved["new_status"]) == (
        "alice", "awaiting_approval", "in_progress")
    assert approved["data"]["comment"] == "looks right"
    assert len(await outbox_rows(stack.engine, created["id"])) == 1


async def test_approving_twice_is_a_conflict(stack: Stack):
    created = await create(stack)
    await until_status(stack, created["id"], "awaiting_approval")
    first = await stack.http.post(f"/tasks/{created['id']}/approve", json={})
    assert first.status_code == 200
    second = await stack.http.post(f"/tasks/{created['id']}/approve", json={})
    assert second.status_code == 409
    assert second.json()["detail"]
    await until_status(stack, created["id"], "completed")
    third = await stack.http.post(f"/tasks/{created['id']}/approve", json={})
    assert third.status_code == 409 and "completed" in third.json()["detail"]


async def test_concurrent_approvals_decide_once(stack: Stack):
    created = await create(stack)
    await until_status(stack, created["id"], "awaiting_approval")
    responses = await asyncio.gather(*[
        stack.http.post(f"/tasks/{created['id']}/approve", json={"actor_id": f"user-{i}"}) for i in range(50)])
    assert sorted(r.status_code for r in responses) == [200] + [409] * 49
    await until_status(stack, created["id"], "completed")
    assert len(await outbox_rows(stack.engine, created["id"])) == 1


async def test_reject_records_the_reason(stack: Stack):
    created = await create(stack)
    await until_status(stack, created["id"], "awaiting_approval")
    response = await stack.http.post(f"/tasks/{created['id']}/reject", json={"reason": "customer paid"})
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    task = await until_status(stack, created["id"], "rejected")
    assert task["finished_at"] is not None
    events = (await stack.http.get(f"/tasks/{created['id']}/events")).json()["items"]
    assert events[-1]["type"] == "TASK_REJECTED" and events[-1]["data"]["reason"] == "customer paid"
    assert await outbox_rows(stack.engine, created["id"]) == []


async def test_reject_needs_a_reason(stack: Stack):
    created = await create(stack)
    response = await stack.http.post(f"/tasks/{created['id']}/reject", json={})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "reason"]


async def test_cancel_then_cancel_again(stack: Stack):
    created = await create(stack, due_at="2030-01-01T00:00:00Z")
    await until_status(stack, created["id"], "scheduled")
    response = await stack.http.post(f"/tasks/{created['id']}/cancel", json={"reason": "not needed"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    await until_status(stack, created["id"], "cancelled")
    again = await stack.http.post(f"/tasks/{created['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


async def test_approving_a_task_that_is_not_waiting_is_a_conflict(stack: Stack):
    created = await create(stack, due_at="2030-01-01T00:00:00Z")
    await until_status(stack, created["id"], "scheduled")
    response = await stack.http.post(f"/tasks/{created['id']}/approve", json={})
    assert response.status_code == 409
    assert "scheduled" in response.json()["detail"]
    await stack.http.post(f"/tasks/{created['id']}/cancel")


async def test_autonomous_task_runs_to_completion_without_a_person(stack: Stack):
    created = await create(stack, mode="AUTONOMOUS")
    task = await until_status(stack, created["id"], "completed")
    assert task["mode"] == "autonomous"
    assert len(await outbox_rows(stack.engine, created["id"])) == 1


async def test_unknown_ids_are_404(stack: Stack):
    for method, path in [("GET", "/tasks/nope"), ("GET", "/tasks/nope/events"),
                         ("POST", "/tasks/00000000-0000-0000-0000-000000000000/approve"),
                         ("POST", "/tasks/nope/reject"), ("POST", "/tasks/nope/cancel"),
                         ("GET", "/tasks/" + "x" * 300)]:
        body = {"reason": "x"} if path.endswith("reject") else {}
        response = await stack.http.request(method, path, json=body if method == "POST" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert "not found" in response.json()["detail"]


async def test_invalid_input_is_422_naming_the_field(stack: Stack):
    cases = [
        (task_body(type="teleport"), ["body", "type"], "known types: "),
        (task_body(mode="yolo"), ["body", "mode"], "unknown mode"),
        (task_body(priority="whenever"), ["body", "priority"], ""),
        (task_body(payload={"customer_name": "x"}), ["body", "payload", "customer_email"], "Field required"),
        (task_body(payload=task_body()["payload"] | {"customer_email": "nope"}),
         ["body", "payload", "customer_email"], "email"),
        (task_body(payload=task_body()["payload"] | {"invoice_amount": -5}),
         ["body", "payload", "invoice_amount"], "greater than 0"),
        (task_body(due_at="next tuesday"), ["body", "due_at"], ""),
        (task_body(due_at="9999-01-01T00:00:00Z"), ["body", "due_at"], "within 10 years"),
        (task_body(approval_timeout_seconds=0), ["body", "approval_timeout_seconds"], ""),
        (task_body(tenant_id="has space"), ["body", "tenant_id"], ""),
        (task_body(surprise=1), ["body", "surprise"], "Extra inputs"),
    ]
    for body, loc, words in cases:
        response = await stack.http.post("/tasks", json=body)
        assert response.status_code == 422, (body, response.text)
        detail = response.json()["detail"]
        assert detail[0]["loc"] == loc, detail
        assert words in detail[0]["msg"], detail
    malformed = await stack.http.post("/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    for query in ["status=bogus", "limit=0", "offset=-1", "created_after=yesterday", "order=random"]:
        assert (await stack.http.get(f"/tasks?{query}")).status_code == 422, query


async def test_seed_style_request_is_accepted(stack: Stack):
    body = {"type": "INVOICE_FOLLOW_UP", "mode": "SUGGESTION", "priority": "HIGH", "ownerType": "AI",
            "ownerId": "ACTION_AI", "subjectRefType": "INVOICE", "subjectRefId": "INV-9",
            "source": "OVERDUE_INVOICE_DETECTOR", "tenantId": stack.tenant,
            "payload": task_body()["payload"]}
    created = (await stack.http.post("/tasks", json=body)).json()
    task = await until_status(stack, created["id"], "completed")
    assert (task["type"], task["mode"], task["priority"], task["owner_id"], task["title"]) == (
        "invoice_follow_up", "suggest", "high", "ACTION_AI", "invoice_follow_up INV-9")
    assert task["result"]["sent"] is False


async def test_list_filters_and_pages(stack: Stack):
    ids = [(await create(stack, mode="suggest", owner_id="bot-a" if i % 2 else "bot-b",
                         subject_ref_id=f"INV-{i}"))["id"] for i in range(5)]
    for task_id in ids:
        await until_status(stack, task_id, "completed")
    later = await create(stack, due_at="2030-06-01T00:00:00Z", owner_id="bot-a")
    await until_status(stack, later["id"], "scheduled")

    async def listing(query: str) -> dict:
        response = await stack.http.get(f"/tasks?tenant_id={stack.tenant}&{query}")
        assert response.status_code == 200, response.text
        return response.json()

    assert (await listing(""))["total"] == 6
    assert (await listing("status=completed"))["total"] == 5
    assert (await listing("status=scheduled&status=completed"))["total"] == 6
    assert {t["owner_id"] for t in (await listing("owner_id=bot-a"))["items"]} == {"bot-a"}
    assert [t["id"] for t in (await listing("subject_ref_id=INV-3"))["items"]] == [ids[3]]
    assert [t["id"] for t in (await listing("due_after=2030-01-01T00:00:00Z"))["items"]] == [later["id"]]
    assert (await listing("due_before=2030-01-01T00:00:00Z"))["total"] == 0
    assert (await listing("created_after=2000-01-01T00:00:00Z&type=invoice_follow_up"))["total"] == 6
    assert (await listing("created_before=2000-01-01T00:00:00Z"))["total"] == 0

    pages, offset = [], 0
    while offset is not None:
        page = await listing(f"limit=2&offset={offset}")
        assert page["limit"] == 2 and page["total"] == 6
        pages.extend(t["id"] for t in page["items"])
        offset = page["next_offset"]
    assert len(pages) == len(set(pages)) == 6
    assert pages == [t["id"] for t in (await listing("limit=100"))["items"]]
    assert (await listing("limit=100000"))["limit"] == stack.settings.page_size_max
    await stack.http.post(f"/tasks/{later['id']}/cancel")


async def test_task_types_and_health(stack: Stack):
    types = (await stack.http.get("/task-types")).json()["items"]
    invoice = next(t for t in types if t["name"] == "invoice_follow_up")
    assert "customer_email" in invoice["payload_schema"]["required"]
    health = await stack.http.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "database": "ok", "temporal": "ok"}
    schema = (await stack.http.get("http://testserver/openapi.json")).json()
    assert "/api/v1/tasks/{task_id}/approve" in schema["paths"]
    assert (await stack.http.get("http://testserver/docs")).status_code == 200


async def test_health_reports_an_unreachable_database(dev_env, tmp_path):
    import httpx

    from followthrough.api.main import create_app
    from tests.conftest import make_settings

    settings = make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none", tmp_path)
    app = create_app(settings, temporal=dev_env.client)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as http:
            health = await http.get("/healthz")
            assert health.status_code == 503
            assert health.json()["temporal"] == "ok" and health.json()["database"].startswith("unavailable")
            listing = await http.get("/tasks")
            assert listing.status_code == 503 and "unavailable" in listing.json()["detail"]


async def test_create_succeeds_while_the_mirror_is_down_and_the_workflow_writes_the_row(stack, tmp_path):
    """The API answers 201 once the workflow has started; the lost insert is made good by the workflow."""
    import httpx

    from followthrough.api.main import create_app

    broken = stack.settings.model_copy(update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"})
    app = create_app(broken, temporal=stack.client)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as http:
            # With a subject, duplicates must be checked first: without the database that is a 503
            # and nothing starts. Without one, the task starts and the lost insert is made good.
            refused = await http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest"))
            assert refused.status_code == 503, refused.text
            response = await http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest",
                                                                subject_ref_id=None))
    assert response.status_code == 201, response.text
    listed = await stack.http.get(f"/tasks?tenant_id={stack.tenant}")
    assert listed.json()["total"] <= 1  # the refused request started nothing
    task_id = response.json()["id"]
    # Until the workflow's first mirror write, the row does not exist (404).
    await eventually(lambda: stack.http.get(f"/tasks/{task_id}"),
                     lambda r: r.status_code == 200 and r.json()["status"] == "completed", timeout=20)
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    assert [e["type"] for e in events][0] == "TASK_CREATED"


async def test_duplicate_subject_within_the_window_is_refused_even_when_concurrent(stack: Stack):
    body = task_body(tenant_id=stack.tenant, mode="suggest", subject_ref_id="INV-777")
    responses = await asyncio.gather(*[stack.http.post("/tasks", json=body) for _ in range(20)])
    created = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code == 409]
    assert len(created) == 1 and len(refused) == 19, [r.status_code for r in responses]
    task_id = created[0].json()["id"]
    assert {r.json()["task_id"] for r in refused} == {task_id}
    listed = (await stack.http.get(f"/tasks?tenant_id={stack.tenant}&subject_ref_id=INV-777")).json()
    assert [t["id"] for t in listed["items"]] == [task_id]
    # Another source, type or tenant is not a duplicate.
    other = await stack.http.post("/tasks", json=body | {"source": "MANUAL"})
    assert other.status_code == 201


async def test_idempotency_key_replays_the_first_answer_even_when_concurrent(stack: Stack):
    body = task_body(tenant_id=stack.tenant, mode="suggest")
    headers = {"Idempotency-Key": f"key-{stack.tenant}"}
    responses = await asyncio.gather(*[stack.http.post("/tasks", json=body, headers=headers) for _ in range(20)])
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
    assert (await stack.http.get(f"/tasks?tenant_id={stack.tenant}")).json()["total"] == 1
    reused = await stack.http.post("/tasks", json=body | {"title": "something else"}, headers=headers)
    assert reused.status_code == 422 and "different request" in reused.json()["detail"]


async def test_batch_answers_each_item(stack: Stack):
    good = task_body(tenant_id=stack.tenant, mode="suggest")
    response = await stack.http.post("/tasks/batch", json={"items": [
        good, task_body(tenant_id=stack.tenant, type="teleport"), good, {"type": "invoice_follow_up"}]})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["status_code"] for i in items] == [201, 422, 409, 422]
    assert items[2]["id"] == items[0]["id"]
    assert items[3]["detail"][0]["loc"][-1] in ("customer_name", "payload")
    too_many = await stack.http.post("/tasks/batch", json={"items": [good] * (stack.settings.batch_max_items + 1)})
    assert too_many.status_code == 422


async def test_priority_orders_lists_and_sets_the_temporal_priority(stack: Stack):
    later = "2030-01-01T00:00:00Z"
    ids = {p: (await create(stack, priority=p, due_at=later))["id"] for p in ["low", "urgent", "normal", "HIGH"]}
    for task_id in ids.values():
        await until_status(stack, task_id, "scheduled")
    listed = (await stack.http.get(f"/tasks?tenant_id={stack.tenant}&order=priority")).json()["items"]
    assert [t["priority"] for t in listed] == ["urgent", "high", "normal", "low"]
    for name, key in [("urgent", 1), ("HIGH", 2), ("low", 4)]:
        task = (await stack.http.get(f"/tasks/{ids[name]}")).json()
        description = await stack.client.get_workflow_handle(task["workflow_id"]).describe()
        assert description.raw_description.workflow_execution_info.priority.priority_key == key
    for task_id in ids.values():
        await stack.http.post(f"/tasks/{task_id}/cancel")


async def test_an_idempotency_key_left_unanswered_by_a_dead_request_is_taken_over(stack: Stack):
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import insert

    from followthrough.db.tables import IdempotencyRecord

    body = task_body(tenant_id=stack.tenant, mode="suggest")
    async with stack.engine.begin() as conn:  # as a request that died before answering would leave it
        await conn.execute(insert(IdempotencyRecord.__table__).values(
            tenant_id=stack.tenant, key="orphan", request_hash="x", status_code=None, response=None,
            created_at=datetime.now(timezone.utc) - timedelta(minutes=5)))
    response = await stack.http.post("/tasks", json=body, headers={"Idempotency-Key": "orphan"})
    assert response.status_code == 201, response.text
    again = await stack.http.post("/tasks", json=body, headers={"Idempotency-Key": "orphan"})
    assert again.json()["id"] == response.json()["id"] and again.headers["Idempotent-Replayed"] == "true"


async def test_a_key_whose_request_died_after_starting_its_task_answers_with_that_task(stack: Stack):
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import func, select, update

    from followthrough.db.tables import IdempotencyRecord, Task

    body = task_body(tenant_id=stack.tenant, mode="suggest")
    first = await stack.http.post("/tasks", json=body, headers={"Idempotency-Key": "died-late"})
    assert first.status_code == 201, first.text
    records = IdempotencyRecord.__table__
    async with stack.engine.begin() as conn:  # the process died after starting the workflow, before answering
        await conn.execute(update(records).where(records.c.tenant_id == stack.tenant, records.c.key == "died-late")
                           .values(status_code=None, response=None,
                                   created_at=datetime.now(timezone.utc) - timedelta(seconds=20)))
    again = await stack.http.post("/tasks", json=body, headers={"Idempotency-Key": "died-late"})
    assert again.status_code == 201, again.text
    assert (again.json()["id"], again.json()["workflow_id"]) == (first.json()["id"], first.json()["workflow_id"])
    async with stack.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(Task.__table__)
                                    .where(Task.__table__.c.tenant_id == stack.tenant))).scalar_one()
    assert count == 1


async def test_a_subject_claimed_by_a_request_that_died_before_starting_its_task_is_taken_over(stack: Stack):
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import insert

    from followthrough.services.idempotency import dedupe_key
    from followthrough.db.tables import TaskDedupe

    body = task_body(tenant_id=stack.tenant, mode="suggest")
    key = dedupe_key(stack.tenant, "invoice_follow_up", body["subject_ref_type"], body["subject_ref_id"],
                     body["source"])
    async with stack.engine.begin() as conn:
        await conn.execute(insert(TaskDedupe.__table__).values(
            key=key, task_id="never-started", created_at=datetime.now(timezone.utc) - timedelta(minutes=5)))
    response = await stack.http.post("/tasks", json=body)
    assert response.status_code == 201, response.text
    duplicate = await stack.http.post("/tasks", json=body)
    assert duplicate.status_code == 409 and duplicate.json()["task_id"] == response.json()["id"]
