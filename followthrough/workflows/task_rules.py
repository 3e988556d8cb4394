"""Plain rules TaskWorkflow applies, kept out of the workflow module itself.

Deterministic and free of I/O; imported through the sandbox (passed through),
so the sandbox need not re-import them for every run.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError

from followthrough.domain.contracts import ApprovalDecision, Draft, Rejection, SlaPolicy, SubtaskSpec, TaskInput
from followthrough.domain.lifecycle import TaskMode

# Modes in which the engine may send without a person, unless a guardrail flags the task.
SENDS_UNATTENDED = {TaskMode.ASSISTED, TaskMode.AUTONOMOUS}


def apply_edits(draft: Draft, decision: ApprovalDecision) -> Draft:
    return Draft(channel=draft.channel, to=list(draft.to), data=dict(draft.data),
                 subject=decision.subject if decision.subject is not None else draft.subject,
                 body=decision.body if decision.body is not None else draft.body)


def decision_data(decision: ApprovalDecision, original: Draft | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"comment": decision.comment}
    if decision.subject is not None or decision.body is not None:
        data["edited"] = {"subject": decision.subject, "body": decision.body}
        if original is not None:
            data["original"] = {"subject": original.subject, "body": original.body}
    return data


def combined(approvals: list[ApprovalDecision]) -> ApprovalDecision:
    """N approvals as one decision: the last approver's, carrying the latest edits any approver made."""
    last = approvals[-1]
    subject = next((a.subject for a in reversed(approvals) if a.subject is not None), None)
    body = next((a.body for a in reversed(approvals) if a.body is not None), None)
    return ApprovalDecision(actor_id=last.actor_id, actor_type=last.actor_type, comment=last.comment,
                            subject=subject, body=body)


def attempt_of(cause: BaseException | None) -> int | None:
    """Activities put their attempt number in an ApplicationError's first detail."""
    if isinstance(cause, ApplicationError) and cause.details:
        detail = cause.details[0]
        if isinstance(detail, dict) and isinstance(detail.get("attempt"), int):
            return detail["attempt"]
    return None


def error_type(err: ActivityError) -> str | None:
    """The type of the ApplicationError an activity failed with, if it failed with one."""
    return err.cause.type if isinstance(err.cause, ApplicationError) else None


def sla_steps(sla: SlaPolicy | None, timeout: timedelta) -> list[tuple[str, timedelta]]:
    """The SLA's steps before the deadline, in time order; steps at or after the deadline never come."""
    if sla is None:
        return []
    steps = [("remind", sla.remind_after_seconds), ("escalate", sla.escalate_after_seconds)]
    due = [(step, timedelta(seconds=after)) for step, after in steps if after]
    return sorted((s for s in due if s[1] < timeout), key=lambda s: s[1])


def deadline_decision(sla: SlaPolicy | None, mode: TaskMode) -> ApprovalDecision | Rejection | None:
    """What the deadline decides: nothing (the task expires), a rejection, or, where the mode
    may send without a person, an approval."""
    action = sla.on_deadline if sla else "expire"
    if action == "reject":
        return Rejection(actor_id="sla", actor_type="system", reason="no decision before the deadline")
    if action == "approve" and mode in SENDS_UNATTENDED:
        return ApprovalDecision(actor_id="sla", actor_type="system", comment="approved at the deadline")
    return None


# Subtask ids are name-based UUIDs of the parent's id, its run and the position, so a
# replayed or retried start always names the same task and a parent's new run new ones.
_SUBTASK_IDS = uuid.UUID("5d0c7d4e-8f43-4b8e-9a51-3c1f0e2b7a90")


def subtask_input(parent: TaskInput, index: int, spec: SubtaskSpec, now: datetime) -> TaskInput:
    """The TaskInput of a parent's ``index``-th subtask (1-based)."""
    return TaskInput(
        task_id=str(uuid.uuid5(_SUBTASK_IDS, f"{parent.task_id}/{parent.run_number}/{index}")),
        type=spec.type, title=spec.title, mode=spec.mode, payload=spec.payload, created_at=now,
        approval_timeout_seconds=spec.approval_timeout_seconds, priority=parent.priority,
        tenant_id=parent.tenant_id, owner_type=spec.owner_type or parent.owner_type,
        owner_id=spec.owner_id or parent.owner_id, subject_ref_type=spec.subject_ref_type,
        subject_ref_id=spec.subject_ref_id, source=parent.source, created_by=parent.created_by,
        send_retry=spec.send_retry, send_timeout_seconds=spec.send_timeout_seconds, approvers=spec.approvers,
        approvals_required=spec.approvals_required, sla=spec.sla, decompose=spec.decompose,
        # Empty in plans recorded before subtasks had roles, so their children's input is what it was.
        approver_roles=list(spec.approver_roles),
        parent_id=parent.task_id, subtask_index=index, depth=parent.depth + 1,
        # The parent's: a parent recorded before levels existed starts its children with the input it did.
        patch_level=parent.patch_level,
    )


def subtask_workflow_id(parent_workflow_id: str, run_number: int, index: int) -> str:
    return f"{parent_workflow_id}.{index}" if run_number == 1 else f"{parent_workflow_id}.r{run_number}.{index}"
