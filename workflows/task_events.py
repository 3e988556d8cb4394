"""Task events: how TaskWorkflow records each transition.

A mixin kept out of the workflow module, so the sandbox need not re-import it
for every run; it only touches the workflow's own state and workflow.* APIs.
"""

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from followthrough.contracts import MirrorEvent, TaskChanges, TaskInput, TaskOutcome
from followthrough.lifecycle import EventType, Stage, TaskStatus
from workflows.mirror_pump import MirrorPump
from workflows.task_rules import attempt_of


class TaskEventLog:
    _status: TaskStatus
    _stage: Stage
    _seq: int
    _task: TaskInput | None
    _pump: MirrorPump | None

    def _emit(self, event_type: EventType, status: TaskStatus | None = None, stage: Stage | None = None, *,
              actor_type: str = "system", actor_id: str | None = None, data: dict[str, Any] | None = None,
              changes: TaskChanges | None = None) -> None:
        assert self._task is not None and self._pump is not None
        old = self._status
        changes = changes or TaskChanges()
        if status is not None:
            self._status = status
            changes.status = status.value
        if stage is not None:
            self._stage = stage
            changes.stage = stage.value
        self._seq += 1
        self._pump.append(MirrorEvent(
            id=f"{workflow.info().run_id}:{self._seq}", task_id=self._task.task_id, seq=self._seq,
            type=event_type.value, occurred_at=workflow.now(), actor_type=actor_type, actor_id=actor_id,
            old_status=old.value if status is not None else None,
            new_status=status.value if status is not None else None,
            data=data or {}, changes=changes,
        ))

    def _finish(self, status: TaskStatus, event_type: EventType, *, actor_type: str = "system",
                actor_id: str | None = None, data: dict[str, Any] | None = None,
                result: dict[str, Any] | None = None, error: str | None = None,
                attempts: int | None = None) -> TaskOutcome:
        self._emit(event_type, status, Stage.DONE, actor_type=actor_type, actor_id=actor_id,
                   data=data, changes=TaskChanges(result=result, error=error, attempts=attempts,
                                                  finished_at=workflow.now()))
        return TaskOutcome(status=status.value, result=result, error=error)

    def _fail(self, step: str, err: ActivityError) -> TaskOutcome:
        cause = err.cause
        if isinstance(cause, CancelledError):
            # The activity stopped because the task was cancelled: that is no failure of the step.
            raise asyncio.CancelledError()
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
        attempts = attempt_of(cause)
        return self._finish(TaskStatus.FAILED, EventType.TASK_EXECUTION_FAILED,
                            data={"step": step, "error_type": kind, "message": message, "attempts": attempts},
                            error=f"{step} failed: {message}", attempts=attempts)
