"""Request and response models of the HTTP API (the Create / Public / ListPublic family). The requests
operations take are in followthrough/services/requests.py, what they answer with in services/results.py."""

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from followthrough.services.requests import StorableBody, either_case, utc_within_range
from followthrough.services.results import BatchItemResult, TaskLinks


class BatchCreate(StorableBody):
    items: list[dict[str, Any]] = Field(min_length=1, description="Task bodies, as for POST /tasks.")


class BatchResult(BaseModel):
    items: list[BatchItemResult]


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
    trigger: str = Field("api", description="api, definition (run through the API), schedule or event (a "
                                            "definition's event trigger)")
    stop_on: list[str] = Field(default_factory=list, description="Inbound event types that stop it while it waits")
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
    step: int | None = Field(None, description="A cadence's step now waiting or running (1-based); left out "
                                               "for other tasks.")

    @model_serializer(mode="wrap")
    def _step_only_for_a_cadence(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("step") is None:
            data.pop("step", None)
        return data


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
    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
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


class FailBody(_Decision):
    error: str = Field(min_length=1, max_length=4000, description="What went wrong, recorded as the task's error.")
    result: dict[str, Any] | None = Field(None, description="What the person did get done, kept on the task.")


class RescheduleBody(_Decision):
    due_at: datetime = Field(description="The new due time, ISO 8601; without an offset it is taken as UTC. "
                                         "A time already past starts the task now.")
    reason: str | None = Field(None, max_length=4000)

    @field_validator("due_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return utc_within_range(value)


class PauseBody(_Decision):
    reason: str | None = Field(None, max_length=4000)


class StatusPatch(_Decision):
    """Seed-style status change (PATCH /tasks/{id}); mapped onto cancel, complete, fail and reschedule."""

    new_status: str = Field(min_length=1, max_length=32)
    actor_type: str | None = Field(None, max_length=32)
    comment: str | None = Field(None, max_length=4000)
    result: dict[str, Any] | None = None
    reason: str | None = Field(None, max_length=4000)
    error: str | None = Field(None, min_length=1, max_length=4000,
                              description="With newStatus FAILED: what went wrong (a person reports the task failed).")
    scheduled_at: datetime | None = Field(None, description="With newStatus SCHEDULED: the new due time, as "
                                          "POST /tasks/{id}/reschedule takes it.")

    @model_validator(mode="before")
    @classmethod
    def _a_status_change(cls, data: Any) -> Any:
        if isinstance(data, dict) and data and not {"newStatus", "new_status"} & data.keys():
            raise ValueError("PATCH /tasks/{id} changes a task's status: send newStatus (CANCELLED, COMPLETED, or "
                             "SCHEDULED with scheduledAt); a definition's fields change with "
                             "PATCH /api/v1/definitions/{id}")
        return data

    @field_validator("scheduled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc_within_range(value)


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


# What a subscription hears when it names no events (as before the other lifecycle events could be heard).
NOTIFICATION_EVENTS = ("task.awaiting_approval", "task.completed", "task.failed", "task.approval_reminder",
                       "task.approval_escalated")
# Every event a subscription can name: the whole lifecycle (docs/api.md, "Notifications").
ALL_NOTIFICATION_EVENTS = (*NOTIFICATION_EVENTS, "task.created", "task.approved", "task.rejected", "task.expired",
                           "task.cancelled")


class SubscriptionCreate(StorableBody):
    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    tenant_id: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    url: AnyHttpUrl = Field(description="Where signed events are POSTed (http or https).")
    events: list[Literal["task.awaiting_approval", "task.completed", "task.failed", "task.approval_reminder",
                         "task.approval_escalated", "task.created", "task.approved", "task.rejected",
                         "task.expired", "task.cancelled"]] = Field(
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
