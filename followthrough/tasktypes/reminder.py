"""reminder: at the task's due_at, notify its owner by email or webhook.

The wait is the workflow's own (a task with due_at sleeps until then), so this
type only says what to send.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl, field_validator, model_validator

from followthrough.domain.contracts import Draft
from followthrough.domain.guardrails import Guardrail, GuardrailFacts, RecipientDomains, TargetHosts
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.secrets import SECRET_NAME
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.tasktypes.email import check_template, render_texts

EVENT = "task.reminder"


class EmailTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[EmailStr] = Field(min_length=1, max_length=50)


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    secret: str = Field(pattern=SECRET_NAME.pattern, description="Name of the secret that signs the delivery.")


class ReminderPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=100_000, description="Jinja2 template.")
    subject: str | None = Field(None, max_length=998,
                                description="Email subject template; default 'Reminder: <task title>'.")
    variables: dict[str, Any] = Field(default_factory=dict)
    email: EmailTarget | None = None
    webhook: WebhookTarget | None = None

    @field_validator("message", "subject")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _one_target(self) -> "ReminderPayload":
        if (self.email is None) == (self.webhook is None):
            raise ValueError("give exactly one of `email` or `webhook`")
        return self


@dataclass(frozen=True)
class OnChannel:
    """Applies a guardrail only to drafts of one channel (a host check means nothing for email)."""

    channel: str
    inner: Guardrail

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        return self.inner.check(payload, draft, params, facts) if draft.channel == self.channel else None


async def draft(payload: ReminderPayload, ctx: DraftContext) -> Draft:
    texts = await render_texts(ctx, [payload.message, *([payload.subject] if payload.subject else [])],
                               payload.variables)
    message = texts[0]
    if payload.webhook is not None:
        return Draft(channel="webhook", subject=EVENT, body=message, data={
            "url": str(payload.webhook.url), "secret": payload.webhook.secret, "event": EVENT,
            "payload": {"message": message, "task_id": ctx.task.task_id}})
    assert payload.email is not None  # the payload model guarantees one target
    subject = texts[1] if payload.subject else f"Reminder: {ctx.task.title}"
    return Draft(channel="email", to=[str(a) for a in payload.email.to], subject=subject, body=message)


TASK_TYPE = TaskType(
    name="reminder",
    description="At the task's due_at, send its owner a reminder by email or webhook.",
    payload_model=ReminderPayload,
    channel="email",
    draft=draft,
    guardrails=(RecipientDomains(), OnChannel("webhook", TargetHosts())),
    outbound_urls=lambda payload: {"webhook.url": str(payload.webhook.url)} if payload.webhook else {},
    secret_refs=lambda payload: ({"webhook.secret": (payload.webhook.secret, str(payload.webhook.url))}
                                 if payload.webhook else {}),
    default_mode=TaskMode.AUTONOMOUS,
)
