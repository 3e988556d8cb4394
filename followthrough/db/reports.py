"""Report figures over a tenant's tasks in the mirror: the queries and the arithmetic.

Both kinds select tasks by ``created_at`` in [start, end). Queries use only
GROUP BY / COUNT and plain column reads, so they mean the same on SQLite and
PostgreSQL; durations are computed in Python because date arithmetic differs
between the two. Results are plain dicts (JSON-safe: they travel in drafts,
workflow histories and the mirror).
"""

import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.domain.lifecycle import TERMINAL_STATUSES, TaskStatus
from followthrough.db.tables import Task

TASKS: Table = Task.__table__  # type: ignore[attr-defined]
_STATUS_ORDER = [s.value for s in TaskStatus]
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _where(tenant_id: str, start: datetime, end: datetime, exclude_task_id: str | None) -> ColumnElement[bool]:
    # Comparing against the typed column binds through UTCDateTime, so SQLite's
    # text timestamps and PostgreSQL's timestamptz compare alike.
    condition = and_(TASKS.c.tenant_id == tenant_id, TASKS.c.created_at >= _utc(start),
                     TASKS.c.created_at < _utc(end))
    # A report task is running while it counts: leave it out of its own figures.
    return condition if exclude_task_id is None else and_(condition, TASKS.c.id != exclude_task_id)


def _header(kind: str, tenant_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"kind": kind, "tenant_id": tenant_id, "start": _utc(start).isoformat(), "end": _utc(end).isoformat()}


def _ordered_statuses(counts: dict[str, int]) -> dict[str, int]:
    """Every known status (zeros included) in lifecycle order, then anything unexpected."""
    known = {s: counts.get(s, 0) for s in _STATUS_ORDER}
    return known | {s: n for s, n in sorted(counts.items()) if s not in known}


async def task_summary(engine: AsyncEngine, tenant_id: str, start: datetime, end: datetime,
                       exclude_task_id: str | None = None) -> dict[str, Any]:
    """Total, and counts by status, by type, and by type and status."""
    query = (select(TASKS.c.type, TASKS.c.status, func.count().label("n"))
             .where(_where(tenant_id, start, end, exclude_task_id)).group_by(TASKS.c.type, TASKS.c.status))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    by_status: dict[str, int] = {}
    by_type_status: dict[str, dict[str, int]] = {}
    for type_, status, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        by_type_status.setdefault(type_, {})[status] = n
    by_type_status = {t: {s: c[s] for s in _ordered_statuses(c) if s in c}
                      for t, c in sorted(by_type_status.items())}
    return _header("task_summary", tenant_id, start, end) | {
        "total": sum(by_status.values()),
        "by_status": _ordered_statuses(by_status),
        "by_type": {t: sum(c.values()) for t, c in by_type_status.items()},
        "by_type_status": by_type_status,
    }


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 1]."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _rate(completed: int, finished: int) -> float | None:
    return round(completed / finished, 4) if finished else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def duration_stats(seconds: list[float]) -> dict[str, Any]:
    values = sorted(seconds)
    return {
        "count": len(values),
        "mean": _round(sum(values) / len(values)) if values else None,
        "p50": _round(percentile(values, 0.50)),
        "p95": _round(percentile(values, 0.95)),
        "max": _round(values[-1]) if values else None,
    }


async def execution_stats(engine: AsyncEngine, tenant_id: str, start: datetime, end: datetime,
                          exclude_task_id: str | None = None) -> dict[str, Any]:
    """Finished (terminal) tasks: success rate, durations, attempts, per-type success rates."""
    query = (select(TASKS.c.type, TASKS.c.status, TASKS.c.attempts, TASKS.c.started_at, TASKS.c.finished_at)
             .where(_where(tenant_id, start, end, exclude_task_id), TASKS.c.status.in_(_TERMINAL)))
    by_status: dict[str, int] = {}
    per_type: dict[str, dict[str, int]] = {}
    durations: list[float] = []
    attempts: list[int] = []
    async with engine.connect() as conn:
        # Streamed: only a few numbers per row are kept, whatever the range holds.
        async for type_, status, tries, started, finished in await conn.stream(query):
            by_status[status] = by_status.get(status, 0) + 1
            counts = per_type.setdefault(type_, {"finished": 0, "completed": 0})
            counts["finished"] += 1
            counts["completed"] += int(status == TaskStatus.COMPLETED.value)
            attempts.append(tries or 0)
            # A task cancelled before it started has no duration to count.
            if started is not None and finished is not None:
                durations.append(max(0.0, (finished - started).total_seconds()))
    finished_count = sum(by_status.values())
    completed = by_status.get(TaskStatus.COMPLETED.value, 0)
    return _header("execution_stats", tenant_id, start, end) | {
        "finished": finished_count,
        "by_status": {s: by_status.get(s, 0) for s in _STATUS_ORDER if s in _TERMINAL},
        "completed": completed,
        "success_rate": _rate(completed, finished_count),
        "duration_seconds": duration_stats(durations),
        "attempts": {"mean": _round(sum(attempts) / len(attempts)) if attempts else None,
                     "max": max(attempts) if attempts else None},
        "by_type": {t: c | {"success_rate": _rate(c["completed"], c["finished"])}
                    for t, c in sorted(per_type.items())},
    }


KINDS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "task_summary": task_summary,
    "execution_stats": execution_stats,
}


async def build_report(engine: AsyncEngine, kind: str, tenant_id: str, start: datetime, end: datetime,
                       exclude_task_id: str | None = None) -> dict[str, Any]:
    return await KINDS[kind](engine, tenant_id, start, end, exclude_task_id)
