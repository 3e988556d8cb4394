"""/tasks: create, list, read, events, and the decisions a person can take."""

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import Priority as TemporalPriority
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ActorDep, EngineDep, SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError, decision_failure, not_found, update_refused
from api.schemas import (
    ApproveBody,
    CancelBody,
    DecisionPublic,
    RejectBody,
    TaskCreate,
    TaskCreated,
    TaskEventListPublic,
    TaskListPublic,
    TaskPublic,
)
from api.task_queries import TaskFilter, TaskOrder, list_tasks
from api.views import event_public, task_links, task_public
from followthrough.contracts import ApprovalDecision, CancelRequest, DecisionAck, Rejection, TaskInput, TaskOutcome
from followthrough.lifecycle import TaskStatus
from followthrough.mirror import insert_created
from followthrough.naming import TEMPORAL_PRIORITY, workflow_id_for
from followthrough.tables import Task, TaskEvent
from followthrough.tasktypes import UnknownTaskType, get_type

log = logging.getLogger("followthrough.api")

router = APIRouter(prefix="/tasks", tags=["tasks"])

_UPDATE_TIMEOUT = timedelta(seconds=30)


def _invalid(loc: tuple[Any, ...], message: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *loc), "msg": message, "input": None}])


def _task_input(body: TaskCreate, settings: SettingsDep, actor: str) -> TaskInput:
    try:
        task_type = get_type(body.type)
    except UnknownTaskType as err:
        raise _invalid(("type",), str(err), "unknown_task_type") from err
    try:
        payload = task_type.payload_model.model_validate(body.payload)
    except ValidationError as err:
        raise RequestValidationError([
            {"type": e["type"], "loc": ("body", "payload", *e["loc"]), "msg": e["msg"], "input": e.get("input")}
            for e in err.errors(include_url=False)
        ]) from err
    return TaskInput(
        task_id=str(uuid.uuid4()), type=task_type.name,
        title=body.title or " ".join(filter(None, [task_type.name, body.subject_ref_id])),
        mode=(body.mode or task_type.default_mode).value, payload=payload.model_dump(mode="json"),
        created_at=datetime.now(timezone.utc),
        approval_timeout_seconds=body.approval_timeout_seconds or settings.approval_timeout_seconds,
        priority=body.priority.value, tenant_id=body.tenant_id, owner_type=body.owner_type,
        owner_id=body.owner_id, subject_ref_type=body.subject_ref_type, subject_ref_id=body.subject_ref_id,
        source=body.source, due_at=body.due_at, created_by=actor,
        send_retry=replace(task_type.retry, **(body.retry.model_dump(exclude_none=True) if body.retry else {})),
        send_timeout_seconds=task_type.send_timeout_seconds,
    )


@router.post("", status_code=201, response_model=TaskCreated)
async def create_task(body: TaskCreate, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep,
                      actor: ActorDep) -> TaskCreated:
    task = _task_input(body, settings, actor)
    workflow_id = workflow_id_for(task.task_id, task.type, task.subject_ref_id)
    links = task_links(settings, task.task_id, workflow_id)
    await temporal.start_workflow(
        "TaskWorkflow", task, id=workflow_id, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        static_summary=task.title[:200],
        static_details=f"**{task.type}** task `{task.task_id}` ({task.mode} mode)\n\n[Task in the API]({links.self})",
        priority=TemporalPriority(priority_key=TEMPORAL_PRIORITY[body.priority]),
    )
    # The workflow is the source of truth and writes this row itself if this
    # insert is lost, so a mirror failure here does not fail the request.
    try:
        async with engine.begin() as conn:
            await insert_created(conn, task, workflow_id)
    except (DBAPIError, OSError) as err:  # asyncpg reports a refused connection as OSError
        log.warning("task %s started; its mirror row will be written by the workflow (%s)", task.task_id, err)
    return TaskCreated(id=task.task_id, status=TaskStatus.PENDING.value, workflow_id=workflow_id, links=links)


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
    return task_public(settings, await _get_row(session, task_id))


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


@router.post("/{task_id}/cancel", response_model=DecisionPublic)
async def cancel_task(task_id: str, session: SessionDep, temporal: TemporalDep, actor: ActorDep,
                      body: CancelBody | None = None) -> DecisionPublic:
    body = body or CancelBody()
    ack = await _decide(session, temporal, task_id, "cancel",
                        CancelRequest(actor_id=body.actor_id or actor, reason=body.reason))
    if ack.status != TaskStatus.CANCELLED.value:
        raise ApiError(409, f"task was {ack.status} before the cancellation took effect")
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)
