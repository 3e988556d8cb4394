"""The connector file, as pydantic models: what a file may say, and the checks made when it is loaded.

A connector names an HTTP API once (base URL, auth by secret reference, shared headers) and its actions
(method, path template, query, body template, expected statuses). The variables an action's templates use
become its payload; ``variables`` sections only add types, defaults and descriptions to them.
"""

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough.domain.credentials import raw_credentials
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.templating import TemplateProblem, strings, variables_of
from followthrough.domain.http_rules import CREDENTIAL_HEADERS, TRANSPORT_HEADERS, header_refusal, http_url
from followthrough.tasktypes.http_request import MAX_TIMEOUT_SECONDS, AuthSpec

NAME = r"^[a-z][a-z0-9_]{0,39}$"
VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
# `{{ name }}` and nothing else: such a value keeps its JSON type, and is left out when an optional
# variable is not given.
WHOLE_VARIABLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")

IN_A_SECRET = ("put the credential in a task secret of each tenant that uses the connector (an entry in "
               "FOLLOWTHROUGH_TASK_SECRETS_FILE, bound to the connector's host) and name the secret in `auth`, "
               "e.g. {type: bearer, secret: crm_token}")

VariableType = Literal["string", "integer", "number", "boolean", "array", "object"]


class VariableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: VariableType = "string"
    description: str | None = Field(None, max_length=500)
    default: Any = None
    required: bool | None = Field(None, description="Default: required unless a default is given.")
    enum: list[str | int | float | bool] | None = Field(None, min_length=1)
    items: Literal["string", "integer", "number", "boolean"] | None = Field(None, description="array only.")

    @model_validator(mode="after")
    def _consistent(self) -> "VariableSpec":
        if self.items is not None and self.type != "array":
            raise ValueError("`items` is for variables of type array")
        if self.default is not None and self.required:
            raise ValueError("a variable with a default is not required")
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header name")
        if name.lower() in CREDENTIAL_HEADERS:
            raise ValueError(f"header {name!r} carries a credential; {IN_A_SECRET}")
        if name.lower() == "idempotency-key":
            raise ValueError("Idempotency-Key is set by followthrough (see `idempotency_header`)")
        if refusal := header_refusal(name):
            raise ValueError(refusal)
    return value


def _idempotency_header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a header name")
    if value.lower() in TRANSPORT_HEADERS:
        raise ValueError(header_refusal(value))
    return value


def _statuses(value: int | list[int] | None) -> list[int] | None:
    statuses = [value] if isinstance(value, int) else value
    if not isinstance(statuses, list) or not all(isinstance(s, int) for s in statuses):
        return statuses  # None, or a type error pydantic names
    if not statuses or any(not 100 <= s <= 599 for s in statuses):
        raise ValueError("expected statuses are HTTP statuses, 100 to 599")
    return statuses


class _Sending(BaseModel):
    """What a connector and each of its actions may both set: extra headers and the tasks' default mode."""

    model_config = ConfigDict(extra="forbid")

    # The fields are declared by the subclasses, each with its own default.
    @field_validator("headers", check_fields=False)
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _headers(value)

    @field_validator("default_mode", mode="before", check_fields=False)
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return TaskMode.parse(value) if isinstance(value, str) else value


class ActionSpec(_Sending):
    description: str | None = Field(None, max_length=500)
    method: str
    path: str = Field(min_length=1, max_length=1000)
    query: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    expected_status: list[int] | None = Field(None, description="Default: any 2xx.")
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    default_mode: TaskMode | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS)
    idempotency_header: str | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.strip().upper()
        if method not in METHODS:
            raise ValueError(f"method {value!r} is not one of {', '.join(METHODS)}")
        return method

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("the path starts with / (it follows the base URL)")
        if "?" in value or "#" in value:
            raise ValueError("the path holds no query or fragment; use `query`")
        return value

    @field_validator("expected_status", mode="before")
    @classmethod
    def _expected(cls, value: Any) -> Any:
        return _statuses(value)


class ConnectorSpec(_Sending):

    name: str = Field(pattern=NAME)
    description: str | None = Field(None, max_length=500)
    base_url: str = Field(max_length=1000)
    auth: AuthSpec = Field(default_factory=AuthSpec)
    headers: dict[str, str] = Field(default_factory=dict)
    variables: dict[str, VariableSpec] = Field(default_factory=dict, description="Shared by every action.")
    default_mode: TaskMode = TaskMode.REVIEW
    timeout_seconds: float = Field(10, gt=0, le=MAX_TIMEOUT_SECONDS)
    idempotency_header: str = "Idempotency-Key"
    actions: dict[str, ActionSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_literal_credentials(cls, data: Any) -> Any:
        found = raw_credentials(data) if isinstance(data, dict) else []
        if found:
            where = ", ".join(".".join(map(str, path)) for path in found)
            raise ValueError(f"literal credentials are not accepted ({where}): {IN_A_SECRET}")
        return data

    @field_validator("auth", mode="before")
    @classmethod
    def _header_auth(cls, value: Any) -> Any:
        # `header` reads better in a file for what http_request calls `api_key`: a secret sent in a header.
        if isinstance(value, dict) and value.get("type") == "header":
            return value | {"type": "api_key"}
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if "{" in value:
            raise ValueError("the base URL is no template (set it per deployment with "
                             "FOLLOWTHROUGH_CONNECTOR_BASE_URLS)")
        return http_url(value.strip()).rstrip("/")

    @field_validator("idempotency_header")
    @classmethod
    def _idempotency_header(cls, value: str) -> str:
        return _idempotency_header_name(value)

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: dict[str, ActionSpec]) -> dict[str, ActionSpec]:
        for name, action in value.items():
            if not re.match(NAME, name):
                raise ValueError(f"action name {name!r} must match {NAME}")
            if action.idempotency_header is not None:
                try:
                    _idempotency_header_name(action.idempotency_header)
                except ValueError as err:
                    raise ValueError(f"actions.{name}.idempotency_header: {err}") from None
        return value

    @model_validator(mode="after")
    def _variables(self) -> "ConnectorSpec":
        used_anywhere: set[str] = set()
        for name, action in self.actions.items():
            used = action_variables(self, action, name)
            used_anywhere |= used
            unknown = sorted(set(action.variables) - used)
            if unknown:
                raise ValueError(f"actions.{name}.variables: {', '.join(map(repr, unknown))} "
                                 f"{'is' if len(unknown) == 1 else 'are'} not used by any of the action's templates")
        unknown = sorted(set(self.variables) - used_anywhere)
        if unknown:
            raise ValueError(f"variables: {', '.join(map(repr, unknown))} not used by any action's templates")
        return self

    def variable(self, action: ActionSpec, name: str) -> VariableSpec:
        return action.variables.get(name) or self.variables.get(name) or VariableSpec()


def templates_of(spec: ConnectorSpec, action: ActionSpec) -> dict[str, Any]:
    """Every template an action renders, by where it is."""
    return {"path": action.path, "query": action.query, "headers": spec.headers | action.headers,
            "body": action.body}


def action_variables(spec: ConnectorSpec, action: ActionSpec, name: str) -> set[str]:
    """The variables an action's templates use, once they are checked: each parses, each name is a valid
    payload field, and an optional one without a default stands alone as a body or query value."""
    templates = templates_of(spec, action)
    try:
        used = variables_of(templates)
    except TemplateProblem as err:
        raise ValueError(f"actions.{name}.{'.'.join(map(str, err.path))}: {err.message}") from None
    bad = sorted(v for v in used if not re.match(VARIABLE, v))
    if bad:
        raise ValueError(f"actions.{name}: variable names must match {VARIABLE}: {', '.join(bad)}")
    alone = {m.group(1) for where in ("query", "body") for _path, text in strings(templates[where])
             if (m := WHOLE_VARIABLE.match(text.strip()))}
    for variable in sorted(used):
        declared = spec.variable(action, variable)
        if declared.is_required or declared.default is not None:
            continue
        elsewhere = [".".join(map(str, path)) for path, text in strings(templates) if variable in
                     variables_of(text) and not (path[0] in ("query", "body") and WHOLE_VARIABLE.match(text.strip()))]
        if variable not in alone or elsewhere:
            raise ValueError(f"actions.{name}: the optional variable {variable!r} has no default, so it may only "
                             f"stand alone (\"{{{{ {variable} }}}}\") as a body or query value, where leaving it out "
                             f"leaves the value out; it is used in {', '.join(elsewhere) or 'no such place'}")
    return used
