"""/events: inbound events (something that happened outside, for a subject), posted with an API key or by a
signed webhook; see followthrough/services/events.py."""

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from fastapi.exceptions import RequestValidationError

from followthrough.api.auth import PrincipalDep, require
from followthrough.api.deps import ActorDep, EngineDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError
from followthrough.api.tenancy import tenant_for
from followthrough.domain.principals import Role
from followthrough.infra import signing
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.services.events import EventReceiver, Received
from followthrough.services.requests import EventIn

router = APIRouter(prefix="/events", tags=["events"])

_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "A repeat of an event already received (the same id): the first answer, changing nothing"},
    201: {"description": "The event, received: the tasks it matched (each with its outcome) and the runs it started"},
    409: {"description": "The id is already that of another event of this tenant (another type or subject)"},
}


def _answer(received: Received) -> JSONResponse:
    return JSONResponse(received.answer, status_code=201 if received.first else 200)


@router.post("", dependencies=[require(Role.SUBMITTER)], status_code=201, responses=_ANSWERS)
async def post_event(body: EventIn, settings: SettingsDep, temporal: TemporalDep, engine: EngineDep,
                     actor: ActorDep, principal: PrincipalDep) -> JSONResponse:
    """Receive an event: tasks of its subject whose stop_on names its type stop if they are still waiting, and
    definitions triggered by its type start a run. Deduplicated by id per tenant."""
    body.tenant_id = tenant_for(principal, body)
    return _answer(await EventReceiver(settings, temporal, engine).receive(body, "api", actor))


@router.post("/webhooks/{source}", status_code=201, responses=_ANSWERS | {
    401: {"description": "The signature is missing, wrong or too old"}, 404: {"description": "No such source"}})
async def post_webhook_event(source: str, request: Request, settings: SettingsDep, temporal: TemporalDep,
                             engine: EngineDep) -> JSONResponse:
    """An event from a configured source (FOLLOWTHROUGH_EVENT_SOURCES), signed as followthrough signs its own
    webhooks: ``X-Followthrough-Signature: t=<unix seconds>,v1=<HMAC-SHA256 of "<t>.<body>">`` with the source's
    secret. No API key: the signature is the credential, and the source names the tenant."""
    configured = settings.event_sources.get(source)
    if configured is None:
        raise ApiError(404, f"event source {source!r} not found")
    try:
        secret = SecretStore(settings.secrets_file).get(configured.secret)
    except SecretNotFound:
        raise ApiError(503, f"event source {source!r} has no secret configured; an operator must set it",
                       headers={"Retry-After": "30"}) from None
    raw = await request.body()
    if not signing.verify(secret, request.headers.get(signing.HEADER), raw,
                          tolerance_seconds=settings.event_webhook_tolerance_seconds):
        raise ApiError(401, f"missing, wrong or expired signature: sign the body as {signing.HEADER}: "
                            f"t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>, within "
                            f"{settings.event_webhook_tolerance_seconds} s")
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "the body is not JSON (or nests deeper than JSON here may)") from None
    if isinstance(parsed, dict) and any(parsed.get(k, configured.tenant) != configured.tenant
                                        for k in ("tenant_id", "tenantId")):
        raise ApiError(403, f"source {source!r} posts to tenant {configured.tenant!r} only")
    try:
        event = EventIn.model_validate(parsed)
    except ValidationError as err:
        raise RequestValidationError([e | {"loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]) \
            from None
    event.tenant_id = configured.tenant
    return _answer(await EventReceiver(settings, temporal, engine).receive(event, f"webhook:{source}", None))
