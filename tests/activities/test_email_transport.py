"""The email transport against a real SMTP server (aiosmtpd on a free local port) and a real database."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import insert
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from followthrough.activities.delivery import DeliveryActivities
from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError
from followthrough.activities.transports.email import OUTBOX, TRANSPORT, message_id_for
from followthrough.domain import policies
from followthrough.domain.contracts import Draft, SendRequest
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.config.settings import Settings
from tests.helpers import free_port, outbox_rows


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float


class Inbox:
    """aiosmtpd handler that keeps what it accepts; some addresses and subjects provoke refusals."""

    def __init__(self) -> None:
        self.messages: list[Received] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("later"):
            return "450 4.2.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = message_from_bytes(envelope.content, policy=default_policy)
        if "REJECT" in str(message["Subject"]):
            return "554 5.6.0 message content refused"
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, time.time()))
        return f"250 2.0.0 Ok: queued as {uuid.uuid4().hex[:10]}"

    def with_id(self, message_id: str) -> list[Received]:
        return [m for m in self.messages if m.message["Message-ID"] == message_id]



@dataclass
class SmtpServer:
    inbox: Inbox
    port: int


def start_smtp(**controller_options) -> tuple[Controller, SmtpServer]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **controller_options)
    controller.start()
    return controller, SmtpServer(inbox, port)


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    controller, server = start_smtp()
    yield server
    controller.stop()


def _ctx(engine, settings: Settings, key: str | None = None, secrets: SecretStore | None = None) -> DeliveryContext:
    task_id = str(uuid.uuid4())
    return DeliveryContext(settings=settings, engine=engine, http=httpx.AsyncClient(), secrets=secrets or SecretStore(),
                           task_id=task_id, task_type="email", tenant_id="t", idempotency_key=key or f"{task_id}:send",
                           attempt=1, timeout_seconds=10)


def _settings(server: SmtpServer, **overrides) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=server.port, smtp_timeout_seconds=5,
                    mail_from="robot@followthrough.example", **overrides)


def _draft(*to: str, subject: str = "Hello", cc: list[str] | None = None) -> Draft:
    return Draft(channel="email", subject=subject, body="Body text", to=list(to) or ["a@example.com"],
                 data={"cc": cc} if cc else {})


async def test_sends_once_per_key_and_a_retry_after_sent_does_not_resend(engine, smtp):
    ctx = _ctx(engine, _settings(smtp))
    results = [await TRANSPORT.deliver(_draft(), ctx) for _ in range(3)]
    [received] = smtp.inbox.with_id(message_id_for(ctx.idempotency_key))
    assert [r["duplicate"] for r in results] == [False, True, True]
    assert {r["message_id"] for r in results} == {message_id_for(ctx.idempotency_key)}
    assert [r["status"] for r in results] == ["sent"] * 3
    assert results[0]["smtp_message_id"].startswith("2.0.0 Ok: queued as")
    assert results[0]["recipients"] == ["a@example.com"]
    assert received.mail_from == "robot@followthrough.example" and received.rcpt_tos == ["a@example.com"]
    assert received.message["Subject"] == "Hello" and received.message.get_content().strip() == "Body text"
    [row] = await outbox_rows(engine, ctx.task_id)
    assert row.status == "sent" and row.sent_at is not None and row.id == results[0]["outbox_id"]


async def test_a_send_interrupted_mid_way_is_sent_again_with_the_same_message_id(engine, smtp):
    ctx = _ctx(engine, _settings(smtp))
    # What a crash between the outbox insert and the server's answer leaves behind.
    async with engine.begin() as conn:
        await conn.execute(insert(OUTBOX).values(
            id=str(uuid.uuid4()), idempotency_key=ctx.idempotency_key, task_id=ctx.task_id, tenant_id="t",
            channel="email", recipients=["a@example.com"], subject="Hello", body="Body text", status="sending",
            created_at=datetime.now(timezone.utc)))
    first = await TRANSPORT.deliver(_draft(), ctx)
    again = await TRANSPORT.deliver(_draft(), ctx)
    assert (first["duplicate"], first["status"], again["duplicate"]) == (False, "sent", True)
    [received] = smtp.inbox.with_id(message_id_for(ctx.idempotency_key))
    assert received.message["Message-ID"] == first["message_id"] == again["message_id"]
    [row] = await outbox_rows(engine, ctx.task_id)
    assert row.status == "sent"


def test_message_id_is_stable_per_key_and_differs_between_keys():
    key = "3f1c2d9e-0000-4000-8000-000000000000:send"
    assert message_id_for(key) == message_id_for(key)
    assert message_id_for(key) != message_id_for(key.replace(":send", ":other"))
    assert message_id_for(key).startswith("<") and message_id_for(key).endswith("@followthrough>")
    assert len(message_id_for(key)) == len("<@followthrough>") + 32


async def test_cc_recipients_get_the_message_too(engine, smtp):
    ctx = _ctx(engine, _settings(smtp))
    result = await TRANSPORT.deliver(_draft("a@example.com", cc=["c@example.com"]), ctx)
    [received] = smtp.inbox.with_id(result["message_id"])
    assert sorted(received.rcpt_tos) == ["a@example.com", "c@example.com"]
    assert received.message["Cc"] == "c@example.com" and received.message["To"] == "a@example.com"
    assert result["recipients"] == ["a@example.com", "c@example.com"]


async def test_a_draft_marked_html_is_sent_as_html(engine, smtp):
    result = await TRANSPORT.deliver(Draft(channel="email", subject="Report", body="<h1>Figures</h1>",
                                           to=["a@example.com"], data={"format": "html"}),
                                     _ctx(engine, _settings(smtp)))
    [received] = smtp.inbox.with_id(result["message_id"])
    assert received.message.get_content_type() == "text/html"


async def test_permanent_refusals_raise_permanent_errors(engine, smtp):
    all_refused = _ctx(engine, _settings(smtp))
    with pytest.raises(PermanentDeliveryError, match="all recipients refused.*550"):
        await TRANSPORT.deliver(_draft("refuse@example.com"), all_refused)
    content_refused = _ctx(engine, _settings(smtp))
    with pytest.raises(PermanentDeliveryError, match="554"):
        await TRANSPORT.deliver(_draft(subject="REJECT me"), content_refused)
    # Nothing was accepted, so the rows stay "sending".
    assert [r.status for r in await outbox_rows(engine, all_refused.task_id)] == ["sending"]


async def test_one_refused_recipient_among_accepted_ones_is_recorded(engine, smtp):
    ctx = _ctx(engine, _settings(smtp))
    result = await TRANSPORT.deliver(_draft("a@example.com", "refuse-b@example.com"), ctx)
    assert result["status"] == "sent" and list(result["refused"]) == ["refuse-b@example.com"]
    assert smtp.inbox.with_id(result["message_id"])[0].rcpt_tos == ["a@example.com"]


async def test_temporary_failures_are_ordinary_errors_so_temporal_retries(engine, smtp):
    with pytest.raises(Exception) as busy:
        await TRANSPORT.deliver(_draft("later@example.com"), _ctx(engine, _settings(smtp)))
    assert not isinstance(busy.value, PermanentDeliveryError)
    closed = SmtpServer(Inbox(), free_port())
    with pytest.raises(OSError):
        await TRANSPORT.deliver(_draft(), _ctx(engine, _settings(closed)))


async def test_the_send_activity_marks_5xx_non_retryable(engine, smtp):
    async with httpx.AsyncClient() as http:
        send = DeliveryActivities(_settings(smtp), engine, http, SecretStore()).send
        task_id = str(uuid.uuid4())
        request = SendRequest(task_id=task_id, task_type="email", tenant_id="t",
                              draft=_draft("refuse@example.com"), idempotency_key=f"{task_id}:send")
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(send, request)
        assert refused.value.non_retryable and refused.value.type == policies.DELIVERY_REFUSED
        ok_id = str(uuid.uuid4())
        result = await ActivityEnvironment().run(send, SendRequest(
            task_id=ok_id, task_type="email", tenant_id="t", draft=_draft(), idempotency_key=f"{ok_id}:send"))
        assert result.delivery_id == message_id_for(f"{ok_id}:send") and result.detail["status"] == "sent"


async def test_login_uses_the_password_from_the_named_secret(engine):
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        # handled=False: aiosmtpd then answers 535 itself on a failure.
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    controller, server = start_smtp(authenticator=authenticator, auth_require_tls=False)
    try:
        settings = _settings(server, smtp_username="mailer", smtp_password_secret="smtp_pw")
        secrets = SecretStore(environ={"FOLLOWTHROUGH_SECRET_SMTP_PW": "s3cret"})
        result = await TRANSPORT.deliver(_draft(), _ctx(engine, settings, secrets=secrets))
        assert logins == [(b"mailer", b"s3cret")] and server.inbox.with_id(result["message_id"])
        with pytest.raises(PermanentDeliveryError, match="535"):
            await TRANSPORT.deliver(_draft(), _ctx(engine, settings, secrets=SecretStore(
                environ={"FOLLOWTHROUGH_SECRET_SMTP_PW": "wrong"})))
        with pytest.raises(SecretNotFound):
            await TRANSPORT.deliver(_draft(), _ctx(engine, settings, secrets=SecretStore(environ={})))
    finally:
        controller.stop()
