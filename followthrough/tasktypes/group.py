"""group: a task that is nothing but the subtasks its payload lists.

Each subtask is a task of its own type, mode and approval; the group waits for
them (all together or one after another) and completes with their outcomes.
"""

from pydantic import ConfigDict, Field, model_validator

from followthrough.domain.contracts import Draft
from followthrough.tasktypes.subtasks import SubtaskList, check_depth, outbound_urls, refuse_waits, secret_refs
from followthrough.domain.lifecycle import TaskMode
from followthrough.tasktypes.base import DraftContext, PlanContext, TaskType


class GroupPayload(SubtaskList):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=4000)

    @model_validator(mode="after")
    def _not_too_deep(self) -> "GroupPayload":
        check_depth(self.subtasks)
        refuse_waits(self.subtasks, "group")
        return self


async def plan(payload: GroupPayload, _ctx: PlanContext) -> SubtaskList:
    return SubtaskList(subtasks=payload.subtasks, execution=payload.execution,
                       failure_policy=payload.failure_policy)


async def draft(_payload: GroupPayload, _ctx: DraftContext) -> Draft:
    raise TypeError("a group has no draft of its own: its subtasks do the work")


TASK_TYPE = TaskType(
    name="group",
    description="Subtasks listed in the payload (`subtasks`: each with its own type, title, mode, payload, "
                "subject and approval), run in `parallel` or `sequential` `execution`, with a `failure_policy` "
                "of `fail_fast` or `continue`; completes with their outcomes.",
    payload_model=GroupPayload,
    channel="none",
    draft=draft,
    plan=plan,
    default_mode=TaskMode.AUTONOMOUS,
    outbound_urls=lambda payload: outbound_urls(payload.subtasks),
    secret_refs=lambda payload: secret_refs(payload.subtasks),
    listed_subtasks=lambda payload: [(("subtasks", n, "mode"), s.type, s.mode, s.payload)
                                     for n, s in enumerate(payload.subtasks)],
    listed_count=lambda payload: len(payload.subtasks),
)
