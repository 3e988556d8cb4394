"""An installation without an optional part (a pip extra, followthrough/infra/extras.py) refuses the task types that
need it when a task is created — through POST /tasks, a group's subtasks, a definition and its runs — with a
422 that names the extra; a task that still reaches such a worker fails at once with that reason, not retried.
Playwright's absence is simulated at the seam both the API and the worker read (followthrough.infra.extras.installed);
tests/deploy/test_packaging.py proves it on an install without the extra."""

import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from followthrough.activities.delivery import DeliveryActivities
from followthrough.activities.drafting import DraftingActivities
from followthrough.infra import extras
from followthrough.domain import policies
from followthrough.domain.contracts import Draft, DraftRequest, SendRequest
from followthrough.infra.secrets import SecretStore
from followthrough.tasktypes import unserved_types
from tests.conftest import Stack
from tests.helpers import task_input

STEPS = {"steps": [{"action": "navigate", "url": "https://example.com/"}]}


@pytest.fixture
def without_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda name: False if name == "browser" else real(name))


def assert_names_the_extra(answer, loc: list) -> None:
    assert answer.status_code == 422, answer.text
    [error] = [e for e in answer.json()["detail"] if e["loc"] == loc]
    assert error["type"] == "part_missing"
    assert "browser" in error["msg"] and "pip install 'followthrough[browser]'" in error["msg"], error


async def test_a_browser_task_is_refused_at_creation_naming_the_extra(stack: Stack, without_playwright):
    answer = await stack.http.post("/tasks", json={"type": "browser", "tenant_id": stack.tenant, "payload": STEPS})
    assert_names_the_extra(answer, ["body", "type"])

    group = await stack.http.post("/tasks", json={"type": "group", "tenant_id": stack.tenant, "payload": {
        "subtasks": [{"type": "browser", "payload": STEPS}]}})
    assert_names_the_extra(group, ["body", "payload", "subtasks", 0, "type"])

    definition = await stack.http.post("/definitions", json={
        "tenant_id": stack.tenant, "name": f"site-{uuid.uuid4().hex[:6]}", "type": "browser", "payload": STEPS})
    assert_names_the_extra(definition, ["body", "type"])

    # The list of types says which are not served, and why.
    listed = {t["name"]: t for t in (await stack.http.get("/task-types")).json()["items"]}
    assert listed["browser"]["served"] is False
    assert "pip install 'followthrough[browser]'" in listed["browser"]["unserved_reason"]
    assert (listed["email"]["served"], listed["email"]["unserved_reason"]) == (True, None)

    # Other types are served as before.
    email = await stack.http.post("/tasks", json={"type": "email", "tenant_id": stack.tenant, "payload": {
        "to": ["ann@example.com"], "subject": "Hello", "body": "Hi"}})
    assert email.status_code == 201, email.text


async def test_a_definition_made_before_the_part_went_is_refused_when_run(stack: Stack,
                                                                          monkeypatch: pytest.MonkeyPatch):
    made = await stack.http.post("/definitions", json={
        "tenant_id": stack.tenant, "name": f"site-{uuid.uuid4().hex[:6]}", "type": "browser", "payload": STEPS})
    assert made.status_code == 201, made.text
    monkeypatch.setattr(extras, "installed", lambda name: name != "browser")
    run = await stack.http.post(f"/definitions/{made.json()['id']}/run", json={})
    assert_names_the_extra(run, ["definition", "type"])


async def test_a_browser_task_reaching_a_worker_without_the_part_fails_at_once(stack: Stack, without_playwright):
    assert set(unserved_types()) == {"browser"}
    task = task_input("autonomous", type="browser", payload=STEPS, tenant_id=stack.tenant)
    drafting = DraftingActivities(stack.settings, stack.engine, None, SecretStore(stack.settings.secrets_file))
    with pytest.raises(ApplicationError) as drafted:
        await ActivityEnvironment().run(drafting.draft, DraftRequest(task=task))
    assert drafted.value.non_retryable and drafted.value.type == policies.PART_MISSING
    assert "followthrough[browser]" in str(drafted.value)

    # A draft made elsewhere and sent here: the send step fails the same way.
    delivery = DeliveryActivities(stack.settings, stack.engine, None, SecretStore(stack.settings.secrets_file))
    draft = Draft(channel="browser", subject="Browser steps", body="", data=STEPS | {"url": "https://example.com/"})
    with pytest.raises(ApplicationError) as sent:
        await ActivityEnvironment().run(delivery.send, SendRequest(task_id=task.task_id, task_type="browser",
                                                                    tenant_id=stack.tenant, draft=draft,
                                                                    idempotency_key=f"{task.task_id}:send"))
    assert sent.value.non_retryable and sent.value.type == policies.PART_MISSING
    assert "followthrough[browser]" in str(sent.value)
