"""The email and reminder types, and invoice follow-ups over SMTP, end to end: HTTP API, the real
Temporal dev server and worker, a real SMTP server (aiosmtpd), on every configured database."""

import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.activities.transports.email import message_id_for
from tests.conftest import Stack, running_stack
from tests.helpers import eventually, outbox_rows, task_body
from tests.activities.test_email_transport import Received, SmtpServer, start_smtp


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    controller, server = start_smtp()
    yield server
    controller.stop()


@pytest_asyncio.fixture
async def mail_stack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                     smtp: SmtpServer) -> AsyncIterator[Stack]:
    """The conftest ``stack``, with email going to the local SMTP server."""
    async with running_stack(dev_env, engine, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port,
                             mail_from="tasks@followthrough.example") as running:
        yield running


async def create(stack: Stack, body: dict) -> dict:
    response = await stack.http.post("/tasks", json={"tenant_id": stack.tenant} | body)
    assert response.status_code == 201, response.text
    return response.json()


async def until_status(stack: Stack, task_id: str, status: str, timeout: float = 20) -> dict:
    async def get() -> dict:
        return (await stack.http.get(f"/tasks/{task_id}")).json()
    return await eventually(get, lambda t: t["status"] == status, timeout=timeout)


def received(smtp: SmtpServer, task_id: str) -> Received:
    [message] = smtp.inbox.with_id(message_id_for(f"{task_id}:send"))
    return message


def text(message: Received) -> str:
    """The body as written (SMTP carries CRLF line ends)."""
    return message.message.get_content().replace("\r\n", "\n").strip()


def email_body(**payload) -> dict:
    return {"type": "email", "title": "Welcome Ada", "payload": {
        "to": ["ada@example.com"], "cc": ["team@example.com"], "subject": "Welcome, {{ name }}",
        "body": "Hello {{ name }},\nyour account {{ account.id }} is ready.", "variables": {
            "name": "Ada", "account": {"id": "AC-7"}}} | payload}


async def test_autonomous_email_arrives_rendered_with_its_message_id(mail_stack: Stack, smtp: SmtpServer):
    created = await create(mail_stack, email_body() | {"mode": "autonomous"})
    task = await until_status(mail_stack, created["id"], "completed")
    message = received(smtp, created["id"])
    assert message.message["Subject"] == "Welcome, Ada"
    assert text(message) == "Hello Ada,\nyour account AC-7 is ready."
    assert message.message["From"] == "tasks@followthrough.example"
    assert sorted(message.rcpt_tos) == ["ada@example.com", "team@example.com"]
    assert task["draft"]["data"] == {"cc": ["team@example.com"]}
    delivery = task["result"]["delivery"]
    assert delivery["delivery_id"] == message.message["Message-ID"] == message_id_for(f"{created['id']}:send")
    assert delivery["detail"]["status"] == "sent" and delivery["detail"]["smtp_message_id"]
    [row] = await outbox_rows(mail_stack.engine, created["id"])
    assert row.status == "sent" and row.sent_at is not None


async def test_email_defaults_to_review(mail_stack: Stack, smtp: SmtpServer):
    created = await create(mail_stack, email_body())
    task = await until_status(mail_stack, created["id"], "awaiting_approval")
    assert task["mode"] == "review" and task["draft"]["subject"] == "Welcome, Ada"
    assert not smtp.inbox.with_id(message_id_for(f"{created['id']}:send"))
    await mail_stack.http.post(f"/tasks/{created['id']}/cancel")


async def test_approved_invoice_follow_up_goes_over_smtp(mail_stack: Stack, smtp: SmtpServer):
    created = await create(mail_stack, task_body(mode="review"))
    drafted = await until_status(mail_stack, created["id"], "awaiting_approval")
    response = await mail_stack.http.post(f"/tasks/{created['id']}/approve", json={"comment": "send it"})
    assert response.status_code == 200, response.text
    await until_status(mail_stack, created["id"], "completed")
    message = received(smtp, created["id"])
    assert message.rcpt_tos == ["billing@acme.example"]
    assert message.message["Subject"] == drafted["draft"]["subject"]
    assert "INV-123" in text(message)


async def test_reminder_arrives_after_its_due_time(mail_stack: Stack, smtp: SmtpServer):
    due = datetime.now(timezone.utc) + timedelta(seconds=3)
    created = await create(mail_stack, {
        "type": "reminder", "title": "Call ACME back", "due_at": due.isoformat(), "owner_id": "alice",
        "payload": {"message": "Time to call {{ who }} about the renewal.", "variables": {"who": "ACME"},
                    "email": {"to": ["alice@example.com"]}}})
    task = await until_status(mail_stack, created["id"], "scheduled")
    assert task["mode"] == "autonomous"
    await until_status(mail_stack, created["id"], "completed")
    message = received(smtp, created["id"])
    assert message.at >= due.timestamp() and message.at <= time.time()
    assert message.message["Subject"] == "Reminder: Call ACME back"
    assert text(message) == "Time to call ACME about the renewal."


async def test_a_missing_template_variable_fails_the_task_clearly(mail_stack: Stack, smtp: SmtpServer):
    created = await create(mail_stack, email_body(variables={}) | {"mode": "autonomous"})
    task = await until_status(mail_stack, created["id"], "failed")
    assert "template failed to render" in task["error"] and "'name' is undefined" in task["error"]
    events = (await mail_stack.http.get(f"/tasks/{created['id']}/events")).json()["items"]
    failed = events[-1]
    assert failed["type"] == "TASK_EXECUTION_FAILED" and failed["data"]["step"] == "draft"
    assert await outbox_rows(mail_stack.engine, created["id"]) == []


async def test_invalid_payloads_are_422_naming_the_field(mail_stack: Stack):
    reminder = {"type": "reminder", "payload": {"message": "hi", "email": {"to": ["a@example.com"]}}}
    cases = [
        (email_body(to=["not-an-address"]), ["body", "payload", "to", 0], "email"),
        (email_body(cc=["a@example.com", "bad"]), ["body", "payload", "cc", 1], "email"),
        (email_body(to=[]), ["body", "payload", "to"], "at least 1"),
        (email_body(subject="Hi {{ name"), ["body", "payload", "subject"], "template does not parse"),
        (email_body(attachments=[]), ["body", "payload", "attachments"], "Extra inputs"),
        (reminder | {"payload": {"message": "hi"}}, ["body", "payload"], "exactly one of"),
        (reminder | {"payload": reminder["payload"] | {"webhook": {"url": "https://h.example", "secret": "s"}}},
         ["body", "payload"], "exactly one of"),
        (reminder | {"payload": {"message": "hi", "webhook": {"url": "ftp://h.example", "secret": "s"}}},
         ["body", "payload", "webhook", "url"], "URL"),
    ]
    for body, loc, words in cases:
        response = await mail_stack.http.post("/tasks", json=body)
        assert response.status_code == 422, (body, response.text)
        detail = response.json()["detail"]
        assert detail[0]["loc"] == loc, detail
        assert words in detail[0]["msg"], detail


async def test_types_are_listed(mail_stack: Stack):
    types = {t["name"]: t for t in (await mail_stack.http.get("/task-types")).json()["items"]}
    assert types["email"]["default_mode"] == "review" and types["email"]["channel"] == "email"
    assert types["reminder"]["default_mode"] == "autonomous"
    assert set(types["email"]["payload_schema"]["required"]) == {"to", "subject", "body"}
