"""A task's last run input as the mirror keeps it, so a failed task can be retried from the mirror alone
once Temporal has dropped the run's history (the namespace's retention).

The record is the TaskInput as the workflow received it (Temporal's JSON form, before the payload codec)
without the payload, which the row already holds. A value the mirror cannot hold as given (a NUL character,
a non-finite number: ``mirror.storable`` would change it) gets no record, so a retry never runs on an altered
input; such a task is retried from the history, or not at all.
"""

import json
from dataclasses import replace
from typing import Any

from temporalio.converter import PayloadConverter, value_to_type

from followthrough.domain.contracts import TaskInput


class RecordMismatch(ValueError):
    """The record does not belong to the row it was read from."""


def record_of(task: TaskInput) -> dict[str, Any] | None:
    """What the mirror keeps of the task's input, or None when the mirror could not keep it faithfully."""
    [payload] = PayloadConverter.default.to_payloads([replace(task, payload={})])
    record = json.loads(payload.data)
    del record["payload"]
    if not (_faithful(record) and _faithful(task.payload)):
        return None
    return record


def input_from(record: dict[str, Any], payload: dict[str, Any], *, task_id: str, tenant_id: str,
               type_name: str) -> TaskInput:
    """The run input back from its record and the row's payload; the row's own identity must match it."""
    task = value_to_type(TaskInput, record | {"payload": payload})
    if (task.task_id, task.tenant_id, task.type) != (task_id, tenant_id, type_name):
        raise RecordMismatch(f"the stored input names task {task.task_id} of tenant {task.tenant_id} "
                             f"({task.type}), not this row's")
    return task


def _faithful(value: Any) -> bool:
    """Whether the value survives the mirror unchanged (see mirror.storable)."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return all(_faithful(k) and _faithful(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_faithful(v) for v in value)
    return True
