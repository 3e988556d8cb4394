"""What a task type is: its payload model, how it drafts, which guardrails it
declares, and how its send step retries.

Drafting is pure with respect to the outside world (a report may read the
mirror); a type with a ``prompt`` has its subject and body rewritten by an
LLM when one is configured (followthrough/infra/llm.py). What the draft says is what
the send step delivers, through the transport its ``channel`` names
(followthrough/activities/transports/).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.domain.contracts import Draft, DraftOrigin, RetrySpec, SlaPolicy, TaskInput
from followthrough.domain.guardrails import Guardrail
from followthrough.domain.lifecycle import TaskMode
from followthrough.config.settings import Settings

if TYPE_CHECKING:
    from followthrough.tasktypes.subtasks import SubtaskList


@dataclass(frozen=True)
class DraftContext:
    settings: Settings
    task: TaskInput
    engine: AsyncEngine | None = None


@dataclass(frozen=True)
class PlanContext:
    settings: Settings
    task: TaskInput


# A planning function: from a task's (validated) payload to the subtasks it splits into.
Planner = Callable[[Any, PlanContext], Awaitable["SubtaskList"]]


class Blocked(Exception):
    """Raised by a drafter when the work needs a person: the engine cannot do it (missing facts,
    access only a person has). The task then waits for someone to do it and mark it done."""

    def __init__(self, reason: str, origin: DraftOrigin | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.origin = origin


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    payload_model: type[BaseModel]
    draft: Callable[[Any, DraftContext], Awaitable[Draft]]
    # The channel its drafts use, for listings (the draft itself decides at run time).
    channel: str
    guardrails: tuple[Guardrail, ...] = ()
    # Guardrail parameters before tenant overrides; may depend on settings.
    guardrail_defaults: Callable[[Settings], dict[str, Any]] = field(default=lambda _settings: {})
    default_mode: TaskMode = TaskMode.REVIEW
    retry: RetrySpec = field(default_factory=RetrySpec)
    # Reminders, escalation and the deadline's action while a decision is awaited; a task may override it.
    sla: SlaPolicy | None = None
    send_timeout_seconds: int = 30
    # The template (under templates/) asking an LLM for this type's subject and body; None: templates only.
    # It sees `payload`, `task` (title, type, tenant_id) and `draft`, the type's own draft as a baseline.
    prompt: str | None = None
    # A type that plans splits each task into subtasks instead of drafting and sending itself.
    plan: Planner | None = None
    # Its tasks cannot run without a configured LLM, so the API refuses them when none is.
    needs_llm: bool = False
    # The optional part (followthrough/infra/extras.py) its tasks need; without it the API refuses them.
    needs_part: str | None = None
    # The URLs its payload sends to, by dotted field path ("webhook.url"), for the SSRF guard's early check when a task is created
    # (followthrough/infra/outbound.py); the guard checks again, on the resolved addresses, when it connects.
    outbound_urls: Callable[[Any], dict[str, str]] = field(default=lambda _payload: {})
    # The task secrets its payload names, by dotted field path: (secret name, the URL it is sent to, or None
    # where only the run knows, as for a browser page). The API refuses a name the task's tenant has not (or
    # not for that URL's host); the worker checks again against the host it actually sends to.
    secret_refs: Callable[[Any], dict[str, tuple[str, str | None]]] = field(default=lambda _payload: {})
    # The subtasks its payload names already, so the API can refuse one looser than its parent when the task is
    # created: (where the subtask's mode is set, under payload; its type; the mode asked for, None for its type's
    # default; its payload).
    listed_subtasks: Callable[[Any], list[tuple[tuple[str | int, ...], str, TaskMode | None, dict[str, Any]]]] = \
        field(default=lambda _payload: [])
    # How many subtasks its payload makes at its own level (a group's steps, a campaign's messages): charged to
    # the tenant when the task is created (followthrough/services/tenant_budget.py). Planned ones are charged when planned.
    listed_count: Callable[[Any], int] = field(default=lambda _payload: 0)

    # The one mode its tasks run in (a to-do always waits for a person); another asked for is refused.
    only_mode: TaskMode | None = None
    # Fills in what the payload implies for the task as a whole (a to-do's assignee as its approver), once the
    # API has built it from the request, or a parent has listed it as a subtask (a TaskInput or a SubtaskSpec:
    # both have approvers, approver_roles, sla and approval_timeout_seconds).
    shape: Callable[[Any, Any], Any] | None = None

    def payload_schema(self) -> dict:
        return self.payload_model.model_json_schema()

    def guardrail_params(self, settings: Settings, tenant_id: str) -> dict[str, Any]:
        return settings.guardrail_params(tenant_id, self.name, self.guardrail_defaults(settings))
