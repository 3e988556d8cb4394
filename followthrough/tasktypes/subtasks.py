"""Splitting a task into subtasks: how a subtask is described, checked and resolved.

A planner (a task type's ``plan`` function today; see followthrough/activities/planning.py)
answers a list of ``SubtaskIn``; each is checked against its own type and
resolved into a ``SubtaskSpec`` with that type's defaults, ready for the
parent's workflow to start as a child task.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from followthrough.domain.approver_ids import ApproverId
from followthrough.domain.contracts import SubtaskSpec
from followthrough.domain.lifecycle import Execution, FailurePolicy, TaskMode
from followthrough.tasktypes import UnknownTaskType, get_type
from followthrough.tasktypes.waits import WaitIn

T = TypeVar("T")

# At most this many subtasks per task, and this many levels of subtasks below a task.
MAX_SUBTASKS = 50
MAX_DEPTH = 3


class SubtaskApproval(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    approvers: list[ApproverId] = Field(default_factory=list, max_length=50)
    required: int = Field(1, ge=1, le=50)

    @model_validator(mode="after")
    def _enough(self) -> "SubtaskApproval":
        if self.approvers and self.required > len(set(self.approvers)):
            raise ValueError(f"required ({self.required}) exceeds the number of approvers ({len(set(self.approvers))})")
        return self


class SubtaskIn(BaseModel):
    """One subtask: a task of its own type, with its own mode and approval."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str = Field(min_length=1, max_length=128)
    title: str | None = Field(None, min_length=1, max_length=500, description="Defaults to the parent's title "
                              "and the subtask's position.")
    mode: TaskMode | None = Field(None, description="Defaults to the type's mode.")
    payload: dict[str, Any] = Field(default_factory=dict)
    subject_ref_type: str | None = Field(None, max_length=64)
    subject_ref_id: str | None = Field(None, max_length=256)
    owner_type: str | None = Field(None, max_length=64)
    owner_id: str | None = Field(None, max_length=128)
    approval: SubtaskApproval | None = None
    approval_timeout_seconds: int | None = Field(None, gt=0, le=365 * 24 * 3600)
    wait: WaitIn | None = Field(None, description="A cadence step's wait before it starts (cadences only).")

    @model_validator(mode="before")
    @classmethod
    def _mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("mode"), str):
            data = data | {"mode": TaskMode.parse(data["mode"])}
        return data

    @model_validator(mode="after")
    def _payload_fits_its_type(self) -> "SubtaskIn":
        """The payload is checked against the subtask's own type when the parent is created."""
        try:
            task_type = get_type(self.type)
        except UnknownTaskType as err:
            raise ValueError(str(err)) from None
        if task_type.only_mode is not None and self.mode not in (None, task_type.only_mode):
            raise ValueError(f"a {task_type.name} subtask runs only in {task_type.only_mode.value} mode")
        try:
            payload = task_type.payload_model.model_validate(self.payload)
        except ValidationError as err:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
                                for e in err.errors(include_url=False))
            raise ValueError(f"payload of a {task_type.name} subtask is invalid: {reasons}") from None
        self.type = task_type.name
        self.payload = payload.model_dump(mode="json")
        return self


class SubtaskList(BaseModel):
    """Subtasks as a planning payload lists them, with how they run."""

    subtasks: list[SubtaskIn] = Field(min_length=1, max_length=MAX_SUBTASKS)
    execution: Execution = Execution.PARALLEL
    failure_policy: FailurePolicy = FailurePolicy.FAIL_FAST


def refuse_waits(subtasks: list[SubtaskIn], kind: str) -> None:
    """Only a cadence's steps wait; elsewhere a ``wait`` is refused rather than ignored."""
    for position, item in enumerate(subtasks):
        if item.wait is not None:
            raise ValueError(f"subtask {position + 1}: a {kind}'s subtasks take no `wait`; "
                             "steps with waits between them make a `cadence`")


def nesting_depth(subtasks: list[SubtaskIn]) -> int:
    """How many levels of subtasks these make, counting those their own (already checked) payloads list."""
    return 1 + max((_listed_depth(s.payload) for s in subtasks), default=0)


def _listed_depth(payload: dict[str, Any]) -> int:
    listed = payload.get("subtasks")
    if not isinstance(listed, list) or not listed:
        return 0
    return 1 + max((_listed_depth(item.get("payload") or {}) for item in listed if isinstance(item, dict)),
                   default=0)


def check_depth(subtasks: list[SubtaskIn], depth: int = 0) -> None:
    if depth + nesting_depth(subtasks) > MAX_DEPTH:
        raise ValueError(f"subtasks nest at most {MAX_DEPTH} levels deep")


def outbound_urls(subtasks: list[SubtaskIn]) -> dict[str, str]:
    """The URLs these subtasks (and those they list in turn) will call, by their place in the parent's payload,
    so that the API refuses a forbidden one when the parent is created, not only when the subtask connects."""
    return _by_place(subtasks, lambda task_type, payload: task_type.outbound_urls(payload))


def secret_refs(subtasks: list[SubtaskIn]) -> dict[str, tuple[str, str | None]]:
    """The task secrets these subtasks (at any depth) name, by their place in the parent's payload."""
    return _by_place(subtasks, lambda task_type, payload: task_type.secret_refs(payload))


def _by_place(subtasks: list[SubtaskIn], found_in: Callable[[Any, Any], dict[str, T]]) -> dict[str, T]:
    """What ``found_in(type, payload)`` finds in each subtask, keyed by its place in the parent's payload."""
    found = {}
    for position, item in enumerate(subtasks):
        task_type = get_type(item.type)
        payload = task_type.payload_model.model_validate(item.payload)
        for name, value in found_in(task_type, payload).items():
            found[f"subtasks.{position}.payload.{name}"] = value
    return found


def resolve(item: SubtaskIn, position: int, parent_title: str, approval_timeout_seconds: int) -> SubtaskSpec:
    """A checked subtask with its type's defaults filled in."""
    task_type = get_type(item.type)
    spec = SubtaskSpec(
        type=task_type.name, title=item.title or f"{parent_title} ({position})"[:500],
        mode=(item.mode or task_type.default_mode).value, payload=item.payload,
        approval_timeout_seconds=item.approval_timeout_seconds or approval_timeout_seconds,
        subject_ref_type=item.subject_ref_type, subject_ref_id=item.subject_ref_id, owner_type=item.owner_type,
        owner_id=item.owner_id, approvers=list(dict.fromkeys(item.approval.approvers)) if item.approval else [],
        approvals_required=item.approval.required if item.approval else 1, send_retry=task_type.retry,
        send_timeout_seconds=task_type.send_timeout_seconds, sla=task_type.sla,
        decompose=task_type.plan is not None,
        wait=item.wait.as_step_wait() if item.wait else None,
    )
    # What the payload implies for the subtask as a whole, as for a task of the type (a to-do's assignee).
    if task_type.shape is not None:
        spec = task_type.shape(task_type.payload_model.model_validate(item.payload), spec)
    return spec

