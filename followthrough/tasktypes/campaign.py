"""campaign: one email template sent to many recipients, each message a subtask.

The planning function expands the payload into one ``email`` subtask per
recipient, with the shared variables and the recipient's own; each message is
then drafted, approved (as its mode says) and sent on its own.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from followthrough.domain.contracts import Draft
from followthrough.tasktypes.subtasks import MAX_SUBTASKS, SubtaskIn, SubtaskList
from followthrough.domain.lifecycle import Execution, FailurePolicy, TaskMode
from followthrough.tasktypes.base import DraftContext, PlanContext, TaskType
from followthrough.tasktypes.email import check_template


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: EmailStr
    variables: dict[str, Any] = Field(default_factory=dict, description="This recipient's values.")


class CampaignPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=998, description="Jinja2 template.")
    body: str = Field(min_length=1, max_length=100_000, description="Jinja2 template.")
    variables: dict[str, Any] = Field(default_factory=dict, description="Values shared by every message.")
    recipients: list[Recipient] = Field(min_length=1, max_length=MAX_SUBTASKS)
    message_mode: TaskMode | None = Field(None, description="Mode of each message; default the email type's "
                                                            "(review).")
    execution: Execution = Execution.PARALLEL
    failure_policy: FailurePolicy = FailurePolicy.CONTINUE

    @field_validator("subject", "body")
    @classmethod
    def _parses(cls, value: str) -> str:
        return check_template(value)

    @field_validator("message_mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return TaskMode.parse(value) if isinstance(value, str) else value


async def plan(payload: CampaignPayload, ctx: PlanContext) -> SubtaskList:
    steps = [SubtaskIn(type="email", title=f"{ctx.task.title}: {r.to}", mode=payload.message_mode,
                       subject_ref_type=ctx.task.subject_ref_type, subject_ref_id=ctx.task.subject_ref_id,
                       payload={"to": [str(r.to)], "subject": payload.subject, "body": payload.body,
                                "variables": payload.variables | r.variables})
             for r in payload.recipients]
    return SubtaskList(subtasks=steps, execution=payload.execution, failure_policy=payload.failure_policy)


async def draft(_payload: CampaignPayload, _ctx: DraftContext) -> Draft:
    raise TypeError("a campaign has no draft of its own: each message is a subtask")


TASK_TYPE = TaskType(
    name="campaign",
    description="One email template (subject and body with variables) to many recipients: each message is a "
                "subtask of type email with the shared and the recipient's own variables.",
    payload_model=CampaignPayload,
    channel="email",
    draft=draft,
    plan=plan,
    default_mode=TaskMode.AUTONOMOUS,
    listed_subtasks=lambda payload: [(("message_mode",), "email", payload.message_mode, {})],
    listed_count=lambda payload: len(payload.recipients),
)
