"""SQLModel tables of the status mirror: tasks, their events, and the outbox.

Temporal holds the truth; these tables are what the API lists and filters.
They never enter workflow code.
"""

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    """Stores UTC and always hands back aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def _when(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    # One index per filter the lists use, each ending in created_at so a page comes in order
    # (measured on 100,000 tasks: docs/benchmarks.md: Scale).
    __table_args__ = (
        Index("ix_tasks_tenant_created", "tenant_id", "created_at"),
        Index("ix_tasks_tenant_status_created", "tenant_id", "status", "created_at"),
        Index("ix_tasks_tenant_type_created", "tenant_id", "type", "created_at"),
        Index("ix_tasks_tenant_owner_created", "tenant_id", "owner_id", "created_at"),
        Index("ix_tasks_created", "created_at", "id"),
        Index("ix_tasks_status_created", "status", "created_at"),
        Index("ix_tasks_subject", "subject_ref_type", "subject_ref_id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=128)
    type: str = Field(max_length=128, index=True)
    title: str = Field(sa_column=Column(Text, nullable=False))
    mode: str = Field(max_length=32)
    priority: str = Field(max_length=16)
    priority_rank: int = Field(default=1)
    status: str = Field(max_length=32, index=True)
    stage: str = Field(max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    owner_type: str | None = Field(default=None, max_length=64)
    owner_id: str | None = Field(default=None, max_length=128, index=True)
    subject_ref_type: str | None = Field(default=None, max_length=64)
    subject_ref_id: str | None = Field(default=None, max_length=256)
    source: str | None = Field(default=None, max_length=128)
    draft: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = Field(default=0)
    run_number: int = Field(default=1)
    workflow_id: str = Field(max_length=255, unique=True)
    workflow_run_id: str | None = Field(default=None, max_length=64)
    approval_timeout_seconds: int
    created_by: str | None = Field(default=None, max_length=128)
    due_at: datetime | None = _when(index=True)
    approval_deadline: datetime | None = _when()
    created_at: datetime = _when(nullable=False)
    updated_at: datetime = _when(nullable=False)
    started_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    # A subtask's parent and its place among the parent's subtasks (1-based).
    parent_id: str | None = Field(default=None, max_length=36, index=True)
    subtask_index: int | None = Field(default=None)
    # A task split into subtasks: {"done": n, "failed": n, "total": n}.
    progress: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))
    # Where the task came from: api (POST /tasks), definition (POST /definitions/{id}/run) or schedule
    # (a definition's schedule fired; schedule_run_id is the Temporal workflow id of that firing).
    trigger: str = Field(default="api", max_length=16, sa_column_kwargs={"server_default": "api"})
    definition_id: str | None = Field(default=None, max_length=36, index=True)
    schedule_run_id: str | None = Field(default=None, max_length=255)
    # The last run's input without its payload (followthrough/domain/run_inputs.py): what a retry starts from once
    # Temporal no longer has the run's history. NULL for rows from before it was kept.
    run_input: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class TaskEvent(SQLModel, table=True):
    __tablename__ = "task_events"
    # recorded_at: when the mirror wrote the event; the live streams read new events in its order.
    __table_args__ = (Index("ix_task_events_task_order", "task_id", "occurred_at", "seq"),
                      Index("ix_task_events_recorded", "recorded_at"))

    # Deterministic per workflow run and step, so a retried write is recognised.
    id: str = Field(primary_key=True, max_length=128)
    task_id: str = Field(foreign_key="tasks.id", max_length=36)
    seq: int
    type: str = Field(max_length=64)
    old_status: str | None = Field(default=None, max_length=32)
    new_status: str | None = Field(default=None, max_length=32)
    actor_type: str = Field(max_length=32)
    actor_id: str | None = Field(default=None, max_length=128)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = _when(nullable=False)
    recorded_at: datetime = _when(nullable=False)


class OutboxMessage(SQLModel, table=True):
    """Messages handed over for delivery; one row per idempotency key."""

    __tablename__ = "outbox"

    id: str = Field(primary_key=True, max_length=36)
    idempotency_key: str = Field(max_length=255, unique=True)
    task_id: str = Field(max_length=36, index=True)
    tenant_id: str = Field(max_length=128)
    channel: str = Field(max_length=32)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    # queued: handed to the outbox (no SMTP configured); sending: SMTP attempted,
    # outcome unknown; sent: the SMTP server accepted it.
    status: str = Field(default="queued", max_length=32)
    created_at: datetime = _when(nullable=False)
    sent_at: datetime | None = _when()


class Delivery(SQLModel, table=True):
    """One outgoing HTTP call or webhook per idempotency key, whatever the retries."""

    __tablename__ = "deliveries"

    id: str = Field(primary_key=True, max_length=36)
    idempotency_key: str = Field(max_length=255, unique=True)
    task_id: str = Field(max_length=36, index=True)
    tenant_id: str = Field(max_length=128)
    channel: str = Field(max_length=32)
    target: str = Field(sa_column=Column(Text, nullable=False))
    # sending: attempted, outcome unknown; delivered: the receiver accepted it.
    status: str = Field(max_length=32)
    attempts: int = Field(default=0)
    response_status: int | None = Field(default=None)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _when(nullable=False)
    delivered_at: datetime | None = _when()


class NotificationOutbox(SQLModel, table=True):
    """A subscriber's notification, written in the transaction that wrote its event and marked once delivered.

    A mirror write retried after its answer was lost inserts no event, but still finds here what is owed. One the
    workflow could not deliver is re-sent by the worker's sweep (followthrough/services/notification_sweep.py)."""

    __tablename__ = "notification_outbox"
    # The sweep's scan: rows neither delivered nor given up, oldest first.
    __table_args__ = (Index("ix_notification_outbox_owed", "delivered_at", "given_up_at", "created_at"),)

    # The delivery key, notify:<event id>:<subscription id>: one row, and one send, per event and subscriber.
    id: str = Field(primary_key=True, max_length=200)
    event_id: str = Field(max_length=128, index=True)
    task_id: str = Field(max_length=36)
    tenant_id: str = Field(max_length=128)
    subscription_id: str = Field(max_length=36)
    event: str = Field(max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    secret: str = Field(max_length=128)
    task: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _when(nullable=False)
    delivered_at: datetime | None = _when()
    # The sweep's re-sends (the workflow's own attempts are counted in the deliveries row): how many it began,
    # the last one's error, when the next may start, until when a sweep holds the row, and when it stopped trying.
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    next_attempt_at: datetime | None = _when()
    claimed_until: datetime | None = _when()
    given_up_at: datetime | None = _when()


class Contact(SQLModel, table=True):
    """Addresses a tenant has sent to, for the first-contact guardrail."""

    __tablename__ = "contacts"

    tenant_id: str = Field(primary_key=True, max_length=128)
    address: str = Field(primary_key=True, max_length=320)
    first_contacted_at: datetime = _when(nullable=False)


class TaskRun(SQLModel, table=True):
    """Each run of a task: the first, and one more per retry of a failed task."""

    __tablename__ = "task_runs"

    task_id: str = Field(primary_key=True, foreign_key="tasks.id", max_length=36)
    number: int = Field(primary_key=True)
    workflow_run_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=32)
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = Field(default=0)
    started_at: datetime = _when(nullable=False)
    finished_at: datetime | None = _when()


class Subscription(SQLModel, table=True):
    """A tenant's webhook for task notifications."""

    __tablename__ = "subscriptions"

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=128, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=128, description="Name of the secret that signs deliveries.")
    description: str | None = Field(default=None, max_length=500)
    active: bool = Field(default=True)
    created_at: datetime = _when(nullable=False)


class ApiKey(SQLModel, table=True):
    """An API key: its tenant, the user it acts as, its roles. Only the secret's hash is kept."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(max_length=128, index=True)
    actor_id: str = Field(max_length=128)
    name: str = Field(max_length=200)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret_hash: str = Field(max_length=64)
    created_at: datetime = _when(nullable=False)
    revoked_at: datetime | None = _when()


class InboxSession(SQLModel, table=True):
    """A person signed in to the /ui inbox: the key they signed in with, until when. Only a SHA-256 of the
    session id is kept (the browser holds the id), so the table hands nobody a session."""

    __tablename__ = "inbox_sessions"

    id: str = Field(primary_key=True, max_length=64)
    key_id: str = Field(max_length=32, index=True)
    created_at: datetime = _when(nullable=False)
    expires_at: datetime = _when(nullable=False, index=True)


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a request carrying an Idempotency-Key, replayed for repeats."""

    __tablename__ = "idempotency_keys"

    tenant_id: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int | None = Field(default=None)
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = _when(nullable=False)


class TaskDedupe(SQLModel, table=True):
    """Claims a (tenant, type, subject, source) for the dedupe window; one row per key."""

    __tablename__ = "task_dedupe"

    key: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(max_length=36)
    created_at: datetime = _when(nullable=False)


class Approval(SQLModel, table=True):
    """One request for a decision on a task: who may decide, how many must approve, by when."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_status_requested", "status", "requested_at"),
                      Index("ix_approvals_tenant_status_requested", "tenant_id", "status", "requested_at"))

    id: str = Field(primary_key=True, max_length=128)  # the id of its TASK_APPROVAL_REQUESTED event
    task_id: str = Field(foreign_key="tasks.id", max_length=36, index=True)
    tenant_id: str = Field(max_length=128)
    run_number: int = Field(default=1)
    # pending, approved, rejected, expired, cancelled, completed (a manual task marked done), failed (reported so)
    status: str = Field(max_length=32)
    required: int = Field(default=1)
    approvers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    approver_roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # "|alice|role:finance|" (empty: anyone may decide), so a queue query is a portable LIKE.
    approvers_key: str = Field(default="", sa_column=Column(Text, nullable=False))
    reason: str | None = Field(default=None, max_length=200)
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    requested_at: datetime = _when(nullable=False)
    deadline: datetime | None = _when()
    decided_at: datetime | None = _when()


class ApprovalDecisionRecord(SQLModel, table=True):
    """Every decision on an approval: who, when, what, and the draft they edited."""

    __tablename__ = "approval_decisions"

    id: str = Field(primary_key=True, max_length=128)  # the id of the event that carried it
    approval_id: str = Field(foreign_key="approvals.id", max_length=128, index=True)
    actor_id: str | None = Field(default=None, max_length=128)
    actor_type: str = Field(max_length=32)
    decision: str = Field(max_length=32)  # approve, reject, complete
    comment: str | None = Field(default=None, sa_column=Column(Text))
    edited: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    diff: str | None = Field(default=None, sa_column=Column(Text))
    decided_at: datetime = _when(nullable=False)


class ApprovalLinkUse(SQLModel, table=True):
    """A pair of signed approval links that has been used: the nonce (shared by a pair's approve and reject
    links) as key spends both; the unique (approval_id, approver) spends every pair minted for that approver
    on that approval request. Rows from before links named their request have no approval_id."""

    __tablename__ = "approval_link_uses"
    __table_args__ = (Index("ux_approval_link_uses_request_approver", "approval_id", "approver", unique=True),)

    nonce: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(max_length=36, index=True)
    approval_id: str | None = Field(default=None, max_length=128)
    approver: str = Field(max_length=128)
    decision: str = Field(max_length=16)  # approve, reject
    used_at: datetime = _when(nullable=False)


class TaskDefinition(SQLModel, table=True):
    """A reusable task: its type, mode, title and payload templates with ``{{variables}}``, defaults, and
    optionally a cron schedule (a Temporal Schedule whose id is ``definition-<id>``)."""

    __tablename__ = "task_definitions"
    # live_name is the name while the definition exists and NULL once deleted, so a deleted
    # definition frees its name (NULLs never collide in a unique constraint, on SQLite or PostgreSQL).
    __table_args__ = (UniqueConstraint("tenant_id", "live_name", name="uq_task_definitions_tenant_live_name"),)

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=128, index=True)
    name: str = Field(max_length=200)
    live_name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, sa_column=Column(Text))
    type: str = Field(max_length=128)
    mode: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, sa_column=Column(Text))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    variables: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    defaults: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # "|billing|weekly|" (empty: no tags), so a tag filter is a portable LIKE.
    tags_key: str = Field(default="", sa_column=Column(Text, nullable=False))
    cron: str | None = Field(default=None, max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    # An inbound event type (POST /events) that starts a run of the definition per event; NULL: none.
    trigger_event: str | None = Field(default=None, max_length=128)
    # none (no cron), active or paused, as last set through the API; Temporal holds the truth.
    schedule_state: str = Field(default="none", max_length=16)
    version: int = Field(default=1)
    created_by: str | None = Field(default=None, max_length=128)
    created_at: datetime = _when(nullable=False)
    updated_at: datetime = _when(nullable=False)
    deleted_at: datetime | None = _when()


class RateBucket(SQLModel, table=True):
    """A tenant's token bucket for task creation: tokens left when last refilled (epoch seconds)."""

    __tablename__ = "rate_buckets"

    key: str = Field(primary_key=True, max_length=160)
    tokens: float
    refilled_at: float


class TaskArtifact(SQLModel, table=True):
    """What a task produced besides its result: a browser task's screenshots (bytes) and extracted values (JSON).

    Keyed by (task, step, name): a retried attempt overwrites its artifacts instead of adding copies."""

    __tablename__ = "task_artifacts"
    __table_args__ = (UniqueConstraint("task_id", "step_index", "name", name="uq_task_artifacts_step_name"),)

    # Derived from (task, step, name), so every attempt writes the same id.
    id: str = Field(primary_key=True, max_length=36)
    task_id: str = Field(max_length=36, index=True)
    tenant_id: str = Field(max_length=128)
    step_index: int
    name: str = Field(max_length=64)
    # screenshot (content holds the image) or data (data holds the JSON value).
    kind: str = Field(max_length=16)
    content_type: str = Field(max_length=100)
    size: int
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    data: Any = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = _when(nullable=False)


class InboundEvent(SQLModel, table=True):
    """An event from outside (POST /events, or a signed webhook): kept once per tenant and id, with the answer
    its first post got, so a repeat answers the same and changes nothing; and so a task created later whose
    stop_on names it is created stopped, within the lookback (FOLLOWTHROUGH_EVENT_LOOKBACK_SECONDS)."""

    __tablename__ = "inbound_events"
    __table_args__ = (Index("ix_inbound_events_subject", "tenant_id", "subject_ref_type", "subject_ref_id",
                            "type", "received_at"),)

    tenant_id: str = Field(primary_key=True, max_length=128)
    id: str = Field(primary_key=True, max_length=200)
    type: str = Field(max_length=128)
    subject_ref_type: str | None = Field(default=None, max_length=64)
    subject_ref_id: str | None = Field(default=None, max_length=256)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # api (POST /events, with the key's user in received_by) or webhook:<source>.
    source: str = Field(max_length=160)
    received_by: str | None = Field(default=None, max_length=128)
    received_at: datetime = _when(nullable=False)
    # The first post's answer once it was processed; NULL while (or if) it is being processed.
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
