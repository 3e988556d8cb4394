"""Turning mirror rows and the services' answers into API responses."""

from fastapi.responses import JSONResponse

from followthrough.api.schemas import TaskEventPublic, TaskPublic
from followthrough.services.idempotency import StoredResponse
from followthrough.services.results import TaskCreated, task_links
from followthrough.config.settings import Settings
from followthrough.db.tables import Task, TaskEvent


def created_or_replayed(answer: TaskCreated | StoredResponse) -> TaskCreated | JSONResponse:
    """A creation's answer; under an Idempotency-Key already answered, the first answer, marked replayed."""
    if isinstance(answer, StoredResponse):
        return JSONResponse(answer.body, status_code=answer.status_code, headers={"Idempotent-Replayed": "true"})
    return answer


def task_public(settings: Settings, row: Task) -> TaskPublic:
    return TaskPublic.model_validate(
        row.model_dump() | {"links": task_links(settings, row.id, row.workflow_id),
                            "stop_on": (row.run_input or {}).get("stop_on") or []}
    )


def event_public(row: TaskEvent) -> TaskEventPublic:
    return TaskEventPublic.model_validate(row.model_dump())
