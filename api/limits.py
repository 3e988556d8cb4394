"""Per-tenant limits on task creation: a rate (token bucket) and a cap on tasks in flight.

The buckets live in the mirror database (``rate_buckets``), so every API
process draws from the same one. Taking tokens is a single conditional UPDATE:
it refills the bucket for the time elapsed and takes what the request needs
only if that many are there, atomically on SQLite and PostgreSQL alike.
"""

import json
import math
import time
from collections.abc import Mapping

from fastapi.exceptions import RequestValidationError
from sqlalchemy import case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import ApiError
from followthrough.principals import Principal
from followthrough.lifecycle import TERMINAL_STATUSES
from followthrough.mirror import insert_ignoring_duplicates
from followthrough.settings import Settings
from followthrough.tables import RateBucket, Task

_BUCKETS = RateBucket.__table__  # type: ignore[attr-defined]
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)


def invalid(loc: tuple[object, ...], message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *loc), "msg": message, "input": None}])


def check_payload_size(settings: Settings, payload: object, loc: tuple[object, ...] = ("payload",)) -> None:
    """422 naming the payload when it serialises to more than the configured bytes."""
    limit = settings.max_payload_bytes
    if not limit:
        return
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    if size > limit:
        raise invalid(loc, f"the payload is {size} bytes as JSON; at most {limit} are accepted "
                           f"(FOLLOWTHROUGH_MAX_PAYLOAD_BYTES)", "payload_too_large")


def tenant_of(principal: Principal, named: object) -> str:
    """Whose limits a creation counts against: the key's tenant, or under anonymous access the tenant the
    body names (``default`` when it names none or something that is not a tenant id)."""
    if not principal.anonymous:
        return principal.tenant_id
    return named if isinstance(named, str) and named else "default"


async def admit(settings: Settings, engine: AsyncEngine, wanted: Mapping[str, int]) -> None:
    """Let ``wanted[tenant]`` new tasks in for each tenant, or refuse the whole request with 429."""
    for tenant, count in wanted.items():
        await _check_in_flight(settings, engine, tenant, count)
    for tenant, count in wanted.items():
        await _take_tokens(settings, engine, tenant, count)


async def _check_in_flight(settings: Settings, engine: AsyncEngine, tenant: str, count: int) -> None:
    cap = settings.max_tasks_in_flight
    if not cap:
        return
    async with engine.connect() as conn:
        running = (await conn.execute(select(func.count()).select_from(Task).where(
            Task.tenant_id == tenant, Task.status.not_in(_TERMINAL)))).scalar_one()
    if running + count > cap:
        raise ApiError(429, f"tenant {tenant!r} has {running} tasks in flight; at most {cap} may be "
                            f"(FOLLOWTHROUGH_MAX_TASKS_IN_FLIGHT): wait for some to finish",
                       headers={"Retry-After": "30"}, limit="tasks_in_flight")


async def _take_tokens(settings: Settings, engine: AsyncEngine, tenant: str, count: int) -> None:
    per_minute, burst = settings.rate_limit_per_minute, settings.effective_rate_burst
    if not per_minute:
        return
    if count > burst:
        raise invalid(("items",), f"at most {burst} tasks can be created at once under the rate limit "
                                  f"(FOLLOWTHROUGH_RATE_LIMIT_BURST)", "rate_limit_burst")
    rate = per_minute / 60.0
    key = f"create:{tenant}"
    now = time.time()
    elapsed = case((literal(now) > _BUCKETS.c.refilled_at, literal(now) - _BUCKETS.c.refilled_at), else_=0.0)
    refilled = _BUCKETS.c.tokens + elapsed * rate
    available = case((refilled > burst, float(burst)), else_=refilled)
    take = (update(_BUCKETS).where(_BUCKETS.c.key == key, available >= count)
            .values(tokens=available - count,
                    refilled_at=case((literal(now) > _BUCKETS.c.refilled_at, literal(now)),
                                     else_=_BUCKETS.c.refilled_at)))
    async with engine.begin() as conn:
        if (await conn.execute(take)).rowcount == 1:
            return
        if await insert_ignoring_duplicates(conn, _BUCKETS, [{"key": key, "tokens": float(burst - count),
                                                               "refilled_at": now}]):
            return
        if (await conn.execute(take)).rowcount == 1:  # a bucket made by another request meanwhile
            return
        left = (await conn.execute(select(available).where(_BUCKETS.c.key == key))).scalar_one()
    wait = max(1, math.ceil((count - left) / rate))
    raise ApiError(429, f"tenant {tenant!r} creates tasks faster than {per_minute} a minute "
                        f"(FOLLOWTHROUGH_RATE_LIMIT_PER_MINUTE); retry in {wait} s",
                   headers={"Retry-After": str(wait)}, limit="rate")
