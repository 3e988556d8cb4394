"""project: a goal that a language model plans into subtasks.

Where ``group`` lists its steps, a project states what it wants done; the
planner asks the configured LLM (followthrough/tasktypes/llm_planning.py) for subtasks of
the allowed types, checks each against its type, and the project then runs
them like any decomposed task: each drafted, approved (as its mode says) and
done on its own. Without an LLM configured a project cannot be created.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from followthrough.domain.contracts import Draft, DraftOrigin
from followthrough.tasktypes.subtasks import SubtaskIn, SubtaskList
from followthrough.domain.lifecycle import Execution, FailurePolicy, TaskMode
from followthrough.tasktypes import REGISTRY, unserved
from followthrough.tasktypes.base import DraftContext, PlanContext, TaskType
from followthrough.tasktypes.llm_planning import plan_subtasks

# The types a plan may use unless the payload narrows them: those that do one thing each.
DEFAULT_ALLOWED = ("email", "http_request", "invoice_follow_up", "reminder", "report", "webhook")


class ProjectPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=4000, description="What the project should achieve.")
    context: str | None = Field(None, max_length=20_000, description="Facts the planner should know.")
    allowed_types: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED), min_length=1, max_length=20,
                                     description="The task types its subtasks may have.")
    execution: Execution = Execution.SEQUENTIAL
    failure_policy: FailurePolicy = FailurePolicy.FAIL_FAST

    @field_validator("allowed_types")
    @classmethod
    def _plannable(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if name not in REGISTRY or REGISTRY[name].plan is not None]
        if bad:
            raise ValueError(f"not task types a plan can use: {', '.join(bad)}")
        if reasons := [reason for name in value if (reason := unserved(REGISTRY[name]))]:
            raise ValueError("; ".join(reasons))
        return list(dict.fromkeys(value))


class PlannedSubtasks(SubtaskList):
    """The subtasks a model planned, with what planning cost (recorded on the task's events)."""

    origin: dict[str, Any] | None = None


async def plan(payload: ProjectPayload, ctx: PlanContext) -> SubtaskList:
    planned = await plan_subtasks(ctx.settings, ctx.task, payload.allowed_types)
    usage = planned.usage
    origin = DraftOrigin(drafter="llm", model=usage.model, prompt_tokens=usage.prompt_tokens,
                         completion_tokens=usage.completion_tokens, latency_ms=usage.latency_ms)
    return PlannedSubtasks(
        subtasks=[SubtaskIn(type=s.type, title=s.title, mode=TaskMode.parse(s.mode), payload=s.payload)
                  for s in planned.subtasks],
        execution=payload.execution, failure_policy=payload.failure_policy, origin=origin.as_event_data())


async def draft(_payload: ProjectPayload, _ctx: DraftContext) -> Draft:
    raise TypeError("a project has no draft of its own: its planned subtasks do the work")


TASK_TYPE = TaskType(
    name="project",
    description="A `goal` (with optional `context`) that the configured LLM plans into subtasks of the "
                "`allowed_types`, run in `sequential` (default) or `parallel` `execution` with a "
                "`failure_policy`; completes with their outcomes. Needs FOLLOWTHROUGH_LLM_BASE_URL.",
    payload_model=ProjectPayload,
    channel="none",
    draft=draft,
    plan=plan,
    default_mode=TaskMode.AUTONOMOUS,
    needs_llm=True,
)
