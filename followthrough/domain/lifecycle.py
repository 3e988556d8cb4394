"""The task lifecycle vocabulary: statuses, stages, modes, priorities, events.

Plain ``str`` enums so they serialise as their value in JSON, in workflow
payloads and in SQL columns alike.
"""

from enum import StrEnum

from followthrough.domain.seed_vocabulary import MODE_ALIASES


class TaskStatus(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.REJECTED, TaskStatus.EXPIRED}
)


class Stage(StrEnum):
    """Where inside the coarse status a task is."""

    QUEUED = "queued"
    WAITING_UNTIL_DUE = "waiting_until_due"
    DRAFTING = "drafting"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_PERSON = "awaiting_person"
    PLANNING = "planning"
    WAITING_ON_SUBTASKS = "waiting_on_subtasks"
    # A cadence waiting before its next step (status scheduled): a wait a reschedule moves and a cancel ends.
    WAITING = "waiting"
    SENDING = "sending"
    # An agent task: asking the model for its next step, or running a tool it asked for.
    THINKING = "thinking"
    USING_TOOL = "using_tool"
    DONE = "done"


# Stages in which a task waits (for its due time, a cadence's next step, a decision, a person) rather than works.
WAITING_STAGES = frozenset({Stage.WAITING_UNTIL_DUE, Stage.WAITING, Stage.AWAITING_APPROVAL, Stage.AWAITING_PERSON})


class Execution(StrEnum):
    """How a task's subtasks run."""

    PARALLEL = "parallel"
    SEQUENTIAL = "sequential"


class FailurePolicy(StrEnum):
    """What a failed subtask does to the rest: fail_fast stops them and fails the parent;
    continue lets them run and the parent completes with every outcome in its result."""

    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


class TaskMode(StrEnum):
    SUGGEST = "suggest"
    REVIEW = "review"
    ASSISTED = "assisted"
    AUTONOMOUS = "autonomous"
    MANUAL = "manual"

    @classmethod
    def parse(cls, value: str) -> "TaskMode":
        """Accept our names and the older systems' names, case-insensitively."""
        key = value.strip().lower()
        mode = _MODE_ALIASES.get(key)
        if mode is None:
            known = sorted({m.value for m in cls} | set(_MODE_ALIASES))
            raise ValueError(f"unknown mode {value!r}; use one of: {', '.join(known)}")
        return mode


    @property
    def looseness(self) -> int:
        """How much it lets the engine do without a person: manual and suggest 0 (a person does the send),
        review 1 (sends after every approval), assisted 2 (approval only when a guardrail flags), autonomous 3."""
        return _LOOSENESS[self]

    def no_looser_than(self, ceiling: "TaskMode") -> "TaskMode":
        """This mode, or ``ceiling`` where this one would let more happen without a person."""
        return self if self.looseness <= ceiling.looseness else ceiling


_LOOSENESS = {TaskMode.MANUAL: 0, TaskMode.SUGGEST: 0, TaskMode.REVIEW: 1, TaskMode.ASSISTED: 2,
              TaskMode.AUTONOMOUS: 3}

_MODE_ALIASES: dict[str, TaskMode] = {m.value: m for m in TaskMode} | {
    seed: TaskMode(ours) for seed, ours in MODE_ALIASES.items()}


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """Higher is more urgent; used to sort lists."""
        return {"low": 0, "normal": 1, "high": 2, "urgent": 3}[self.value]


class ActorType(StrEnum):
    SYSTEM = "system"
    USER = "user"
    AI = "ai"
    API = "api"


class EventType(StrEnum):
    TASK_CREATED = "TASK_CREATED"
    TASK_STATUS_CHANGED = "TASK_STATUS_CHANGED"
    TASK_DRAFTED = "TASK_DRAFTED"
    TASK_GUARDRAIL_FLAGGED = "TASK_GUARDRAIL_FLAGGED"
    TASK_APPROVAL_REQUESTED = "TASK_APPROVAL_REQUESTED"
    TASK_APPROVAL_RECORDED = "TASK_APPROVAL_RECORDED"
    TASK_APPROVAL_REMINDED = "TASK_APPROVAL_REMINDED"
    TASK_APPROVAL_ESCALATED = "TASK_APPROVAL_ESCALATED"
    TASK_APPROVED = "TASK_APPROVED"
    TASK_REJECTED = "TASK_REJECTED"
    TASK_EXPIRED = "TASK_EXPIRED"
    TASK_EXECUTION_STARTED = "TASK_EXECUTION_STARTED"
    TASK_EXECUTION_COMPLETED = "TASK_EXECUTION_COMPLETED"
    TASK_EXECUTION_FAILED = "TASK_EXECUTION_FAILED"
    TASK_CANCELLED = "TASK_CANCELLED"
    TASK_ATTEMPT_FAILED = "TASK_ATTEMPT_FAILED"
    TASK_RETRIED = "TASK_RETRIED"
    TASK_RESCHEDULED = "TASK_RESCHEDULED"
    TASK_PAUSED = "TASK_PAUSED"
    TASK_RESUMED = "TASK_RESUMED"
    TASK_SUBTASKS_PLANNED = "TASK_SUBTASKS_PLANNED"
    TASK_SUBTASK_COMPLETED = "TASK_SUBTASK_COMPLETED"
    TASK_SUBTASK_FAILED = "TASK_SUBTASK_FAILED"
    # A cadence's step: its wait began (until when), it started, it ended (with the step's status).
    TASK_CADENCE_WAITING = "TASK_CADENCE_WAITING"
    TASK_CADENCE_STEP_STARTED = "TASK_CADENCE_STEP_STARTED"
    TASK_CADENCE_STEP_ENDED = "TASK_CADENCE_STEP_ENDED"
    # An agent task's model answered one turn; one of its tool calls ended (ran, refused, rejected or failed).
    TASK_AGENT_TURN = "TASK_AGENT_TURN"
    TASK_AGENT_TOOL_CALLED = "TASK_AGENT_TOOL_CALLED"
    # `followthrough reconcile --repair` rewrote the row from Temporal; data holds the values before and after.
    TASK_RECONCILED = "TASK_RECONCILED"
