"""Task events: how TaskWorkflow records each transition.

A mixin kept out of the workflow module, so the sandbox need not re-import it
for every run; it only touches the workflow's own state and workflow.* APIs.
Each transition also keeps the run's search attributes (TaskStatus) and its
current details (what it waits for, shown in the Web UI) up to date.
"""

import asyncio
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from followthrough.domain import search_attributes
from followthrough.domain.contracts import MirrorEvent, TaskChanges, TaskInput, TaskOutcome
from followthrough.domain.lifecycle import EventType, Stage, TaskStatus
from followthrough.workflows import run_texts
from followthrough.workflows.mirror_pump import MirrorPump
from followthrough.workflows.patches import SEARCH_ATTRIBUTES, patched
from followthrough.workflows.task_rules import attempt_of



class TaskEventLog:
    _status: TaskStatus
    _stage: Stage
    _seq: int
    _task: TaskInput | None
    _pump: MirrorPump | None
    # The patch level of the code the run began on (TaskInput.patch_level, followthrough/workflows/patches.py).
    _patch_level: int = 0
    # Whether this run keeps search attributes (decided once, at its start), and the status they show.
    _indexed: bool = False
    _indexed_status: str | None = None
    # For the current details: subtask progress and the open approval's deadline.
    _progress: dict[str, int] | None = None
    _approval_deadline: datetime | None = None

    def _details(self) -> str:  # provided by the workflow: what the open task is doing or waiting for
        raise NotImplementedError

    def _patched(self, patch_id: str) -> bool:
        return patched(self._patch_level, patch_id)

    def _index_start(self) -> None:
        """Whatever the run did not start with (a run started by hand or by an older API), upserted."""
        assert self._task is not None
        self._indexed = self._patched(SEARCH_ATTRIBUTES)
        if not self._indexed:
            return
        current = workflow.info().typed_search_attributes
        wanted = search_attributes.values_for(self._task, self._status.value)
        updates = [key.value_set(value) for key, value in wanted.items() if current.get(key) != value]
        if updates:
            workflow.upsert_search_attributes(updates)
        self._indexed_status = self._status.value

    def _index(self, key: SearchAttributeKey[str], value: str) -> None:
        if self._indexed:
            workflow.upsert_search_attributes([key.value_set(value)])

    def _emit(self, event_type: EventType, status: TaskStatus | None = None, stage: Stage | None = None, *,
              actor_type: str = "system", actor_id: str | None = None, data: dict[str, Any] | None = None,
              changes: TaskChanges | None = None) -> None:
        assert self._task is not None and self._pump is not None
        old = self._status
        changes = changes or TaskChanges()
        if status is not None:
            self._status = status
            changes.status = status.value
            if self._indexed and self._indexed_status != status.value:
                self._index(search_attributes.TASK_STATUS, status.value)
                self._indexed_status = status.value
        if stage is not None:
            self._stage = stage
            changes.stage = stage.value
        if changes.progress is not None:
            self._progress = changes.progress
        if changes.approval_deadline is not None:
            self._approval_deadline = changes.approval_deadline
        workflow.set_current_details(
            run_texts.ended(self._status, actor_type, actor_id, (data or {}).get("step"))
            if self._status.terminal else self._details())
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
