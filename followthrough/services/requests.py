"""The requests operations take (followthrough/services/), whoever makes them: the HTTP API's bodies
(followthrough/api/schemas.py), a definition's rendering, an agent's subtask."""

import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from followthrough.domain import seed_vocabulary
from followthrough.domain.approver_ids import EMAIL_PATTERN, ApproverId
from followthrough.domain.lifecycle import Priority, TaskMode

MAX_APPROVAL_TIMEOUT = 365 * 24 * 3600
MAX_DUE_AHEAD = timedelta(days=10 * 365)
# An inbound event's type: lower-case dotted words, e.g. invoice.paid, customer.replied.
EventTypeName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$", max_length=128,
                                     examples=["invoice.paid"])]
MAX_STOP_ON = 20

def storable(value: Any, where: str = "body") -> Any:
    """Refuse what JSON parsing lets through but no database column can hold."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{where}: text must not contain NUL characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            storable(key, where)
            storable(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            storable(item, f"{where}[{index}]")
    return value


class StorableBody(BaseModel):
    """A request body whose every string and number can be stored as given."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return storable(data)


# Clients may send snake_case or the seeds' camelCase (ownerId, subjectRefId, dueAt, ...).
either_case = AliasGenerator(validation_alias=lambda name: AliasChoices(name, to_camel(name)))


class RetryOverride(StorableBody):
    """Per-task overrides of the type's retry policy for the send step."""

    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid")

    max_attempts: int | None = Field(None, ge=1, le=100)
    initial_interval_seconds: float | None = Field(None, gt=0, le=3600)
    backoff_coefficient: float | None = Field(None, ge=1, le=10)
    maximum_interval_seconds: float | None = Field(None, gt=0, le=24 * 3600)


class ApprovalPolicy(StorableBody):
    """Who may decide a task — user ids, and holders of team roles (none of either: anyone) —
    and how many of them must approve."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    approvers: list[ApproverId] = Field(default_factory=list, max_length=50)
    roles: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]] = Field(
        default_factory=list, max_length=20, description="Team roles whose holders may decide, e.g. finance.")
    required: int = Field(1, ge=1, le=50)

    @model_validator(mode="after")
    def _enough(self) -> "ApprovalPolicy":
        if self.approvers and not self.roles and self.required > len(set(self.approvers)):
            raise ValueError(f"required ({self.required}) exceeds the number of approvers ({len(set(self.approvers))})")
        return self


class SlaIn(StorableBody):
    """While a decision is awaited: remind after T1, escalate after T2, act at the deadline."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    remind_after_seconds: int | None = Field(None, gt=0, le=MAX_APPROVAL_TIMEOUT)
    escalate_after_seconds: int | None = Field(None, gt=0, le=MAX_APPROVAL_TIMEOUT)
    escalate_to: list[ApproverId] = Field(default_factory=list, max_length=50)
    on_deadline: Literal["expire", "reject", "approve"] = "expire"

    @model_validator(mode="after")
    def _escalation_has_people(self) -> "SlaIn":
        if self.escalate_after_seconds and not self.escalate_to:
            raise ValueError("escalate_after_seconds needs escalate_to: whom to escalate to")
        return self


def utc_within_range(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    if value - datetime.now(timezone.utc) > MAX_DUE_AHEAD:
        raise ValueError("due_at must be within 10 years from now")
    return value


LIFECYCLE_EVENTS = ("task.created", "task.awaiting_approval", "task.approved", "task.rejected", "task.expired",
                    "task.cancelled", "task.failed", "task.completed")
LifecycleEvent = Literal["task.created", "task.awaiting_approval", "task.approved", "task.rejected", "task.expired",
                         "task.cancelled", "task.failed", "task.completed"]


class NotifyWebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://",
                     description="Where the signed events are POSTed; checked like a subscription's.")
    secret: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$",
                        description="Name of the tenant's task secret that signs them.")


class NotifyIn(BaseModel):
    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    on: list[LifecycleEvent] = Field(default_factory=lambda: ["task.completed", "task.failed"], min_length=1,
                                     description="The lifecycle events to tell of; default completed and failed.")
    email: list[Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=320)]] = Field(
        default_factory=list, max_length=20)
    webhook: NotifyWebhookIn | None = None


class TaskCreate(StorableBody):
    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    type: str = Field(min_length=1, max_length=128, examples=["invoice_follow_up"])
    title: str | None = Field(None, min_length=1, max_length=500,
                              description="Defaults to the type and subject.")
    mode: TaskMode | None = Field(None, description="suggest, review, assisted, autonomous or manual "
                                  "(SUGGESTION, ASSISTED, AUTONOMOUS, semi_automated, fully_automated are "
                                  "accepted too). Defaults to the type's mode. No looser than the tenant's policy "
                                  "for the type allows (FOLLOWTHROUGH_MODE_LIMITS).")
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    owner_type: str | None = Field(None, max_length=64)
    owner_id: str | None = Field(None, max_length=128)
    subject_ref_type: str | None = Field(None, max_length=64)
    subject_ref_id: str | None = Field(None, max_length=256)
    source: str | None = Field(None, max_length=128)
    due_at: datetime | None = Field(None, description="ISO 8601; without an offset it is taken as UTC.")
    tenant_id: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    approval_timeout_seconds: int | None = Field(None, gt=0, le=MAX_APPROVAL_TIMEOUT,
                                                 description="How long to wait for a decision; default 24 h.")
    retry: RetryOverride | None = Field(None, description="Overrides of the type's retry policy for sending: "
                                        "max_attempts and maximum_interval_seconds at most the type's.")
    approval: ApprovalPolicy | None = Field(None, description="Who may decide, and how many approvals it takes.")
    sla: SlaIn | None = Field(None, description="Reminders, escalation and the deadline's action; "
                                                "defaults to the type's.")
    stop_on: list[EventTypeName] = Field(default_factory=list, max_length=MAX_STOP_ON,
                                         description="Inbound event types (POST /events) for the task's subject "
                                                     "that stop it while it waits: it ends cancelled.")
    notify: NotifyIn | None = Field(None, description="The task's own notifications: `on` (lifecycle events), "
                                    "`email` (addresses) and `webhook` (`url`, `secret`).")
    notify_on_complete: bool = Field(False, description="Seed style: add task.completed to `notify.on`.")
    notify_on_failure: bool = Field(False, description="Seed style: add task.failed to `notify.on`.")

    @field_validator("stop_on")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _stop_needs_subject(self) -> "TaskCreate":
        if self.stop_on and not (self.subject_ref_type and self.subject_ref_id):
            raise ValueError("stop_on needs subject_ref_type and subject_ref_id: events stop the tasks of their "
                             "subject")
        return self

    @model_validator(mode="after")
    def _notify_target(self) -> "TaskCreate":
        if (self.notify_on_complete or self.notify_on_failure) and (
                self.notify is None or not (self.notify.email or self.notify.webhook)):
            raise ValueError("notifyOnComplete / notifyOnFailure need a target: give `notify` with `email` "
                             "addresses or a `webhook` ({url, secret})")
        if self.notify is not None and not (self.notify.email or self.notify.webhook):
            raise ValueError("`notify` needs `email` addresses or a `webhook` ({url, secret})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _seed_names(cls, data: Any) -> Any:
        """The seeds' field names (executionType, scheduledFor, taskType, executionConfig) as ours."""
        return seed_vocabulary.task_body(data)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return TaskMode.parse(value) if isinstance(value, str) else value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("due_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc_within_range(value)


class EventIn(StorableBody):
    """An inbound event: something that happened outside (an invoice paid, a customer's reply), for the
    subject it names. Its id is the sender's: a repeat is recognised by it, per tenant."""

    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                    description="The sender's id of the event; a repeat with the same id changes nothing.")
    type: EventTypeName
    subject_ref_type: str | None = Field(None, min_length=1, max_length=64, examples=["INVOICE"])
    subject_ref_id: str | None = Field(None, min_length=1, max_length=256, examples=["INV-123"])
    data: dict[str, Any] = Field(default_factory=dict)
    tenant_id: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")

    @model_validator(mode="after")
    def _whole_subject(self) -> "EventIn":
        if (self.subject_ref_type is None) != (self.subject_ref_id is None):
            raise ValueError("give both subject_ref_type and subject_ref_id, or neither")
        return self
