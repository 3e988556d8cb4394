"""Subscriptions: signed webhooks for task.awaiting_approval, task.completed and
task.failed, delivered by the workflow to a real HTTP receiver on 127.0.0.1."""

import asyncio

import pytest

from followthrough.infra import approval_links
from followthrough.infra import signing
from tests.conftest import Stack
from tests.helpers import add_task_secret, eventually, task_body
from tests.receivers import Receiver

SECRET_NAME = "notify_secret"
SECRET = "s3cr3t-for-notifications"


@pytest.fixture
def receiver(stack: Stack):
    add_task_secret(stack.settings, stack.tenant, SECRET_NAME, SECRET, hosts=["127.0.0.1"])
    with Receiver() as running:
        yield running


async def _subscribe(stack: Stack, url: str, **extra) -> dict:
    response = await stack.http.post("/subscriptions", json={"tenant_id": stack.tenant, "url": url,
                                                             "secret": SECRET_NAME} | extra)
    assert response.status_code == 201, response.text
    return response.json()


def _events(receiver: Receiver) -> list[tuple[str, dict]]:
    return [(r.headers["x-followthrough-event"], r.json()) for r in receiver.requests]


async def test_subscribers_hear_awaiting_approval_and_completed_signed(stack: Stack, receiver: Receiver):
    await _subscribe(stack, f"{receiver.url}/hooks")
    created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))).json()
    await eventually(lambda: asyncio.sleep(0, _events(receiver)), lambda e: len(e) == 1, timeout=20)
    assert (await stack.http.post(f"/tasks/{created['id']}/approve", json={})).status_code == 200
    events = await eventually(lambda: asyncio.sleep(0, _events(receiver)), lambda e: len(e) == 2, timeout=20)
    assert [name for name, _ in events] == ["task.awaiting_approval", "task.completed"]
    for request in receiver.requests:
        assert signing.verify(SECRET, request.headers[signing.HEADER.lower()], request.body)
        assert not signing.verify("wrong", request.headers[signing.HEADER.lower()], request.body)
    task = events[1][1]["data"]["task"]
    assert (task["id"], task["status"], task["type"]) == (created["id"], "completed", "invoice_follow_up")
    assert task["link"].endswith(f"/api/v1/tasks/{created['id']}")


async def test_event_filter_other_tenants_and_unsubscribe(stack: Stack, receiver: Receiver):
    only_completed = await _subscribe(stack, receiver.url, events=["task.completed"])
    other_tenant = await stack.http.post("/tasks", json=task_body(tenant_id=f"{stack.tenant}-other",
                                                                  mode="suggest"))
    mine = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest"))).json()
    await eventually(lambda: asyncio.sleep(0, _events(receiver)), lambda e: len(e) >= 1, timeout=20)
    await asyncio.sleep(1)  # room for a wrong extra delivery to show up
    assert [(n, e["data"]["task"]["id"]) for n, e in _events(receiver)] == [("task.completed", mine["id"])]
    assert other_tenant.status_code == 201

    listed = (await stack.http.get(f"/subscriptions?tenant_id={stack.tenant}")).json()
    assert [s["id"] for s in listed["items"]] == [only_completed["id"]]
    assert (await stack.http.delete(f"/subscriptions/{only_completed['id']}")).status_code == 204
    assert (await stack.http.get(f"/subscriptions/{only_completed['id']}")).status_code == 404
    await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest"))
    await asyncio.sleep(1.5)
    assert len(receiver.requests) == 1


async def test_a_failing_subscriber_is_retried_and_delivered_once(stack: Stack, receiver: Receiver):
    receiver.answer(503)
    await _subscribe(stack, receiver.url, events=["task.completed"])
    created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest"))).json()
    events = await eventually(lambda: asyncio.sleep(0, _events(receiver)), lambda e: len(e) == 2, timeout=30)
    assert events[0][1]["id"] == events[1][1]["id"]  # the same delivery, retried
    assert events[1][1]["data"]["task"]["id"] == created["id"]


async def test_subscription_input_is_validated(stack: Stack):
    for body, field in [({"url": "ftp://x", "secret": "s"}, "url"), ({"url": "http://x", "secret": "bad name"}, "secret"),
                        ({"url": "http://x", "secret": "s", "events": ["task.exploded"]}, "events")]:
        response = await stack.http.post("/subscriptions", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][1] == field, response.text


async def test_the_approval_request_carries_signed_links_for_each_approver(stack: Stack, receiver: Receiver):
    await _subscribe(stack, receiver.url, events=["task.awaiting_approval"])
    created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant,
                                                              approval={"approvers": ["alice", "bob"]}))).json()
    [(_, event)] = await eventually(lambda: asyncio.sleep(0, _events(receiver)), lambda e: len(e) == 1, timeout=20)
    links = event["data"]["approval_links"]
    assert sorted(links) == ["alice", "bob"]
    # Each pair names this approval request, and its two links share one nonce.
    request = (await stack.http.get(f"/tasks/{created['id']}/approval")).json()["id"]
    key = approval_links.signing_key(stack.settings)
    for pair in links.values():
        approve_link, reject_link = (approval_links.check(key, pair[d].rsplit("/", 1)[1])
                                     for d in ("approve", "reject"))
        assert approve_link.approval_id == reject_link.approval_id == request == event["data"]["event_id"]
        assert approve_link.nonce == reject_link.nonce
    approve = links["bob"]["approve"].removeprefix("http://testserver/api/v1")
    page = await stack.http.post(approve, content=b"comment=from+the+email",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert page.status_code == 200, page.text
    approval = await eventually(lambda: stack.http.get(f"/tasks/{created['id']}/approval"),
                                lambda r: r.json()["status"] == "approved")
    assert [(d["actor_id"], d["comment"]) for d in approval.json()["decisions"]] == [("bob", "from the email")]
