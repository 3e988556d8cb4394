"""Request and response models of task definitions and their schedules."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from followthrough.domain.cron import InvalidCron, check_cron, check_timezone
from followthrough.domain.lifecycle import Priority, TaskMode
from followthrough.services.requests import (MAX_STOP_ON, ApprovalPolicy, EventTypeName, RetryOverride, SlaIn,
                                             StorableBody, either_case)
from followthrough.tasktypes import type_name

VariableName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:/-]{1,64}$")]
_CONFIG = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid", str_strip_whitespace=True)


class TaskDefaults(StorableBody):
    """What every task created from the definition gets; text fields may hold ``{{variables}}`` too."""

    model_config = _CONFIG

    priority: Priority | None = None
    owner_type: str | None = Field(None, max_length=64)
    owner_id: str | None = Field(None, max_length=128)
    subject_ref_type: str | None = Field(None, max_length=64)
    subject_ref_id: str | None = Field(None, max_length=256)
    source: str | None = Field(None, max_length=128)
    approval_timeout_seconds: int | None = Field(None, gt=0, le=365 * 24 * 3600)
    retry: RetryOverride | None = None
    approval: ApprovalPolicy | None = None
    sla: SlaIn | None = None
    stop_on: list[EventTypeName] | None = Field(None, max_length=MAX_STOP_ON,
                                                description="As for POST /tasks: event types that stop the task "
                                                            "while it waits.")

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class TriggerIn(StorableBody):
    """What starts a run of the definition besides a person and its cron: an inbound event of this type
    (POST /events), whose id, type, subject and data the templates see as ``{{ event.… }}``."""

    model_config = _CONFIG

    event: EventTypeName


def _mode(value: Any) -> Any:
    return TaskMode.parse(value) if isinstance(value, str) else value


def _cron(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_cron(value)
    except InvalidCron as err:
        raise ValueError(f"invalid cron expression: {err}") from None


def _timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_timezone(value)
    except InvalidCron as err:
        raise ValueError(str(err)) from None


class _DefinitionFields(StorableBody):
    model_config = _CONFIG

    @field_validator("mode", mode="before", check_fields=False)
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return _mode(value)

    @field_validator("cron", check_fields=False)
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _cron(value)

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return _timezone(value)

    @field_validator("type", check_fields=False)
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        """Recorded under our name (INVOICE_FOLLOW_UP, api_call as the seeds spell them), so filters find it."""
        return None if value is None else type_name(value)


class DefinitionCreate(_DefinitionFields):
    tenant_id: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    name: str = Field(min_length=1, max_length=200, description="Unique per tenant among existing definitions.")
    description: str | None = Field(None, max_length=4000)
    type: str = Field(min_length=1, max_length=128, examples=["email"])
    mode: TaskMode | None = Field(None, description="As for POST /tasks; defaults to the type's.")
    title: str | None = Field(None, min_length=1, max_length=2000, description="A template: 'Remind {{ name }}'.")
    payload: dict[str, Any] = Field(default_factory=dict,
                                    description="The type's payload; every string in it is a template.")
    variables: dict[VariableName, Any] = Field(default_factory=dict,
                                               description="Default values of variables; a run's own win.")
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    defaults: TaskDefaults = Field(default_factory=TaskDefaults)
    cron: str | None = Field(None, max_length=200, description="Five-field cron (or @daily, ...): runs on a "
                             "Temporal Schedule with the variables' defaults.", examples=["0 9 * * MON-FRI"])
    timezone: str = Field("UTC", max_length=64, description="IANA time zone of the cron expression.")
    trigger: TriggerIn | None = Field(None, description='{"event": "invoice.overdue"}: a run per such event, '
                                      'with the event as the variable `event`.')


class DefinitionUpdate(_DefinitionFields):
    """Only the fields given change; ``cron: null`` removes the schedule."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    type: str | None = Field(None, min_length=1, max_length=128)
    mode: TaskMode | None = None
    title: str | None = Field(None, min_length=1, max_length=2000)
    payload: dict[str, Any] | None = None
    variables: dict[VariableName, Any] | None = None
    tags: list[Tag] | None = Field(None, max_length=50)
    defaults: TaskDefaults | None = None
    cron: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=64)
    trigger: TriggerIn | None = Field(None, description="null removes the trigger.")
    version: int | None = Field(None, ge=1, description="When given, the update applies only to this version "
                                                        "(else 409): a guard against overwriting a change.")


class DefinitionRun(StorableBody):
    model_config = _CONFIG

    variables: dict[str, Any] = Field(default_factory=dict, description="Values for the templates' variables.")
    due_at: datetime | None = Field(None, description="As for POST /tasks.")


class ScheduledRunPublic(BaseModel):
    scheduled_at: datetime
    started_at: datetime
    workflow_id: str | None


class SchedulePublic(BaseModel):
    id: str
    cron: str
    timezone: str
    state: str = Field(description="active or paused")
    paused: bool
    note: str | None = None
    next_run_times: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduledRunPublic] = Field(default_factory=list)
    runs_started: int | None = None
    temporal_ui: str


class DefinitionLinks(BaseModel):
    self: str
    run: str
    runs: str


class DefinitionPublic(BaseModel):
    id: str
    tenant_id: str
    name: str
    description: str | None
    type: str
    mode: str | None
    title: str | None
    payload: dict[str, Any]
    variables: dict[str, Any]
    variables_used: list[str] = Field(description="Every variable the templates use.")
    variables_required: list[str] = Field(description="Those without a default: a run must give them.")
    tags: list[str]
    defaults: dict[str, Any]
    cron: str | None
    timezone: str
    schedule: SchedulePublic | None = Field(None, description="With next run times in the detail view.")
    trigger: dict[str, Any] | None = Field(None, description='{"event": "<type>"} when inbound events start runs.')
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    links: DefinitionLinks


class DefinitionListPublic(BaseModel):
    items: list[DefinitionPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class ScheduleNote(StorableBody):
    model_config = _CONFIG

    note: str | None = Field(None, max_length=500, description="Why, shown with the schedule in Temporal.")
