"""Task secrets: a namespace of their own, per tenant, bound to hosts; operator secrets out of every task's
reach; secret values out of every stored error. Through the HTTP API (with real keys), the dev server and a
worker, real receivers and Chromium."""

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.db.database import session_factory
from followthrough.db.tables import Delivery, TaskEvent
from tests.api.test_keys_and_roles import bearer, make_key
from tests.conftest import Stack, running_stack, served_api
from tests.helpers import add_task_secret, eventually
from tests.pages import Pages
from tests.receivers import Receiver

SMTP_PASSWORD = f"smtp-pw-{uuid.uuid4().hex}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest_asyncio.fixture
async def keyed(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """Keys required; the operator's SMTP password is a configured operator secret, as in production."""
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_SMTP_PW", SMTP_PASSWORD)
    async with running_stack(dev_env, engine, tmp_path, anonymous_access=False, smtp_username="mailer",
                             smtp_password_secret="smtp_pw") as running:
        yield running


async def _ended(stack: Stack, task_id: str, headers: dict, statuses=("completed", "failed")) -> dict:
    answer = await eventually(lambda: stack.http.get(f"/tasks/{task_id}", headers=headers),
                              lambda r: r.json()["status"] in statuses, timeout=60)
    return answer.json()


async def _stored_texts(engine: AsyncEngine, task_id: str) -> str:
    """Everything a viewer can read about the task's failures, from the tables themselves."""
    async with session_factory(engine)() as session:
        deliveries = (await session.execute(select(Delivery).where(Delivery.task_id == task_id))).scalars().all()
        events = (await session.execute(select(TaskEvent).where(TaskEvent.task_id == task_id))).scalars().all()
    return json.dumps([d.detail for d in deliveries] + [e.data for e in events], default=str)


def _http_request(url: str, secret: str) -> dict:
    return {"type": "http_request", "mode": "autonomous", "subject_ref_id": uuid.uuid4().hex,
            "payload": {"method": "POST", "url": url, "json": {"hi": 1},
                        "auth": {"type": "bearer", "secret": secret}}}


async def test_a_submitter_cannot_send_an_operator_secret_anywhere(keyed: Stack, engine: AsyncEngine,
                                                                   receiver: Receiver):
    submitter = bearer(await make_key(engine, keyed.tenant, "sam", "submitter"))
    answer = await keyed.http.post("/tasks", headers=submitter, json=_http_request(f"{receiver.url}/x", "smtp_pw"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "payload", "auth", "secret"]
    assert "not available to tenant" in error["msg"] and "FOLLOWTHROUGH_TASK_SECRETS_FILE" in error["msg"]
    assert SMTP_PASSWORD not in answer.text
    # The same for every other way a task names a secret: a webhook's signing secret, a subscription's.
    hook = await keyed.http.post("/tasks", headers=submitter, json={
        "type": "webhook", "mode": "autonomous", "subject_ref_id": "w",
        "payload": {"url": f"{receiver.url}/hook", "secret": "smtp_pw", "event": "e", "payload": {}}})
    assert hook.status_code == 422 and hook.json()["detail"][0]["loc"] == ["body", "payload", "secret"], hook.text
    group = await keyed.http.post("/tasks", headers=submitter, json={
        "type": "group", "subject_ref_id": "g", "payload": {"subtasks": [
            {"type": "email", "payload": {"to": ["a@example.com"], "subject": "s", "body": "b"}},
            _http_request(f"{receiver.url}/x", "smtp_pw")]}})
    assert group.status_code == 422, group.text
    assert group.json()["detail"][0]["loc"] == ["body", "payload", "subtasks", "1", "payload", "auth", "secret"]
    admin = bearer(await make_key(engine, keyed.tenant, "ada", "admin"))
    subscription = await keyed.http.post("/subscriptions", headers=admin, json={
        "url": f"{receiver.url}/events", "events": ["task.completed"], "secret": "smtp_pw"})
    assert subscription.status_code == 422, subscription.text
    assert subscription.json()["detail"][0]["loc"] == ["body", "secret"]
    assert receiver.requests == []


async def test_unknown_names_and_other_tenants_names_are_refused_alike(keyed: Stack, engine: AsyncEngine,
                                                                       receiver: Receiver):
    other = f"other-{uuid.uuid4().hex[:8]}"
    add_task_secret(keyed.settings, other, "crm_token", "the-other-tenants-token")
    submitter = bearer(await make_key(engine, keyed.tenant, "sam", "submitter"))
    answers = [await keyed.http.post("/tasks", headers=submitter, json=_http_request(f"{receiver.url}/x", name))
               for name in ("crm_token", "no_such_name")]
    messages = [a.json()["detail"][0]["msg"] for a in answers]
    assert [a.status_code for a in answers] == [422, 422]
    assert messages[0].replace("crm_token", "N") == messages[1].replace("no_such_name", "N")
    assert other not in messages[0] and "the-other-tenants-token" not in messages[0]
    # A broken file is the operator's to fix: a 503 that shows nothing of it, never a 500.
    keyed.settings.task_secrets_file.write_text('{"broken": "the-other-tenants-token"')
    broken = await keyed.http.post("/tasks", headers=submitter, json=_http_request(f"{receiver.url}/x", "crm_token"))
    assert broken.status_code == 503 and "the-other-tenants-token" not in broken.text, broken.text


async def test_a_tenants_secret_is_sent_only_to_the_hosts_it_is_bound_to(keyed: Stack, engine: AsyncEngine,
                                                                         receiver: Receiver):
    value = f"crm-{uuid.uuid4().hex}"
    add_task_secret(keyed.settings, keyed.tenant, "crm_token", value, hosts=["api.crm.example"])
    submitter = bearer(await make_key(engine, keyed.tenant, "sam", "submitter"))
    refused = await keyed.http.post("/tasks", headers=submitter, json=_http_request(f"{receiver.url}/x", "crm_token"))
    assert refused.status_code == 422 and "for host '127.0.0.1'" in refused.json()["detail"][0]["msg"], refused.text

    add_task_secret(keyed.settings, keyed.tenant, "crm_token", value, hosts=["api.crm.example", "127.0.0.1"])
    receiver.answer(201)
    created = await keyed.http.post("/tasks", headers=submitter, json=_http_request(f"{receiver.url}/x", "crm_token"))
    assert created.status_code == 201, created.text
    task = await _ended(keyed, created.json()["id"], submitter)
    assert task["status"] == "completed", task
    [got] = receiver.requests
    assert got.headers["authorization"] == f"Bearer {value}"


async def test_the_worker_checks_the_binding_when_it_sends(keyed: Stack, engine: AsyncEngine, receiver: Receiver):
    """Allowed when the task was created, rebound before it was approved: refused at the send, not retried."""
    add_task_secret(keyed.settings, keyed.tenant, "crm_token", "crm-value-1", hosts=["127.0.0.1"])
    admin = bearer(await make_key(engine, keyed.tenant, "ada", "admin"))
    body = _http_request(f"{receiver.url}/x", "crm_token") | {"mode": "review"}
    created = await keyed.http.post("/tasks", headers=admin, json=body)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    await _ended(keyed, task_id, admin, ("awaiting_approval",))
    add_task_secret(keyed.settings, keyed.tenant, "crm_token", "crm-value-1", hosts=["api.crm.example"])
    approved = await keyed.http.post(f"/tasks/{task_id}/approve", headers=admin, json={})
    assert approved.status_code == 200, approved.text
    task = await _ended(keyed, task_id, admin)
    assert task["status"] == "failed" and task["attempts"] == 1, task
    assert "the task secret 'crm_token' is not available" in task["error"] and "127.0.0.1" in task["error"]
    assert receiver.requests == []


async def test_a_secret_a_header_cannot_carry_fails_clearly_and_its_value_is_stored_nowhere(
        keyed: Stack, engine: AsyncEngine, receiver: Receiver):
    value = f"sk-{uuid.uuid4().hex}"
    add_task_secret(keyed.settings, keyed.tenant, "crm_token", value + "\n")  # copied with its trailing newline
    admin = bearer(await make_key(engine, keyed.tenant, "ada", "admin"))
    created = await keyed.http.post("/tasks", headers=admin, json=_http_request(f"{receiver.url}/x", "crm_token"))
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    task = await _ended(keyed, task_id, admin)
    assert task["status"] == "failed" and task["attempts"] == 1, task  # not retried: retrying cannot fix it
    assert "'crm_token'" in task["error"] and "cannot be sent in an HTTP header" in task["error"], task["error"]
    events = (await keyed.http.get(f"/tasks/{task_id}/events", headers=admin)).text
    stored = await _stored_texts(engine, task_id)
    for text in (json.dumps(task), events, stored):
        assert value not in text
    assert receiver.requests == []


async def test_a_connector_sends_its_tenants_secret_not_an_operator_one(
        dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "notes.yaml").write_text(
        f"name: notes\nbase_url: {receiver.url}\nauth: {{type: bearer, secret: notes_key}}\n"
        "actions:\n  add:\n    method: POST\n    path: /notes\n    body: {text: '{{ text }}'}\n")
    # The operator's store holds a secret of that name: it must not be what a connector sends.
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_NOTES_KEY", "operator-value")
    async with running_stack(dev_env, engine, tmp_path, connectors_dir=tmp_path / "connectors") as stack:
        body = {"type": "notes.add", "tenant_id": stack.tenant, "mode": "autonomous",
                "subject_ref_id": uuid.uuid4().hex, "payload": {"text": "hello"}}
        refused = await stack.http.post("/tasks", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "payload", "auth", "secret"]
        add_task_secret(stack.settings, stack.tenant, "notes_key", "tenant-value", hosts=["127.0.0.1"])
        created = await stack.http.post("/tasks", json=body | {"subject_ref_id": uuid.uuid4().hex})
        assert created.status_code == 201, created.text
        task = await _ended(stack, created.json()["id"], {})
        assert task["status"] == "completed", task
        assert [r.headers["authorization"] for r in receiver.requests] == ["Bearer tenant-value"]


@pytest.fixture
def site() -> Iterator[Pages]:
    with Pages("127.0.0.1") as pages:
        yield pages


async def test_a_browser_types_a_secret_only_into_a_page_of_a_bound_host(dev_env: WorkflowEnvironment,
                                                                       engine: AsyncEngine, tmp_path: Path,
                                                                       site: Pages):
    async with served_api(dev_env, engine, tmp_path) as (url, settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            tenant = f"b-{uuid.uuid4().hex[:8]}"

            async def run(steps: list[dict]) -> dict:
                created = await http.post("/tasks", json={"type": "browser", "tenant_id": tenant,
                                                          "subject_ref_id": uuid.uuid4().hex,
                                                          "payload": {"steps": steps}})
                assert created.status_code == 201, created.text
                answer = await eventually(lambda: http.get(f"/tasks/{created.json()['id']}"),
                                          lambda r: r.json()["status"] in ("completed", "failed"), timeout=90)
                return answer.json()

            unknown = await http.post("/tasks", json={"type": "browser", "tenant_id": tenant, "subject_ref_id": "u",
                                                      "payload": {"steps": site.sign_up_steps()}})
            assert unknown.status_code == 422, unknown.text
            assert unknown.json()["detail"][0]["loc"] == ["body", "payload", "steps", "2", "secret"]

            # Bound to `localhost`; the form is opened as 127.0.0.1, directly or after a redirect from localhost.
            add_task_secret(settings, tenant, "signup_email", "ann@example.com", hosts=["localhost"])
            port = site.url.rsplit(":", 1)[1]
            redirected = [{"action": "navigate", "url": f"http://localhost:{port}/redirect?to={site.url}/form"},
                          *site.sign_up_steps()[1:]]
            for steps in (site.sign_up_steps(), redirected):
                task = await run(steps)
                assert task["status"] == "failed", task
                assert "step 2 (type '#email')" in task["error"], task["error"]
                assert "not available" in task["error"] and "'127.0.0.1'" in task["error"]
            assert site.posted == []

            add_task_secret(settings, tenant, "signup_email", "ann@example.com", hosts=["127.0.0.1"])
            task = await run(site.sign_up_steps())
            assert task["status"] == "completed", task
            assert site.posted == [{"name": ["Ann"], "email": ["ann@example.com"]}]
