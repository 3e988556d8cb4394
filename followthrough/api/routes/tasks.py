"""/tasks: create, list, read and the events of tasks."""

import logging
from collections.abc import Callable
from functools import partial
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError
from sqlalchemy import func, select

from followthrough.api.auth import PrincipalDep, require
from followthrough.api.tenancy import listing_tenant, tenant_for
from followthrough.api.deps import ActorDep, EngineDep, SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import LIMITED, NOT_FOUND, ApiError, detail_of, status_of
from followthrough.api.lookups import task_row_or_404
from followthrough.api.paging import LimitQuery, OffsetQuery, next_offset, page_size
from followthrough.api.schemas import (
    BatchCreate,
    BatchResult,
    SubtaskListPublic,
    TaskEventListPublic,
    TaskListPublic,
    TaskPublic,
    TaskRunPublic,
    TaskStatsPublic,
)
from followthrough.api.views import created_or_replayed, event_public, task_public
from followthrough.domain.principals import Role
from followthrough.domain.lifecycle import TaskStatus
from followthrough.services import limits
from followthrough.services.errors import Invalid, ServiceError
from followthrough.services.errors import invalid as _invalid
from followthrough.services.requests import TaskCreate
from followthrough.services.results import BatchItemResult, TaskCreated
from followthrough.services.task_creation import TaskCreator
from followthrough.services.task_queries import TaskFilter, TaskOrder, list_tasks
from followthrough.db.tables import Approval, Task, TaskEvent, TaskRun

log = logging.getLogger("followthrough.api")

router = APIRouter(prefix="/tasks", tags=["tasks"])



@router.post("", status_code=201, response_model=TaskCreated, dependencies=[require(Role.SUBMITTER)],
             responses={409: {"description": "A task for this subject exists within the window (its id in task_id)"}}
             | LIMITED)
async def create_task(
    body: TaskCreate, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep, actor: ActorDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                  description="Repeats with this key replay the first answer.")] = None,
) -> Any:
    body.tenant_id = tenant_for(principal, body)
    creator = TaskCreator(settings, temporal, engine)
    if idempotency_key is None:
        return await creator.create(body, actor)
    return created_or_replayed(await creator.create_once(body, actor, idempotency_key))


@router.post("/batch", response_model=BatchResult, dependencies=[require(Role.SUBMITTER)], responses=LIMITED)
async def create_tasks(body: BatchCreate, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep,
                       actor: ActorDep, principal: PrincipalDep) -> BatchResult:
    """Create up to the configured number of tasks; each item is answered on its own. Every item counts
    against the rate limit and the cap on tasks in flight: a batch they cannot hold whole is refused (429)."""
    if len(body.items) > settings.batch_max_items:
        raise _invalid(("items",), f"at most {settings.batch_max_items} items per batch")
    creator = TaskCreator(settings, temporal, engine)
    place = partial(tenant_for, principal)
    wanted, listed = creator.batch_charge(body.items, actor, place)
    hold = await limits.admit(settings, engine, wanted)
    try:
        results = [await _create_item(creator, i, item, actor, place) for i, item in enumerate(body.items)]
    finally:
        await creator.release(hold, listed)
    return BatchResult(items=results)


async def _create_item(creator: TaskCreator, index: int, raw: dict[str, Any], actor: str,
                       tenant: Callable[[TaskCreate], str]) -> BatchItemResult:
    """One batch item, already charged for, answered like a single POST /tasks would be; ``tenant`` places it
    in the caller's tenant (or refuses it)."""
    try:
        body = TaskCreate.model_validate(raw)
        body.tenant_id = tenant(body)
        created = await creator.create(body, actor, admitted=True)
    except ValidationError as err:
        return BatchItemResult(index=index, status_code=422, detail=jsonable_encoder(err.errors(include_url=False)))
    except ServiceError as err:
        located = isinstance(err, Invalid) and err.errors is not None
        return BatchItemResult(index=index, status_code=status_of(err), detail=detail_of(err),
                               id=None if located else err.extra.get("task_id"))
    except ApiError as err:
        return BatchItemResult(index=index, status_code=err.status_code, detail=err.detail,
                               id=err.extra.get("task_id"))  # type: ignore[arg-type]
    return BatchItemResult(index=index, status_code=201, id=created.id, workflow_id=created.workflow_id)


@router.get("", response_model=TaskListPublic, dependencies=[require(Role.VIEWER)])
async def list_tasks_route(
    settings: SettingsDep, session: SessionDep, principal: PrincipalDep,
    status: Annotated[list[TaskStatus] | None, Query(description="Repeat to match any of several.")] = None,
    type: str | None = None, owner_id: str | None = None, subject_ref_type: str | None = None,
    subject_ref_id: str | None = None, source: str | None = None, tenant_id: str | None = None,
    due_before: datetime | None = None, due_after: datetime | None = None,
    created_before: datetime | None = None, created_after: datetime | None = None,
    trigger: Annotated[str | None, Query(pattern="^(api|definition|schedule|event)$")] = None,
    definition_id: str | None = None,
    order: TaskOrder = TaskOrder.NEWEST,
    limit: LimitQuery = None, offset: OffsetQuery = 0,
) -> TaskListPublic:
    limit = page_size(settings, limit)
    where = TaskFilter(status=status, type=type, owner_id=owner_id, subject_ref_type=subject_ref_type,
                       subject_ref_id=subject_ref_id, source=source,
                       tenant_id=listing_tenant(principal, tenant_id),
                       due_before=due_before, due_after=due_after, created_before=created_before,
                       created_after=created_after, trigger=trigger, definition_id=definition_id)
    rows, total = await list_tasks(session, where, order, limit, offset)
    return TaskListPublic(items=[task_public(settings, r) for r in rows], total=total, limit=limit, offset=offset,
                          next_offset=next_offset(offset, limit, total))


@router.get("/stats", response_model=TaskStatsPublic, dependencies=[require(Role.VIEWER)])
async def task_stats(session: SessionDep, principal: PrincipalDep, tenant_id: str | None = None,
                     type: str | None = None) -> TaskStatsPublic:
    """How many tasks are in each status, and the approval that has waited longest (the key's tenant)."""
    tenant = listing_tenant(principal, tenant_id)
    counted = select(Task.status, func.count()).group_by(Task.status)
    oldest = (select(Approval.task_id, Approval.requested_at, Task.title, Task.type)
              .join(Task, Task.id == Approval.task_id)
              .where(Approval.status == "pending", Task.status == TaskStatus.AWAITING_APPROVAL.value)
              .order_by(Approval.requested_at, Approval.id).limit(1))
    if tenant is not None:
        counted, oldest = counted.where(Task.tenant_id == tenant), oldest.where(Task.tenant_id == tenant)
    if type is not None:
        counted, oldest = counted.where(Task.type == type), oldest.where(Task.type == type)
    counts = {status.value: 0 for status in TaskStatus} | dict((await session.execute(counted)).all())
    first = (await session.execute(oldest)).first()
    waiting = None
    if first is not None:
        waited = int((datetime.now(timezone.utc) - first.requested_at).total_seconds())
        waiting = {"task_id": first.task_id, "title": first.title, "type": first.type,
                   "requested_at": first.requested_at, "waiting_seconds": max(waited, 0)}
    return TaskStatsPublic(counts=counts, total=sum(counts.values()), oldest_awaiting_approval=waiting)


@router.get("/{task_id}", response_model=TaskPublic, dependencies=[require(Role.VIEWER)],
            responses=NOT_FOUND)
async def get_task(task_id: str, settings: SettingsDep, session: SessionDep) -> TaskPublic:
    row = await task_row_or_404(session, task_id)
    ended = (await session.execute(select(TaskRun).where(TaskRun.task_id == task_id)
                                   .order_by(TaskRun.number))).scalars().all()
    runs = [TaskRunPublic.model_validate(r.model_dump()) for r in ended]
    if not runs or runs[-1].number < row.run_number:  # the run under way is the task row itself
        runs.append(TaskRunPublic(number=row.run_number, status=row.status, error=row.error, attempts=row.attempts,
                                  workflow_run_id=row.workflow_run_id, started_at=row.started_at or row.created_at,
                                  finished_at=row.finished_at))
    return task_public(settings, row).model_copy(update={"runs": runs})


@router.get("/{task_id}/events", response_model=TaskEventListPublic, dependencies=[require(Role.VIEWER)],
            responses=NOT_FOUND)
async def get_task_events(task_id: str, settings: SettingsDep, session: SessionDep, limit: LimitQuery = None,
                          offset: OffsetQuery = 0) -> TaskEventListPublic:
    """The task's events, oldest first."""
    await task_row_or_404(session, task_id)
    limit = page_size(settings, limit, settings.page_size_max)
    total = (await session.execute(select(func.count()).select_from(TaskEvent)
                                   .where(TaskEvent.task_id == task_id))).scalar_one()
    rows = (await session.execute(
        select(TaskEvent).where(TaskEvent.task_id == task_id)
        .order_by(TaskEvent.occurred_at, TaskEvent.seq, TaskEvent.id).limit(limit).offset(offset)
    )).scalars().all()
    return TaskEventListPublic(items=[event_public(r) for r in rows], total=total, limit=limit, offset=offset,
                               next_offset=next_offset(offset, limit, total))


@router.get("/{task_id}/subtasks", response_model=SubtaskListPublic, dependencies=[require(Role.VIEWER)],
            responses=NOT_FOUND)
async def get_subtasks(task_id: str, settings: SettingsDep, session: SessionDep, limit: LimitQuery = None,
                       offset: OffsetQuery = 0) -> SubtaskListPublic:
    """The task's subtasks in their planned order, with the parent's progress."""
    parent = await task_row_or_404(session, task_id)
    limit = page_size(settings, limit, settings.page_size_max)
    total = (await session.execute(select(func.count()).select_from(Task)
                                   .where(Task.parent_id == task_id))).scalar_one()
    rows = (await session.execute(
        select(Task).where(Task.parent_id == task_id).order_by(Task.created_at, Task.subtask_index, Task.id)
        .limit(limit).offset(offset)
    )).scalars().all()
    return SubtaskListPublic(items=[task_public(settings, r) for r in rows], total=total, limit=limit,
                             offset=offset, next_offset=next_offset(offset, limit, total), progress=parent.progress)
