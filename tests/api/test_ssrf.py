"""The SSRF guard end to end: the API's early refusals, and sends and notifications refused when connecting,
with the dev server, the worker and a real receiver on 127.0.0.1 (which these stacks do not allow, unless
a test says so)."""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.db.database import session_factory
from followthrough.db.tables import Delivery
from tests.conftest import Stack, running_stack
from tests.helpers import add_task_secret, eventually, task_body
from tests.receivers import Receiver

HINT = "allow it with FOLLOWTHROUGH_OUTBOUND_ALLOW"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest_asyncio.fixture
async def guarded(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack with nothing internal allowed: the guard's defaults."""
    async with running_stack(dev_env, engine, tmp_path, outbound_allow=[]) as running:
        add_task_secret(running.settings, running.tenant, "hooks", "whsec-ssrf")
        yield running


def local(receiver: Receiver, path: str = "/") -> str:
    """The receiver's URL by the name `localhost`: a DNS name that resolves to a loopback address."""
    return receiver.url.replace("127.0.0.1", "localhost") + path


async def create(stack: Stack, type_: str, payload: dict, **fields) -> str:
    body = {"type": type_, "tenant_id": stack.tenant, "subject_ref_id": uuid.uuid4().hex, "payload": payload}
    response = await stack.http.post("/tasks", json=body | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def failed(stack: Stack, task_id: str) -> tuple[dict, dict]:
    """The failed task and its last event."""
    task = await eventually(lambda: stack.http.get(f"/tasks/{task_id}"), lambda r: r.json()["status"] == "failed",
                            timeout=30)
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    return task.json(), events[-1]


async def deliveries(engine: AsyncEngine, task_id: str) -> list[Delivery]:
    async with session_factory(engine)() as session:
        return list((await session.execute(select(Delivery).where(Delivery.task_id == task_id))).scalars())


async def test_internal_address_literals_and_other_schemes_are_422_at_the_api(guarded: Stack):
    cases = [
        ("http://127.0.0.1:8080/x", "refused: 127.0.0.1 is a loopback address"),
        ("http://[::1]:8080/x", "refused: ::1 is a loopback address"),
        ("http://10.0.0.5/x", "refused: 10.0.0.5 is a private address"),
        ("http://192.168.1.20/x", "refused: 192.168.1.20 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a cloud metadata address"),
        ("ftp://files.example.com/x", "must be an absolute http:// or https:// URL"),
        ("file:///etc/passwd", "must be an absolute http:// or https:// URL"),
    ]
    for url, message in cases:
        for type_, payload in [("http_request", {"url": url}),
                               ("webhook", {"url": url, "secret": "hooks", "event": "e"})]:
            response = await guarded.http.post("/tasks", json=task_body(type=type_, payload=payload))
            assert response.status_code == 422, (url, response.text)
            [error] = response.json()["detail"]
            assert error["loc"] == ["body", "payload", "url"] and message in error["msg"], (url, error)
            if message.startswith("refused"):
                assert HINT in error["msg"]
        response = await guarded.http.post("/subscriptions", json={"tenant_id": guarded.tenant, "url": url,
                                                                   "secret": "hooks"})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["detail"][0]["loc"][:2] == ["body", "url"]
        if message.startswith("refused"):
            assert message in response.json()["detail"][0]["msg"]
    assert (await guarded.http.get(f"/subscriptions?tenant_id={guarded.tenant}")).json()["total"] == 0


async def test_reminder_and_report_webhook_targets_are_checked_at_the_api_too(guarded: Stack):
    target = {"url": "http://169.254.169.254/latest/meta-data/", "secret": "hooks"}
    for type_, payload, loc in [
        ("reminder", {"message": "Call ACME", "webhook": target}, ["body", "payload", "webhook", "url"]),
        ("report", {"kind": "task_summary", "start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z",
                    "deliver": {"webhook": target}}, ["body", "payload", "deliver", "webhook", "url"]),
    ]:
        response = await guarded.http.post("/tasks", json=task_body(type=type_, payload=payload))
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == loc and "169.254.169.254 is a cloud metadata address" in error["msg"], error


async def test_targets_inside_listed_subtasks_are_checked_at_the_api_too(guarded: Stack):
    hook = {"type": "webhook", "payload": {"url": "http://10.1.2.3/hook", "secret": "hooks", "event": "x.y"}}
    inner = {"type": "group", "payload": {"subtasks": [{"type": "email", "payload": {
        "to": ["ada@acme.example"], "subject": "Hi", "body": "Hi"}}, hook]}}
    response = await guarded.http.post("/tasks", json=task_body(type="group", payload={"subtasks": [inner]}))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "payload", "subtasks", "0", "payload", "subtasks", "1", "payload", "url"], error
    assert "10.1.2.3 is a private address" in error["msg"], error


async def test_a_name_resolving_to_loopback_passes_the_api_and_is_refused_when_connecting(guarded: Stack,
                                                                                          receiver: Receiver):
    task_id = await create(guarded, "http_request", {"url": local(receiver, "/notes")}, mode="autonomous")
    task, last = await failed(guarded, task_id)
    assert "refused: localhost resolves to" in task["error"] and "a loopback address" in task["error"]
    assert HINT in task["error"]
    assert last["type"] == "TASK_EXECUTION_FAILED" and last["data"]["error_type"] == "OutboundRefused"
    assert task["attempts"] == 1  # not retried
    assert receiver.requests == []
    [row] = await deliveries(guarded.engine, task_id)
    assert row.status == "sending" and "refused: localhost resolves to" in row.detail["error"]


async def test_a_webhook_to_a_name_resolving_to_loopback_is_refused(guarded: Stack, receiver: Receiver):
    task_id = await create(guarded, "webhook", {"url": local(receiver, "/hooks"), "secret": "hooks",
                                                "event": "invoice.paid"})
    task, last = await failed(guarded, task_id)
    assert "a loopback address" in task["error"] and last["data"]["error_type"] == "OutboundRefused"
    assert receiver.requests == []


async def test_a_public_looking_name_that_resolves_to_a_private_address_is_refused(guarded: Stack, monkeypatch):
    """DNS answers change: the name passed the API, and the worker finds a private address behind it."""
    loop_type = type(asyncio.get_running_loop())
    real = loop_type.getaddrinfo

    async def getaddrinfo(self, host, port, *args, **kwargs):
        if host == "api.partner.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(loop_type, "getaddrinfo", getaddrinfo)
    task_id = await create(guarded, "http_request", {"url": "https://api.partner.example/v1/notes"},
                           mode="autonomous")
    task, last = await failed(guarded, task_id)
    assert "refused: api.partner.example resolves to 10.0.0.7, a private address" in task["error"]
    assert last["data"]["error_type"] == "OutboundRefused"


async def test_a_refused_subscriber_gets_nothing_and_the_delivery_records_why(guarded: Stack, receiver: Receiver):
    response = await guarded.http.post("/subscriptions", json={"tenant_id": guarded.tenant, "secret": "hooks",
                                                               "url": local(receiver, "/events")})
    assert response.status_code == 201, response.text
    created = await guarded.http.post("/tasks", json=task_body(tenant_id=guarded.tenant, mode="suggest"))
    task_id = created.json()["id"]

    async def notified() -> list[Delivery]:
        return [d for d in await deliveries(guarded.engine, task_id) if d.channel == "webhook"]

    [row] = await eventually(notified, lambda rows: len(rows) == 1 and "error" in rows[0].detail, timeout=30)
    assert "refused: localhost resolves to" in row.detail["error"] and HINT in row.detail["error"]
    await asyncio.sleep(1)  # room for a wrong retry to show up
    [row] = await notified()
    assert row.attempts == 1 and receiver.requests == []
    task = (await guarded.http.get(f"/tasks/{task_id}")).json()
    assert task["status"] == "completed"  # a subscriber never decides the task's outcome


@pytest.mark.parametrize("allow", [["127.0.0.1/32"], ["localhost"]])
async def test_the_allowlist_lets_the_same_send_through(dev_env, engine, tmp_path, receiver, allow):
    async with running_stack(dev_env, engine, tmp_path, outbound_allow=allow) as stack:
        url = receiver.url + "/notes" if allow[0][0].isdigit() else local(receiver, "/notes")
        task_id = await create(stack, "http_request", {"url": url}, mode="autonomous")
        task = await eventually(lambda: stack.http.get(f"/tasks/{task_id}"),
                                lambda r: r.json()["status"] in ("completed", "failed"), timeout=30)
    assert task.json()["status"] == "completed", task.json()["error"]
    assert [r.path for r in receiver.requests] == ["/notes"]


async def test_a_redirect_is_an_answer_and_is_not_followed(dev_env, engine, tmp_path, receiver):
    receiver.answer(302, "", headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    async with running_stack(dev_env, engine, tmp_path, outbound_allow=["127.0.0.1"]) as stack:
        task_id = await create(stack, "http_request", {"url": f"{receiver.url}/go"}, mode="autonomous")
        task, last = await failed(stack, task_id)
    assert "answered 302" in task["error"] and last["data"]["error_type"] == "DeliveryRefused"
    assert [r.path for r in receiver.requests] == ["/go"]  # nothing went to the Location


async def test_special_purpose_and_embedded_ipv4_literals_are_422_at_the_api(guarded: Stack):
    """Ranges the running Python's ``ipaddress`` takes for public (on 3.11.7) are refused all the same."""
    cases = [
        ("http://192.0.0.192/x", "refused: 192.0.0.192 is an IETF protocol assignment"),
        ("http://[fec0::1]/x", "refused: fec0::1 is a site-local address"),
        ("http://[2002:7f00:1::]/x", "refused: 2002:7f00:1:: is a loopback address (as 127.0.0.1)"),
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x", "a loopback address (as 127.0.0.1)"),
        ("http://[64:ff9b::a9fe:a9fe]/x", "a cloud metadata address (as 169.254.169.254)"),
    ]
    for url, message in cases:
        response = await guarded.http.post("/tasks", json=task_body(type="http_request", payload={"url": url}))
        assert response.status_code == 422, (url, response.text)
        [error] = response.json()["detail"]
        assert message in error["msg"] and HINT in error["msg"], (url, error)


async def test_the_api_refuses_to_start_when_the_guard_lets_loopback_through(monkeypatch, tmp_path: Path):
    from followthrough.api.main import create_app
    from followthrough.infra import outbound
    from followthrough.config.settings import Settings

    monkeypatch.setattr(outbound, "_listed", lambda address: None)  # a guard that takes every address for public
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"))
    with pytest.raises(outbound.GuardBroken, match="counts 127.0.0.1 as public; refusing to start"):
        async with app.router.lifespan_context(app):
            pass
