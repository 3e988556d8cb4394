"""/tasks: create, list, read, events, and the decisions a person can take."""

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ActorDep, EngineDep, SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError, decision_failure, not_found, update_refused
from api.schemas import (
    ApproveBody,
    BatchCreate,
    BatchResult,
    CancelBody,
    CompleteBody,
    DecisionPublic,
    RejectBody,
    StatusPatch,
    TaskCreate,
    TaskCreated,
    TaskEventListPublic,
    TaskListPublic,
    TaskPublic,
    TaskRunPublic,
)
from api.task_creation import TaskCreator, invalid as _invalid
from api.task_queries import TaskFilter, TaskOrder, list_tasks
from api.views import event_public, task_public
from followthrough.contracts import ApprovalDecision, CancelRequest, Completion, DecisionAck, Rejection, TaskOutcome
from followthrough.lifecycle import TaskStatus
from followthrough.tables import Task, TaskEvent, TaskRun

log = logging.getLogger("followthrough.api")

router = APIRouter(prefix="/tasks", tags=["tasks"])

_UPDATE_TIMEOUT = timedelta(seconds=30)


@router.post("", status_code=201, response_model=TaskCreated,
             responses={409: {"description": "A task for this subject exists within the window (its id in task_id)"}})
async def create_task(
    body: TaskCreate, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep, actor: ActorDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                  description="Repeats with this key replay the first answer.")] = None,
) -> Any:
    creator = TaskCreator(settings, temporal, engine)
    if idempotency_key is None:
        return await creator.create(body, actor)
    return await creator.create_once(body, actor, idempotency_key)


@router.post("/batch", response_model=BatchResult)
async def create_tasks(body: BatchCreate, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep,
                       actor: ActorDep) -> BatchResult:
    """Create up to the configured number of tasks; each item is answered on its own."""
    if len(body.items) > settings.batch_max_items:
        raise _invalid(("items",), f"at most {settings.batch_max_items} items per batch")
    creator = TaskCreator(settings, temporal, engine)
    return BatchResult(items=[await creator.create_item(i, item, actor) for i, item in enumerate(body.items)])


@router.get("", response_model=TaskListPublic)
async def list_tasks_route(
    settings: SettingsDep, session: SessionDep,
    status: Annotated[list[TaskStatus] | None, Query(description="Repeat to match any of several.")] = None,
    type: str | None = None, owner_id: str | None = None, subject_ref_type: str | None = None,
    subject_ref_id: str | None = None, source: str | None = None, tenant_id: str | None = None,
    due_before: datetime | None = None, due_after: datetime | None = None,
    created_before: datetime | None = None, created_after: datetime | None = None,
    order: TaskOrder = TaskOrder.NEWEST,
    limit: Annotated[int | None, Query(ge=1, description="Capped at the configured maximum.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TaskListPublic:
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    where = TaskFilter(status=status, type=type, owner_id=owner_id, subject_ref_type=subject_ref_type,
                       subject_ref_id=subject_ref_id, source=source, tenant_id=tenant_id,
                       due_before=due_before, due_after=due_after, created_before=created_before,
                       created_after=created_after)
    rows, total = await list_tasks(session, where, order, limit, offset)
    return TaskListPublic(items=[task_public(settings, r) for r in rows], total=total, limit=limit, offset=offset,
                          next_offset=offset + limit if offset + limit < total else None)


async def _get_row(session: SessionDep, task_id: str) -> Task:
    row = await session.get(Task, task_id) if len(task_id) <= 36 else None
    if row is None:
        raise not_found("task", task_id)
    return row


@router.get("/{task_id}", response_model=TaskPublic)
async def get_task(task_id: str, settings: SettingsDep, session: SessionDep) -> TaskPublic:
    row = await _get_row(session, task_id)
    runs = (await session.execute(select(TaskRun).where(TaskRun.task_id == task_id)
                                  .order_by(TaskRun.number))).scalars().all()
    return task_public(settings, row).model_copy(
        update={"runs": [TaskRunPublic.model_validate(r.model_dump()) for r in runs]})


@router.get("/{task_id}/events", response_model=TaskEventListPublic)
async def get_task_events(task_id: str, session: SessionDep) -> TaskEventListPublic:
    await _get_row(session, task_id)
    rows = (await session.execute(
        select(TaskEvent).where(TaskEvent.task_id == task_id)
        .order_by(TaskEvent.occurred_at, TaskEvent.seq, TaskEvent.id)
    )).scalars().all()
    return TaskEventListPublic(items=[event_public(r) for r in rows], total=len(rows))


async def _decide(session: SessionDep, temporal: TemporalDep, task_id: str, update: str, arg: Any) -> DecisionAck:
    row = await _get_row(session, task_id)
    handle = temporal.get_workflow_handle(row.workflow_id)
    try:
        return await handle.execute_update(update, arg, result_type=DecisionAck, rpc_timeout=_UPDATE_TIMEOUT)
    except WorkflowUpdateFailedError as err:
        raise update_refused(err) from err
    except RPCError as err:
        status = row.status
        if err.status == RPCStatusCode.NOT_FOUND:
            try:  # the mirror may lag a workflow that just closed: ask Temporal how it ended
                status = (await handle.result(result_type=TaskOutcome, rpc_timeout=timedelta(seconds=5))).status
            except Exception:  # noqa: BLE001 - best effort; the mirror's status stands
                pass
        raise decision_failure(err, status) from err


@router.post("/{task_id}/approve", response_model=DecisionPublic)
async def approve_task(task_id: str, body: ApproveBody, session: SessionDep, temporal: TemporalDep,
                       actor: ActorDep) -> DecisionPublic:
    decision = ApprovalDecision(actor_id=body.actor_id or actor, comment=body.comment, subject=body.subject,
                                body=body.body)
    ack = await _decide(session, temporal, task_id, "approve", decision)
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/reject", response_model=DecisionPublic)
async def reject_task(task_id: str, body: RejectBody, session: SessionDep, temporal: TemporalDep,
                      actor: ActorDep) -> DecisionPublic:
    ack = await _decide(session, temporal, task_id, "reject",
                        Rejection(actor_id=body.actor_id or actor, reason=body.reason))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/complete", response_model=DecisionPublic)
async def complete_task(task_id: str, session: SessionDep, temporal: TemporalDep, actor: ActorDep,
                        body: CompleteBody | None = None) -> DecisionPublic:
    """Mark a manual task done, with an optional result."""
    body = body or CompleteBody()
    ack = await _decide(session, temporal, task_id, "complete",
                        Completion(actor_id=body.actor_id or actor, comment=body.comment, result=body.result))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.patch("/{task_id}", response_model=DecisionPublic)
async def patch_task_status(task_id: str, body: StatusPatch, session: SessionDep, temporal: TemporalDep,
                            actor: ActorDep) -> DecisionPublic:
    """The older systems' ``{"newStatus": ...}``: CANCELLED cancels, COMPLETED completes a manual task."""
    row = await _get_row(session, task_id)
    if TaskStatus(row.status).terminal:
        raise ApiError(409, f"cannot update a task in terminal state {row.status}")
    wanted = body.new_status.strip().lower()
    who = body.actor_id or actor
    if wanted == TaskStatus.CANCELLED.value:
        return await cancel_task(task_id, session, temporal, actor, CancelBody(actor_id=who, reason=body.reason))
    if wanted == TaskStatus.COMPLETED.value:
        return await complete_task(task_id, session, temporal, actor,
                                   CompleteBody(actor_id=who, comment=body.comment, result=body.result))
    raise ApiError(409, f"the engine moves a task to {wanted!r} itself; by hand a task can only be "
                        f"cancelled, or completed when it is a manual task waiting for a person")


@router.post("/{task_id}/retry", response_model=TaskCreated, status_code=202)
async def retry_task(task_id: str, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
                     engine: EngineDep, actor: ActorDep) -> TaskCreated:
    """Start a new run of a failed task; the failed run stays on record."""
    row = await _get_row(session, task_id)
    if row.status != TaskStatus.FAILED.value:
        raise ApiError(409, f"only a failed task can be retried; this one is {row.status}")
    return await TaskCreator(settings, temporal, engine).rerun(row, actor)


@router.post("/{task_id}/cancel", response_model=DecisionPublic)
async def cancel_task(task_id: str, session: SessionDep, temporal: TemporalDep, actor: ActorDep,
                      body: CancelBody | None = None) -> DecisionPublic:
    body = body or CancelBody()
    ack = await _decide(session, temporal, task_id, "cancel",
                        CancelRequest(actor_id=body.actor_id or actor, reason=body.reason))
    if ack.status != TaskStatus.CANCELLED.value:
        raise ApiError(409, f"task was {ack.status} before the cancellation took effect")
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)
