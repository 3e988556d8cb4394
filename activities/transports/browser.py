"""Browser tasks: the draft's steps run in headless Chromium (activities/browser_run.py), once per idempotency key.

``draft.data`` is the browser task's payload (followthrough/tasktypes/browser.py). The run is recorded in
``deliveries`` like an HTTP call: a retry after a run that finished (its answer lost with a worker) returns
the recorded result instead of clicking through the site again; a retry after a failed attempt runs the
steps afresh and overwrites that attempt's artifacts.
"""

from typing import Any

from pydantic import ValidationError

from activities.browser_guard import RequestGuard
from activities.browser_run import RunContext, run_steps
from activities.transports.base import DeliveryContext, PermanentDeliveryError
from activities.transports.http import Claim, deliver_once
from followthrough.contracts import Draft
from followthrough.outbound import OutboundPolicy
from followthrough.tasktypes.browser import BrowserPayload


class BrowserTransport:
    channel = "browser"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        try:
            payload = BrowserPayload.model_validate({k: v for k, v in draft.data.items() if k != "url"})
        except ValidationError as err:
            raise PermanentDeliveryError(f"the browser steps are invalid: {err}") from err
        first = str(draft.data.get("url") or payload.steps[0].url)  # type: ignore[union-attr]

        async def attempt(claimed: Claim) -> dict[str, Any]:
            guard = RequestGuard(OutboundPolicy.from_entries(ctx.settings.outbound_allow))
            run = RunContext(engine=ctx.engine, secrets=ctx.secrets, task_id=ctx.task_id, tenant_id=ctx.tenant_id,
                             chromium=ctx.settings.chromium_path)
            # The run's own timeout ends it a little before the activity's, so its failure is the one reported.
            timeout = min(payload.timeout_seconds, max(1.0, ctx.timeout_seconds - 5))
            return {"delivery_id": claimed.delivery_id} | await run_steps(payload, run, guard, timeout) \
                | {"duplicate": False}

        return await deliver_once(ctx, self.channel, f"browser {first}", attempt)


TRANSPORT = BrowserTransport()
