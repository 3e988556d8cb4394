"""Limits on what a request may ask: payload size, and the tenant's budget for starting tasks (its rate and
cap on tasks in flight, kept in followthrough/services/tenant_budget.py) answered as refusals.
"""

import json
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.services import tenant_budget
from followthrough.services.errors import ServiceError, TooManyRequests, invalid
from followthrough.config.settings import Settings


def check_payload_size(settings: Settings, payload: object, loc: tuple[object, ...] = ("payload",)) -> None:
    """422 naming the payload when it serialises to more than the configured bytes."""
    limit = settings.max_payload_bytes
    if not limit:
        return
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    if size > limit:
        raise invalid(loc, f"the payload is {size} bytes as JSON; at most {limit} are accepted "
                           f"(FOLLOWTHROUGH_MAX_PAYLOAD_BYTES)", "payload_too_large")


async def admit(settings: Settings, engine: AsyncEngine, wanted: Mapping[str, int],
                charge_key: str | None = None, loc: tuple[object, ...] = ("items",)) -> tenant_budget.Hold:
    """Charge ``wanted[tenant]`` new tasks to each tenant (followthrough/services/tenant_budget.py), or refuse the whole
    request: 429 over the rate or the cap on tasks in flight, 422 at ``loc`` when it needs more than the burst."""
    try:
        return await tenant_budget.admit(settings, engine, wanted, charge_key)
    except tenant_budget.OverBudget as err:
        raise refusal(err, loc) from None


def refusal(err: tenant_budget.OverBudget, loc: tuple[object, ...]) -> ServiceError:
    if err.limit == "rate_burst":
        return invalid(loc, err.message, "rate_burst")
    return TooManyRequests(err.message, retry_after=err.retry_after, limit=err.limit)
