"""/definitions: reusable task definitions, running them, and the tasks they created."""

import logging
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from temporalio.client import ScheduleDescription
from temporalio.service import RPCError

from followthrough.api.auth import PrincipalDep, require
from followthrough.api.tenancy import listing_tenant, tenant_for
from followthrough.api.definition_schemas import (
    DefinitionCreate,
    DefinitionListPublic,
    DefinitionPublic,
    DefinitionRun,
    DefinitionUpdate,
    Tag,
)
from followthrough.api.definition_views import definition_public
from followthrough.api.deps import ActorDep, EngineDep, SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, CONFLICT, LIMITED, NOT_FOUND
from followthrough.api.paging import LimitQuery, OffsetQuery, next_offset, page_size
from followthrough.api.schemas import TaskListPublic
from followthrough.api.views import created_or_replayed, task_public
from followthrough.services import schedules
from followthrough.domain.principals import Role
from followthrough.services.definitions import DefinitionRunner, check
from followthrough.services.errors import invalid
from followthrough.services.results import TaskCreated
from followthrough.services.schedule_sync import definition_or_404, forget_schedule, sync_schedule
from followthrough.services.task_queries import TaskFilter, TaskOrder, list_tasks
from followthrough.db.tables import TaskDefinition

log = logging.getLogger("followthrough.api")

router = APIRouter(prefix="/definitions", tags=["definitions"], responses=NOT_FOUND | CONFLICT)

_NOT_NULL = ("name", "type", "payload", "variables", "tags", "defaults", "timezone")


def _tags_key(tags: list[str]) -> str:
    return f"|{'|'.join(tags)}|" if tags else ""


async def _name_taken(session: SessionDep, tenant_id: str, name: str) -> ApiError:
    await session.rollback()
    holder = (await session.execute(select(TaskDefinition.id).where(
        TaskDefinition.tenant_id == tenant_id, TaskDefinition.live_name == name))).scalar()
    return ApiError(409, f"a definition named {name!r} already exists in tenant {tenant_id!r}",
                    definition_id=holder)


@router.post("", dependencies=[require(Role.SUBMITTER)], status_code=201, response_model=DefinitionPublic,
             responses={409: {"description": "The tenant has a definition of this name (its id in definition_id)"}})
async def create_definition(body: DefinitionCreate, settings: SettingsDep, temporal: TemporalDep,
                            engine: EngineDep, session: SessionDep, actor: ActorDep,
                            principal: PrincipalDep) -> DefinitionPublic:
    body.tenant_id = tenant_for(principal, body)
    now = datetime.now(timezone.utc)
    tags = list(dict.fromkeys(body.tags))
    row = TaskDefinition(
        id=str(uuid.uuid4()), tenant_id=body.tenant_id, name=body.name, live_name=body.name,
        description=body.description, type=body.type, mode=body.mode.value if body.mode else None, title=body.title,
        payload=body.payload, variables=body.variables, tags=tags, tags_key=_tags_key(tags),
        defaults=body.defaults.model_dump(mode="json", exclude_unset=True), cron=body.cron, timezone=body.timezone,
        schedule_state="active" if body.cron else "none", created_by=actor, created_at=now, updated_at=now,
        trigger_event=body.trigger.event if body.trigger else None)
    await check(row, settings, temporal, engine)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise await _name_taken(session, body.tenant_id, body.name) from None
    # The row is written but not committed: if Temporal refuses the schedule, there is no definition either.
    await sync_schedule(settings, temporal, row)
    await session.commit()
    return definition_public(settings, row)


@router.get("", dependencies=[require(Role.VIEWER)], response_model=DefinitionListPublic)
async def list_definitions(
    settings: SettingsDep, session: SessionDep, principal: PrincipalDep, tenant_id: str | None = None,
    type: str | None = None,
    tag: Annotated[list[Tag] | None, Query(description="Only definitions with this tag; repeated, with every "
                                                        "one of them (`tags=a,b` is taken too).")] = None,
    scheduled: Annotated[bool | None, Query(description="Only those with (true) or without (false) a cron.")] = None,
    name: str | None = None,
    limit: LimitQuery = None, offset: OffsetQuery = 0,
) -> DefinitionListPublic:
    limit = page_size(settings, limit)
    tenant_id = listing_tenant(principal, tenant_id)
    query = select(TaskDefinition).where(TaskDefinition.deleted_at.is_(None))
    for column, value in (("tenant_id", tenant_id), ("type", type), ("name", name)):
        if value is not None:
            query = query.where(getattr(TaskDefinition, column) == value)
    # A tag holds no | or %, but may hold _, which LIKE would take as a wildcard.
    for one in dict.fromkeys(tag or ()):
        query = query.where(TaskDefinition.tags_key.like(f"%|{one.replace('_', '!_')}|%", escape="!"))
    if scheduled is not None:
        query = query.where(TaskDefinition.cron.is_not(None) if scheduled else TaskDefinition.cron.is_(None))
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.order_by(TaskDefinition.created_at.desc(), TaskDefinition.id.desc())
                                  .limit(limit).offset(offset))).scalars().all()
    return DefinitionListPublic(items=[definition_public(settings, r) for r in rows], total=total, limit=limit,
                                offset=offset, next_offset=next_offset(offset, limit, total))


@router.get("/{definition_id}", dependencies=[require(Role.VIEWER)], response_model=DefinitionPublic)
async def get_definition(definition_id: str, settings: SettingsDep, temporal: TemporalDep,
                         session: SessionDep) -> DefinitionPublic:
    row = await definition_or_404(session, definition_id)
    description: ScheduleDescription | None = None
    if row.cron is not None:
        try:
            description = await schedules.describe(temporal, row.id)
        except RPCError as err:  # the definition still answers, with what the mirror knows
            log.warning("schedule of definition %s not described: %s", row.id, err)
    return definition_public(settings, row, description)


@router.patch("/{definition_id}", dependencies=[require(Role.SUBMITTER)], response_model=DefinitionPublic)
async def update_definition(definition_id: str, body: DefinitionUpdate, settings: SettingsDep,
                            temporal: TemporalDep, engine: EngineDep, session: SessionDep) -> DefinitionPublic:
    row = await definition_or_404(session, definition_id)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"version"})
    for name in _NOT_NULL:
        if name in changes and changes[name] is None:
            raise invalid((name,), f"{name} cannot be null")
    if body.version is not None and body.version != row.version:
        raise ApiError(409, f"the definition is at version {row.version}, not {body.version}", version=row.version)
    old = (row.cron, row.timezone, row.name)
    if "mode" in changes:
        changes["mode"] = body.mode.value if body.mode else None
    if "defaults" in changes:
        changes["defaults"] = body.defaults.model_dump(mode="json", exclude_unset=True)  # type: ignore[union-attr]
    if "trigger" in changes:
        changes["trigger_event"] = body.trigger.event if body.trigger else None
        del changes["trigger"]
    if "tags" in changes:
        changes["tags"] = list(dict.fromkeys(changes["tags"]))
        changes["tags_key"] = _tags_key(changes["tags"])
    for name, value in changes.items():
        setattr(row, name, value)
    row.live_name = row.name
    if row.cron is None:
        row.schedule_state = "none"
    elif old[0] is None:
        row.schedule_state = "active"
    row.version += 1
    row.updated_at = datetime.now(timezone.utc)
    await check(row, settings, temporal, engine)
    tenant_id, name = row.tenant_id, row.name  # a failed flush leaves the row unreadable
    try:
        await session.flush()
    except IntegrityError:
        raise await _name_taken(session, tenant_id, name) from None
    await sync_schedule(settings, temporal, row, old)
    await session.commit()
    return definition_public(settings, row)


@router.delete("/{definition_id}", dependencies=[require(Role.SUBMITTER)], status_code=204)
async def delete_definition(definition_id: str, temporal: TemporalDep, session: SessionDep) -> Response:
    """Soft delete: hidden from lists and lookups, its name free again, its runs still listed by its id.
    Its schedule, if any, is deleted from Temporal."""
    row = await definition_or_404(session, definition_id)
    now = datetime.now(timezone.utc)
    row.deleted_at, row.updated_at, row.live_name = now, now, None
    row.version += 1
    if row.cron is not None:
        await forget_schedule(temporal, row)
    row.schedule_state = "none"
    await session.commit()
    return Response(status_code=204)


@router.post("/{definition_id}/run", dependencies=[require(Role.SUBMITTER)], status_code=201,
             response_model=TaskCreated,
             responses={409: {"description": "A task for this subject exists within the window (its id in task_id)"}}
             | LIMITED)
async def run_definition(
    definition_id: str, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep, session: SessionDep,
    actor: ActorDep, principal: PrincipalDep, body: DefinitionRun | None = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                  description="Repeats with this key replay the first answer.")] = None,
) -> Any:
    """Render the definition with the variables (a missing one is a 422 naming it) and create its task."""
    row = await definition_or_404(session, definition_id)
    await session.close()  # creating the task may take a moment; hold no connection meanwhile
    body = body or DefinitionRun()
    return created_or_replayed(await DefinitionRunner(settings, temporal, engine).run(
        row, body.variables, body.due_at, actor, idempotency_key))


@router.get("/{definition_id}/runs", dependencies=[require(Role.VIEWER)], response_model=TaskListPublic)
async def list_runs(
    definition_id: str, settings: SettingsDep, session: SessionDep,
    trigger: Annotated[str | None, Query(pattern="^(definition|schedule|event)$")] = None,
    limit: LimitQuery = None, offset: OffsetQuery = 0,
) -> TaskListPublic:
    """The tasks the definition created, newest first; a deleted definition's runs too."""
    await definition_or_404(session, definition_id, deleted_too=True)
    limit = page_size(settings, limit)
    rows, total = await list_tasks(session, TaskFilter(definition_id=definition_id, trigger=trigger),
                                   TaskOrder.NEWEST, limit, offset)
    return TaskListPublic(items=[task_public(settings, r) for r in rows], total=total, limit=limit, offset=offset,
                          next_offset=next_offset(offset, limit, total))
