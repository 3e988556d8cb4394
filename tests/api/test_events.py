"""Inbound events end to end (POST /events, the signed webhook form) on the dev server and a real worker: tasks
whose stop_on names the event stop while they wait, those sending or ended are reported untouched; a repeat
changes nothing; an event before its task still stops it within the lookback; a definition's event trigger."""

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.db.tables import InboundEvent
from followthrough.infra import signing
from tests.conftest import Stack, running_stack
from tests.helpers import add_task_secret, event_types, eventually, get_task, outbox_rows, task_body, until_status
from tests.receivers import Receiver

HOOK_SECRET = "whsec-billing-test"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest_asyncio.fixture
async def estack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_BILLING_HOOK", HOOK_SECRET)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    async with running_stack(dev_env, engine, tmp_path, event_sources={
            "billing": {"secret": "billing-hook", "tenant": tenant}, "nosecret": "not-configured"}) as running:
        running.tenant = tenant
        yield running


def subject() -> str:
    return f"INV-{uuid.uuid4().hex[:8]}"


async def create(stack: Stack, **fields) -> dict:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
    assert response.status_code == 201, response.text
    return response.json()


async def post_event(stack: Stack, invoice: str, type_: str = "invoice.paid", event_id: str | None = None,
                     expect: int = 201, **fields) -> dict:
    body = {"id": event_id or f"evt-{uuid.uuid4().hex}", "type": type_, "subject_ref_type": "INVOICE",
            "subject_ref_id": invoice, "data": {"amount": 1200}, "tenant_id": stack.tenant} | fields
    response = await stack.http.post("/events", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def outcomes(answer: dict) -> dict[str, tuple[str, str | None]]:
    return {t["task_id"]: (t["outcome"], t["detail"]) for t in answer["tasks"]}


async def test_waiting_tasks_stop_and_ended_ones_are_reported_untouched(estack):
    invoice = subject()
    due = (datetime.now(timezone.utc) + timedelta(hours=6)).isoformat()
    scheduled = await create(estack, subject_ref_id=invoice, due_at=due, stop_on=["invoice.paid"])
    waiting = await create(estack, subject_ref_id=invoice, source="other", stop_on=["invoice.paid", "customer.replied"])
    done = await create(estack, subject_ref_id=invoice, source="third", mode="suggest", stop_on=["invoice.paid"])
    deaf = await create(estack, subject_ref_id=invoice, source="fourth", due_at=due)  # no stop_on
    elsewhere = await create(estack, subject_ref_id=subject(), due_at=due, stop_on=["invoice.paid"])
    await until_status(estack, scheduled["id"], "scheduled")
    await until_status(estack, waiting["id"], "awaiting_approval")
    await until_status(estack, done["id"], "completed")

    answer = await post_event(estack, invoice)
    assert answer["duplicate"] is False and answer["runs"] == []
    assert outcomes(answer) == {scheduled["id"]: ("stopped", "stopped while waiting: cancelled"),
                                waiting["id"]: ("stopped", "stopped while waiting: cancelled"),
                                done["id"]: ("already_ended", "already ended: completed")}
    for task in (scheduled, waiting):
        await until_status(estack, task["id"], "cancelled")
        events = (await estack.http.get(f"/tasks/{task['id']}/events")).json()["items"]
        cancel = [e for e in events if e["type"] == "TASK_CANCELLED"]
        assert len(cancel) == 1 and cancel[0]["data"]["stopped_by_event"]["id"] == answer["id"]
        assert cancel[0]["data"]["stopped_by_event"]["type"] == "invoice.paid"
        assert cancel[0]["actor_id"] == f"event:{answer['id']}"
        assert await outbox_rows(estack.engine, task["id"]) == []
    approval = (await estack.http.get(f"/tasks/{waiting['id']}/approval")).json()
    assert approval["status"] == "cancelled"
    for task in (deaf, elsewhere):
        assert (await get_task(estack, task["id"]))["status"] == "scheduled"
    assert (await get_task(estack, scheduled["id"]))["stop_on"] == ["invoice.paid"]


async def test_a_repeated_event_answers_the_same_and_records_nothing_more(estack):
    invoice = subject()
    task = await create(estack, subject_ref_id=invoice, stop_on=["customer.replied"])
    await until_status(estack, task["id"], "awaiting_approval")
    first = await post_event(estack, invoice, "customer.replied", event_id="reply-42")
    again = await post_event(estack, invoice, "customer.replied", event_id="reply-42", expect=200,
                             data={"other": "content"})
    assert again == first | {"duplicate": True}
    assert outcomes(first) == {task["id"]: ("stopped", "stopped while waiting: cancelled")}
    await until_status(estack, task["id"], "cancelled")
    assert (await event_types(estack.engine, task["id"])).count("TASK_CANCELLED") == 1
    # The same id in another tenant is another event.
    other = await post_event(estack, invoice, "customer.replied", event_id="reply-42", tenant_id=f"{estack.tenant}-b")
    assert other["tasks"] == []


async def test_a_task_already_sending_is_reported_and_finishes(estack, receiver):
    add_task_secret(estack.settings, estack.tenant, "hooks", "whsec-x")
    receiver.answer(200, delay=4)
    invoice = subject()
    task = await create(estack, type="webhook", mode="autonomous", subject_ref_id=invoice, stop_on=["invoice.paid"],
                        payload={"url": f"{receiver.url}/hook", "secret": "hooks", "event": "invoice.reminder"})
    await eventually(lambda: get_task(estack, task["id"]), lambda t: t["stage"] == "sending", timeout=20)
    answer = await post_event(estack, invoice)
    assert outcomes(answer) == {task["id"]: ("not_waiting", "not waiting: sending")}
    await until_status(estack, task["id"], "completed")
    assert len(receiver.requests) == 1


async def test_an_event_before_its_task_stops_it_at_creation_within_the_lookback(estack):
    invoice = subject()
    event = await post_event(estack, invoice)
    assert event["tasks"] == []
    created = await create(estack, subject_ref_id=invoice, stop_on=["invoice.paid"])
    assert created["status"] == "cancelled" and created["stopped_by_event"]["id"] == event["id"]
    task = await until_status(estack, created["id"], "cancelled")
    assert task["draft"] is None
    assert await event_types(estack.engine, created["id"]) == ["TASK_CREATED", "TASK_CANCELLED"]
    # A task naming other events, and one whose event is older than the lookback, run as usual.
    other = await create(estack, subject_ref_id=invoice, source="other", stop_on=["customer.replied"])
    assert other["status"] == "pending" and other.get("stopped_by_event") is None
    late = subject()
    old = await post_event(estack, late)
    async with estack.engine.begin() as conn:
        await conn.execute(update(InboundEvent.__table__).where(InboundEvent.__table__.c.id == old["id"]).values(
            received_at=datetime.now(timezone.utc) - timedelta(seconds=estack.settings.event_lookback_seconds + 60)))
    fresh = await create(estack, subject_ref_id=late, stop_on=["invoice.paid"])
    assert fresh["status"] == "pending"
    await until_status(estack, fresh["id"], "awaiting_approval")


async def test_stop_on_in_a_batch_and_from_a_definition(estack):
    invoice = subject()
    response = await estack.http.post("/tasks/batch", json={"items": [
        task_body(tenant_id=estack.tenant, subject_ref_id=invoice, stop_on=["invoice.paid"]),
        task_body(tenant_id=estack.tenant, subject_ref_id=invoice, stop_on=["Invoice Paid"])]})
    first, second = response.json()["items"]
    assert first["status_code"] == 201 and second["status_code"] == 422
    definition = await estack.http.post("/definitions", json={
        "tenant_id": estack.tenant, "name": f"remind-{uuid.uuid4().hex[:6]}", "type": "invoice_follow_up",
        "mode": "review", "payload": task_body()["payload"],
        "defaults": {"subject_ref_type": "INVOICE", "subject_ref_id": "{{ invoice }}", "source": "def",
                     "stop_on": ["invoice.paid"]}})
    assert definition.status_code == 201, definition.text
    run = await estack.http.post(f"/definitions/{definition.json()['id']}/run", json={"variables": {"invoice": invoice}})
    assert run.status_code == 201, run.text
    await until_status(estack, first["id"], "awaiting_approval")
    await until_status(estack, run.json()["id"], "awaiting_approval")
    answer = await post_event(estack, invoice)
    assert {t["task_id"] for t in answer["tasks"] if t["outcome"] == "stopped"} == {first["id"], run.json()["id"]}


async def test_a_definition_triggered_by_an_event_runs_once_per_event(estack):
    created = await estack.http.post("/definitions", json={
        "tenant_id": estack.tenant, "name": f"overdue-{uuid.uuid4().hex[:6]}", "type": "invoice_follow_up",
        "mode": "review", "title": "Chase {{ event.subject_ref_id }}", "trigger": {"event": "invoice.overdue"},
        "payload": task_body()["payload"] | {"invoice_number": "{{ event.subject_ref_id }}",
                                             "invoice_amount": "{{ event.data.amount }}"},
        "defaults": {"stop_on": ["invoice.paid"]}})
    assert created.status_code == 201, created.text
    definition = created.json()
    assert definition["trigger"] == {"event": "invoice.overdue"}
    invoice = subject()
    answer = await post_event(estack, invoice, "invoice.overdue", event_id="overdue-1")
    [run] = answer["runs"]
    assert (run["definition_id"], run["outcome"]) == (definition["id"], "created")
    again = await post_event(estack, invoice, "invoice.overdue", event_id="overdue-1", expect=200)
    assert again["runs"] == answer["runs"]
    task = await until_status(estack, run["task_id"], "awaiting_approval")
    assert (task["title"], task["payload"]["invoice_number"], task["payload"]["invoice_amount"]) == (
        f"Chase {invoice}", invoice, 1200)
    assert (task["trigger"], task["definition_id"], task["subject_ref_id"]) == ("event", definition["id"], invoice)
    runs = (await estack.http.get(f"/definitions/{definition['id']}/runs", params={"trigger": "event"})).json()
    assert [r["id"] for r in runs["items"]] == [run["task_id"]]
    # The run stops on invoice.paid like any task; removing the trigger stops new runs.
    paid = await post_event(estack, invoice)
    assert outcomes(paid) == {run["task_id"]: ("stopped", "stopped while waiting: cancelled")}
    patched = await estack.http.patch(f"/definitions/{definition['id']}", json={"trigger": None})
    assert patched.status_code == 200 and patched.json()["trigger"] is None
    assert (await post_event(estack, subject(), "invoice.overdue"))["runs"] == []


def signed(body: bytes, secret: str = HOOK_SECRET, at: int | None = None) -> dict[str, str]:
    return {signing.HEADER: signing.sign(secret, body, at), "Content-Type": "application/json"}


async def test_webhook_events_are_verified_by_their_sources_signature(estack):
    invoice = subject()
    task = await create(estack, subject_ref_id=invoice, stop_on=["invoice.paid"])
    await until_status(estack, task["id"], "awaiting_approval")
    body = json.dumps({"id": f"hook-{uuid.uuid4().hex}", "type": "invoice.paid", "subject_ref_type": "INVOICE",
                       "subject_ref_id": invoice, "data": {"paid_at": "2026-12-04"}}).encode()
    url = "/events/webhooks/billing"
    for headers in ({"Content-Type": "application/json"}, signed(body, "wrong-secret"),
                    signed(body, at=int(time.time()) - 3600), signed(body + b" ")):
        response = await estack.http.post(url, content=body, headers=headers)
        assert response.status_code == 401, response.text
        assert "signature" in response.json()["detail"]
    assert (await get_task(estack, task["id"]))["status"] == "awaiting_approval"
    assert (await estack.http.post("/events/webhooks/nobody", content=body, headers=signed(body))).status_code == 404
    assert (await estack.http.post("/events/webhooks/nosecret", content=body,
                                   headers=signed(body))).status_code == 503
    response = await estack.http.post(url, content=body, headers=signed(body))
    assert response.status_code == 201, response.text
    assert response.json()["tenant_id"] == estack.tenant and response.json()["source"] == "webhook:billing"
    assert outcomes(response.json()) == {task["id"]: ("stopped", "stopped while waiting: cancelled")}
    # The same delivery again, signed afresh: the first answer, nothing more.
    replay = await estack.http.post(url, content=body, headers=signed(body))
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    await until_status(estack, task["id"], "cancelled")
    extra = json.dumps({"id": "x", "type": "invoice.paid", "surprise": 1}).encode()
    response = await estack.http.post(url, content=extra, headers=signed(extra))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "surprise"]
    other = json.dumps({"id": "y", "type": "invoice.paid", "tenant_id": "someone-else"}).encode()
    assert (await estack.http.post(url, content=other, headers=signed(other))).status_code == 403


@pytest.mark.parametrize("body, where", [
    ({"id": "e", "type": "invoice.paid", "unknown": 1}, ["body", "unknown"]),
    ({"type": "invoice.paid"}, ["body", "id"]),
    ({"id": "e", "type": "Invoice Paid"}, ["body", "type"]),
    ({"id": "e", "type": "invoice.paid", "subject_ref_type": "INVOICE"}, ["body"]),
    ({"id": "has space", "type": "invoice.paid"}, ["body", "id"]),
    ({"id": "e", "type": "invoice.paid", "data": {"note": "x" * 300_000}}, ["body", "data"]),
])
async def test_a_bad_event_is_a_422_naming_the_field(estack, body, where):
    response = await estack.http.post("/events", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == where


@pytest.mark.parametrize("fields, where", [
    ({"stop_on": ["invoice paid"]}, ["body", "stop_on", 0]),
    ({"stop_on": ["invoice.paid"], "subject_ref_id": None, "subject_ref_type": None}, ["body"]),
    ({"stop_on": "invoice.paid"}, ["body", "stop_on"]),
])
async def test_a_bad_stop_on_is_a_422(estack, fields, where):
    response = await estack.http.post("/tasks", json=task_body(tenant_id=estack.tenant) | fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == where


async def test_events_take_a_submitter_key_and_stay_in_its_tenant(dev_env, engine, tmp_path):
    from followthrough.db import api_keys

    tenant, other = f"k-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    async with running_stack(dev_env, engine, tmp_path, anonymous_access=False) as stack:
        _, submitter = await api_keys.create(engine, tenant_id=tenant, actor_id="billing-bot", name="s",
                                             roles=["submitter"])
        _, viewer = await api_keys.create(engine, tenant_id=tenant, actor_id="vera", name="v", roles=["viewer"])
        _, outsider = await api_keys.create(engine, tenant_id=other, actor_id="otto", name="o", roles=["submitter"])
        invoice = subject()
        response = await stack.http.post("/tasks", headers={"Authorization": f"Bearer {submitter}"},
                                         json=task_body(subject_ref_id=invoice, stop_on=["invoice.paid"]))
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        await eventually(lambda: stack.http.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {viewer}"}),
                         lambda r: r.json()["status"] == "awaiting_approval", timeout=20)
        event = {"id": "paid-1", "type": "invoice.paid", "subject_ref_type": "INVOICE", "subject_ref_id": invoice}
        assert (await stack.http.post("/events", json=event)).status_code == 401
        assert (await stack.http.post("/events", json=event,
                                      headers={"Authorization": f"Bearer {viewer}"})).status_code == 403
        named = await stack.http.post("/events", json=event | {"tenant_id": other},
                                      headers={"Authorization": f"Bearer {submitter}"})
        assert named.status_code == 403
        # Another tenant's event of the same subject and id touches nothing here.
        foreign = await stack.http.post("/events", json=event, headers={"Authorization": f"Bearer {outsider}"})
        assert foreign.status_code == 201 and foreign.json()["tasks"] == []
        own = await stack.http.post("/events", json=event, headers={"Authorization": f"Bearer {submitter}"})
        assert own.status_code == 201 and own.json()["tenant_id"] == tenant
        assert [(t["task_id"], t["outcome"]) for t in own.json()["tasks"]] == [(task_id, "stopped")]


async def test_a_post_that_died_part_way_is_finished_by_its_repeat(estack):
    invoice = subject()
    task = await create(estack, subject_ref_id=invoice, stop_on=["invoice.paid"])
    await until_status(estack, task["id"], "awaiting_approval")
    first = await post_event(estack, invoice, event_id="paid-crash")
    table = InboundEvent.__table__
    async with estack.engine.begin() as conn:  # as if the process died before storing its answer
        await conn.execute(update(table).where(table.c.id == "paid-crash").values(response=None))
    again = await post_event(estack, invoice, event_id="paid-crash", expect=200)
    assert again["duplicate"] is True and again["received_at"] == first["received_at"]
    assert outcomes(again) == {task["id"]: ("already_ended", "already ended: cancelled")}
    await until_status(estack, task["id"], "cancelled")
    assert (await event_types(estack.engine, task["id"])).count("TASK_CANCELLED") == 1
    # Its answer is stored now: a third post gets it.
    assert await post_event(estack, invoice, event_id="paid-crash", expect=200) == again


async def test_a_run_refused_for_now_is_tried_again_by_the_events_repeat(estack):
    # Over the tenant's rate the triggered run is refused for now; the answer says to post again, is not kept
    # as the event's answer, and the repeat, once the tenant may start tasks again, starts the run.
    created = await estack.http.post("/definitions", json={
        "tenant_id": estack.tenant, "name": f"overdue-{uuid.uuid4().hex[:6]}", "type": "invoice_follow_up",
        "mode": "review", "title": "Chase {{ event.subject_ref_id }}", "trigger": {"event": "invoice.overdue"},
        "payload": task_body()["payload"]})
    assert created.status_code == 201, created.text
    invoice = subject()
    estack.settings.rate_limit_per_minute = 1
    await create(estack, subject_ref_id=subject())  # the minute's one start
    busy = await post_event(estack, invoice, "invoice.overdue", event_id="overdue-busy")
    [run] = busy["runs"]
    assert run["outcome"] == "error" and "post the event again" in run["detail"], run
    estack.settings.rate_limit_per_minute = 0
    again = await post_event(estack, invoice, "invoice.overdue", event_id="overdue-busy", expect=200)
    [run] = again["runs"]
    assert run["outcome"] == "created", run
    assert await post_event(estack, invoice, "invoice.overdue", event_id="overdue-busy", expect=200) == again


async def test_odd_webhook_bodies_and_headers_are_refused_not_a_server_error(estack):
    url = "/events/webhooks/billing"
    body = json.dumps({"id": f"hook-{uuid.uuid4().hex}", "type": "invoice.paid"}).encode()
    huge = {signing.HEADER: "t=" + "9" * 5000 + ",v1=ab", "Content-Type": "application/json"}
    assert (await estack.http.post(url, content=body, headers=huge)).status_code == 401
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await estack.http.post(url, content=deep, headers=signed(deep))
    assert response.status_code in (413, 422), response.text


async def test_an_id_already_used_for_another_event_is_a_409(estack):
    invoice = subject()
    await post_event(estack, invoice, event_id="evt-1234")
    clash = await estack.http.post("/events", json={"id": "evt-1234", "type": "customer.replied",
                                                    "subject_ref_type": "INVOICE", "subject_ref_id": invoice,
                                                    "tenant_id": estack.tenant})
    assert clash.status_code == 409 and "already that of another event" in clash.json()["detail"], clash.text
    assert (await post_event(estack, invoice, event_id="evt-1234", expect=200))["duplicate"] is True
