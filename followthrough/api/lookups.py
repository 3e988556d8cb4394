"""Finding a task for a route, or answering 404."""

from followthrough.api.deps import SessionDep
from followthrough.api.errors import not_found
from followthrough.db.tables import Task


async def task_row_or_404(session: SessionDep, task_id: str) -> Task:
    row = await session.get(Task, task_id) if len(task_id) <= 36 else None
    if row is None:
        raise not_found("task", task_id)
    return row
