"""The "extract" channel: the extract task's fetch and extraction (followthrough/infra/extraction.py).

A GET changes nothing at the target, so there is no delivery record to keep it to once per key: a retry
fetches again. The extracted object is the result, and ``event_data`` puts it on the completed event too.
"""

from typing import Any

from pydantic import ValidationError

from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError, TargetRefused
from followthrough.infra import extraction
from followthrough.domain import policies
from followthrough.domain.contracts import Draft
from followthrough.domain.extraction_rules import ExtractPayload


class ExtractionFailed(PermanentDeliveryError):
    error_type = policies.EXTRACTION_FAILED


class RetryableFetchError(Exception):
    """A timeout, a lost connection, a 5xx: Temporal retries the step."""


class ExtractTransport:
    channel = "extract"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        try:
            payload = ExtractPayload.model_validate(draft.data)
        except ValidationError as err:
            raise PermanentDeliveryError(f"the extraction request is invalid: {err}") from err
        try:
            data, page = await extraction.extract(
                ctx.http, payload.fields, url=payload.url, html=payload.html, schema=payload.json_schema,
                timeout=min(payload.timeout_seconds, ctx.timeout_seconds), max_bytes=payload.max_bytes)
        except extraction.FetchError as err:
            if err.refused:
                raise TargetRefused(str(err)) from err
            if err.retryable:
                raise RetryableFetchError(str(err)) from err
            raise ExtractionFailed(str(err)) from err
        except extraction.ExtractionError as err:
            raise ExtractionFailed(str(err)) from err
        result: dict[str, Any] = {"data": data, "event_data": {"extracted": data}}
        if page is not None:
            result |= {"url": page.url, "status": page.status, "content_type": page.content_type,
                       "bytes": page.size}
        return result


TRANSPORT = ExtractTransport()
