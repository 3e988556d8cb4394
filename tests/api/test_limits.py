"""Limits through the real API: body size, payload size, page size, the creation rate and the tasks a tenant
may have in flight, each set by its setting, on every configured database."""

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.db.api_keys import create as create_key
from tests.conftest import running_stack
from tests.helpers import add_task_secret, eventually, invoice_payload, task_body, until_status


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_a_body_over_the_limit_is_refused_with_413(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                         tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, max_body_bytes=2000) as stack:
        big = task_body(title="x" * 3000)
        declared = await stack.http.post("/tasks", json=big)
        assert declared.status_code == 413
        assert "2000 bytes" in declared.json()["detail"]

        async def chunks(body: bytes, size: int = 500) -> AsyncIterator[bytes]:
            for start in range(0, len(body), size):
                yield body[start:start + size]

        streamed = await stack.http.post("/tasks", content=chunks(json.dumps(big).encode()),
                                         headers={"content-type": "application/json"})
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413 and "2000 bytes" in streamed.json()["detail"]

        small = await stack.http.post("/tasks", content=chunks(json.dumps(task_body(tenant_id=stack.tenant))
                                                               .encode()),
                                      headers={"content-type": "application/json"})
        assert small.status_code == 201, small.text

    async with running_stack(dev_env, engine, tmp_path, max_body_bytes=0) as unlimited:
        long_email = {"type": "email", "mode": "review", "tenant_id": unlimited.tenant,
                      "payload": {"to": ["a@b.example"], "subject": "s", "body": "x" * 3000}}
        response = await unlimited.http.post("/tasks", json=long_email)
        assert response.status_code == 201, response.text


async def test_a_payload_over_the_limit_is_a_422_naming_it(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                           tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, max_payload_bytes=1000) as stack:
        big = invoice_payload(customer_name="A" * 1200)
        single = await stack.http.post("/tasks", json=task_body(payload=big))
        assert single.status_code == 422
        [error] = single.json()["detail"]
        assert error["loc"] == ["body", "payload"] and "at most 1000" in error["msg"]

        batch = await stack.http.post("/tasks/batch", json={"items": [task_body(payload=big, tenant_id=stack.tenant),
                                                                      task_body(tenant_id=stack.tenant)]})
        assert batch.status_code == 200, batch.text
        first, second = batch.json()["items"]
        assert first["status_code"] == 422 and first["detail"][0]["loc"] == ["body", "payload"]
        assert second["status_code"] == 201

        definition = {"tenant_id": stack.tenant, "name": "big", "type": "email", "mode": "autonomous",
                      "payload": {"to": ["a@b.example"], "subject": "Hello", "body": "{{ text }}"}}
        refused = await stack.http.post("/definitions", json=definition | {
            "name": "too-big", "payload": definition["payload"] | {"body": "x" * 1200}})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "payload"]
        made = await stack.http.post("/definitions", json=definition)
        assert made.status_code == 201, made.text
        run = await stack.http.post(f"/definitions/{made.json()['id']}/run", json={"variables": {"text": "y" * 1200}})
        assert run.status_code == 422
        assert run.json()["detail"][0]["loc"] == ["definition", "payload"]
        assert (await stack.http.post(f"/definitions/{made.json()['id']}/run",
                                      json={"variables": {"text": "short"}})).status_code == 201


async def test_every_list_clamps_its_page_to_the_maximum(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                         tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, page_size_max=2, page_size_default=1) as stack:
        ids = []
        for _ in range(3):
            created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        await until_status(stack, ids[0], "awaiting_approval")
        definition = await stack.http.post("/definitions", json={
            "tenant_id": stack.tenant, "name": "d", "type": "email",
            "payload": {"to": ["a@b.example"], "subject": "s", "body": "b"}})
        assert definition.status_code == 201, definition.text
        add_task_secret(stack.settings, stack.tenant, "s", "whsec-limits")
        subscription = await stack.http.post("/subscriptions", json={"tenant_id": stack.tenant,
                                                                     "url": "http://hooks.example/x", "secret": "s"})
        assert subscription.status_code == 201, subscription.text

        lists = {f"/tasks?tenant_id={stack.tenant}": 1, f"/tasks/{ids[0]}/events": 2,
                 f"/tasks/{ids[0]}/subtasks": 2, f"/approvals?tenant_id={stack.tenant}": 1,
                 f"/definitions?tenant_id={stack.tenant}": 1,
                 f"/definitions/{definition.json()['id']}/runs": 1, f"/subscriptions?tenant_id={stack.tenant}": 1}
        for path, default in lists.items():
            plain = await stack.http.get(path)
            assert plain.status_code == 200, (path, plain.text)
            assert plain.json()["limit"] == default, path
            joiner = "&" if "?" in path else "?"
            capped = await stack.http.get(f"{path}{joiner}limit=500")
            assert capped.status_code == 200, (path, capped.text)
            page = capped.json()
            assert page["limit"] == 2 and len(page["items"]) <= 2, path
        tasks = (await stack.http.get(f"/tasks?tenant_id={stack.tenant}&limit=500")).json()
        assert tasks["total"] == 3 and tasks["next_offset"] == 2
        events = (await stack.http.get(f"/tasks/{ids[0]}/events?limit=1&offset=1")).json()
        assert events["total"] >= 3 and len(events["items"]) == 1 and events["next_offset"] == 2


async def test_task_creation_is_rate_limited_per_tenant(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                        tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, rate_limit_per_minute=6, rate_limit_burst=2) as stack:
        busy, other = tenant(), tenant()
        for _ in range(2):
            assert (await stack.http.post("/tasks", json=task_body(tenant_id=busy))).status_code == 201
        refused = await stack.http.post("/tasks", json=task_body(tenant_id=busy))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 10  # a token every 10 s
        assert refused.json()["limit"] == "rate" and busy in refused.json()["detail"]
        # Another tenant has its own bucket.
        assert (await stack.http.post("/tasks", json=task_body(tenant_id=other))).status_code == 201

        # A batch counts its items, per tenant, and is refused whole when they do not fit.
        batch = await stack.http.post("/tasks/batch", json={"items": [task_body(tenant_id=other),
                                                                      task_body(tenant_id=other)]})
        assert batch.status_code == 429 and "Retry-After" in batch.headers
        third = tenant()
        too_many = await stack.http.post("/tasks/batch", json={"items": [task_body(tenant_id=third)
                                                                         for _ in range(3)]})
        assert too_many.status_code == 422 and "at most 2" in too_many.json()["detail"][0]["msg"]

        # A definition's run is a creation too, counted against the definition's tenant.
        made = await stack.http.post("/definitions", json={
            "tenant_id": busy, "name": "d", "type": "email",
            "payload": {"to": ["a@b.example"], "subject": "s", "body": "b"}})
        assert made.status_code == 201, made.text
        assert (await stack.http.post(f"/definitions/{made.json()['id']}/run")).status_code == 429


async def test_with_a_key_the_rate_counts_against_the_keys_tenant(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                                  tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, anonymous_access=False, rate_limit_per_minute=1) as stack:
        _, token = await create_key(engine, tenant_id=tenant(), actor_id="sam", name="k", roles=["submitter"])
        headers = {"Authorization": f"Bearer {token}"}
        # The key's tenant, whatever the body would name: with a key, a body names no other tenant.
        first = await stack.http.post("/tasks", json=task_body(), headers=headers)
        assert first.status_code == 201, first.text
        second = await stack.http.post("/tasks", json=task_body(), headers=headers)
        assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1


async def test_tasks_in_flight_are_capped_per_tenant(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                     tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, max_tasks_in_flight=2) as stack:
        ids = []
        for _ in range(2):
            created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        refused = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        assert refused.json()["limit"] == "tasks_in_flight" and "2 tasks in flight" in refused.json()["detail"]
        assert (await stack.http.post("/tasks", json=task_body(tenant_id=tenant()))).status_code == 201

        await until_status(stack, ids[0], "awaiting_approval")
        assert (await stack.http.post(f"/tasks/{ids[0]}/cancel", json={})).status_code in (200, 202)
        await until_status(stack, ids[0], "cancelled")
        again = await eventually(lambda: stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant)),
                                 lambda r: r.status_code != 429)
        assert again.status_code == 201, again.text
