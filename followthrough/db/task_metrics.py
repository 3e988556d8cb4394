"""Task metrics, counted where the mirror writer applies events.

Only the writer that inserted an event sees it as fresh (``ON CONFLICT DO NOTHING … RETURNING``), and what it
saw is published only after its transaction commits, so a retried, duplicated or rolled-back write never
counts twice.
"""

from datetime import datetime, timezone

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from followthrough.db import approval_records
from followthrough.infra import metrics
from followthrough.domain.contracts import MirrorBatch, MirrorEvent
from followthrough.db.tables import Approval, Task

TASKS: Table = Task.__table__  # type: ignore[attr-defined]
APPROVALS: Table = Approval.__table__  # type: ignore[attr-defined]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite gives naive UTC back


class Observed:
    """What one mirror transaction would count, resolved inside it and published after its commit."""

    def __init__(self) -> None:
        self._finished: list[tuple[str, str]] = []  # task id, terminal status
        self._decided: list[tuple[str, str, str, datetime]] = []  # task id, approval id, outcome, decided at
        self._types: dict[str, str] = {}
        self._requested: dict[str, datetime] = {}

    def run_ended(self, batch: MirrorBatch, status: str) -> None:
        self._finished.append((batch.task_id, status))

    def events_written(self, batch: MirrorBatch, fresh: list[MirrorEvent]) -> None:
        for event in fresh:
            approval_id = event.data.get("approval_id")
            outcome = approval_records.closing_status(event.type)
            if approval_id and outcome:
                self._decided.append((batch.task_id, approval_id, outcome, event.occurred_at))

    async def resolve(self, conn: AsyncConnection) -> None:
        """Read the task types and approval request times, in the writer's transaction (where the rows it has
        just written are visible). Nothing to count, nothing read."""
        task_ids = {t for t, _ in self._finished} | {t for t, *_ in self._decided}
        if not task_ids:
            return
        rows = await conn.execute(select(TASKS.c.id, TASKS.c.type).where(TASKS.c.id.in_(task_ids)))
        self._types = {row.id: row.type for row in rows}
        if self._decided:
            rows = await conn.execute(select(APPROVALS.c.id, APPROVALS.c.requested_at)
                                      .where(APPROVALS.c.id.in_({a for _, a, *_ in self._decided})))
            self._requested = {row.id: _utc(row.requested_at) for row in rows}

    def publish(self) -> None:
        for task_id, status in self._finished:
            metrics.TASKS_FINISHED.labels(self._types.get(task_id, "unknown"), status).inc()
        for task_id, approval_id, outcome, decided_at in self._decided:
            requested = self._requested.get(approval_id)
            if requested is not None:
                wait = max((_utc(decided_at) - requested).total_seconds(), 0.0)
                metrics.APPROVAL_WAIT_SECONDS.labels(self._types.get(task_id, "unknown"), outcome).observe(wait)
