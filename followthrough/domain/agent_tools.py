"""The tools an agent task may call: every one registered here, in one place.

Each tool has a name and description (sent to the model as an OpenAI function
tool, with the JSON schema of its arguments), an arguments model that checks
what the model asked for, whether a call is risky (then a person approves it
before it runs), a one-line summary for the Temporal Web UI, and the name of
the activity that runs it (followthrough/activities/agent_tools.py).

Pure: no I/O, so the agent loop's workflow code checks calls with it.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator

from followthrough.domain import allowed_hosts
from followthrough.domain.extraction_rules import ExtractPayload
from followthrough.domain.http_rules import CREDENTIAL_HEADERS, header_refusal, http_url

# Agents never create agents: a loop that spawns loops has no bound. Nor tasks that split into subtasks of their
# own (group, campaign, project, cadence): those list their own modes and approvers, past the agent's bounds.
SUBTASK_TYPES_REFUSED = frozenset({"agent", "group", "campaign", "project", "cadence"})
# Types whose requests go on past the URLs in their payload (redirects followed, pages navigated from): an agent
# held to hosts may not create them, since its list could not follow them there.
SUBTASK_TYPES_UNBOUNDED_HOSTS = frozenset({"browser", "extract"})


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class HttpRequestArgs(_Args):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "GET", description="GET reads; POST, PUT, PATCH and DELETE change something and need a person's approval.")
    url: str = Field(max_length=2000, description="Absolute http(s) URL.")
    query: dict[str, str] = Field(default_factory=dict, max_length=50)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    json_body: Any = Field(None, alias="json", description="A JSON body, for POST, PUT and PATCH.")

    _url = field_validator("url")(http_url)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in CREDENTIAL_HEADERS or header_refusal(name):
                raise ValueError(f"header {name!r} may not be set by a tool call")
        return value


class EmailArgs(_Args):
    to: list[EmailStr] = Field(min_length=1, max_length=20)
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=20_000)


class SubtaskArgs(_Args):
    type: str = Field(min_length=1, max_length=64, description="A task type the agent is allowed to create.")
    title: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] = Field(description="The payload of that task type (see GET /api/v1/task-types).")
    mode: Literal["suggest", "review", "assisted", "autonomous", "manual"] | None = None


@dataclass(frozen=True)
class AgentTool:
    name: str
    description: str
    arguments: type[BaseModel]
    activity: str
    # Whether this call (its checked arguments) must be approved by a person before it runs.
    risky: Callable[[dict[str, Any]], bool]
    summary: Callable[[dict[str, Any]], str]
    # The URLs the call reaches first, for the agent's host allow-list (the activity checks every hop too).
    urls: Callable[[dict[str, Any]], list[str]] = lambda _args: []

    def openai_schema(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema(by_alias=True)
        schema.pop("title", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": schema}}

    def check(self, raw: str) -> dict[str, Any]:
        """The model's arguments (JSON text), checked and normalised; ValueError says what is wrong."""
        try:
            value = json.loads(raw or "{}")
        except ValueError as err:
            raise ValueError(f"arguments are not JSON: {err}") from None
        if not isinstance(value, dict):
            raise ValueError("arguments must be a JSON object")
        try:
            return self.arguments.model_validate(value).model_dump(mode="json", by_alias=True, exclude_none=True)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                                 for e in err.errors(include_url=False))
            raise ValueError(f"invalid arguments: {problems}") from None


def _activity(name: str) -> str:
    return f"agent_tool_{name}"


TOOLS: dict[str, AgentTool] = {tool.name: tool for tool in (
    AgentTool(
        name="http_request",
        description="Call an HTTP API once and get its status, headers and (truncated) body. GET is safe; "
                    "POST, PUT, PATCH and DELETE wait for a person's approval first.",
        arguments=HttpRequestArgs, activity=_activity("http_request"),
        risky=lambda args: args.get("method", "GET") != "GET",
        summary=lambda args: f"tool http_request {args.get('method', 'GET')} {args.get('url', '')}"[:200],
        urls=lambda args: [args["url"]],
    ),
    AgentTool(
        name="draft_email",
        description="Write an email as a draft (it is shown and kept, not sent).",
        arguments=EmailArgs, activity=_activity("draft_email"),
        risky=lambda _args: False,
        summary=lambda args: f"tool draft_email to {len(args.get('to') or [])} recipient(s)",
    ),
    AgentTool(
        name="send_email",
        description="Send an email (waits for a person's approval first).",
        arguments=EmailArgs, activity=_activity("send_email"),
        risky=lambda _args: True,
        # Recipients stay out of summaries (user metadata shown in the Web UI).
        summary=lambda args: f"tool send_email to {len(args.get('to') or [])} recipient(s)",
    ),
    AgentTool(
        name="create_subtask",
        description="Create a task of another type (one of the types this agent may create), which then runs "
                    "on its own, in a mode no looser than this task's and with its approvers; waits for a "
                    "person's approval first; answers with its id.",
        arguments=SubtaskArgs, activity=_activity("create_subtask"),
        # It creates work that acts on its own (an email, an HTTP call): a person approves it first.
        risky=lambda _args: True,
        summary=lambda args: f"tool create_subtask {args.get('type', '')}: {args.get('title', '')}"[:200],
    ),
    AgentTool(
        name="fetch_and_extract",
        description="Fetch a web page (GET, `url`) or take `html`, pick fields out of it by CSS selectors "
                    "(`fields`: name -> {selector, attribute, all, type, required}) and check the object against "
                    "an optional JSON Schema (`schema`); answers with the object, or with what is missing.",
        arguments=ExtractPayload, activity=_activity("fetch_and_extract"),
        risky=lambda _args: False,  # a GET changes nothing
        summary=lambda args: f"tool fetch_and_extract {args.get('url') or 'given HTML'}"[:200],
        urls=lambda args: [args["url"]] if args.get("url") else [],
    ),
)}


def tool_names() -> list[str]:
    return sorted(TOOLS)


def out_of_bounds(payload: dict[str, Any], name: str, arguments: dict[str, Any]) -> str | None:
    """Why a checked call is outside what the agent's payload allows (its hosts, its subtask types), so it is
    refused before anyone is asked to approve it; None when it is inside."""
    if name == "create_subtask" and arguments["type"] not in (payload.get("subtask_types") or []):
        allowed = ", ".join(payload.get("subtask_types") or []) or "none"
        return f"refused: this agent may not create {arguments['type']!r} tasks; allowed: {allowed}"
    for url in TOOLS[name].urls(arguments):
        if (reason := allowed_hosts.refusal(url, payload.get("allowed_hosts"))) is not None:
            return f"refused: {reason}"
    return None
