"""A tenant's budget for starting tasks: a creation rate (token bucket) and a cap on tasks in flight.

Both live in the mirror database's ``rate_buckets`` table, so every API process and worker draws from the same
budget, and one admission is one transaction:

- ``create:<tenant>`` is the token bucket: a conditional UPDATE refills it for the time elapsed and takes the
  tokens only if that many are there.
- ``inflight:<tenant>`` is a lock row: updating it first serialises the tenant's admissions (a row lock on
  PostgreSQL, the write lock on SQLite), so counting and reserving cannot interleave with another admission.
- ``hold:<tenant>:<id>`` reserves ``tokens`` slots until ``refilled_at`` (epoch seconds) for tasks admitted and not
  yet in the mirror; the creator releases it once their rows are written, and a crashed creator's hold expires.
- ``charged:<key>`` marks a charge already made, so a retried activity is not charged twice.
"""

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from followthrough.domain.lifecycle import TERMINAL_STATUSES
from followthrough.db.mirror import insert_ignoring_duplicates
from followthrough.config.settings import Settings
from followthrough.db.tables import RateBucket, Task
from followthrough.tasktypes import get_type
from followthrough.tasktypes.base import TaskType

_BUCKETS = RateBucket.__table__  # type: ignore[attr-defined]
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
# Long enough for a start and its first mirror write, and for a parent's listed subtasks to be started.
HOLD_SECONDS = 120.0
# How long a charge is remembered: longer than any retry of what it charged.
CHARGE_SECONDS = 86400.0


class OverBudget(Exception):
    """The tenant may not start that many tasks now. ``limit``: rate, tasks_in_flight or rate_burst."""

    def __init__(self, message: str, limit: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.limit, self.retry_after = message, limit, retry_after


@dataclass
class Hold:
    """Slots reserved by one admission: each hold's key, by tenant."""

    keys: dict[str, str] = field(default_factory=dict)


async def admit(settings: Settings, engine: AsyncEngine, wanted: Mapping[str, int],
                charge_key: str | None = None) -> Hold:
    """Charge ``wanted[tenant]`` new tasks to each tenant, all or none; raise OverBudget when any does not fit.
    With ``charge_key``, a charge already made under that key is not made again."""
    wanted = {tenant: count for tenant, count in wanted.items() if count > 0}
    cap, per_minute = settings.max_tasks_in_flight, settings.rate_limit_per_minute
    hold = Hold()
    if not wanted or not (cap or per_minute):
        return hold
    burst = settings.effective_rate_burst
    if per_minute and (count := max(wanted.values())) > burst:
        raise OverBudget(f"at most {burst} tasks can be started at once under the rate limit "
                         f"(FOLLOWTHROUGH_RATE_LIMIT_BURST); this needs {count}", "rate_burst", 0)
    now = time.time()
    async with engine.begin() as conn:
        if charge_key is not None:
            charges = _BUCKETS.c.key.startswith("charged:")
            await conn.execute(delete(_BUCKETS).where(charges, _BUCKETS.c.refilled_at <= now))
            if not await insert_ignoring_duplicates(conn, _BUCKETS, [{
                    "key": f"charged:{charge_key}", "tokens": 0.0, "refilled_at": now + CHARGE_SECONDS}]):
                return hold
        for tenant in sorted(wanted):  # one order, so two multi-tenant admissions cannot deadlock
            if cap:
                hold.keys[tenant] = await _reserve(conn, tenant, wanted[tenant], cap, now)
        for tenant in sorted(wanted):
            if per_minute:
                await _take_tokens(conn, tenant, wanted[tenant], per_minute, burst, now)
    return hold


async def release(engine: AsyncEngine, hold: Hold, keep: Mapping[str, int] | None = None) -> None:
    """The admitted tasks are in the mirror now (or were not started) and count there; only ``keep[tenant]``
    slots stay reserved, until the hold expires: subtasks a parent lists, which its workflow starts soon."""
    keep = keep or {}
    async with engine.begin() as conn:
        for tenant, key in hold.keys.items():
            if keep.get(tenant, 0) > 0:
                await conn.execute(update(_BUCKETS).where(_BUCKETS.c.key == key).values(tokens=float(keep[tenant])))
            else:
                await conn.execute(delete(_BUCKETS).where(_BUCKETS.c.key == key))
    hold.keys.clear()


async def _reserve(conn: AsyncConnection, tenant: str, count: int, cap: int, now: float) -> str:
    lock = f"inflight:{tenant}"
    # A write first: it takes the lock before anything is read, so the count below is current.
    if not await insert_ignoring_duplicates(conn, _BUCKETS, [{"key": lock, "tokens": 0.0, "refilled_at": now}]):
        await conn.execute(update(_BUCKETS).where(_BUCKETS.c.key == lock).values(refilled_at=now))
    holds = _BUCKETS.c.key.startswith(f"hold:{tenant}:", autoescape=True)
    await conn.execute(delete(_BUCKETS).where(holds, _BUCKETS.c.refilled_at <= now))
    running = (await conn.execute(select(func.count()).select_from(Task).where(
        Task.tenant_id == tenant, Task.status.not_in(_TERMINAL)))).scalar_one()
    held = int((await conn.execute(select(func.coalesce(func.sum(_BUCKETS.c.tokens), 0.0)).where(holds)))
               .scalar_one())
    if running + held + count > cap:
        raise OverBudget(f"tenant {tenant!r} has {running + held} tasks in flight and this needs {count} more; at "
                         f"most {cap} may be (FOLLOWTHROUGH_MAX_TASKS_IN_FLIGHT): wait for some to finish",
                         "tasks_in_flight", 30)
    key = f"hold:{tenant}:{uuid.uuid4().hex[:12]}"
    await conn.execute(_BUCKETS.insert().values(key=key, tokens=float(count), refilled_at=now + HOLD_SECONDS))
    return key


async def _take_tokens(conn: AsyncConnection, tenant: str, count: int, per_minute: int, burst: int,
                       now: float) -> None:
    rate = per_minute / 60.0
    key = f"create:{tenant}"
    elapsed = case((literal(now) > _BUCKETS.c.refilled_at, literal(now) - _BUCKETS.c.refilled_at), else_=0.0)
    refilled = _BUCKETS.c.tokens + elapsed * rate
    available = case((refilled > burst, float(burst)), else_=refilled)
    take = (update(_BUCKETS).where(_BUCKETS.c.key == key, available >= count)
            .values(tokens=available - count,
                    refilled_at=case((literal(now) > _BUCKETS.c.refilled_at, literal(now)),
                                     else_=_BUCKETS.c.refilled_at)))
    if (await conn.execute(take)).rowcount == 1:
        return
    if await insert_ignoring_duplicates(conn, _BUCKETS, [{"key": key, "tokens": float(burst - count),
                                                          "refilled_at": now}]):
        return
    if (await conn.execute(take)).rowcount == 1:  # a bucket made by another admission meanwhile
        return
    left = (await conn.execute(select(available).where(_BUCKETS.c.key == key))).scalar_one()
    wait = max(1, math.ceil((count - left) / rate))
    raise OverBudget(f"tenant {tenant!r} starts tasks faster than {per_minute} a minute "
                     f"(FOLLOWTHROUGH_RATE_LIMIT_PER_MINUTE); this needs {count}; retry in {wait} s", "rate", wait)


def tasks_started_by(task_type: TaskType, payload: Any) -> int:
    """The task and every subtask its payload lists, at every level (a group of campaigns: each message)."""
    total = 1 + task_type.listed_count(payload)
    for _loc, type_name, _mode, sub_payload in task_type.listed_subtasks(payload):
        sub_type = get_type(type_name)
        if sub_type.plan is not None:
            total += tasks_started_by(sub_type, sub_type.payload_model.model_validate(sub_payload)) - 1
    return total
