"""http_request and webhook tasks end to end: the HTTP API, the dev server and worker, a real receiver."""

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.infra import signing
from followthrough.db.database import session_factory
from followthrough.db.tables import Delivery
from tests.conftest import Stack, running_stack
from tests.helpers import add_task_secret, eventually
from tests.receivers import Receiver

GUARDED_TENANT = "guarded"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest_asyncio.fixture
async def hstack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    """The `stack` of conftest, with a tenant whose webhooks may reach one host only."""
    async with running_stack(dev_env, engine, tmp_path, guardrails={
            GUARDED_TENANT: {"webhook": {"allowed_hosts": ["hooks.example.com"]}}}) as running:
        yield running


async def create(stack: Stack, type_: str, payload: dict, **fields) -> str:
    body = {"type": type_, "tenant_id": stack.tenant, "subject_ref_id": uuid.uuid4().hex, "payload": payload}
    response = await stack.http.post("/tasks", json=body | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def until_status(stack: Stack, task_id: str, status: str, timeout: float = 30) -> dict:
    async def get() -> dict:
        return (await stack.http.get(f"/tasks/{task_id}")).json()
    return await eventually(get, lambda t: t["status"] == status, timeout=timeout)


async def deliveries(engine: AsyncEngine, task_id: str) -> list[Delivery]:
    async with session_factory(engine)() as session:
        return list((await session.execute(select(Delivery).where(Delivery.task_id == task_id))).scalars())


async def test_http_request_with_a_bearer_secret_is_reviewed_then_sent(hstack, receiver):
    value = f"sk-{uuid.uuid4().hex}"
    add_task_secret(hstack.settings, hstack.tenant, "crm_token", value, hosts=["127.0.0.1"])
    receiver.answer(201, '{"id": "note-7"}')
    task_id = await create(hstack, "http_request", {
        "method": "POST", "url": f"{receiver.url}/notes", "json": {"text": "Call ACME about INV-123"},
        "auth": {"type": "bearer", "secret": "crm_token"}})

    task = await until_status(hstack, task_id, "awaiting_approval")  # http_request defaults to review
    assert task["draft"]["subject"] == f"POST {receiver.url}/notes"
    assert "crm_token" in task["draft"]["body"] and "Call ACME about INV-123" in task["draft"]["body"]
    assert receiver.requests == []
    response = await hstack.http.post(f"/tasks/{task_id}/approve", json={}, headers={"X-Actor-Id": "alice"})
    assert response.status_code == 200, response.text

    task = await until_status(hstack, task_id, "completed")
    detail = task["result"]["delivery"]["detail"]
    assert (detail["status"], detail["body"], detail["duplicate"]) == (201, '{"id": "note-7"}', False)
    assert detail["duration_ms"] >= 0 and detail["headers"]["content-type"] == "application/json"
    [got] = receiver.requests
    assert got.headers["authorization"] == f"Bearer {value}"
    assert got.headers["idempotency-key"] == f"{task_id}:send"
    assert got.json() == {"text": "Call ACME about INV-123"}
    events = (await hstack.http.get(f"/tasks/{task_id}/events")).text
    assert value not in json.dumps(task) and value not in events


async def test_a_500_then_200_completes_after_a_retry_with_one_delivered_row(hstack, receiver):
    receiver.answer(500, '{"error": "try later"}')
    task_id = await create(hstack, "http_request", {"method": "PUT", "url": f"{receiver.url}/status"},
                           mode="autonomous", retry={"initial_interval_seconds": 0.2})
    task = await until_status(hstack, task_id, "completed")
    assert task["attempts"] == 2 and task["result"]["delivery"]["detail"]["status"] == 200
    [row] = await deliveries(hstack.engine, task_id)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 2, 200)
    assert [r.headers["idempotency-key"] for r in receiver.requests] == [f"{task_id}:send"] * 2


async def test_a_400_fails_the_task_with_the_status_in_the_error(hstack, receiver):
    receiver.answer(400, '{"error": "unknown customer"}')
    task_id = await create(hstack, "http_request", {"method": "POST", "url": f"{receiver.url}/notes",
                                                    "json": {"customer": "nobody"}}, mode="autonomous")
    task = await until_status(hstack, task_id, "failed")
    assert "400" in task["error"] and "unknown customer" in task["error"]
    assert len(receiver.requests) == 1  # refused: not retried
    events = (await hstack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    assert events[-1]["type"] == "TASK_EXECUTION_FAILED" and events[-1]["data"]["error_type"] == "DeliveryRefused"


async def test_a_webhook_arrives_signed_and_verifiable(hstack, receiver):
    add_task_secret(hstack.settings, hstack.tenant, "acme_hooks", "whsec-from-file")
    task_id = await create(hstack, "webhook", {"url": f"{receiver.url}/hooks", "secret": "acme_hooks",
                                               "event": "invoice.paid", "payload": {"invoice": "INV-9"}})
    task = await until_status(hstack, task_id, "completed")  # webhook defaults to autonomous
    assert task["mode"] == "autonomous" and "invoice.paid" in task["draft"]["subject"]
    [got] = receiver.requests
    assert signing.verify("whsec-from-file", got.headers["x-followthrough-signature"], got.body)
    delivery_id = task["result"]["delivery"]["delivery_id"]
    assert got.headers["x-followthrough-delivery"] == delivery_id == got.json()["id"]
    assert (got.json()["event"], got.json()["data"]) == ("invoice.paid", {"invoice": "INV-9"})
    [row] = await deliveries(hstack.engine, task_id)
    assert (row.id, row.status, row.channel) == (delivery_id, "delivered", "webhook")


async def test_a_webhook_to_a_host_outside_the_tenants_list_waits_for_approval(hstack, receiver):
    hstack.tenant = GUARDED_TENANT
    add_task_secret(hstack.settings, GUARDED_TENANT, "acme_hooks", "whsec-guarded")
    task_id = await create(hstack, "webhook", {"url": f"{receiver.url}/hooks", "secret": "acme_hooks",
                                               "event": "invoice.paid"})
    await until_status(hstack, task_id, "awaiting_approval")
    events = (await hstack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    flagged = [e for e in events if e["type"] == "TASK_GUARDRAIL_FLAGGED"]
    assert flagged and "127.0.0.1" in json.dumps(flagged[0]["data"])
    await hstack.http.post(f"/tasks/{task_id}/cancel")
    assert receiver.requests == []


@pytest.mark.parametrize("type_, payload, loc", [
    ("http_request", {"url": "https://api.example.com/x", "auth": {"type": "bearer", "token": "sk-live-1"}},
     ["body", "payload", "auth"]),
    ("http_request", {"url": "https://api.example.com/x", "headers": {"Authorization": "Bearer sk-live-1"}},
     ["body", "payload", "headers"]),
    ("http_request", {"url": "https://svc:sk-live-1@api.example.com/x"}, ["body", "payload", "url"]),
    ("webhook", {"url": "https://hooks.example.com", "secret": "hooks", "event": "e", "password": "sk-live-1"},
     ["body", "payload", "password"]),
])
async def test_a_raw_credential_is_refused_with_directions_to_secrets(hstack, type_, payload, loc):
    response = await hstack.http.post("/tasks", json={"type": type_, "payload": payload})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    assert "FOLLOWTHROUGH_TASK_SECRETS_FILE" in error["msg"] and "reference it by name" in error["msg"]


@pytest.mark.parametrize("type_, payload, loc", [
    ("http_request", {"url": "ftp://files.example.com/x"}, ["body", "payload", "url"]),
    ("http_request", {"url": "https://api.example.com", "method": "TRACE"}, ["body", "payload", "method"]),
    ("http_request", {"url": "https://api.example.com", "body": "x"}, ["body", "payload", "body"]),
    ("webhook", {"url": "https://hooks.example.com", "secret": "hooks"}, ["body", "payload", "event"]),
    ("webhook", {"url": "https://hooks.example.com", "secret": "hooks", "event": "Task.completed"},
     ["body", "payload", "event"]),
    # The host a secret is bound to is the URL's: a request may not name another in its own Host header.
    ("http_request", {"url": "https://api.example.com", "headers": {"host": "evil.example"}},
     ["body", "payload", "headers"]),
    ("http_request", {"url": "https://api.example.com", "headers": {"Transfer-Encoding": "chunked"}},
     ["body", "payload", "headers"]),
    ("http_request", {"url": "https://api.example.com", "auth": {"type": "api_key", "secret": "k", "header": "Host"}},
     ["body", "payload", "auth", "header"]),
])
async def test_other_invalid_payloads_are_422_naming_the_field(hstack, type_, payload, loc):
    response = await hstack.http.post("/tasks", json={"type": type_, "payload": payload})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
