"""Planning: split a task into the subtasks its workflow then runs as child tasks."""

from dataclasses import replace
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from followthrough.activities.errors import llm_failure, permanent, reports_attempt, typed_payload
from followthrough.activities.heartbeat import heartbeating
from followthrough.services import tenant_budget
from followthrough.domain import activity_names, policies
from followthrough.domain.contracts import PlanRequest, SubtaskPlan, SubtaskSpec, TaskInput
from followthrough.tasktypes.subtasks import MAX_DEPTH, MAX_SUBTASKS, SubtaskList, check_depth, resolve
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.llm import LlmError
from followthrough.config.settings import Settings
from followthrough.services.submitter_policy import clamp_mode, loosest_mode
from followthrough.tasktypes import UnknownTaskType, get_type
from followthrough.tasktypes.base import PlanContext, TaskType


class PlanningActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self._settings, self._engine = settings, engine

    @activity.defn(name=activity_names.PLAN)
    @reports_attempt
    async def plan(self, request: PlanRequest) -> SubtaskPlan:
        task = request.task
        if task.depth >= MAX_DEPTH:
            raise permanent(f"subtasks nest at most {MAX_DEPTH} levels deep", policies.INVALID_PLAN)
        task_type, payload = typed_payload(task)
        # The type's own planning function: listed steps (group), expanded ones (campaign), or
        # a model's plan (project, through followthrough/tasktypes/llm_planning.py).
        planner = task_type.plan
        if planner is None:
            raise permanent(f"type {task_type.name!r} does not plan subtasks", policies.INVALID_PLAN)
        try:
            planned = await heartbeating(planner(payload, PlanContext(self._settings, task)))
        except LlmError as err:
            raise llm_failure(err) from err
        plan = self._checked(planned, task.title, task.depth, task.approval_timeout_seconds)
        plan.subtasks = [self._within_parent(spec, task) for spec in plan.subtasks]
        await self._charge(task, task_type, payload, plan)
        return plan

    async def _charge(self, task: TaskInput, task_type: TaskType, payload: object, plan: SubtaskPlan) -> None:
        """Charge the tenant for the planned subtasks its payload did not list (those were charged when the task
        was created): once per run, however often this activity is retried. Over its budget, the planning is
        retried after the wait the budget names, and the task fails once its retries are spent."""
        planned = sum(map(_tasks_started_by, plan.subtasks))
        extra = planned - (tenant_budget.tasks_started_by(task_type, payload) - 1)
        if extra <= 0:
            return
        try:
            # The hold is left to expire: the workflow starts these subtasks right after, and they count then.
            await tenant_budget.admit(self._settings, self._engine, {task.tenant_id: extra},
                                      charge_key=f"plan:{task.task_id}:{task.run_number}")
        except tenant_budget.OverBudget as err:
            if err.limit == "rate_burst":
                raise permanent(f"the plan's {extra} subtasks are over the tenant's budget: {err.message}",
                                policies.INVALID_PLAN) from None
            raise ApplicationError(f"the plan's {extra} subtasks are over the tenant's budget: {err.message}",
                                   type="OverBudget",
                                   next_retry_delay=timedelta(seconds=err.retry_after)) from None

    def _within_parent(self, spec: SubtaskSpec, parent: TaskInput) -> SubtaskSpec:
        """Whoever planned it (a payload, a type's defaults, a model), a subtask runs no looser than its parent
        and its tenant's policy for its type, and without approvers of its own it has its parent's."""
        mode = clamp_mode(clamp_mode(TaskMode(spec.mode), TaskMode(parent.mode)),
                          loosest_mode(self._settings, parent.tenant_id, spec.type))
        approvers = {} if spec.approvers else {"approvers": list(parent.approvers),
                                               "approver_roles": list(parent.approver_roles),
                                               "approvals_required": parent.approvals_required}
        return replace(spec, mode=mode.value, **approvers)

    @staticmethod
    def _checked(planned: SubtaskList, title: str, depth: int, approval_timeout_seconds: int) -> SubtaskPlan:
        """Whatever planned them, the subtasks are re-checked against their types and the limits."""
        origin = getattr(planned, "origin", None)
        try:
            planned = SubtaskList.model_validate(planned.model_dump(mode="json"))
            check_depth(planned.subtasks, depth)
        except (ValidationError, ValueError) as err:
            raise permanent(f"the plan is invalid: {err}", policies.INVALID_PLAN) from err
        if len(planned.subtasks) > MAX_SUBTASKS:
            raise permanent(f"a task splits into at most {MAX_SUBTASKS} subtasks", policies.INVALID_PLAN)
        return SubtaskPlan(
            subtasks=[resolve(s, n, title, approval_timeout_seconds) for n, s in enumerate(planned.subtasks, 1)],
            execution=planned.execution.value, failure_policy=planned.failure_policy.value, origin=origin)


def _tasks_started_by(spec: SubtaskSpec) -> int:
    try:
        sub_type = get_type(spec.type)
        return tenant_budget.tasks_started_by(sub_type, sub_type.payload_model.model_validate(spec.payload))
    except (UnknownTaskType, ValidationError):  # the subtask fails on its own, having started only itself
        return 1
