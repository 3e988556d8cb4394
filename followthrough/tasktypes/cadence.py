"""cadence: steps run one after another as one task, each after its own wait.

"Remind now, wait three days, remind again, then open a call task for a person": each step is a task of any
type with its own mode and approval (a subtask, as in a sequential ``group``), and each may wait before it
starts: for a duration, until a moment, and on into business hours. The waits are durable timers in the
cadence's workflow (followthrough/workflows/task_subtasks.py); the first step that does not complete ends the
cadence ``failed`` and no later step starts.
"""

from pydantic import BaseModel, ConfigDict, Field, model_validator

from followthrough.domain.contracts import Draft
from followthrough.domain.lifecycle import Execution, FailurePolicy, TaskMode
from followthrough.tasktypes.base import DraftContext, PlanContext, TaskType
from followthrough.tasktypes.subtasks import (MAX_SUBTASKS, SubtaskIn, SubtaskList, check_depth, outbound_urls,
                                              secret_refs)


class CadencePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[SubtaskIn] = Field(min_length=1, max_length=MAX_SUBTASKS, description=(
        "In order; each a task (type, payload, and optionally title, mode, approval, subject, owner) with an "
        "optional `wait` before it starts: `for` (ISO 8601 duration or seconds) or `until` (a moment), and/or "
        "`business_hours` ({timezone, days, start, end})."))
    description: str | None = Field(None, max_length=4000)

    @model_validator(mode="after")
    def _not_too_deep(self) -> "CadencePayload":
        check_depth(self.steps)
        return self


async def plan(payload: CadencePayload, _ctx: PlanContext) -> SubtaskList:
    return SubtaskList(subtasks=payload.steps, execution=Execution.SEQUENTIAL, failure_policy=FailurePolicy.FAIL_FAST)


async def draft(_payload: CadencePayload, _ctx: DraftContext) -> Draft:
    raise TypeError("a cadence has no draft of its own: its steps do the work")


TASK_TYPE = TaskType(
    name="cadence",
    description="Steps run in order as one task (`steps`: each a task of its own type, title, mode, payload "
                "and approval, with an optional `wait` before it: `for` a duration such as P3D, `until` a "
                "moment, and/or within `business_hours`); the first step that does not complete stops it.",
    payload_model=CadencePayload,
    channel="none",
    draft=draft,
    plan=plan,
    default_mode=TaskMode.AUTONOMOUS,
    outbound_urls=lambda payload: {k.replace("subtasks.", "steps.", 1): v
                                   for k, v in outbound_urls(payload.steps).items()},
    secret_refs=lambda payload: {k.replace("subtasks.", "steps.", 1): v for k, v in secret_refs(payload.steps).items()},
    listed_subtasks=lambda payload: [(("steps", n, "mode"), s.type, s.mode, s.payload)
                                     for n, s in enumerate(payload.steps)],
    listed_count=lambda payload: len(payload.steps),
)
