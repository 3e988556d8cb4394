"""Task definitions: checking their templates, and turning one into a task.

A run renders the definition's title, payload and defaults with the
variables (the run's over the definition's defaults) and creates the task
through the same TaskCreator as ``POST /tasks``, so a rendered payload is
validated against its type exactly as a posted one is.
"""

import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from followthrough.domain.contracts import DefinitionRunResult, TaskOrigin
from followthrough.db.database import session_factory
from followthrough.infra.render_pool import RenderLimits, RenderPoolError, render_trees
from followthrough.services.errors import Conflict, Invalid, TooManyRequests, Unavailable, invalid, located
from followthrough.services.idempotency import StoredResponse
from followthrough.services.limits import check_payload_size
from followthrough.services.requests import TaskCreate
from followthrough.services.results import TaskCreated
from followthrough.services.task_creation import TaskCreator, refuse_raw_credentials
from followthrough.config.settings import Settings
from followthrough.db.tables import TaskDefinition
from followthrough.tasktypes import UnknownTaskType, get_type, unserved
from followthrough.infra.templating import MissingVariables, TemplateProblem, strings, variables_of

_DEFAULT_FIELDS = {"priority", "owner_type", "owner_id", "subject_ref_type", "subject_ref_id", "source",
                   "approval_timeout_seconds", "retry", "approval", "sla", "stop_on"}
# Keys that make a scheduled run's task id: the same firing always gives the same task.
_SCHEDULED_TASKS = uuid.UUID("5b0d7d0e-4a8f-4c39-9d55-7f0f2b6c1e21")


def _templates(title: str | None, payload: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {"title": title, "payload": payload, "defaults": defaults}


def used_variables(row: TaskDefinition) -> list[str]:
    return sorted(variables_of(_templates(row.title, row.payload, row.defaults)))


def _check_sizes(settings: Settings, templates: dict[str, Any]) -> None:
    """422 for a template string longer than a definition may hold: parsing and rendering it cost with its size."""
    limit = settings.template_max_chars
    long = [(path, len(source)) for path, source in strings(templates) if len(source) > limit]
    if long:
        raise located([
            {"type": "template_limit", "loc": ("body", *path), "input": None,
             "msg": f"template is {size} characters, over the limit of {limit} (template_max_chars): send a "
                    "shorter one, or put long text in a variable"} for path, size in long])


async def check(row: TaskDefinition, settings: Settings, temporal: Client, engine: AsyncEngine) -> None:
    """Refuse a definition whose type is unknown or whose templates do not parse or are too long (422,
    naming the field).

    A scheduled definition runs with no one to give it variables: each must have a default, and the
    task it renders to must be valid now (which renders it, under the render bounds).
    """
    try:
        task_type = get_type(row.type)
    except UnknownTaskType as err:
        raise invalid(("type",), str(err), "unknown_task_type") from err
    if reason := unserved(task_type):
        raise invalid(("type",), reason, "part_missing")
    refuse_raw_credentials(row.payload)
    check_payload_size(settings, row.payload)
    _check_sizes(settings, _templates(row.title, row.payload, row.defaults))
    try:
        used = variables_of(_templates(row.title, row.payload, row.defaults))
    except TemplateProblem as err:
        raise invalid(err.path, err.message, "template_error") from err
    if row.cron is None:
        return
    missing = sorted(used - set(row.variables))
    if missing:
        raise located([
            {"type": "missing_variable", "loc": ("body", "variables", name), "input": None,
             "msg": f"a scheduled definition runs without inputs: give variable {name!r} a default"}
            for name in missing])
    try:
        TaskCreator(settings, temporal, engine).build(await render(row, {}, settings=settings), "check")
    except Invalid as err:  # located in the definition: here, the request's body
        if err.errors is None:
            raise
        raise located(_relocated(err.errors, "body")) from err


async def render(row: TaskDefinition, variables: dict[str, Any], due_at: datetime | None = None, *,
                 settings: Settings, fallback: dict[str, Any] | None = None) -> TaskCreate:
    """The task body the definition gives with these variables; 422 naming what is missing, wrong or over a
    render bound. The templates render in the render pool, off the event loop."""
    values = row.variables | variables
    try:
        missing = sorted(variables_of(_templates(row.title, row.payload, row.defaults)) - set(values))
        if missing:
            raise MissingVariables(missing)
        text, payload = await render_trees([({"title": row.title, "defaults": row.defaults}, False),
                                            ({"payload": row.payload}, True)], values, RenderLimits.of(settings))
        payload = payload["payload"]
    except RenderPoolError as err:
        raise Unavailable(f"{err}; try again") from err
    except MissingVariables as err:
        raise located([
            {"type": "missing_variable", "loc": ("body", "variables", name), "input": None,
             "msg": f"variable {name!r} is used by the definition and was not given"} for name in err.names
        ]) from err
    except TemplateProblem as err:
        raise located([{"type": "template_limit" if err.limit else "template_error",
                                       "loc": ("definition", *err.path), "msg": err.message, "input": None}]) from err
    body = {"type": row.type, "mode": row.mode, "title": text["title"], "payload": payload,
            "tenant_id": row.tenant_id, "due_at": due_at} | text["defaults"]
    # What the caller gives where the definition gives nothing (an event's subject, for its trigger's runs).
    body |= {k: v for k, v in (fallback or {}).items() if body.get(k) is None}
    try:
        return TaskCreate.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as err:
        raise located([
            {"type": e["type"], "msg": e["msg"], "input": e.get("input"),
             "loc": ("definition", *(("defaults",) if e["loc"][:1] and e["loc"][0] in _DEFAULT_FIELDS else ()),
                     *e["loc"])}
            for e in err.errors(include_url=False)]) from err


def _relocated(errors: Any, first: str) -> list[dict[str, Any]]:
    """Errors of the rendered task, located in the definition rather than a request body."""
    return [e | {"loc": (first, *e["loc"][1:])} for e in errors]


class DefinitionRunner:
    def __init__(self, settings: Settings, temporal: Client, engine: AsyncEngine) -> None:
        self.engine = engine
        self.settings = settings
        self.creator = TaskCreator(settings, temporal, engine)

    async def run(self, row: TaskDefinition, variables: dict[str, Any], due_at: datetime | None, actor: str,
                  idempotency_key: str | None = None) -> TaskCreated | StoredResponse:
        """``POST /definitions/{id}/run``: a task from the definition, marked trigger=definition."""
        body = await render(row, variables, due_at, settings=self.settings)
        origin = TaskOrigin(trigger="definition", definition_id=row.id, definition_version=row.version,
                            variables=row.variables | variables)
        try:
            if idempotency_key is None:
                return await self.creator.create(body, actor, origin)
            return await self.creator.create_once(body, actor, idempotency_key, origin)
        except Invalid as err:  # the rendered task fails its type
            if err.errors is None:
                raise
            raise located(_relocated(err.errors, "definition")) from err

    async def run_scheduled(self, definition_id: str, schedule_run_id: str) -> DefinitionRunResult:
        """One firing of a definition's schedule, as the definition is now. Repeatable: the same
        firing always means the same task id, so a retry finds the task the first attempt created."""
        async with session_factory(self.engine)() as session:
            row = await session.get(TaskDefinition, definition_id)
        if row is None or row.deleted_at is not None:
            return DefinitionRunResult(outcome="skipped", detail="the definition has been deleted")
        if row.cron is None:
            return DefinitionRunResult(outcome="skipped", detail="the definition is no longer scheduled")
        body = await render(row, {}, settings=self.settings)
        origin = TaskOrigin(trigger="schedule", definition_id=row.id, definition_version=row.version,
                            schedule_run_id=schedule_run_id, variables=dict(row.variables))
        task_id = str(uuid.uuid5(_SCHEDULED_TASKS, schedule_run_id))
        try:
            created = await self.creator.create(body, f"schedule:{row.name}"[:128], origin, task_id=task_id)
        except TooManyRequests as err:  # over the tenant's budget: this firing is skipped, and says why
            return DefinitionRunResult(outcome="refused", detail=err.message)
        except Conflict as err:
            return DefinitionRunResult(outcome="duplicate", task_id=err.extra.get("task_id"),  # type: ignore[arg-type]
                                       detail=err.message)
        return DefinitionRunResult(outcome="created", task_id=created.id)
