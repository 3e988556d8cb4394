"""Notifications for every lifecycle event (created, awaiting approval, approved, rejected, expired, cancelled,
failed, completed), a task's own notify targets (seed 004's notifyOnComplete / notifyOnFailure), and the named
approvers emailed their signed approval links. Real parts: the Temporal dev server and worker, HTTP receivers
and an SMTP server (aiosmtpd) on 127.0.0.1, SQLite and PostgreSQL."""

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.activities.notifications import NotificationActivities
from followthrough.activities.transports.webhook import TRANSPORT as WEBHOOK
from followthrough.db import notification_outbox
from followthrough.db.notification_outbox import OUTBOX
from followthrough.db.tables import Contact
from followthrough.infra import approval_links, signing
from followthrough.infra.outbound import guarded_client
from followthrough.infra.secrets import SecretStore
from tests.activities.test_email_transport import SmtpServer
from tests.api.test_email_types import mail_stack, smtp  # noqa: F401 (fixtures: an SMTP server and a stack mailing to it)
from tests.activities.test_notification_sweep import _epoch, outbox_for
from tests.conftest import Stack
from tests.helpers import add_task_secret, eventually, task_body, until_status
from tests.receivers import Receiver

SECRET_NAME, SECRET = "notify_secret", "s3cr3t-for-lifecycle"
EVERY = ["task.created", "task.awaiting_approval", "task.approved", "task.rejected", "task.expired",
         "task.cancelled", "task.failed", "task.completed"]


@pytest.fixture
def receiver(stack: Stack) -> Iterator[Receiver]:
    add_task_secret(stack.settings, stack.tenant, SECRET_NAME, SECRET, hosts=["127.0.0.1"])
    with Receiver() as running:
        yield running


async def subscribe(stack: Stack, url: str, **extra) -> dict:
    response = await stack.http.post("/subscriptions", json={"tenant_id": stack.tenant, "url": url,
                                                             "secret": SECRET_NAME} | extra)
    assert response.status_code == 201, response.text
    return response.json()


def heard(receiver: Receiver, task_id: str) -> list[str]:
    """The events told of one task, sorted: each is its own delivery, so they may arrive in any order."""
    return sorted(r.headers["x-followthrough-event"] for r in receiver.requests
                  if r.json()["data"]["task"]["id"] == task_id)


async def until_heard(receiver: Receiver, task_id: str, count: int) -> list[str]:
    return await eventually(lambda: asyncio.sleep(0, heard(receiver, task_id)), lambda e: len(e) >= count,
                            timeout=30)


async def create(stack: Stack, **fields) -> dict:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_subscriber_hears_every_lifecycle_event_it_names(stack: Stack, receiver: Receiver):
    await subscribe(stack, f"{receiver.url}/all", events=EVERY)
    approved = await create(stack, mode="review")
    await until_heard(receiver, approved["id"], 2)
    assert (await stack.http.post(f"/tasks/{approved['id']}/approve", json={})).status_code == 200
    assert await until_heard(receiver, approved["id"], 4) == sorted([
        "task.created", "task.awaiting_approval", "task.approved", "task.completed"])

    rejected = await create(stack, mode="review")
    await until_heard(receiver, rejected["id"], 2)
    assert (await stack.http.post(f"/tasks/{rejected['id']}/reject", json={"reason": "no"})).status_code == 200
    assert await until_heard(receiver, rejected["id"], 3) == sorted([
        "task.created", "task.awaiting_approval", "task.rejected"])

    cancelled = await create(stack, due_at="2030-01-01T00:00:00Z")
    await until_status(stack, cancelled["id"], "scheduled")
    assert (await stack.http.post(f"/tasks/{cancelled['id']}/cancel")).status_code == 200
    assert await until_heard(receiver, cancelled["id"], 2) == sorted(["task.created", "task.cancelled"])

    expired = await create(stack, mode="review", approval_timeout_seconds=1)
    assert await until_heard(receiver, expired["id"], 3) == sorted([
        "task.created", "task.awaiting_approval", "task.expired"])

    failed = await create(stack, mode="manual")
    await until_heard(receiver, failed["id"], 2)
    assert (await stack.http.post(f"/tasks/{failed['id']}/fail", json={"error": "unreachable"})).status_code == 200
    events = await until_heard(receiver, failed["id"], 3)
    assert events == sorted(["task.created", "task.awaiting_approval", "task.failed"])
    last = [r for r in receiver.requests if r.json()["data"]["task"]["id"] == failed["id"]][-1]
    assert last.json()["data"]["task"]["status"] == "failed"
    for request in receiver.requests:
        assert signing.verify(SECRET, request.headers[signing.HEADER.lower()], request.body)
    await asyncio.sleep(1)  # room for a duplicate to show up
    assert len(heard(receiver, failed["id"])) == 3


async def test_a_subscription_naming_no_events_hears_what_it_heard_before(stack: Stack, receiver: Receiver):
    subscription = await subscribe(stack, receiver.url)
    assert "task.created" not in subscription["events"] and "task.cancelled" not in subscription["events"]
    created = await create(stack, mode="suggest")
    assert await until_heard(receiver, created["id"], 1) == ["task.completed"]


async def test_a_tasks_own_webhook_hears_its_completion_and_failure_only(stack: Stack, receiver: Receiver):
    hook = {"url": f"{receiver.url}/task", "secret": SECRET_NAME}
    done = await create(stack, mode="suggest", notifyOnComplete=True, notify={"webhook": hook, "on": ["task.created"]})
    assert await until_heard(receiver, done["id"], 2) == sorted(["task.created", "task.completed"])
    request = receiver.requests[-1]
    assert request.path == "/task" and signing.verify(SECRET, request.headers[signing.HEADER.lower()], request.body)
    # snake_case as well; failure only: its approval request is not told.
    failing = await create(stack, mode="manual", notify_on_failure=True, notify={"webhook": hook, "on": ["task.failed"]})
    await until_status(stack, failing["id"], "awaiting_approval")
    assert (await stack.http.post(f"/tasks/{failing['id']}/fail", json={"error": "no"})).status_code == 200
    assert await until_heard(receiver, failing["id"], 1) == ["task.failed"]
    # Without flags, `notify.on` defaults to completed and failed.
    default = await create(stack, mode="suggest", notify={"webhook": hook})
    assert await until_heard(receiver, default["id"], 1) == ["task.completed"]


async def test_a_tasks_own_notify_settings_cannot_loosen_policy(stack: Stack, receiver: Receiver):
    stack.settings.guardrails = {stack.tenant: {"email": {"allowed_domains": ["acme.example"]}}}
    cases = [
        ({"notifyOnComplete": True}, ["body"], "need a target"),
        ({"notify": {"on": ["task.completed"]}}, ["body"], "needs `email`"),
        ({"notify": {"webhook": {"url": "http://169.254.169.254/x", "secret": SECRET_NAME}}},
         ["body", "notify", "webhook", "url"], ""),
        ({"notify": {"webhook": {"url": f"{receiver.url}/x", "secret": "not_ours"}}},
         ["body", "notify", "webhook", "secret"], ""),
        ({"notify": {"email": ["eve@elsewhere.example"]}}, ["body", "notify", "email", 0], "allowed domains"),
        ({"notify": {"email": ["ok@acme.example"], "on": ["task.exploded"]}}, ["body", "notify", "on", 0], ""),
        ({"notify": {"email": ["ok@acme.example"], "extra": 1}}, ["body", "notify", "extra"], ""),
    ]
    for fields, where, words in cases:
        response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
        assert response.status_code == 422, (fields, response.text)
        detail = response.json()["detail"][0]
        assert detail["loc"][:len(where)] == where and words in detail["msg"], (fields, detail)
    allowed = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest") | {
        "notify": {"email": ["ok@acme.example"]}})
    assert allowed.status_code == 201, allowed.text


# ---- email: the named approvers, a task's own addresses --------------------------------------------------

def mails(smtp: SmtpServer, task_id: str) -> list[tuple[list[str], str, str]]:
    return [(m.rcpt_tos, str(m.message["Subject"]), m.message.get_content()) for m in smtp.inbox.messages
            if task_id in m.message.get_content()]


def link_tokens(body: str) -> dict[str, str]:
    return {line.split(":", 1)[0].split()[0].lower(): line.rsplit("/", 1)[1].strip()
            for line in body.splitlines() if line.startswith(("Approve", "Reject"))}


async def test_each_named_approver_is_emailed_their_own_signed_links_once(mail_stack: Stack, smtp: SmtpServer):
    stack = mail_stack
    stack.settings.guardrails = {stack.tenant: {"email": {"allowed_domains": ["acme.example"]}}}
    created = await create(stack, mode="review", approval={"approvers": ["ann@acme.example", "carol",
                                                                         "ben@acme.example"]})
    task_id = created["id"]
    await until_status(stack, task_id, "awaiting_approval")
    got = await eventually(lambda: asyncio.sleep(0, mails(smtp, task_id)), lambda m: len(m) >= 2, timeout=20)
    await asyncio.sleep(1)  # room for a wrong extra email
    got = mails(smtp, task_id)
    # One each for the approvers whose id is an address; "carol" has none, and nobody else is written to.
    assert sorted(to for to, _, _ in got) == [["ann@acme.example"], ["ben@acme.example"]]
    request = (await stack.http.get(f"/tasks/{task_id}/approval")).json()["id"]
    key = approval_links.signing_key(stack.settings)
    for to, subject, body in got:
        assert subject.startswith("Waiting for you: ")
        tokens = link_tokens(body)
        approve, reject = approval_links.check(key, tokens["approve"]), approval_links.check(key, tokens["reject"])
        assert approve.approver == reject.approver == to[0]
        assert approve.approval_id == request and approve.task_id == task_id and approve.nonce == reject.nonce

    # Handed again (a retried mirror write, a replay, the sweep): the same delivery key sends nothing more.
    async with engine_rows(stack.engine, task_id) as rows, guarded_client(stack.settings.outbound_allow) as http:
        activities = NotificationActivities(stack.settings, stack.engine, http, SecretStore(None), WEBHOOK)
        for row in rows:
            await activities.resend(notification_outbox.notification_of(row), row.id, 2)
    assert len(mails(smtp, task_id)) == 2

    # Ben decides from his email.
    ben = next(body for to, _, body in got if to == ["ben@acme.example"])
    page = await stack.http.post(f"/approval-links/{link_tokens(ben)['approve']}", content=b"comment=ok",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert page.status_code == 200, page.text
    await until_status(stack, task_id, "completed")


async def test_a_tasks_own_addresses_hear_its_completion_by_email(mail_stack: Stack, smtp: SmtpServer):
    created = await create(mail_stack, mode="suggest", notifyOnComplete=True,
                           notify={"email": ["ops@acme.example"], "on": ["task.completed"]})
    await until_status(mail_stack, created["id"], "completed")
    got = await eventually(lambda: asyncio.sleep(0, mails(smtp, created["id"])), bool, timeout=20)
    [(to, subject, body)] = got
    assert to == ["ops@acme.example"] and subject.startswith("Done: ") and "Approve" not in body


async def test_without_smtp_no_email_is_attempted(stack: Stack):
    created = await create(stack, mode="review", approval={"approvers": ["ann@acme.example"]})
    await until_status(stack, created["id"], "awaiting_approval")

    async def owed():
        async with engine_rows(stack.engine, created["id"]) as rows:
            return rows
    rows = await eventually(owed, lambda r: bool(r) and all(x.delivered_at for x in r), timeout=20)
    assert [r.url for r in rows] == ["mailto:ann@acme.example"]
    await stack.http.post(f"/tasks/{created['id']}/cancel")


class engine_rows:
    """The outbox rows of one task's notifications."""

    def __init__(self, engine: AsyncEngine, task_id: str) -> None:
        self.engine, self.task_id = engine, task_id

    async def __aenter__(self) -> list:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(OUTBOX).where(OUTBOX.c.task_id == self.task_id)
                                            .order_by(OUTBOX.c.id))).all())

    async def __aexit__(self, *exc) -> None:
        return None


async def test_the_sweep_resends_a_persons_email_it_owes_which_no_subscription_holds(engine, tmp_path: Path):
    start = _epoch(7)
    async with outbox_for(engine, tmp_path) as outbox:
        sent = []

        async def send(notification, key, attempt):
            sent.append((notification.url, key))
        outbox.send = send
        key = await outbox.add(notification_outbox.email_subscription("ann@acme.example"),
                               "mailto:ann@acme.example", start)
        result = await outbox.sweep(start + outbox.config.grace + timedelta(seconds=1))
        assert (result.delivered, result.unsubscribed) == (1, 0)
        assert sent == [("mailto:ann@acme.example", key)]


async def test_no_email_goes_outside_the_tenants_allowed_domains(mail_stack: Stack, smtp: SmtpServer):
    stack = mail_stack
    stack.settings.guardrails = {stack.tenant: {"email": {"allowed_domains": ["acme.example"]}}}
    created = await create(stack, mode="review", approval={"approvers": ["eve@elsewhere.example",
                                                                         "ann@acme.example"]})
    await until_status(stack, created["id"], "awaiting_approval")
    await eventually(lambda: asyncio.sleep(0, mails(smtp, created["id"])), bool, timeout=20)

    async def rows():
        async with engine_rows(stack.engine, created["id"]) as found:
            return found
    await eventually(rows, lambda r: len(r) == 2 and all(x.delivered_at for x in r), timeout=20)
    assert [to for to, _, _ in mails(smtp, created["id"])] == [["ann@acme.example"]]
    await stack.http.post(f"/tasks/{created['id']}/cancel")


async def test_a_tasks_own_webhook_never_carries_the_approvers_signed_links(stack: Stack, receiver: Receiver):
    # The submitter's own webhook hears that the task waits, but links to decide it go only to the approvers
    # themselves (and to an operator's subscription): a submitter cannot approve as the CFO through it.
    hook = {"url": f"{receiver.url}/task", "secret": SECRET_NAME}
    await subscribe(stack, f"{receiver.url}/operator", events=["task.awaiting_approval"])
    created = await create(stack, mode="review", approval={"approvers": ["cfo"]},
                           notify={"webhook": hook, "on": ["task.awaiting_approval"]})
    await until_heard(receiver, created["id"], 2)
    by_path = {r.path: r.json()["data"] for r in receiver.requests if r.json()["data"]["task"]["id"] == created["id"]}
    assert "approval_links" not in by_path["/task"], by_path["/task"]
    assert set(by_path["/operator"]["approval_links"]) == {"cfo"}


async def test_a_notification_email_does_not_make_its_address_a_known_contact(mail_stack: Stack, smtp: SmtpServer):
    # The first-contact guardrail holds a task's first message to an address for a person; a notification
    # that reached the address before (here a task's own email on its creation) must not lift that hold.
    created = await create(mail_stack, mode="suggest", notify={"email": ["new@prospect.example"], "on": ["task.created"]})
    await eventually(lambda: asyncio.sleep(0, mails(smtp, created["id"])), bool, timeout=20)
    async with mail_stack.engine.connect() as conn:
        known = (await conn.execute(select(Contact.address).where(Contact.tenant_id == mail_stack.tenant))).all()
    assert known == []


async def test_an_address_is_one_mailbox(stack: Stack):
    # A comma, angle brackets or quotes would make a header name other recipients than the one checked.
    for address in ("bob,x@acme.example", "Bob <bob@acme.example>", '"x"@acme.example', "a;b@acme.example"):
        response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest") | {
            "notify": {"email": [address], "on": ["task.completed"]}})
        assert response.status_code == 422, (address, response.text)
        assert not notification_outbox.is_address(address), address  # nor is such an approver id written to
    assert notification_outbox.is_address("ann.lee+billing@acme.example")


async def test_without_allowed_domains_an_approver_is_told_but_sent_no_links(mail_stack: Stack, smtp: SmtpServer):
    # The submitter names the approvers; where the operator has not said which domains are the tenant's, an
    # address could be the submitter's own, and links in it a way to approve without the approver role.
    created = await create(mail_stack, mode="review", approval={"approvers": ["me@anywhere.example"]})
    await until_status(mail_stack, created["id"], "awaiting_approval")
    [(to, subject, body)] = await eventually(lambda: asyncio.sleep(0, mails(smtp, created["id"])), bool, timeout=20)
    assert to == ["me@anywhere.example"] and subject.startswith("Waiting for you: ")
    assert "/approval-links/" not in body, body
    await mail_stack.http.post(f"/tasks/{created['id']}/cancel")
