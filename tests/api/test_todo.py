"""The todo type: work a person does, marked done or failed with a result, with reminders, SLA and escalation;
and the `fail` decision for any task waiting for a person (POST /tasks/{id}/fail, seed 000's PATCH newStatus
FAILED). HTTP API, the real Temporal dev server (the time-skipping one for the SLA), a real SMTP server."""

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from followthrough.infra import approval_links
from followthrough.worker import SANDBOX
from followthrough.workflows.all import ALL_WORKFLOWS
from tests.activities.test_email_transport import SmtpServer
from tests.api.test_email_types import smtp  # noqa: F401 (fixture: an SMTP server for the module)
from tests.api.test_keys_and_roles import bearer, make_key
from tests.conftest import Stack, running_stack
from tests.helpers import event_types, eventually, task_body, until_status

HOUR = 3600


def todo_body(stack: Stack, **fields) -> dict:
    return {"tenant_id": stack.tenant, "type": "todo", "title": "Call ACME about INV-123",
            "payload": {"instructions": "Ask when they will pay INV-123.", "assignee": "dana"}} | fields


async def create(stack: Stack, body: dict) -> dict:
    response = await stack.http.post("/tasks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def events_of(stack: Stack, task_id: str) -> list[dict]:
    return (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]


async def test_a_todo_waits_for_its_assignee_who_marks_it_done_with_a_result(stack: Stack):
    created = await create(stack, todo_body(stack))
    task = await until_status(stack, created["id"], "awaiting_approval")
    assert (task["mode"], task["stage"], task["type"]) == ("manual", "awaiting_person", "todo")
    assert task["draft"]["body"] == "Ask when they will pay INV-123." and task["draft"]["to"] == ["dana"]
    # Only the assignee decides it.
    other = await stack.http.post(f"/tasks/{created['id']}/complete", json={}, headers={"X-Actor-Id": "erin"})
    assert other.status_code == 403 and "erin may not decide" in other.json()["detail"]
    done = await stack.http.post(f"/tasks/{created['id']}/complete", headers={"X-Actor-Id": "dana"},
                                 json={"comment": "called", "result": {"promised": "2026-12-20"}})
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text
    task = await until_status(stack, created["id"], "completed")
    assert task["result"]["result"] == {"promised": "2026-12-20"} and task["result"]["done_by"] == "dana"


async def test_a_todo_reported_failed_records_the_error_and_the_result(stack: Stack):
    created = await create(stack, todo_body(stack))
    await until_status(stack, created["id"], "awaiting_approval")
    empty = await stack.http.post(f"/tasks/{created['id']}/fail", json={"error": "  "}, headers={"X-Actor-Id": "dana"})
    assert empty.status_code == 422
    failed = await stack.http.post(f"/tasks/{created['id']}/fail", headers={"X-Actor-Id": "dana"},
                                   json={"error": "the number is disconnected", "result": {"calls": 3}})
    assert failed.status_code == 200 and failed.json()["status"] == "failed", failed.text
    task = await until_status(stack, created["id"], "failed")
    assert task["error"] == "the number is disconnected"
    assert task["result"] == {"failed_by": "dana", "result": {"calls": 3}}
    [event] = [e for e in await events_of(stack, created["id"]) if e["type"] == "TASK_EXECUTION_FAILED"]
    assert event["actor_id"] == "dana" and event["data"]["message"] == "the number is disconnected"
    # Its approval request is closed with the person's decision: no inbox shows it waiting any more.
    approval = await eventually(lambda: stack.http.get(f"/tasks/{created['id']}/approval"),
                                lambda r: r.json()["status"] != "pending")
    assert approval.json()["status"] == "failed", approval.text
    assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval.json()["decisions"]] == [
        ("dana", "fail", "the number is disconnected")]
    waiting = (await stack.http.get(f"/approvals?tenant_id={stack.tenant}")).json()
    assert created["id"] not in [a["task_id"] for a in waiting["items"]]
    again = await stack.http.post(f"/tasks/{created['id']}/fail", json={"error": "x"}, headers={"X-Actor-Id": "dana"})
    assert again.status_code == 409 and "failed" in again.json()["detail"]
    # The run with the fail update replays on this code.
    history = await stack.client.get_workflow_handle(created["workflow_id"]).fetch_history()
    markers = [str(e.marker_recorded_event_attributes) for e in history.events
               if e.HasField("marker_recorded_event_attributes")]
    assert any("person-reports-failure" in m for m in markers), markers
    await Replayer(workflows=ALL_WORKFLOWS, data_converter=stack.client.data_converter,
                   workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX)).replay_workflow(history)


async def test_fail_is_refused_with_why_for_a_task_not_waiting_for_a_person(stack: Stack):
    review = await create(stack, task_body(tenant_id=stack.tenant, mode="review"))
    await until_status(stack, review["id"], "awaiting_approval")
    refused = await stack.http.post(f"/tasks/{review['id']}/fail", json={"error": "no"})
    assert refused.status_code == 409 and "waiting for a person" in refused.json()["detail"], refused.text
    later = await create(stack, task_body(tenant_id=stack.tenant, due_at="2030-01-01T00:00:00Z"))
    await until_status(stack, later["id"], "scheduled")
    refused = await stack.http.post(f"/tasks/{later['id']}/fail", json={"error": "no"})
    assert refused.status_code == 409 and "scheduled" in refused.json()["detail"], refused.text
    assert (await stack.http.post(f"/tasks/{later['id']}/fail", json={})).status_code == 422
    assert (await stack.http.post(f"/tasks/{later['id']}/fail", json={"error": "x", "bogus": 1})).status_code == 422
    for task_id in (review["id"], later["id"]):
        await stack.http.post(f"/tasks/{task_id}/cancel")


async def test_only_the_approver_role_may_report_a_failure(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                          tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, anonymous_access=False) as keyed:
        submitter = bearer(await make_key(engine, keyed.tenant, "dana", "submitter"))
        approver = bearer(await make_key(engine, keyed.tenant, "dana", "approver"))
        created = await create_as(keyed, todo_body(keyed), submitter)
        await eventually(lambda: keyed.http.get(f"/tasks/{created['id']}", headers=submitter),
                         lambda r: r.json()["status"] == "awaiting_approval")
        for path, body in ((f"/tasks/{created['id']}/fail", {"error": "x"}),
                           (f"/tasks/{created['id']}", {"newStatus": "FAILED", "error": "x"})):
            call = keyed.http.post if path.endswith("fail") else keyed.http.patch
            refused = await call(path, json=body, headers=submitter)
            assert refused.status_code == 403 and "approver" in refused.json()["detail"], refused.text
        failed = await keyed.http.post(f"/tasks/{created['id']}/fail", json={"error": "x"}, headers=approver)
        assert failed.status_code == 200 and failed.json()["status"] == "failed", failed.text


async def create_as(stack: Stack, body: dict, headers: dict) -> dict:
    response = await stack.http.post("/tasks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_seed_style_patch_failed_with_error_fails_a_manual_task(stack: Stack):
    manual = await create(stack, task_body(tenant_id=stack.tenant, mode="manual"))
    await until_status(stack, manual["id"], "awaiting_approval")
    without = await stack.http.patch(f"/tasks/{manual['id']}", json={"newStatus": "FAILED"})
    assert without.status_code == 422 and "error" in without.json()["detail"], without.text
    patched = await stack.http.patch(f"/tasks/{manual['id']}", json={
        "newStatus": "FAILED", "error": "customer unreachable", "actorType": "USER", "actorId": "erin"})
    assert patched.status_code == 200 and patched.json()["status"] == "failed", patched.text
    task = await until_status(stack, manual["id"], "failed")
    assert task["error"] == "customer unreachable"
    # A review task waits for an approval, not for a person's work: 409 with why.
    review = await create(stack, task_body(tenant_id=stack.tenant, mode="review"))
    await until_status(stack, review["id"], "awaiting_approval")
    refused = await stack.http.patch(f"/tasks/{review['id']}", json={"newStatus": "FAILED", "error": "x"})
    assert refused.status_code == 409 and "waiting for a person" in refused.json()["detail"]
    await stack.http.post(f"/tasks/{review['id']}/cancel")


async def test_todo_input_is_validated(stack: Stack):
    for fields, where in [({"mode": "autonomous"}, ["body", "mode"]),
                          ({"payload": {"instructions": "x"}}, ["body", "payload", "assignee"]),
                          ({"payload": {"instructions": "x", "assignee": "dana", "extra": 1}},
                           ["body", "payload", "extra"]),
                          # Its people are checked as approver ids are: no separator, role prefix or invisible
                          # character to look like someone else.
                          ({"payload": {"instructions": "x", "assignee": "dana|alice"}},
                           ["body", "payload", "assignee"]),
                          ({"payload": {"instructions": "x", "assignee": "dana",
                                        "escalation_contact": "alice\u200d"}},
                           ["body", "payload", "escalation_contact"]),
                          # A to-do is a person's work wherever it is listed: never in another mode as a subtask.
                          ({"type": "group", "payload": {"subtasks": [
                              {"type": "todo", "mode": "suggest", "payload": {"instructions": "x",
                                                                             "assignee": "dana"}}]}},
                           ["body", "payload", "subtasks", 0])]:
        response = await stack.http.post("/tasks", json=todo_body(stack, **fields))
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][:len(where)] == where, \
            response.text


# ---- reminders, SLA and escalation on the time-skipping server, by email -------------------------------------

@pytest_asyncio.fixture
async def skipping_stack(time_skipping_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                         smtp: SmtpServer) -> AsyncIterator[Stack]:
    async with running_stack(time_skipping_env, engine, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port,
                             mail_from="tasks@followthrough.example") as running:
        # The tenant's people are at example.com: only there do emails carry signed links to decide.
        running.settings.guardrails = {running.tenant: {"email": {"allowed_domains": ["example.com"]}}}
        yield running


def mails(smtp: SmtpServer, task_id: str, to: str) -> list[tuple[str, str]]:
    return [(str(m.message["Subject"]), m.message.get_content()) for m in smtp.inbox.messages
            if m.rcpt_tos == [to] and task_id in m.message.get_content()]


async def test_the_assignee_is_reminded_and_the_sla_escalates_by_email_then_expires(
        skipping_stack: Stack, smtp: SmtpServer, time_skipping_env: WorkflowEnvironment):
    stack, env = skipping_stack, time_skipping_env
    created = await create(stack, todo_body(stack, approval_timeout_seconds=24 * HOUR, payload={
        "instructions": "Ask when they will pay.", "assignee": "ada@example.com",
        "escalation_contact": "boss@example.com"}))
    task_id = created["id"]
    task = await until_status(stack, task_id, "awaiting_approval")
    # The request: one email to the assignee, with signed links that are theirs.
    [(subject, body)] = await eventually(lambda: _async(mails(smtp, task_id, "ada@example.com")), bool)
    assert subject == "Waiting for you: Call ACME about INV-123"
    key = approval_links.signing_key(stack.settings)
    approve = next(line for line in body.splitlines() if line.startswith("Approve")).rsplit("/", 1)[1]
    link = approval_links.check(key, approve)
    assert link.approver == "ada@example.com" and link.task_id == task_id
    assert task["approval_deadline"]

    await env.sleep(timedelta(hours=13))  # past the reminder (half the deadline)
    await eventually(lambda: event_types(stack.engine, task_id), lambda t: "TASK_APPROVAL_REMINDED" in t)
    reminded = await eventually(lambda: _async(mails(smtp, task_id, "ada@example.com")), lambda m: len(m) == 2)
    assert reminded[1][0] == "Reminder: Call ACME about INV-123"
    assert not mails(smtp, task_id, "boss@example.com")

    await env.sleep(timedelta(hours=6))  # past the escalation (three quarters)
    await eventually(lambda: event_types(stack.engine, task_id), lambda t: "TASK_APPROVAL_ESCALATED" in t)
    [(subject, body)] = await eventually(lambda: _async(mails(smtp, task_id, "boss@example.com")), bool)
    assert subject == "Escalated to you: Call ACME about INV-123" and "Approve" in body
    escalated = [e for e in await events_of(stack, task_id) if e["type"] == "TASK_APPROVAL_ESCALATED"]
    assert escalated[0]["data"]["escalate_to"] == ["boss@example.com"]

    await env.sleep(timedelta(hours=6))  # past the deadline: the SLA is breached
    await until_status(stack, task_id, "expired")
    # One email each per event, however the activity was retried or the history replayed.
    assert [s for s, _ in mails(smtp, task_id, "ada@example.com")] == [
        "Waiting for you: Call ACME about INV-123", "Reminder: Call ACME about INV-123"]


async def test_the_escalation_contact_may_mark_it_done_once_escalated(skipping_stack: Stack,
                                                                     time_skipping_env: WorkflowEnvironment):
    stack, env = skipping_stack, time_skipping_env
    created = await create(stack, todo_body(stack, approval_timeout_seconds=8 * HOUR, payload={
        "instructions": "Ship the replacement.", "assignee": "dana", "escalation_contact": "boss"}))
    await until_status(stack, created["id"], "awaiting_approval")
    early = await stack.http.post(f"/tasks/{created['id']}/complete", json={}, headers={"X-Actor-Id": "boss"})
    assert early.status_code == 403
    await env.sleep(timedelta(hours=7))
    await eventually(lambda: event_types(stack.engine, created["id"]), lambda t: "TASK_APPROVAL_ESCALATED" in t)
    done = await stack.http.post(f"/tasks/{created['id']}/complete", json={"result": {"shipped": True}},
                                 headers={"X-Actor-Id": "boss"})
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text


async def _async(value):
    return value


async def test_a_todo_in_a_group_waits_for_its_own_assignee(stack: Stack):
    group = await create(stack, {"tenant_id": stack.tenant, "type": "group", "title": "Close INV-123", "payload": {
        "subtasks": [{"type": "todo", "title": "Call ACME",
                      "payload": {"instructions": "Ask when they will pay.", "assignee": "dana"}}]}})

    async def child() -> dict:
        items = (await stack.http.get(f"/tasks/{group['id']}/subtasks")).json()["items"]
        return items[0] if items else {}
    todo = await eventually(child, lambda c: c.get("status") == "awaiting_approval", timeout=20)
    refused = await stack.http.post(f"/tasks/{todo['id']}/complete", json={}, headers={"X-Actor-Id": "erin"})
    assert refused.status_code == 403, refused.text
    done = await stack.http.post(f"/tasks/{todo['id']}/complete", json={"result": {"called": True}},
                                 headers={"X-Actor-Id": "dana"})
    assert done.status_code == 200, done.text
    await until_status(stack, group["id"], "completed")
