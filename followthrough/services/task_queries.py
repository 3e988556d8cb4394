"""Filtering, ordering and paging the mirror's task list."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from followthrough.domain.lifecycle import TaskStatus
from followthrough.db.tables import Task


class TaskOrder(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    PRIORITY = "priority"
    DUE = "due"


# Every order ends in the primary key so pages never overlap or skip rows.
_ORDER_BY = {
    TaskOrder.NEWEST: (Task.created_at.desc(), Task.id.desc()),
    TaskOrder.OLDEST: (Task.created_at.asc(), Task.id.asc()),
    TaskOrder.PRIORITY: (Task.priority_rank.desc(), Task.created_at.asc(), Task.id.asc()),
    TaskOrder.DUE: (Task.due_at.asc().nulls_last(), Task.created_at.asc(), Task.id.asc()),
}


@dataclass
class TaskFilter:
    status: list[TaskStatus] | None = None
    type: str | None = None
    owner_id: str | None = None
    subject_ref_type: str | None = None
    subject_ref_id: str | None = None
    source: str | None = None
    tenant_id: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    trigger: str | None = None
    definition_id: str | None = None

    def apply(self, query: Select) -> Select:
        equal = {"type": self.type, "owner_id": self.owner_id, "subject_ref_type": self.subject_ref_type,
                 "subject_ref_id": self.subject_ref_id, "source": self.source, "tenant_id": self.tenant_id,
                 "trigger": self.trigger, "definition_id": self.definition_id}
        for column, value in equal.items():
            if value is not None:
                query = query.where(getattr(Task, column) == value)
        if self.status:
            query = query.where(Task.status.in_([s.value for s in self.status]))
        if self.due_before is not None:
            query = query.where(Task.due_at < self.due_before)
        if self.due_after is not None:
            query = query.where(Task.due_at >= self.due_after)
        if self.created_before is not None:
            query = query.where(Task.created_at < self.created_before)
        if self.created_after is not None:
            query = query.where(Task.created_at >= self.created_after)
        return query


async def list_tasks(session: AsyncSession, where: TaskFilter, order: TaskOrder, limit: int,
                     offset: int) -> tuple[list[Task], int]:
    total = (await session.execute(where.apply(select(func.count()).select_from(Task)))).scalar_one()
    rows = (await session.execute(
        where.apply(select(Task)).order_by(*_ORDER_BY[order]).limit(limit).offset(offset)
    )).scalars().all()
    return list(rows), total
