"""What the Web UI shows for a run: search attributes kept current, summaries of activities and timers,
and current details saying what the task waits for (on the time-skipping server)."""

from datetime import datetime, timedelta, timezone

from temporalio.api.common.v1 import Payload
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from followthrough.domain import search_attributes as sa
from followthrough.domain.contracts import ApprovalDecision, CancelRequest, DecisionAck, PauseRequest, TaskOutcome
from tests.helpers import eventually, task_input
from followthrough.worker import build_worker
from followthrough.workflows import run_texts


async def details(handle: WorkflowHandle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def attributes(handle: WorkflowHandle) -> dict[str, str]:
    found = (await handle.describe()).typed_search_attributes
    return {pair.key.name: pair.value for pair in found if pair.key.name in {k.name for k in sa.ALL}}


async def summaries(env: WorkflowEnvironment, handle: WorkflowHandle) -> list[str]:
    """Every activity's and timer's summary in the run's history, in order."""
    converter = env.client.data_converter
    found: list[str] = []
    async for event in handle.fetch_history_events():
        summary: Payload = event.user_metadata.summary
        if event.HasField("user_metadata") and summary.data:
            found += await converter.decode([summary], [str])
    return found


async def test_an_approval_run_reads_at_a_glance(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = task_input("review", subject_ref_type="INVOICE", approvers=["alice", "bob"], approvals_required=2)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        await eventually(lambda: attributes(handle), lambda a: a.get("TaskStatus") == "awaiting_approval")
        # Started without attributes (as by hand): the run sets them all itself; ids and vocabulary only.
        assert await attributes(handle) == {
            "TaskStatus": "awaiting_approval", "TaskType": "invoice_follow_up", "TenantId": "wf-tests",
            "SubjectRef": "INVOICE:INV-123", "Priority": "normal", "Mode": "review"}
        waiting = await details(handle)
        assert waiting.startswith("Waiting for approval from alice, bob (0 of 2 given) until ")
        assert waiting.endswith(" UTC")

        await handle.execute_update("approve", ApprovalDecision(actor_id="alice"), result_type=DecisionAck)
        assert (await details(handle)).startswith("Waiting for approval from alice, bob (1 of 2 given) until ")
        await handle.execute_update("approve", ApprovalDecision(actor_id="bob"), result_type=DecisionAck)
        assert (await handle.result()).status == "completed"
        assert (await attributes(handle))["TaskStatus"] == "completed"
        assert await details(handle) == "Completed"

    shown = await summaries(env, handle)
    assert "Draft invoice follow-up email" in shown
    assert "Wait for approval (24h)" in shown
    assert "Send invoice follow-up email" in shown
    assert not any("acme.example" in s for s in shown)


async def test_a_scheduled_run_says_when_and_who_paused_it(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    due = (await env.get_current_time()).replace(microsecond=0) + timedelta(days=3)
    task = task_input("autonomous", due_at=due)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        await eventually(lambda: attributes(handle), lambda a: a.get("TaskStatus") == "scheduled")
        assert await details(handle) == f"Scheduled for {run_texts.when(due)}"
        await handle.execute_update("pause", PauseRequest(actor_id="ops", reason="audit"), result_type=DecisionAck)
        assert (await attributes(handle))["TaskStatus"] == "paused"
        assert await details(handle) == "Paused by ops: audit (was scheduled); resume to go on"
        await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        assert (await attributes(handle))["TaskStatus"] == "scheduled"
        await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
        assert (await handle.result()).status == "cancelled"
        assert (await attributes(handle))["TaskStatus"] == "cancelled"
        assert await details(handle) == "Cancelled by ops"
    assert f"Wait until due ({run_texts.when(due)})" in await summaries(env, handle)


def test_texts():
    assert run_texts.duration(timedelta(hours=24)) == "24h"
    assert run_texts.duration(timedelta(days=2, hours=3, minutes=5)) == "2d 3h"
    assert run_texts.duration(timedelta(minutes=90)) == "1h 30m"
    assert run_texts.when(datetime(2026, 12, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-12-01 09:00 UTC"
    email = task_input("review", type="email")
    assert run_texts.send_summary(email, "email") == "Send email"
    assert run_texts.send_summary(task_input("review", type="reminder"), "webhook") == "Send reminder by webhook"
    assert run_texts.send_summary(task_input("review", type="http_request"), "http") == "Send HTTP request"
    assert run_texts.deciders([], ["finance"]) == "a holder of role finance"
    assert run_texts.deciders([], []) == "anyone who may decide"
    assert run_texts.subtasks({"done": 1, "failed": 0, "total": 3}) == "Waiting on 3 subtasks (1 done)"
