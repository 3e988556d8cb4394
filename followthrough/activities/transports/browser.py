"""Browser tasks: the draft's steps run in headless Chromium (followthrough/activities/browser_run.py), once per idempotency key.

``draft.data`` is the browser task's payload (followthrough/tasktypes/browser.py). The run is recorded in
``deliveries`` like an HTTP call: a retry after a run that finished (its answer lost with a worker) returns
the recorded result instead of clicking through the site again; a retry after a failed attempt runs the
steps afresh and overwrites that attempt's artifacts.
"""

import asyncio
import time
import weakref
from typing import Any

from pydantic import ValidationError

from followthrough.activities.browser_guard import RequestGuard
from followthrough.activities.browser_run import RunContext, run_steps
from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError
from followthrough.activities.transports.http import Claim, deliver_once
from followthrough.domain.contracts import Draft
from followthrough.infra.outbound import OutboundPolicy
from followthrough.tasktypes.browser import BrowserPayload


class BrowserBusy(Exception):
    """Every browser of this worker stayed busy: retried (perhaps on another worker)."""


# One limit per event loop and size: a worker has one of each; tests start several workers, on one loop or many.
_LIMITS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]]" = \
    weakref.WeakKeyDictionary()


def _slots(size: int) -> asyncio.Semaphore:
    limits = _LIMITS.setdefault(asyncio.get_running_loop(), {})
    return limits.setdefault(size, asyncio.Semaphore(size))


class BrowserTransport:
    channel = "browser"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        try:
            payload = BrowserPayload.model_validate({k: v for k, v in draft.data.items() if k != "url"})
        except ValidationError as err:
            raise PermanentDeliveryError(f"the browser steps are invalid: {err}") from err
        first = str(draft.data.get("url") or payload.steps[0].url)  # type: ignore[union-attr]

        started = time.monotonic()

        async def attempt(claimed: Claim) -> dict[str, Any]:
            guard = RequestGuard(OutboundPolicy.from_entries(ctx.settings.outbound_allow))
            run = RunContext(engine=ctx.engine, task_secrets=ctx.task_secrets, task_id=ctx.task_id,
                             tenant_id=ctx.tenant_id,
                             chromium=ctx.settings.chromium_path)
            async with _slots(ctx.settings.browser_max_concurrent):
                # The run's own timeout ends it a little before the activity's (less the wait for a slot),
                # so its failure is the one reported.
                waited = time.monotonic() - started
                left = ctx.timeout_seconds - waited - 5
                if left < 5:
                    raise BrowserBusy(f"no browser of this worker was free for {waited:.0f} s")
                result = await run_steps(payload, run, guard, min(payload.timeout_seconds, left))
            return {"delivery_id": claimed.delivery_id} | result | {"duplicate": False}

        return await deliver_once(ctx, self.channel, f"browser {first}", attempt)


TRANSPORT = BrowserTransport()
