"""Server-sent events: ``/tasks/{id}/stream`` (one task, until it ends) and ``/events/stream`` (the
key's tenant, narrowed by filters). See followthrough/api/streams.py for how they read the mirror."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from followthrough.api import streams
from followthrough.api.auth import PrincipalDep, require
from followthrough.api.deps import SettingsDep
from followthrough.api.errors import NOT_FOUND, not_found
from followthrough.api.tenancy import listing_tenant
from followthrough.domain.lifecycle import TaskStatus
from followthrough.db import api_keys
from followthrough.domain.principals import Principal, Role
from followthrough.config.settings import Settings

router = APIRouter(tags=["streams"], dependencies=[require(Role.VIEWER)])

_STREAM = {200: {"description": "Server-sent events: `task_event` messages (JSON data), each with an `id:` "
                                "cursor for Last-Event-ID; `: keep-alive` comments while quiet.",
                 "content": {streams.MEDIA_TYPE: {"schema": {"type": "string"}}}},
           422: {"description": "A Last-Event-ID this API did not send, or an invalid filter"},
           429: {"description": "The key or its tenant holds its most streams open; retry after Retry-After"}}
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=200,
                                           description="Resume after this cursor (browsers send it on reconnect)")]


def _reader(request: Request, settings: Settings, scope: streams.Scope) -> streams.EventReader:
    return streams.EventReader(request.app.state.engine, scope, timedelta(seconds=settings.stream_overlap_seconds))


async def _resume(reader: streams.EventReader, settings: Settings, last_event_id: str) -> None:
    reader.resume(last_event_id)
    if await reader.beyond(settings.stream_resume_max_events):
        reader.restart()


def _response(request: Request, reader: streams.EventReader, settings: Settings,
              principal: Principal) -> StreamingResponse:
    key_id, engine = principal.key_id, request.app.state.engine
    key_live = (lambda: api_keys.is_live(engine, key_id)) if key_id else None
    give_back = request.app.state.streams.take(principal.tenant_id, key_id)  # no await from here to the response
    return streams.EventStream(streams.events(request, reader, settings, key_live), give_back)


@router.get("/tasks/{task_id}/stream", response_class=StreamingResponse, responses=_STREAM | NOT_FOUND)
async def task_stream(task_id: str, request: Request, settings: SettingsDep, principal: PrincipalDep,
                      last_event_id: LastEventId = None) -> StreamingResponse:
    """The task's events as they are mirrored: first all of them so far (or those after `Last-Event-ID`),
    then each new one; after the task reaches a terminal status, an `end` message and the stream closes."""
    reader = _reader(request, settings, streams.Scope(task_id=task_id))
    if await reader.task_status() is None:
        raise not_found("task", task_id)
    if last_event_id:
        await _resume(reader, settings, last_event_id)
    return _response(request, reader, settings, principal)


@router.get("/events/stream", response_class=StreamingResponse, responses=_STREAM)
async def event_stream(
    request: Request, settings: SettingsDep, principal: PrincipalDep, last_event_id: LastEventId = None,
    tenant_id: str | None = None, type: Annotated[str | None, Query(description="Only tasks of this type.")] = None,
    status: Annotated[list[TaskStatus] | None, Query(
        description="Only events into or out of these statuses (repeatable).")] = None,
    event_type: Annotated[list[str] | None, Query(max_length=64,
                                                  description="Only these event types (repeatable).")] = None,
) -> StreamingResponse:
    """Every new event of the key's tenant's tasks as it is mirrored (from now on, or after `Last-Event-ID`)."""
    scope = streams.Scope(tenant_id=listing_tenant(principal, tenant_id), task_type=type,
                          statuses=[s.value for s in status or []], event_types=event_type or [])
    reader = _reader(request, settings, scope)
    if last_event_id:
        await _resume(reader, settings, last_event_id)
    else:
        await reader.start_at_now()
    return _response(request, reader, settings, principal)
