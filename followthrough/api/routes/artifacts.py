"""/tasks/{id}/artifacts: what a task produced besides its result (a browser task's screenshots and
extracted values), listed without their content and served one at a time with their content type."""

import json
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import select

from followthrough.api.auth import require
from followthrough.api.deps import SessionDep
from followthrough.api.errors import NOT_FOUND, not_found
from followthrough.api.lookups import task_row_or_404
from followthrough.domain.principals import Role
from followthrough.db.tables import TaskArtifact

router = APIRouter(prefix="/tasks", tags=["tasks"])
# Everything but the stored bytes and value.
_METADATA = [TaskArtifact.id, TaskArtifact.task_id, TaskArtifact.step_index, TaskArtifact.name, TaskArtifact.kind,
             TaskArtifact.content_type, TaskArtifact.size, TaskArtifact.created_at]


class ArtifactPublic(BaseModel):
    id: str
    task_id: str
    step_index: int
    name: str
    kind: str  # screenshot | data
    content_type: str
    size: int
    created_at: datetime


class ArtifactListPublic(BaseModel):
    items: list[ArtifactPublic]
    total: int


@router.get("/{task_id}/artifacts", response_model=ArtifactListPublic, dependencies=[require(Role.VIEWER)],
            responses=NOT_FOUND)
async def list_artifacts(task_id: str, session: SessionDep) -> ArtifactListPublic:
    """The task's artifacts in step order, without their content."""
    await task_row_or_404(session, task_id)
    rows = (await session.execute(select(*_METADATA).where(TaskArtifact.task_id == task_id)
                                  .order_by(TaskArtifact.step_index, TaskArtifact.name))).all()
    items = [ArtifactPublic.model_validate(dict(r._mapping)) for r in rows]
    return ArtifactListPublic(items=items, total=len(items))


@router.get("/{task_id}/artifacts/{artifact_id}", dependencies=[require(Role.VIEWER)],
            responses=NOT_FOUND | {200: {"description": "The artifact itself, in its content type",
                                         "content": {"image/png": {}, "application/json": {}}}})
async def get_artifact(task_id: str, artifact_id: str, session: SessionDep) -> Response:
    """One artifact's content: a screenshot's PNG bytes, an extracted value's JSON."""
    row = await session.get(TaskArtifact, artifact_id) if len(artifact_id) <= 36 else None
    if row is None or row.task_id != task_id:
        raise not_found("artifact", artifact_id)
    body = row.content if row.content is not None else json.dumps(row.data, ensure_ascii=False).encode()
    return Response(body, media_type=row.content_type,
                    headers={"Content-Disposition": f'inline; filename="{row.name}"',
                             "X-Content-Type-Options": "nosniff"})
