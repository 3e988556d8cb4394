"""extract: fetch a page (or take its HTML) and extract fields by CSS selectors into a JSON object.

Nothing is sent anywhere: the "send" step is the fetch and the extraction (followthrough/activities/transports/extract.py),
through the SSRF guard, and its object becomes the task's result. Hence autonomous by default; a review-mode
task has a person approve the fetch first. Selectors, field specs and the schema are checked when the task
is created (a 422), the page and the data when it runs (followthrough/infra/extraction.py).
"""

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from followthrough.domain.contracts import Draft, RetrySpec
from followthrough.domain.guardrails import GuardrailFacts
from followthrough.domain.guardrails import TargetHosts
from followthrough.domain.lifecycle import TaskMode
from followthrough.domain.extraction_rules import MAX_TIMEOUT_SECONDS, ExtractPayload
from followthrough.tasktypes.base import DraftContext, TaskType



@dataclass(frozen=True)
class PageHost(TargetHosts):
    """TargetHosts for the page's URL; HTML given in the payload is fetched from nowhere."""

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        return super().check(payload, draft, params, facts) if draft.data.get("url") else None


async def draft(payload: ExtractPayload, _ctx: DraftContext) -> Draft:
    source = payload.url or f"the given HTML ({len(payload.html or '')} characters)"
    lines = [f"Extract {', '.join(payload.fields)} from {source}", ""]
    lines += [f"{name}: {spec.selector}" + (f" @{spec.attribute}" if spec.attribute else "")
              + (" (all)" if spec.all else "") + f" as {spec.type}" + ("" if spec.required else ", optional")
              for name, spec in payload.fields.items()]
    if payload.json_schema is not None:
        lines += ["", "Checked against the schema:", json.dumps(payload.json_schema, indent=2, ensure_ascii=False)]
    return Draft(channel="extract", subject=f"Extract from {payload.url or 'HTML'}", body="\n".join(lines),
                 data=payload.model_dump(mode="json", exclude_none=True))


TASK_TYPE = TaskType(
    name="extract",
    description="Fetch a page (or take its HTML) and extract fields by CSS selectors into a JSON object, checked "
                "against a JSON Schema; the object becomes the task's result. Fetches go through the SSRF guard.",
    payload_model=ExtractPayload,
    channel="extract",
    draft=draft,
    guardrails=(PageHost(),),
    outbound_urls=lambda payload: {"url": payload.url} if payload.url else {},
    guardrail_defaults=lambda _settings: {"allowed_hosts": None},
    # Reading a page changes nothing anywhere.
    default_mode=TaskMode.AUTONOMOUS,
    retry=RetrySpec(max_attempts=5, initial_interval_seconds=2, backoff_coefficient=2, maximum_interval_seconds=60),
    send_timeout_seconds=MAX_TIMEOUT_SECONDS + 10,
)
