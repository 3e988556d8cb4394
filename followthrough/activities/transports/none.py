"""The "none" channel: a draft with nothing to deliver (e.g. a report kept on the task).

Sending succeeds at once; what it returns becomes the task's result, so any
figures the draft carries in ``data["report"]`` end up there too.
"""

from typing import Any

from followthrough.activities.transports.base import DeliveryContext
from followthrough.domain.contracts import Draft


class NoTransport:
    channel = "none"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        # Nothing leaves the engine, so there is nothing to make idempotent.
        return {"delivered": False, "report": draft.data.get("report")}


TRANSPORT = NoTransport()
