"""What operations answer with: the task created (and the links to it in the API), a batch item's outcome."""

from typing import Any

from pydantic import BaseModel

from followthrough.domain.naming import temporal_ui_link
from followthrough.config.settings import Settings

# Where the HTTP API serves its resources; a task's links point there.
API_PREFIX = "/api/v1"


class BatchItemResult(BaseModel):
    index: int
    status_code: int
    id: str | None = None
    workflow_id: str | None = None
    detail: Any = None


class TaskLinks(BaseModel):
    self: str
    events: str
    temporal_ui: str
    operator: str  # the task's timeline on the operator page (/ui/tasks/{id})


class TaskCreated(BaseModel):
    id: str
    status: str
    workflow_id: str
    links: TaskLinks
    # Set when an event its stop_on names came before it (within the lookback): the task is created cancelled,
    # and never drafts or sends.
    stopped_by_event: dict[str, Any] | None = None


def task_links(settings: Settings, task_id: str, workflow_id: str) -> TaskLinks:
    base = f"{settings.effective_public_url}{API_PREFIX}/tasks/{task_id}"
    return TaskLinks(self=base, events=f"{base}/events",
                     temporal_ui=temporal_ui_link(settings.temporal_ui_url, settings.temporal_namespace, workflow_id),
                     operator=f"{settings.effective_public_url}/ui/tasks/{task_id}")
