"""todo: work a person does. The task waits for its assignee to mark it done (``/complete``, with a result)
or failed (``/fail``, with an error); its SLA reminds the assignee, escalates to a named contact, and at the
deadline the to-do expires.

The assignee is the task's approver unless the task names its own: only they (and those it escalates to) may
decide it. A reminder, the escalation and the request itself reach a person by email when the address is theirs
and SMTP is configured (followthrough/db/mirror.py, direct notifications). docs/types/todo.md.
"""

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from followthrough.domain.approver_ids import ApproverId
from followthrough.domain.contracts import Draft, SlaPolicy, SubtaskSpec, TaskInput
from followthrough.domain.lifecycle import TaskMode
from followthrough.tasktypes.base import DraftContext, TaskType

# Without an SLA of its own, a to-do reminds its assignee at half its deadline, and escalates (to the payload's
# escalation contact, when it names one) at three quarters.
REMIND_AT, ESCALATE_AT = 0.5, 0.75


class TodoPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    instructions: str = Field(min_length=1, max_length=20_000, description="What the person is to do.")
    assignee: ApproverId = Field(description="Who does it: a user id, or an email address (then reminders go "
                                             "there by email).")
    escalation_contact: ApproverId | None = Field(None, description="Told when the SLA's escalation time passes; "
                                                                    "may then decide too.")


async def draft(payload: TodoPayload, ctx: DraftContext) -> Draft:
    return Draft(channel="none", to=[payload.assignee], subject=ctx.task.title, body=payload.instructions,
                 data={"assignee": payload.assignee, "escalation_contact": payload.escalation_contact})


def shape(payload: TodoPayload, task: TaskInput | SubtaskSpec) -> TaskInput | SubtaskSpec:
    """The assignee decides (unless the task names approvers); the escalation contact is the SLA's."""
    timeout = task.approval_timeout_seconds
    sla = task.sla or SlaPolicy(remind_after_seconds=int(timeout * REMIND_AT))
    if payload.escalation_contact and not sla.escalate_to:
        sla = replace(sla, escalate_to=[payload.escalation_contact],
                      escalate_after_seconds=sla.escalate_after_seconds or int(timeout * ESCALATE_AT))
    changes: dict[str, Any] = {"sla": sla}
    if not task.approvers and not task.approver_roles:
        changes["approvers"] = [payload.assignee]
    return replace(task, **changes)


TASK_TYPE = TaskType(
    name="todo",
    description="Work a person does: the assignee is reminded, the SLA escalates, and the person marks it done "
                "or failed with a result.",
    payload_model=TodoPayload,
    channel="none",
    draft=draft,
    default_mode=TaskMode.MANUAL,
    only_mode=TaskMode.MANUAL,
    shape=shape,
)
