"""Request and response models of the HTTP API (the Create / Public / ListPublic family)."""

import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AliasGenerator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from followthrough.domain.approver_ids import ApproverId
from followthrough.domain.lifecycle import Priority, TaskMode

MAX_APPROVAL_TIMEOUT = 365 * 24 * 3600
MAX_DUE_AHEAD = timedelta(days=10 * 365)

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
_either_case = AliasGenerator(validation_alias=lambda name: AliasChoices(name, to_camel(name)))


class RetryOverride(StorableBody):
    """Per-task overrides of the type's retry policy for the send step."""

    model_config = ConfigDict(alias_generator=_either_case, populate_by_name=True, extra="forbid")

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


def _utc_within_range(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    if value - datetime.now(timezone.utc) > MAX_DUE_AHEAD:
        raise ValueError("due_at must be within 10 years from now")
    return value


class TaskCreate(StorableBody):
    model_config = ConfigDict(alias_generator=_either_case, populate_by_name=True, extra="forbid",
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
        return None if value is None else _utc_within_range(value)


class BatchCreate(StorableBody):
    items: list[dict[str, Any]] = Field(min_length=1, description="Task bodies, as for POST /tasks.")


class BatchItemResult(BaseModel):
    index: int
    status_code: int
    id: str | None = None
    workflow_id: str | None = None
    detail: Any = None


class BatchResult(BaseModel):
    items: list[BatchItemResult]


class TaskLinks(BaseModel):
    self: str
    events: str
    temporal_ui: str


class TaskCreated(BaseModel):
    id: str
    status: str
    workflow_id: str
    links: TaskLinks


class TaskPublic(BaseModel):
    id: str
    tenant_id: str
    type: str
    title: str
    mode: str
    priority: str
    status: str
    stage: str
    payload: dict[str, Any]
    owner_type: str | None
    owner_id: str | None
    subject_ref_type: str | None
    subject_ref_id: str | None
    source: str | None
    draft: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    workflow_id: str
    approval_timeout_seconds: int
    approval_deadline: datetime | None
    created_by: str | None
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_number: int
    parent_id: str | None = Field(None, description="The task this one is a subtask of.")
    subtask_index: int | None = Field(None, description="Its place among the parent's subtasks (1-based).")
    progress: "SubtaskProgress | None" = Field(None, description="For a task split into subtasks.")
    trigger: str = Field("api", description="api, definition (run through the API) or schedule")
    definition_id: str | None = None
    schedule_run_id: str | None = Field(None, description="The schedule's firing that created it, if any.")
    links: TaskLinks
    runs: list["TaskRunPublic"] | None = Field(None, description="Every run of the task (detail view only).")


class TaskRunPublic(BaseModel):
    number: int
    status: str
    error: str | None
    attempts: int
    workflow_run_id: str | None
    started_at: datetime
    finished_at: datetime | None


class TaskListPublic(BaseModel):
    items: list[TaskPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class OldestApprovalPublic(BaseModel):
    task_id: str
    title: str
    type: str
    requested_at: datetime
    waiting_seconds: int = Field(description="How long it has waited for a decision.")


class TaskStatsPublic(BaseModel):
    counts: dict[str, int] = Field(description="Tasks by status, every status named (0 for none).")
    total: int
    oldest_awaiting_approval: OldestApprovalPublic | None = Field(
        description="The pending approval requested longest ago, of a task still awaiting approval.")


class TaskEventPublic(BaseModel):
    id: str
    seq: int
    type: str
    old_status: str | None
    new_status: str | None
    actor_type: str
    actor_id: str | None
    data: dict[str, Any]
    occurred_at: datetime


class SubtaskProgress(BaseModel):
    done: int = Field(description="Subtasks that completed.")
    failed: int = Field(description="Subtasks that ended otherwise (failed, rejected, expired, cancelled).")
    total: int


class SubtaskListPublic(BaseModel):
    items: list[TaskPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    progress: SubtaskProgress | None


class TaskEventListPublic(BaseModel):
    items: list[TaskEventPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class _Decision(StorableBody):
    model_config = ConfigDict(alias_generator=_either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    actor_id: str | None = Field(None, min_length=1, max_length=128,
                                 description="Who decides; defaults to the X-Actor-Id header, else 'anonymous'.")


def _approval_id() -> Any:
    return Field(None, min_length=1, max_length=128, description=(
        "The approval request this decision is for (`id` of GET /tasks/{id}/approval); when given, the decision "
        "is refused (409) unless that request is still the open one."))


class ApproveBody(_Decision):
    comment: str | None = Field(None, max_length=4000)
    subject: str | None = Field(None, min_length=1, max_length=1000, description="Edited subject, if any.")
    body: str | None = Field(None, min_length=1, max_length=100_000, description="Edited body, if any.")
    approval_id: str | None = _approval_id()


class RejectBody(_Decision):
    reason: str = Field(min_length=1, max_length=4000)
    approval_id: str | None = _approval_id()


class CancelBody(_Decision):
    reason: str | None = Field(None, max_length=4000)


class CompleteBody(_Decision):
    comment: str | None = Field(None, max_length=4000)
    result: dict[str, Any] | None = Field(None, description="What the person did, recorded as the task's result.")


class RescheduleBody(_Decision):
    due_at: datetime = Field(description="The new due time, ISO 8601; without an offset it is taken as UTC. "
                                         "A time already past starts the task now.")
    reason: str | None = Field(None, max_length=4000)

    @field_validator("due_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _utc_within_range(value)


class PauseBody(_Decision):
    reason: str | None = Field(None, max_length=4000)


class StatusPatch(_Decision):
    """Seed-style status change (PATCH /tasks/{id}); mapped onto cancel and complete."""

    new_status: str = Field(min_length=1, max_length=32)
    actor_type: str | None = Field(None, max_length=32)
    comment: str | None = Field(None, max_length=4000)
    result: dict[str, Any] | None = None
    reason: str | None = Field(None, max_length=4000)


class DecisionPublic(BaseModel):
    id: str
    status: str
    stage: str


class TaskTypePublic(BaseModel):
    name: str
    description: str
    channel: str
    default_mode: str
    payload_schema: dict[str, Any]
    served: bool = Field(description="False when this installation lacks a part (a pip extra) the type needs; "
                                     "such tasks are refused at creation")
    unserved_reason: str | None = Field(None, description="Why not, naming the extra to install")


class TaskTypeListPublic(BaseModel):
    items: list[TaskTypePublic]


class HealthPublic(BaseModel):
    status: str
    database: str
    temporal: str


NOTIFICATION_EVENTS = ("task.awaiting_approval", "task.completed", "task.failed", "task.approval_reminder",
                       "task.approval_escalated")


class SubscriptionCreate(StorableBody):
    model_config = ConfigDict(alias_generator=_either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    tenant_id: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    url: AnyHttpUrl = Field(description="Where signed events are POSTed (http or https).")
    events: list[Literal["task.awaiting_approval", "task.completed", "task.failed", "task.approval_reminder",
                         "task.approval_escalated"]] = Field(
        default_factory=lambda: list(NOTIFICATION_EVENTS), min_length=1)
    secret: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$",
                        description="Name of the tenant's task secret that signs deliveries "
                                    "(FOLLOWTHROUGH_TASK_SECRETS_FILE).")
    description: str | None = Field(None, max_length=500)


class SubscriptionPublic(BaseModel):
    id: str
    tenant_id: str
    url: str
    events: list[str]
    secret: str
    description: str | None
    created_at: datetime


class SubscriptionListPublic(BaseModel):
    items: list[SubscriptionPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class ApprovalDecisionPublic(BaseModel):
    actor_id: str | None
    actor_type: str
    decision: str
    comment: str | None
    edited: dict[str, Any] | None
    diff: str | None
    decided_at: datetime


class ApprovalPublic(BaseModel):
    id: str
    task_id: str
    tenant_id: str
    run_number: int
    status: str
    required: int
    approvers: list[str]
    approver_roles: list[str]
    reason: str | None
    flags: list[str]
    requested_at: datetime
    deadline: datetime | None
    decided_at: datetime | None
    decisions: list[ApprovalDecisionPublic]


class ApprovalListPublic(BaseModel):
    items: list[ApprovalPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None
