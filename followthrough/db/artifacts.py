"""Task artifacts: storing what a task produced (screenshots, extracted values) in ``task_artifacts``.

An artifact's id is derived from (task, step, name), and writing one replaces the row with that id in one
transaction: a retried attempt overwrites what the failed one stored instead of adding a copy.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.db.tables import TaskArtifact

ARTIFACTS: Table = TaskArtifact.__table__  # type: ignore[attr-defined]
SCREENSHOT, DATA = "screenshot", "data"
# Fixed forever: ids computed by an earlier release must match the ones a retry computes now.
_ID_NAMESPACE = uuid.UUID("0c4f8a52-6d1e-4b7a-9e35-2a8d1f6c7b90")


def artifact_id_for(task_id: str, step_index: int, name: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{task_id}:{step_index}:{name}"))


@dataclass(frozen=True)
class Stored:
    id: str
    name: str
    kind: str
    step_index: int
    content_type: str
    size: int

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "step": self.step_index,
                "content_type": self.content_type, "size": self.size}


def data_size(value: Any) -> int:
    """What a JSON value weighs when served."""
    return len(json.dumps(value, ensure_ascii=False).encode())


async def put(engine: AsyncEngine, *, task_id: str, tenant_id: str, step_index: int, name: str, kind: str,
              content_type: str, content: bytes | None = None, data: Any = None) -> Stored:
    """Write an artifact, replacing the one this task's step stored under this name before."""
    size = len(content) if content is not None else data_size(data)
    stored = Stored(artifact_id_for(task_id, step_index, name), name, kind, step_index, content_type, size)
    async with engine.begin() as conn:
        await conn.execute(delete(ARTIFACTS).where(ARTIFACTS.c.id == stored.id))
        await conn.execute(insert(ARTIFACTS).values(
            id=stored.id, task_id=task_id, tenant_id=tenant_id, step_index=step_index, name=name, kind=kind,
            content_type=content_type, size=size, content=content, data=data, created_at=datetime.now(timezone.utc)))
    return stored


async def clear(engine: AsyncEngine, task_id: str) -> None:
    """Drop a task's artifacts: an attempt starts afresh, so none outlive the attempt that made them."""
    async with engine.begin() as conn:
        await conn.execute(delete(ARTIFACTS).where(ARTIFACTS.c.task_id == task_id))
