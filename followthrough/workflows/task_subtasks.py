"""Subtasks: how TaskWorkflow splits a task, runs the parts as child tasks and sums them up.

A mixin kept out of the workflow module (like TaskEventLog): the planner
activity lists the subtasks; each runs as a child TaskWorkflow with its own
mirror row; the parent waits, records each outcome and its progress, and
follows the plan's failure policy. Cancelling the parent cancels the children
and waits until each has recorded it.
"""

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from followthrough.domain import search_attributes

from followthrough.domain import activity_names

from followthrough.domain import policies
from followthrough.domain.contracts import PauseRequest, PlanRequest, SubtaskPlan, TaskChanges, TaskInput, TaskOutcome
from followthrough.domain.lifecycle import EventType, Execution, FailurePolicy, Stage, TaskStatus
from followthrough.domain.waits import StepWait, wait_end
from followthrough.workflows import run_texts
from followthrough.workflows.patches import CADENCE_STEPS
from followthrough.workflows.task_events import TaskEventLog
from followthrough.workflows.task_rules import subtask_input, subtask_workflow_id


@dataclass(eq=False)
class _Child:
    index: int
    task: TaskInput
    workflow_id: str
    outcome: TaskOutcome | None = None
    runner: asyncio.Task | None = None
    recorded: bool = False
    # A cadence's step: what it waits for before it starts.
    wait: StepWait | None = None


# A cadence (task type "cadence") runs its steps in order, each after its wait, with its steps' starts and ends
# as events of its own. No run before this code had a cadence.
CADENCE = "cadence"


class TaskSubtasks(TaskEventLog):
    _execution: str | None
    _children_started: bool
    _paused: PauseRequest | None
    _due_at: datetime | None
    _reschedulable: bool
    _in_wait: str | None
    # While a cadence runs: its step now waiting or running (1-based), and how many it has.
    _cadence_step: int | None = None
    _cadence_steps: int = 0

    async def _hold(self) -> None:  # provided by the workflow: waits while the task is paused
        raise NotImplementedError

    async def _run_subtasks(self, task: TaskInput) -> TaskOutcome:
        self._emit(EventType.TASK_STATUS_CHANGED, TaskStatus.IN_PROGRESS, Stage.PLANNING,
                   changes=TaskChanges(started_at=workflow.now(), workflow_run_id=workflow.info().run_id))
        try:
            plan = await workflow.execute_activity(
                activity_names.PLAN, PlanRequest(task=task), result_type=SubtaskPlan,
                start_to_close_timeout=policies.PLAN_TIMEOUT, heartbeat_timeout=policies.PLAN_HEARTBEAT_TIMEOUT,
                retry_policy=policies.PLAN_RETRY, summary=run_texts.plan_summary(task),
            )
        except ActivityError as err:
            return self._fail("plan", err)
        self._execution = plan.execution
        now = workflow.now()
        parent_workflow = workflow.info().workflow_id
        children = [_Child(n, subtask_input(task, n, spec, now),
                           subtask_workflow_id(parent_workflow, task.run_number, n), wait=spec.wait)
                    for n, spec in enumerate(plan.subtasks, 1)]
        cadence = task.type == CADENCE and self._patched(CADENCE_STEPS)
        if cadence:
            self._cadence_steps = len(children)
        self._emit(EventType.TASK_SUBTASKS_PLANNED, stage=Stage.WAITING_ON_SUBTASKS,
                   data={"execution": plan.execution, "failure_policy": plan.failure_policy,
                         "subtasks": [{"id": c.task.task_id, "index": c.index, "title": c.task.title,
                                       "type": c.task.type, "mode": c.task.mode}
                                      | ({"wait": c.wait.as_data()} if c.wait else {}) for c in children]}
                   | ({"planned_by": plan.origin} if plan.origin else {}),
                   changes=TaskChanges(progress=_progress(children)))
        try:
            stopped_by = await (self._run_steps(children) if cadence else self._wait_for_children(children, plan))
        except asyncio.CancelledError:
            await self._cancel_children(children)
            self._record_ended(children)
            raise
        return self._sum_up(children, plan, stopped_by)

    async def _wait_for_children(self, children: list[_Child], plan: SubtaskPlan) -> _Child | None:
        """Run the children as the plan says; the child whose failure stopped the rest, if any."""
        fail_fast = plan.failure_policy == FailurePolicy.FAIL_FAST.value
        if plan.execution == Execution.SEQUENTIAL.value:
            for child in children:
                await self._hold()
                self._start_child(child)
                await workflow.wait_condition(lambda: child.outcome is not None)
                self._record_child(child, children)
                if fail_fast and _failed(child):
                    return child
            return None
        await self._hold()
        for child in children:
            self._start_child(child)
        self._children_started = True
        while not all(c.recorded for c in children):
            await workflow.wait_condition(lambda: any(c.outcome and not c.recorded for c in children))
            for child in self._record_ended(children):
                if fail_fast and _failed(child):
                    await self._cancel_children(children)
                    self._record_ended(children)
                    return child
        return None

    async def _run_steps(self, children: list[_Child]) -> _Child | None:
        """A cadence: each step after its wait, one after another; the first that does not complete stops it."""
        for child in children:
            self._cadence_step = child.index
            await self._hold()
            if child.wait is not None:
                await self._step_wait(child, children)
            self._emit(EventType.TASK_CADENCE_STEP_STARTED, TaskStatus.IN_PROGRESS, Stage.WAITING_ON_SUBTASKS,
                       data=_step_data(child), changes=TaskChanges(progress=_progress(children, child.index)))
            self._start_child(child)
            await workflow.wait_condition(lambda: child.outcome is not None)
            assert child.outcome is not None
            child.recorded = True
            self._emit(EventType.TASK_CADENCE_STEP_ENDED, data=_step_data(child) | {"status": child.outcome.status}
                       | ({"error": child.outcome.error} if child.outcome.error else {}),
                       changes=TaskChanges(progress=_progress(children, child.index)))
            if _failed(child):
                return child
        self._cadence_step = None
        return None

    async def _step_wait(self, child: _Child, children: list[_Child]) -> None:
        """A durable timer to the end of the step's wait, recomputed when a reschedule moves it; while paused,
        the step does not start even once the wait is over (it starts on resume)."""
        assert child.wait is not None
        end = wait_end(child.wait, workflow.now())
        # A wait an inbound event may end (the task's stop_on, TaskWorkflow.stop), as the due wait is.
        before, self._in_wait = self._in_wait, "cadence"
        self._due_at, self._reschedulable = end, True
        self._emit(EventType.TASK_CADENCE_WAITING, TaskStatus.SCHEDULED, Stage.WAITING,
                   data=_step_data(child) | {"until": end.isoformat(), "wait": child.wait.as_data()},
                   changes=TaskChanges(due_at=end, progress=_progress(children, child.index)))
        while True:
            if self._paused is not None:
                await workflow.wait_condition(lambda: self._paused is None)
                continue
            assert self._due_at is not None
            remaining = self._due_at - workflow.now()
            if remaining <= timedelta(0):
                break
            due = self._due_at
            try:
                await workflow.wait_condition(lambda: self._due_at != due or self._paused is not None,
                                              timeout=remaining, timeout_summary=run_texts.step_wait_summary(
                                                  child.index, self._cadence_steps, child.task, due))
            except asyncio.TimeoutError:
                pass
        self._reschedulable = False
        self._in_wait = before

    def _record_ended(self, children: list[_Child]) -> list[_Child]:
        """Record the children that have ended since last time, in the order they are listed (whichever
        ended first), so that every replay records them in the same order."""
        ended = [c for c in children if c.outcome is not None and not c.recorded]
        for child in ended:
            self._record_child(child, children)
        return ended

    def _start_child(self, child: _Child) -> None:
        child.runner = asyncio.create_task(self._run_child(child))

    async def _run_child(self, child: _Child) -> None:
        try:
            api = workflow.memo_value(run_texts.API_MEMO, None, type_hint=str)
            indexed = {"search_attributes": search_attributes.typed_for(child.task),
                       "memo": {run_texts.API_MEMO: api} if api else None} if self._indexed else {}
            child.outcome = await workflow.execute_child_workflow(
                "TaskWorkflow", child.task, id=child.workflow_id, result_type=TaskOutcome,
                # Whatever ends the parent asks its children to cancel, so they record it.
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                static_summary=child.task.title[:200],
                static_details=run_texts.subtask_details(child.task, workflow.info().workflow_id, api),
                **indexed,
            )
        except ChildWorkflowError as err:
            child.outcome = TaskOutcome(status=TaskStatus.FAILED.value, error=str(err.cause or err))
        except WorkflowAlreadyStartedError:
            child.outcome = TaskOutcome(status=TaskStatus.FAILED.value, error="a run with this id is already open")
        except asyncio.CancelledError:
            # Cancelled before it started: it never ran.
            child.outcome = TaskOutcome(status=TaskStatus.CANCELLED.value, error="cancelled before it started")

    async def _cancel_children(self, children: list[_Child]) -> None:
        """Cancel every child still running and wait until each has recorded its end."""
        running = [c for c in children if c.runner is not None and c.outcome is None]
        for child in running:
            assert child.runner is not None
            child.runner.cancel()
        await workflow.wait_condition(lambda: all(c.outcome is not None for c in running))

    def _record_child(self, child: _Child, children: list[_Child]) -> None:
        assert child.outcome is not None
        data: dict[str, Any] = {"subtask_id": child.task.task_id, "index": child.index, "title": child.task.title,
                                "status": child.outcome.status}
        if child.outcome.error:
            data["error"] = child.outcome.error
        kind = EventType.TASK_SUBTASK_FAILED if _failed(child) else EventType.TASK_SUBTASK_COMPLETED
        child.recorded = True
        self._emit(kind, data=data, changes=TaskChanges(progress=_progress(children)))

    def _sum_up(self, children: list[_Child], plan: SubtaskPlan, stopped_by: _Child | None) -> TaskOutcome:
        progress = _progress(children)
        result = {"execution": plan.execution, "failure_policy": plan.failure_policy, **progress,
                  "not_started": sum(1 for c in children if c.outcome is None),
                  "subtasks": [_summary(c) for c in children]}
        if stopped_by is not None:
            assert stopped_by.outcome is not None
            reason = stopped_by.outcome.error or stopped_by.outcome.status
            message = f"subtask {stopped_by.index} ({stopped_by.task.title}) ended {stopped_by.outcome.status}: {reason}"
            error = f"subtasks failed: {message}"
            return self._finish(TaskStatus.FAILED, EventType.TASK_EXECUTION_FAILED, result=result, error=error,
                                data={"step": "subtasks", "error_type": "SubtaskFailed", "message": message,
                                      "subtask_id": stopped_by.task.task_id})
        return self._finish(TaskStatus.COMPLETED, EventType.TASK_EXECUTION_COMPLETED, result=result,
                            data={"completed": progress["done"], "failed": progress["failed"]})


def _failed(child: _Child) -> bool:
    return child.outcome is not None and child.outcome.status != TaskStatus.COMPLETED.value


def _progress(children: list[_Child], step: int | None = None) -> dict[str, int]:
    ended = [c for c in children if c.recorded]
    failed = sum(1 for c in ended if _failed(c))
    return {"done": len(ended) - failed, "failed": failed, "total": len(children)} | (
        {"step": step} if step is not None else {})


def _step_data(child: _Child) -> dict[str, Any]:
    return {"index": child.index, "subtask_id": child.task.task_id, "title": child.task.title, "type": child.task.type}


def _summary(child: _Child) -> dict[str, Any]:
    outcome = child.outcome
    return {"id": child.task.task_id, "index": child.index, "title": child.task.title, "type": child.task.type,
            "status": outcome.status if outcome else "not_started",
            "result": outcome.result if outcome else None, "error": outcome.error if outcome else None}
