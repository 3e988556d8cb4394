"""/task-types: what kinds of task the engine can run, with their payload schemas."""

from fastapi import APIRouter

from followthrough.api.auth import require
from followthrough.api.schemas import TaskTypeListPublic, TaskTypePublic
from followthrough.domain.principals import Role
from followthrough.tasktypes import REGISTRY, unserved

router = APIRouter(dependencies=[require(Role.VIEWER)], prefix="/task-types", tags=["task types"])


@router.get("", response_model=TaskTypeListPublic)
async def list_task_types() -> TaskTypeListPublic:
    return TaskTypeListPublic(items=[
        TaskTypePublic(name=t.name, description=t.description, channel=t.channel,
                       default_mode=t.default_mode.value, payload_schema=t.payload_schema(),
                       served=(reason := unserved(t)) is None, unserved_reason=reason)
        for t in sorted(REGISTRY.values(), key=lambda t: t.name)
    ])
