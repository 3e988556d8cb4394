"""/definitions/{id}/schedule: a definition's Temporal Schedule: read, pause, resume, trigger now, delete."""

from datetime import datetime, timezone

from fastapi import APIRouter, Response
from temporalio.service import RPCError, RPCStatusCode

from followthrough.api.auth import require
from followthrough.api.definition_schemas import ScheduleNote, SchedulePublic
from followthrough.api.definition_views import schedule_public
from followthrough.api.deps import ActorDep, SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, CONFLICT, NOT_FOUND
from followthrough.services import schedules
from followthrough.domain.principals import Role
from followthrough.services.schedule_sync import definition_or_404, forget_schedule, scheduled_or_409
from followthrough.db.tables import TaskDefinition

router = APIRouter(prefix="/definitions/{definition_id}/schedule", tags=["schedules"],
                   responses=NOT_FOUND | CONFLICT)


async def _described(settings: SettingsDep, temporal: TemporalDep, row: TaskDefinition) -> SchedulePublic:
    try:
        description = await schedules.describe(temporal, row.id)
    except RPCError as err:
        raise _missing(err, row) from err
    public = schedule_public(settings, row, description)
    assert public is not None
    return public


def _missing(err: RPCError, row: TaskDefinition) -> Exception:
    if err.status == RPCStatusCode.NOT_FOUND:
        return ApiError(409, f"the schedule of definition {row.id!r} is missing from Temporal; "
                             f"set its cron again (PATCH) to recreate it")
    return err


@router.get("", dependencies=[require(Role.VIEWER)], response_model=SchedulePublic)
async def get_schedule(definition_id: str, settings: SettingsDep, temporal: TemporalDep,
                       session: SessionDep) -> SchedulePublic:
    """The schedule with its next run times and recent runs, as Temporal describes it."""
    row = await definition_or_404(session, definition_id)
    if row.cron is None:
        raise ApiError(404, f"definition {definition_id!r} has no schedule")
    return await _described(settings, temporal, row)


async def _set_paused(definition_id: str, paused: bool, note: ScheduleNote | None, settings: SettingsDep,
                      temporal: TemporalDep, session: SessionDep, actor: str) -> SchedulePublic:
    row = scheduled_or_409(await definition_or_404(session, definition_id))
    text = (note.note if note and note.note else None) or f"{'paused' if paused else 'resumed'} by {actor}"
    handle = schedules.handle(temporal, row.id)
    try:
        await (handle.pause(note=text) if paused else handle.unpause(note=text))
    except RPCError as err:
        raise _missing(err, row) from err
    row.schedule_state = "paused" if paused else "active"
    row.updated_at = datetime.now(timezone.utc)
    await session.commit()
    return await _described(settings, temporal, row)


@router.post("/pause", dependencies=[require(Role.SUBMITTER)], response_model=SchedulePublic)
async def pause_schedule(definition_id: str, settings: SettingsDep, temporal: TemporalDep, session: SessionDep,
                         actor: ActorDep, body: ScheduleNote | None = None) -> SchedulePublic:
    """No more runs until resumed; triggering by hand still works."""
    return await _set_paused(definition_id, True, body, settings, temporal, session, actor)


@router.post("/resume", dependencies=[require(Role.SUBMITTER)], response_model=SchedulePublic)
async def resume_schedule(definition_id: str, settings: SettingsDep, temporal: TemporalDep, session: SessionDep,
                          actor: ActorDep, body: ScheduleNote | None = None) -> SchedulePublic:
    return await _set_paused(definition_id, False, body, settings, temporal, session, actor)


@router.post("/trigger", dependencies=[require(Role.SUBMITTER)], status_code=202, response_model=SchedulePublic)
async def trigger_schedule(definition_id: str, settings: SettingsDep, temporal: TemporalDep,
                           session: SessionDep) -> SchedulePublic:
    """Run the schedule's action now (paused or not): a task marked trigger=schedule follows shortly."""
    row = scheduled_or_409(await definition_or_404(session, definition_id))
    try:
        await schedules.trigger(temporal, row.id)
    except RPCError as err:
        raise _missing(err, row) from err
    return await _described(settings, temporal, row)


@router.delete("", dependencies=[require(Role.SUBMITTER)], status_code=204)
async def delete_schedule(definition_id: str, temporal: TemporalDep, session: SessionDep) -> Response:
    """Delete the schedule from Temporal; the definition stays, without a cron."""
    row = scheduled_or_409(await definition_or_404(session, definition_id))
    await forget_schedule(temporal, row)
    row.cron, row.schedule_state = None, "none"
    row.version += 1
    row.updated_at = datetime.now(timezone.utc)
    await session.commit()
    return Response(status_code=204)
