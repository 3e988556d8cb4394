"""Guardrails overridden per tenant, the first-contact guardrail, and a reminder
delivered by webhook, through the HTTP API on the dev server."""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import pytest_asyncio

from followthrough.infra import signing
from tests.conftest import running_stack
from tests.helpers import add_task_secret, eventually, invoice_payload, task_body
from tests.receivers import Receiver

STRICT = "strict-tenant"


@pytest_asyncio.fixture
async def guarded(dev_env, engine, tmp_path):
    overrides = {STRICT: {"invoice_follow_up": {"amount_limit": 500, "allowed_domains": ["acme.example"],
                                                "flag_first_contact": True}}}
    async with running_stack(dev_env, engine, tmp_path, guardrails=overrides) as running:
        yield running


async def _settled(stack, task_id: str) -> dict:
    return await eventually(lambda: stack.http.get(f"/tasks/{task_id}"),
                            lambda r: r.json()["status"] in ("completed", "awaiting_approval"), timeout=20)


async def _flags(stack, task_id: str) -> list[str]:
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    return [r for e in events if e["type"] == "TASK_GUARDRAIL_FLAGGED" for r in e["data"]["reasons"]]


async def test_a_tenants_stricter_guardrails_hold_its_tasks_for_approval(guarded):
    body = task_body(mode="autonomous", payload=invoice_payload(invoice_amount=800))
    relaxed = (await guarded.http.post("/tasks", json=body | {"tenant_id": guarded.tenant})).json()
    strict = (await guarded.http.post("/tasks", json=body | {"tenant_id": STRICT,
                                                             "subject_ref_id": f"{guarded.tenant}-s"})).json()
    assert (await _settled(guarded, relaxed["id"])).json()["status"] == "completed"
    assert (await _settled(guarded, strict["id"])).json()["status"] == "awaiting_approval"
    reasons = await _flags(guarded, strict["id"])
    assert any("above the limit of 500.00" in r for r in reasons)
    assert any("first contact with billing@acme.example" in r for r in reasons)
    await guarded.http.post(f"/tasks/{strict['id']}/cancel")


async def test_first_contact_is_flagged_only_the_first_time(guarded):
    def body(n: int) -> dict:
        return task_body(mode="autonomous", tenant_id=STRICT, subject_ref_id=f"{guarded.tenant}-{n}",
                         payload=invoice_payload(customer_email=f"{guarded.tenant}@acme.example", invoice_amount=100))

    first = (await guarded.http.post("/tasks", json=body(1))).json()
    assert (await _settled(guarded, first["id"])).json()["status"] == "awaiting_approval"
    assert any("first contact" in r for r in await _flags(guarded, first["id"]))
    assert (await guarded.http.post(f"/tasks/{first['id']}/approve", json={})).status_code == 200
    await eventually(lambda: guarded.http.get(f"/tasks/{first['id']}"),
                     lambda r: r.json()["status"] == "completed")
    second = (await guarded.http.post("/tasks", json=body(2))).json()
    assert (await _settled(guarded, second["id"])).json()["status"] == "completed"
    assert await _flags(guarded, second["id"]) == []


async def test_recipients_outside_the_tenants_domains_are_flagged(guarded):
    body = task_body(mode="assisted", tenant_id=STRICT, subject_ref_id=f"{guarded.tenant}-d",
                     payload=invoice_payload(customer_email="ap@elsewhere.example", invoice_amount=10))
    created = (await guarded.http.post("/tasks", json=body)).json()
    assert (await _settled(guarded, created["id"])).json()["status"] == "awaiting_approval"
    assert any("outside the allowed domains: ap@elsewhere.example" in r for r in await _flags(guarded, created["id"]))
    await guarded.http.post(f"/tasks/{created['id']}/cancel")


@pytest.fixture
def hook(stack):
    add_task_secret(stack.settings, stack.tenant, "owner_hook", "owner-secret")
    with Receiver() as running:
        yield running


async def test_reminder_reaches_the_owner_by_webhook_at_its_due_time(stack, hook):
    due = datetime.now(timezone.utc) + timedelta(seconds=3)
    created = await stack.http.post("/tasks", json={
        "type": "reminder", "tenant_id": stack.tenant, "title": "Call ACME back", "owner_id": "alice",
        "due_at": due.isoformat(),
        "payload": {"message": "Time to call {{ who }}.", "variables": {"who": "ACME"},
                    "webhook": {"url": f"{hook.url}/owner", "secret": "owner_hook"}}})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    await eventually(lambda: stack.http.get(f"/tasks/{task_id}"), lambda r: r.json()["status"] == "scheduled")
    await eventually(lambda: asyncio.sleep(0, len(hook.requests)), lambda n: n == 1, timeout=20)
    received_at = datetime.now(timezone.utc)
    assert received_at >= due
    [request] = hook.requests
    assert signing.verify("owner-secret", request.headers[signing.HEADER.lower()], request.body)
    event = request.json()
    assert event["event"] == "task.reminder" and event["data"]["message"] == "Time to call ACME."
    await eventually(lambda: stack.http.get(f"/tasks/{task_id}"), lambda r: r.json()["status"] == "completed")
