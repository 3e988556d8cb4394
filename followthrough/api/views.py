"""Turning mirror rows into API responses."""

from followthrough.api.schemas import TaskEventPublic, TaskLinks, TaskPublic
from followthrough.naming import temporal_ui_link
from followthrough.settings import Settings
from followthrough.tables import Task, TaskEvent

API_PREFIX = "/api/v1"


def task_links(settings: Settings, task_id: str, workflow_id: str) -> TaskLinks:
    base = f"{settings.effective_public_url}{API_PREFIX}/tasks/{task_id}"
    return TaskLinks(self=base, events=f"{base}/events",
                     temporal_ui=temporal_ui_link(settings.temporal_ui_url, settings.temporal_namespace, workflow_id))


def task_public(settings: Settings, row: Task) -> TaskPublic:
    return TaskPublic.model_validate(
        row.model_dump() | {"links": task_links(settings, row.id, row.workflow_id)}
    )


def event_public(row: TaskEvent) -> TaskEventPublic:
    return TaskEventPublic.model_validate(row.model_dump())
