"""http_request: call an HTTP API once, with credentials from a named secret.

The payload is the request; the draft shows it to the approver and carries it
in ``data`` to the http transport (followthrough/activities/transports/http.py), which
resolves the secret only when it sends.
"""

import json
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough.domain.contracts import Draft, RetrySpec
from followthrough.domain.credentials import HOW_TO_REFERENCE
from followthrough.domain.http_rules import CREDENTIAL_HEADERS, TRANSPORT_HEADERS, header_refusal, http_url
from followthrough.domain.guardrails import TargetHosts
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.secrets import SECRET_NAME
from followthrough.tasktypes.base import DraftContext, TaskType

MAX_TIMEOUT_SECONDS = 60
# Field names that can only mean a credential was pasted into the payload.
RAW_CREDENTIAL_FIELDS = frozenset({
    "token", "access_token", "bearer", "password", "passwd", "api_key", "apikey", "value", "secret_value",
    "client_secret", "private_key", "credential", "credentials",
})
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"


def reject_raw_credentials(value: Any) -> Any:
    """A before-validator: refuse credential-looking fields with directions to secrets."""
    if isinstance(value, dict):
        found = sorted(k for k in value if isinstance(k, str) and k.lower() in RAW_CREDENTIAL_FIELDS)
        if found:
            raise ValueError(f"raw credentials are not accepted ({', '.join(found)}): {HOW_TO_REFERENCE}")
    return value


class AuthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["none", "bearer", "api_key", "basic"] = "none"
    secret: str | None = Field(None, pattern=SECRET_NAME.pattern,
                               description="Name of the secret holding the token, key or password (never the value).")
    header: str | None = Field(None, pattern=_HEADER_NAME, description="api_key only; default X-API-Key.")
    username: str | None = Field(None, min_length=1, max_length=200, description="basic only.")

    _no_raw_credentials = model_validator(mode="before")(reject_raw_credentials)

    @field_validator("header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value and value.lower() in TRANSPORT_HEADERS:
            raise ValueError(header_refusal(value))
        return value

    @model_validator(mode="after")
    def _complete(self) -> "AuthSpec":
        if self.type != "none" and not self.secret:
            raise ValueError(f"auth type {self.type!r} needs `secret`, the name of a secret: {HOW_TO_REFERENCE}")
        if self.type == "basic" and not self.username:
            raise ValueError("auth type 'basic' needs `username`")
        return self


class HttpRequestPayload(BaseModel):
    # `json` would shadow BaseModel.json, so the field is json_body and travels as "json".
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(max_length=2000, examples=["https://api.example.com/v1/notes"])
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    query: dict[str, str | int | float | bool | list[str | int | float]] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json", description="A JSON body (exclusive with `text`).")
    text: str | None = Field(None, description="A text body (exclusive with `json`).")
    timeout_seconds: float = Field(10, gt=0, le=MAX_TIMEOUT_SECONDS)
    expected_statuses: list[int] | None = Field(None, min_length=1, description="Default: any 2xx.")
    auth: AuthSpec = Field(default_factory=AuthSpec)

    _no_raw_credentials = model_validator(mode="before")(reject_raw_credentials)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    _url = field_validator("url")(http_url)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in CREDENTIAL_HEADERS:
                raise ValueError(f"header {name!r} carries a credential; use `auth` instead: {HOW_TO_REFERENCE}")
            if refusal := header_refusal(name):
                raise ValueError(refusal)
        return value

    @field_validator("expected_statuses")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        if value and any(not 100 <= s <= 599 for s in value):
            raise ValueError("statuses must be between 100 and 599")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> "HttpRequestPayload":
        if self.json_body is not None and self.text is not None:
            raise ValueError("give either `json` or `text`, not both")
        return self


def _summary(p: HttpRequestPayload) -> str:
    lines = [f"{p.method} {httpx.URL(p.url).copy_merge_params(p.query)}"]
    if p.auth.type != "none":
        lines.append(f"Auth: {p.auth.type}, credential from the secret {p.auth.secret!r}")
    lines += [f"{name}: {value}" for name, value in p.headers.items()]
    if p.json_body is not None:
        lines += ["", json.dumps(p.json_body, indent=2, ensure_ascii=False)]
    elif p.text is not None:
        lines += ["", p.text]
    accepts = ", ".join(map(str, p.expected_statuses)) if p.expected_statuses else "any 2xx"
    lines += ["", f"Accepts {accepts}; times out after {p.timeout_seconds:g} s."]
    return "\n".join(lines)


async def draft(payload: HttpRequestPayload, _ctx: DraftContext) -> Draft:
    return Draft(channel="http", subject=f"{payload.method} {payload.url}", body=_summary(payload),
                 data=payload.model_dump(mode="json", exclude_none=True))


TASK_TYPE = TaskType(
    name="http_request",
    description="Call an HTTP API once (method, URL, headers, query, JSON or text body), with credentials from "
                "a named secret; the answer's status, headers, duration and body become the result.",
    payload_model=HttpRequestPayload,
    channel="http",
    draft=draft,
    guardrails=(TargetHosts(),),
    outbound_urls=lambda payload: {"url": payload.url},
    secret_refs=lambda payload: {"auth.secret": (payload.auth.secret, payload.url)} if payload.auth.secret else {},
    # No allowed_hosts list: any host (a tenant may set one in FOLLOWTHROUGH_GUARDRAILS).
    guardrail_defaults=lambda _settings: {"allowed_hosts": None},
    default_mode=TaskMode.REVIEW,
    # Short backoff: an API call is usually wanted soon, and 4xx answers are never retried.
    retry=RetrySpec(max_attempts=6, initial_interval_seconds=2, backoff_coefficient=2, maximum_interval_seconds=120),
    # Room for the longest allowed request plus recording it.
    send_timeout_seconds=MAX_TIMEOUT_SECONDS + 5,
)
