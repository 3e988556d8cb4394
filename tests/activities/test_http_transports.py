"""The http and webhook transports against a real HTTP server on 127.0.0.1 and a real database."""

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from followthrough.activities.delivery import DeliveryActivities
from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError, SecretRefused
from followthrough.activities.transports.http import TRANSPORT as HTTP
from followthrough.activities.transports.http import TransientDeliveryError
from followthrough.activities.transports.webhook import TRANSPORT as WEBHOOK
from followthrough.infra import signing
from followthrough.domain.agent_tools import HttpRequestArgs
from followthrough.domain.contracts import Draft, SendRequest
from followthrough.db.database import session_factory
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings
from followthrough.db.tables import Delivery
from followthrough.infra.task_secrets import TaskSecrets
from tests.receivers import Received, Receiver

@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
async def http_client():
    async with httpx.AsyncClient(follow_redirects=False) as client:
        yield client


def tenant_secrets(path: Path, **values: str) -> TaskSecrets:
    """Task secrets of the tenant "t" the contexts below act for."""
    path.write_text(json.dumps({"t": values}))
    return TaskSecrets(path)


def context(engine, http, attempt: int = 1, timeout: float = 5.0,
            task_secrets: TaskSecrets | None = None) -> DeliveryContext:
    task_id = str(uuid.uuid4())
    return DeliveryContext(settings=Settings(), engine=engine, http=http, secrets=SecretStore(), task_id=task_id,
                           task_type="http_request", tenant_id="t", idempotency_key=f"{task_id}:send",
                           attempt=attempt, timeout_seconds=timeout, task_secrets=task_secrets or TaskSecrets(None))


def http_draft(url: str, **data) -> Draft:
    return Draft(channel="http", subject="call", body="call", data={"method": "POST", "url": url} | data)


async def delivery_rows(engine, task_id: str) -> list[Delivery]:
    async with session_factory(engine)() as session:
        return list((await session.execute(select(Delivery).where(Delivery.task_id == task_id))).scalars())


# ---- http -------------------------------------------------------------------


async def test_idempotency_key_is_stable_across_attempts_and_a_delivered_call_is_not_repeated(
        engine, http_client, receiver):
    receiver.answer(500, '{"error": "busy"}')
    receiver.answer(201, '{"id": "note-1"}')
    ctx = context(engine, http_client)
    draft = http_draft(f"{receiver.url}/notes", json={"text": "hello"})

    with pytest.raises(TransientDeliveryError, match="500") as first:
        await HTTP.deliver(draft, ctx)
    assert not isinstance(first.value, PermanentDeliveryError)
    result = await HTTP.deliver(draft, replace(ctx, attempt=2))
    again = await HTTP.deliver(draft, replace(ctx, attempt=3))

    assert len(receiver.requests) == 2
    assert {r.headers["idempotency-key"] for r in receiver.requests} == {ctx.idempotency_key}
    assert receiver.requests[1].json() == {"text": "hello"}
    assert (result["status"], result["body"], result["duplicate"]) == (201, '{"id": "note-1"}', False)
    assert result["headers"] == {"content-type": "application/json", "x-request-id": "req-2"}
    assert result["duration_ms"] >= 0 and result["body_truncated"] is False
    assert again == result | {"duplicate": True}
    [row] = await delivery_rows(engine, ctx.task_id)
    assert (row.id, row.status, row.attempts, row.response_status) == (result["delivery_id"], "delivered", 2, 201)
    assert row.channel == "http" and row.target == f"POST {receiver.url}/notes" and row.delivered_at is not None


async def test_a_4xx_is_permanent_and_recorded(engine, http_client, receiver):
    receiver.answer(400, '{"error": "missing field"}')
    ctx = context(engine, http_client)
    with pytest.raises(PermanentDeliveryError, match="answered 400 Bad Request.*missing field"):
        await HTTP.deliver(http_draft(receiver.url), ctx)
    [row] = await delivery_rows(engine, ctx.task_id)
    assert (row.status, row.attempts, row.response_status) == ("sending", 1, 400)
    assert "400" in row.detail["error"]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_5xx_and_429_are_retryable(engine, http_client, receiver, status):
    receiver.answer(status)
    with pytest.raises(TransientDeliveryError, match=str(status)):
        await HTTP.deliver(http_draft(receiver.url), context(engine, http_client))


async def test_expected_statuses_replace_the_2xx_default(engine, http_client, receiver):
    receiver.answer(404, "gone")
    result = await HTTP.deliver(http_draft(receiver.url, method="DELETE", expected_statuses=[204, 404]),
                                context(engine, http_client))
    assert result["status"] == 404 and result["method"] == "DELETE"
    receiver.answer(200)
    with pytest.raises(PermanentDeliveryError, match="200"):
        await HTTP.deliver(http_draft(receiver.url, expected_statuses=[201]), context(engine, http_client))


async def test_a_timeout_is_retryable(engine, http_client, receiver):
    receiver.answer(200, delay=1.5)
    with pytest.raises(TransientDeliveryError, match="timed out"):
        await HTTP.deliver(http_draft(receiver.url, timeout_seconds=0.3), context(engine, http_client))


async def test_a_refused_connection_is_retryable(engine, http_client):
    with Receiver() as closed:
        url = closed.url
    with pytest.raises(TransientDeliveryError, match="ConnectError"):
        await HTTP.deliver(http_draft(url), context(engine, http_client))


async def test_query_text_body_and_a_truncated_answer(engine, http_client, receiver):
    receiver.answer(200, "x" * 5000)
    result = await HTTP.deliver(http_draft(f"{receiver.url}/search", method="PUT", query={"q": "acme", "n": 2},
                                           headers={"X-Trace": "t-1"}, text="plain words"),
                                context(engine, http_client))
    [got] = receiver.requests
    assert (got.method, got.path, got.query) == ("PUT", "/search", {"q": ["acme"], "n": ["2"]})
    assert got.body == b"plain words" and got.headers["content-type"].startswith("text/plain")
    assert got.headers["x-trace"] == "t-1"
    assert len(result["body"]) == 2000 and result["body_truncated"] is True


def test_an_agents_http_call_may_not_set_the_host_header():
    with pytest.raises(ValidationError, match="may not be set by a tool call"):
        HttpRequestArgs.model_validate({"method": "GET", "url": "https://api.example.com", "headers": {"HOST": "x"}})


async def test_a_draft_cannot_route_by_a_host_header_of_its_own(engine, http_client, receiver):
    # A draft from before payloads were checked for it: the request still goes to the URL's host by name.
    await HTTP.deliver(http_draft(f"{receiver.url}/x", headers={"Host": "evil.example", "Content-Length": "1",
                                                                "Transfer-Encoding": "chunked", "X-Ok": "1"}),
                       context(engine, http_client))
    [got] = receiver.requests
    assert got.headers["host"] == receiver.url.removeprefix("http://")
    assert "transfer-encoding" not in got.headers and got.headers["x-ok"] == "1"


def _echo_credentials(request: Received) -> str:
    return json.dumps({k: request.headers.get(k) for k in ("authorization", "x-api-key", "x-token")})


@pytest.mark.parametrize("auth, header, expected", [
    ({"type": "bearer", "secret": "crm_token"}, "authorization", "Bearer {value}"),
    ({"type": "api_key", "secret": "crm_token"}, "x-api-key", "{value}"),
    ({"type": "api_key", "secret": "crm_token", "header": "X-Token"}, "x-token", "{value}"),
    ({"type": "basic", "secret": "crm_token", "username": "svc"}, "authorization", "basic"),
])
async def test_secrets_come_from_the_tenants_task_secrets_and_never_reach_the_result(
        engine, http_client, receiver, tmp_path, auth, header, expected):
    value = f"sk-{uuid.uuid4().hex}"
    receiver.answer(200, _echo_credentials)  # a careless receiver that echoes credentials
    ctx = context(engine, http_client, task_secrets=tenant_secrets(tmp_path / "ts.json", crm_token=value))
    draft = http_draft(receiver.url, auth=auth)
    result = await HTTP.deliver(draft, ctx)

    sent = receiver.requests[0].headers[header]
    if expected == "basic":
        assert sent == "Basic " + base64.b64encode(f"svc:{value}".encode()).decode()
    else:
        assert sent == expected.format(value=value)
    [row] = await delivery_rows(engine, ctx.task_id)
    for recorded in (json.dumps(result), json.dumps(row.detail), json.dumps(draft.data)):
        assert value not in recorded and sent not in recorded
    assert "[redacted]" in result["body"]


async def test_send_activity_maps_outcomes_to_retryable_or_not(engine, http_client, receiver):
    send = DeliveryActivities(Settings(), engine, http_client, SecretStore()).send
    env = ActivityEnvironment()

    def request(draft: Draft) -> SendRequest:
        task_id = str(uuid.uuid4())
        return SendRequest(task_id=task_id, task_type="http_request", tenant_id="t", draft=draft,
                           idempotency_key=f"{task_id}:send")

    receiver.answer(400)
    with pytest.raises(ApplicationError) as refused:
        await env.run(send, request(http_draft(receiver.url)))
    assert refused.value.non_retryable and refused.value.type == "DeliveryRefused"
    receiver.answer(502)
    with pytest.raises(ApplicationError) as unavailable:
        await env.run(send, request(http_draft(receiver.url)))
    assert not unavailable.value.non_retryable and unavailable.value.type == "TransientDeliveryError"
    with pytest.raises(ApplicationError) as missing:
        await env.run(send, request(http_draft(receiver.url, auth={"type": "bearer", "secret": "nowhere"})))
    assert missing.value.non_retryable and missing.value.type == "SecretRefused"
    assert "the task secret 'nowhere' is not available to tenant 't'" in missing.value.message
    sent = await env.run(send, request(http_draft(receiver.url)))
    assert sent.channel == "http" and sent.delivery_id and sent.detail["status"] == 200
    assert len(receiver.requests) == 3


# ---- webhook ----------------------------------------------------------------


def webhook_draft(url: str, secret: str = "hook_secret") -> Draft:
    return Draft(channel="webhook", subject="event", body="event", data={
        "url": url, "secret": secret, "event": "invoice.overdue", "payload": {"invoice": "INV-1", "amount": 12.5}})


async def test_webhook_is_signed_verifiable_and_stable_across_retries(engine, http_client, receiver, tmp_path):
    receiver.answer(503)
    ctx = context(engine, http_client, task_secrets=tenant_secrets(tmp_path / "ts.json", hook_secret="whsec-test-1"))
    draft = webhook_draft(f"{receiver.url}/hooks")
    with pytest.raises(TransientDeliveryError):
        await WEBHOOK.deliver(draft, ctx)
    result = await WEBHOOK.deliver(draft, replace(ctx, attempt=2))
    assert (await WEBHOOK.deliver(draft, replace(ctx, attempt=3)))["duplicate"] is True

    first, second = receiver.requests
    for got in (first, second):
        assert got.method == "POST" and got.path == "/hooks"
        assert signing.verify("whsec-test-1", got.headers["x-followthrough-signature"], got.body)
        assert got.headers["x-followthrough-delivery"] == result["delivery_id"] == got.json()["id"]
        assert got.headers["x-followthrough-event"] == "invoice.overdue"
        assert got.headers["idempotency-key"] == ctx.idempotency_key
        assert got.headers["content-type"] == "application/json"
    assert first.json() == second.json()  # the same event, re-signed
    body = second.json()
    assert (body["event"], body["data"]) == ("invoice.overdue", {"invoice": "INV-1", "amount": 12.5})
    assert body["created_at"]

    header = second.headers["x-followthrough-signature"]
    assert not signing.verify("whsec-test-1", header, second.body.replace(b"INV-1", b"INV-2"))
    assert not signing.verify("another-secret", header, second.body)
    assert not signing.verify("whsec-test-1", header, second.body, now=time.time() + 301)
    assert "whsec-test-1" not in json.dumps(result)
    [row] = await delivery_rows(engine, ctx.task_id)
    assert (row.channel, row.status, row.attempts, row.target) == ("webhook", "delivered", 2, f"{receiver.url}/hooks")


async def test_webhook_refused_and_missing_secret_are_permanent(engine, http_client, receiver, tmp_path,
                                                               monkeypatch):
    secrets = tenant_secrets(tmp_path / "ts.json", hook_secret="whsec-test-2")
    with pytest.raises(SecretRefused):
        await WEBHOOK.deliver(webhook_draft(receiver.url, secret="absent"), context(engine, http_client,
                                                                                    task_secrets=secrets))
    # An operator secret of that name is not a task's to use.
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_OPERATOR_KEY", "whsec-operator")
    with pytest.raises(SecretRefused):
        await WEBHOOK.deliver(webhook_draft(receiver.url, secret="operator_key"), context(engine, http_client,
                                                                                          task_secrets=secrets))
    assert receiver.requests == []
    receiver.answer(410, "unsubscribed")
    with pytest.raises(PermanentDeliveryError, match="410"):
        await WEBHOOK.deliver(webhook_draft(receiver.url), context(engine, http_client, task_secrets=secrets))
    with pytest.raises(PermanentDeliveryError):
        await WEBHOOK.deliver(Draft(channel="webhook", subject="", body="", data={"url": receiver.url}),
                              context(engine, http_client))


# ---- signing ----------------------------------------------------------------


def test_signatures_round_trip_and_refuse_what_they_should():
    body = b'{"id": "1"}'
    header = signing.sign("s", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert signing.verify("s", header, body, now=1_700_000_100)
    assert signing.verify("s", header, body.decode(), now=1_700_000_100)
    assert not signing.verify("s", header, body, now=1_700_000_301)
    # A sender rotating secrets may sign with both; either verifies.
    rotated = header + "," + signing.sign("new", body, timestamp=1_700_000_000).split(",")[1]
    assert signing.verify("new", rotated, body, now=1_700_000_000)
    for broken in ["", "v1=abc", "t=abc,v1=abc", "t=1700000000", "t=1700000000,v1=é", None]:
        assert not signing.verify("s", broken, body, now=1_700_000_000)
