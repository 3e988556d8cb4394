"""The approval SLA on the time-skipping server: remind after T1, escalate after
T2, and at the deadline expire, reject or approve."""

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from followthrough.domain.contracts import ApprovalDecision, DecisionAck, SlaPolicy
from tests.helpers import event_types, eventually, invoice_payload, outbox_rows, task_input
from tests.workflows.test_task_workflow import start, until_status
from followthrough.worker import build_worker

HOUR = 3600


def _task(mode: str = "review", on_deadline: str = "expire", **fields):
    sla = SlaPolicy(remind_after_seconds=4 * HOUR, escalate_after_seconds=8 * HOUR, escalate_to=["boss"],
                    on_deadline=on_deadline)
    return task_input(mode, approvers=["alice"], sla=sla, approval_timeout_seconds=24 * HOUR, **fields)


async def test_reminded_escalated_then_decided_by_the_escalation_approver(time_skipping_env, settings, sqlite_engine):
    env = time_skipping_env
    task = _task()
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await start(env, settings, task)
        await until_status(handle, "awaiting_approval")
        with pytest.raises(WorkflowUpdateFailedError):  # not an approver before escalation
            await handle.execute_update("approve", ApprovalDecision(actor_id="boss"), result_type=DecisionAck)
        await env.sleep(timedelta(hours=5))
        types = await eventually(lambda: event_types(sqlite_engine, task.task_id),
                                 lambda t: "TASK_APPROVAL_REMINDED" in t)
        assert "TASK_APPROVAL_ESCALATED" not in types
        await env.sleep(timedelta(hours=4))
        await eventually(lambda: event_types(sqlite_engine, task.task_id), lambda t: "TASK_APPROVAL_ESCALATED" in t)
        ack = await handle.execute_update("approve", ApprovalDecision(actor_id="boss"), result_type=DecisionAck)
        assert ack.status == "in_progress"
        assert (await handle.result()).status == "completed"
    assert len(await outbox_rows(sqlite_engine, task.task_id)) == 1


@pytest.mark.parametrize("mode, on_deadline, status, sent", [
    ("review", "expire", "expired", 0),
    ("review", "reject", "rejected", 0),
    # An autonomous task waits only because a guardrail held it: the deadline never approves that.
    ("autonomous", "approve", "expired", 0),
    ("review", "approve", "expired", 0),  # review mode never sends without a person
])
async def test_the_deadline_acts_as_declared(time_skipping_env, settings, sqlite_engine, mode, on_deadline, status,
                                             sent):
    env = time_skipping_env
    # Autonomous tasks wait only when a guardrail flags them: a large amount does.
    task = _task(mode, on_deadline, payload=invoice_payload(invoice_amount=50_000))
    async with build_worker(env.client, settings, sqlite_engine):
        outcome = await (await start(env, settings, task)).result()
    assert outcome.status == status
    types = await event_types(sqlite_engine, task.task_id)
    assert types.count("TASK_APPROVAL_REMINDED") == 1 and types.count("TASK_APPROVAL_ESCALATED") == 1
    assert len(await outbox_rows(sqlite_engine, task.task_id)) == sent
