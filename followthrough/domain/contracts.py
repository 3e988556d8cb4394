"""Dataclasses that cross the workflow boundary: one in and one out for every
workflow, update, signal and activity.

They hold plain values only (no SQL models, no pydantic) so the workflow
sandbox can import them and the default data converter can round-trip them.
"""

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from followthrough.domain.waits import StepWait


@dataclass
class RetrySpec:
    """How the send step retries: a type's defaults, optionally overridden per task."""

    max_attempts: int = 8
    initial_interval_seconds: float = 2.0
    backoff_coefficient: float = 2.0
    maximum_interval_seconds: float = 300.0


@dataclass
class SlaPolicy:
    """What happens while a decision is awaited: remind, escalate, and at the deadline act."""

    remind_after_seconds: int | None = None
    escalate_after_seconds: int | None = None
    escalate_to: list[str] = field(default_factory=list)
    # expire, reject or approve (approve only where the mode may send without a person)
    on_deadline: str = "expire"


@dataclass
class NotifySpec:
    """A task's own notifications: which lifecycle events (task.completed, ...) go to which email addresses and
    to which signed webhook (its URL and the name of the tenant's task secret that signs it)."""

    on: list[str] = field(default_factory=list)
    email: list[str] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = None


@dataclass
class SubtaskSpec:
    """One subtask as planned: everything its own TaskInput needs beyond what the parent gives it
    (tenant, priority, source, creator) and what the parent's workflow assigns (id, position)."""

    type: str
    title: str
    mode: str
    payload: dict[str, Any]
    approval_timeout_seconds: int
    subject_ref_type: str | None = None
    subject_ref_id: str | None = None
    owner_type: str | None = None
    owner_id: str | None = None
    approvers: list[str] = field(default_factory=list)
    approvals_required: int = 1
    send_retry: RetrySpec | None = None
    send_timeout_seconds: int | None = None
    sla: SlaPolicy | None = None
    # The subtask's own type plans subtasks in turn.
    decompose: bool = False
    # Team roles whose holders may decide (a subtask naming no approvers has its parent's).
    approver_roles: list[str] = field(default_factory=list)
    # A cadence's step: what it waits for before it starts (None: it starts when the step before it ends).
    wait: StepWait | None = None


@dataclass
class TaskOrigin:
    """Where a task came from: ``api``, ``definition`` (run through the API) or ``schedule``."""

    trigger: str = "api"
    definition_id: str | None = None
    definition_version: int | None = None
    # The workflow id of the schedule's firing that created the task (schedule triggers only).
    schedule_run_id: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class StopRequest:
    """An inbound event (POST /events) that a task's ``stop_on`` names: the task ends cancelled if it is still
    waiting (followthrough/services/events.py)."""

    event_id: str
    event_type: str
    received_at: datetime | None = None
    source: str | None = None


@dataclass
class StopResult:
    """What a task did with a StopRequest: ``stopped``, ``not_waiting`` (its stage says what it is doing),
    ``already_ended`` or ``not_subscribed`` (its stop_on does not name the event's type)."""

    outcome: str
    status: str
    stage: str


@dataclass
class TaskInput:
    """Everything the workflow needs to run a task; also the row's snapshot."""

    task_id: str
    type: str
    title: str
    mode: str
    payload: dict[str, Any]
    created_at: datetime
    approval_timeout_seconds: int
    priority: str = "normal"
    tenant_id: str = "default"
    owner_type: str | None = None
    owner_id: str | None = None
    subject_ref_type: str | None = None
    subject_ref_id: str | None = None
    source: str | None = None
    due_at: datetime | None = None
    created_by: str | None = None
    send_retry: RetrySpec | None = None
    send_timeout_seconds: int | None = None
    # 1 for the first run; each retry of a failed task is a new run with the next number.
    run_number: int = 1
    # Who may decide (user ids, and holders of team roles; none of either: anyone)
    # and how many approvals it takes.
    approvers: list[str] = field(default_factory=list)
    approvals_required: int = 1
    sla: SlaPolicy | None = None
    # The task's own notifications, besides the tenant's subscriptions (docs/api.md, "Notifications").
    notify: NotifySpec | None = None
    approver_roles: list[str] = field(default_factory=list)
    # The task splits into subtasks, which its type's planner (the plan_subtasks activity) lists.
    decompose: bool = False
    # For a subtask: its parent, its place among the parent's subtasks (1-based) and how deep it nests.
    parent_id: str | None = None
    subtask_index: int | None = None
    depth: int = 0
    origin: TaskOrigin | None = None
    # Inbound event types that stop the task while it waits (its due time, a decision, a pause).
    stop_on: list[str] = field(default_factory=list)
    # An event received before the task was created (within the lookback) that its stop_on names: the run ends
    # cancelled before its first step.
    stopped_by: StopRequest | None = None
    # The patches the run takes as given, without their markers: the level of the code that started it
    # (followthrough/workflows/patches.py). 0 for runs started before levels existed, or by hand.
    patch_level: int = 0
    # Set only on a run that continues an earlier one of the same task (followthrough/workflows/task.py): what it carries on.
    carried: "CarriedState | None" = None


@dataclass
class TaskOutcome:
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Draft:
    """Exactly what a task will send, shown to the approver before it goes.

    ``channel`` names the transport (email, http, webhook, none). Messages use
    subject, body and to; other channels put their request in ``data``. A
    person may edit subject and body on approval.
    """

    channel: str
    subject: str
    body: str
    to: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanRequest:
    task: TaskInput


@dataclass
class SubtaskPlan:
    """What a planner decided: the subtasks, whether they run one after another or together,
    and whether the first failure stops the rest (fail_fast) or not (continue)."""

    subtasks: list[SubtaskSpec]
    execution: str = "parallel"
    failure_policy: str = "fail_fast"
    # When a model planned them: its name, tokens and latency, for the task's events.
    origin: dict[str, Any] | None = None


@dataclass
class DraftRequest:
    task: TaskInput


@dataclass
class DraftOrigin:
    """Who wrote a draft: its type's templates, or a language model (with what it cost)."""

    drafter: str = "template"  # template | llm
    model: str | None = None  # as the LLM endpoint reported it
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    # The model's own rating of its draft, 0..1; below the threshold the draft is flagged.
    confidence: float | None = None

    def as_event_data(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DraftResult:
    draft: Draft
    # Guardrail findings: each a short reason why a person must approve.
    flags: list[str] = field(default_factory=list)
    # None in histories written before drafts recorded their origin.
    origin: DraftOrigin | None = None
    # Why a person must do the work instead (the seeds' "blocked"); None when the engine can.
    blocked: str | None = None


@dataclass
class SendRequest:
    task_id: str
    task_type: str
    tenant_id: str
    draft: Draft
    # Stable per task and step, so a retried send is recognised as the same one.
    idempotency_key: str
    run_number: int = 1


@dataclass
class SendResult:
    delivery_id: str
    channel: str
    attempt: int
    duplicate: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApprovalDecision:
    actor_id: str = "anonymous"
    actor_type: str = "user"
    # The decider's team roles, checked against the task's approver_roles.
    actor_roles: list[str] = field(default_factory=list)
    comment: str | None = None
    # An approver may edit the draft; None keeps the drafted text.
    subject: str | None = None
    body: str | None = None
    # The approval request this decision is for (a signed link's); when set, refused unless it is the one open.
    approval_id: str | None = None


@dataclass
class Rejection:
    actor_id: str = "anonymous"
    actor_type: str = "user"
    # The decider's team roles, checked against the task's approver_roles.
    actor_roles: list[str] = field(default_factory=list)
    reason: str = ""
    # As for ApprovalDecision: when set, refused unless it names the approval request that is open.
    approval_id: str | None = None


@dataclass
class Completion:
    """A person marks a manual task done."""

    actor_id: str = "anonymous"
    actor_type: str = "user"
    # The decider's team roles, checked against the task's approver_roles.
    actor_roles: list[str] = field(default_factory=list)
    comment: str | None = None
    result: dict[str, Any] | None = None


@dataclass
class Failure:
    """A person reports that the work of a task waiting for them failed."""

    actor_id: str = "anonymous"
    actor_type: str = "user"
    actor_roles: list[str] = field(default_factory=list)
    error: str = "reported failed"
    result: dict[str, Any] | None = None


@dataclass
class CancelRequest:
    actor_id: str = "anonymous"
    actor_type: str = "user"
    reason: str | None = None


@dataclass
class RescheduleRequest:
    due_at: datetime
    actor_id: str = "anonymous"
    actor_type: str = "user"
    reason: str | None = None
    # POST /tasks/{id}/run: due now, recorded as run now; refused once the task no longer waits for its time.
    run_now: bool = False


@dataclass
class PauseRequest:
    """Pause (hold before the next step) or resume."""

    actor_id: str = "anonymous"
    actor_type: str = "user"
    reason: str | None = None


@dataclass
class AgentProgress:
    """Where an agent task's loop stands when its run continues as new (followthrough/workflows/agent_loop.py): the turn, the
    transcript and counts so far, and, while a risky call of the turn waits for a person, the turn's calls and
    the index of the waiting one (None and 0 while it waits, paused, before the turn's model call)."""

    turn: int
    messages: list[dict[str, Any]]
    stats: dict[str, Any]
    started: datetime
    calls: list[dict[str, Any]] | None = None
    index: int = 0


@dataclass
class CarriedState:
    """What a task's run hands to the run it continues as, while the task waits before its draft or for a
    decision on it: Temporal caps a run's history, and every pause, resume, reschedule and signal adds to it
    (followthrough/workflows/task.py). The new run takes the task's input with this as its ``carried`` field, so the Web UI
    shows both."""

    seq: int
    status: str
    stage: str
    # The due time as rescheduled; None once the due wait is over (a task paused before its draft).
    due_at: datetime | None = None
    paused: PauseRequest | None = None
    status_before_pause: str = "pending"
    # How many runs the task has continued through (1 for the first continued run).
    continued: int = 1
    # Set when it waits for a decision on its draft: the draft, what held it, the mode it runs in (a blocked
    # draft's task is manual), the open request (its id stays, so its links still decide it) and its SLA so far.
    draft: Draft | None = None
    flags: list[str] = field(default_factory=list)
    blocked: str | None = None
    mode: str | None = None
    approval_id: str | None = None
    approvals: list[ApprovalDecision] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    approval_requested_at: datetime | None = None
    approval_deadline: datetime | None = None
    sla_steps_taken: int = 0
    # Set when an agent task hands over, paused between turns or with a risky call waiting for a decision.
    agent: AgentProgress | None = None


@dataclass
class DecisionAck:
    """Answer to an update: the task's status once the decision took effect."""

    status: str
    stage: str


@dataclass
class TaskChanges:
    """Columns of the task row that an event changes; None leaves a column as is."""

    status: str | None = None
    stage: str | None = None
    draft: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    approval_deadline: datetime | None = None
    workflow_run_id: str | None = None
    due_at: datetime | None = None
    # For a task split into subtasks: {"done": completed, "failed": ended otherwise, "total": n}.
    progress: dict[str, int] | None = None


@dataclass
class MirrorEvent:
    id: str
    task_id: str
    seq: int
    type: str
    occurred_at: datetime
    actor_type: str = "system"
    actor_id: str | None = None
    old_status: str | None = None
    new_status: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    changes: TaskChanges = field(default_factory=TaskChanges)


@dataclass
class MirrorBatch:
    """Events of one task to append in order.

    The first batch of a run carries the task itself, so the writer can create
    the row if the API's insert was lost; later batches leave it out.
    """

    task_id: str
    workflow_id: str
    events: list[MirrorEvent]
    task: TaskInput | None = None
    run_number: int = 1
    tenant_id: str = "default"


@dataclass
class Notification:
    """A signed webhook owed to a subscriber because of one task event."""

    subscription_id: str
    url: str
    secret: str  # the secret's name; its value is read inside the activity
    event: str  # task.awaiting_approval, task.completed, task.failed
    event_id: str
    task: dict[str, Any]


@dataclass
class MirrorAck:
    written: int
    skipped: int
    notifications: list[Notification] = field(default_factory=list)


@dataclass
class DefinitionRunInput:
    """What a definition's Temporal Schedule starts: render the definition as it is now, create its task."""

    definition_id: str
    tenant_id: str = "default"


@dataclass
class ScheduledRun:
    definition_id: str
    # The id of the schedule's workflow run: the key that makes a retried creation the same task.
    schedule_run_id: str


@dataclass
class DefinitionRunResult:
    # created; duplicate (a task for the subject exists within the idempotency window);
    # skipped (the definition was deleted or lost its schedule since the firing);
    # refused (over its tenant's creation rate or tasks in flight: docs/security.md, "Limits")
    outcome: str
    task_id: str | None = None
    detail: str | None = None


@dataclass
class AgentTurnRequest:
    """One turn of an agent task: the transcript so far and the tools on offer (OpenAI shapes)."""

    task_id: str
    tenant_id: str
    turn: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    model: str | None = None
    temperature: float | None = None


@dataclass
class AgentTurnResult:
    # The assistant message: role, content (text or None) and tool_calls (id, type, function name/arguments).
    message: dict[str, Any]
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None


@dataclass
class AgentBounds:
    """An agent task's limits that its tools carry over: the hosts its HTTP tools may reach (None: no list) and,
    for the subtasks it creates, the ceiling on their mode and the approvers, deadline and priority they take."""

    mode: str
    allowed_hosts: list[str] | None = None
    approvers: list[str] = field(default_factory=list)
    approvals_required: int = 1
    approver_roles: list[str] = field(default_factory=list)
    approval_timeout_seconds: int | None = None
    priority: str = "normal"


@dataclass
class ToolCallRequest:
    task_id: str
    tenant_id: str
    tool: str
    # Checked and normalised by the tool's registry entry (followthrough/domain/agent_tools.py).
    arguments: dict[str, Any]
    # Stable per task, run, turn and call, so a retried tool call is recognised as the same one.
    idempotency_key: str
    run_number: int = 1
    # The task types create_subtask may create (the agent's payload says).
    subtask_types: list[str] = field(default_factory=list)
    # The agent task's own input, for subtasks it creates (tenant, source, approvers).
    created_by: str | None = None
    # What the agent allows, for its tools to keep to; None: a call scheduled before these existed (a subtask
    # it creates then waits for approval whatever it asked for).
    bounds: AgentBounds | None = None


@dataclass
class ToolCallResult:
    # What the model is told (already truncated), and what the task records besides.
    output: str
    detail: dict[str, Any] = field(default_factory=dict)
