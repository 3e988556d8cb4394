"""extract: fetch a page (or take its HTML) and extract fields by CSS selectors into a JSON object.

Nothing is sent anywhere: the "send" step is the fetch and the extraction (followthrough/activities/transports/extract.py),
through the SSRF guard, and its object becomes the task's result. Hence autonomous by default; a review-mode
task has a person approve the fetch first. Selectors, field specs and the schema are checked when the task
is created (a 422), the page and the data when it runs (followthrough/extraction.py).
"""

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough import extraction
from followthrough.contracts import Draft, RetrySpec
from followthrough.guardrails import GuardrailFacts
from followthrough.extraction import FieldSpec
from followthrough.guardrails import TargetHosts
from followthrough.lifecycle import TaskMode
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.tasktypes.http_request import http_url

MAX_TIMEOUT_SECONDS = 30
MAX_PAGE_BYTES = 5_000_000


class ExtractPayload(BaseModel):
    # `schema` would shadow BaseModel.schema, so the field is json_schema and travels as "schema".
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    url: str | None = Field(None, max_length=2000, examples=["https://shop.example.com/widgets/42"],
                            description="The page to fetch (exclusive with `html`).")
    html: str | None = Field(None, description="The page itself (exclusive with `url`).")
    fields: dict[str, FieldSpec] = Field(min_length=1, max_length=extraction.MAX_FIELDS,
                                         examples=[{"title": {"selector": "h1"},
                                                    "price": {"selector": ".price", "type": "number"}}])
    json_schema: dict[str, Any] | None = Field(None, alias="schema",
                                               description="A JSON Schema (2020-12) the extracted object must meet.")
    timeout_seconds: float = Field(10, gt=0, le=MAX_TIMEOUT_SECONDS)
    max_bytes: int = Field(extraction.DEFAULT_MAX_BYTES, gt=0, le=MAX_PAGE_BYTES)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value.strip())

    @field_validator("fields")
    @classmethod
    def _names(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        return extraction.parse_fields(value)

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            extraction.check_schema(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ExtractPayload":
        if (self.url is None) == (self.html is None):
            raise ValueError("give either `url` or `html`")
        # A schema that requires what no field extracts fails every run: say so now.
        required = (self.json_schema or {}).get("required")
        if isinstance(required, list):
            unknown = [name for name in required if isinstance(name, str) and name not in self.fields]
            if unknown:
                raise ValueError(f"the schema requires {', '.join(map(repr, unknown))}, which no field extracts")
        return self


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
