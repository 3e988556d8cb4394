"""A connector's action as a task type ``<connector>.<action>``.

Its payload model is made from the variables its templates use (types, defaults and descriptions from the
file's ``variables``), so a missing or an extra variable is a 422 when the task is created. Its draft renders
the request (path variables URL-encoded, whole-value body and query variables keeping their JSON type) into
the same draft ``data`` an http_request task has, so the http transport sends it: through the SSRF guard,
with the task's idempotency key, the credential read from the named secret only then.
"""

from typing import Annotated, Any, Literal
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from followthrough.connectors.spec import WHOLE_VARIABLE, ActionSpec, ConnectorSpec, VariableSpec, action_variables
from followthrough.domain.contracts import Draft, RetrySpec
from followthrough.domain.guardrails import TargetHosts
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.tasktypes.http_request import MAX_TIMEOUT_SECONDS, HttpRequestPayload, _summary
from followthrough.infra.templating import MissingVariables, TemplateProblem, render_tree

MAX_STRING = 10_000
_SCALARS: dict[str, Any] = {"string": Annotated[str, StringConstraints(max_length=MAX_STRING)], "integer": int,
                            "number": float, "boolean": bool}
# Path variables are URL-encoded whole, so a value cannot climb out of its path segment ("../admin").
_PATH = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                             finalize=lambda value: quote(str(value), safe=""))


def _annotation(variable: VariableSpec) -> Any:
    if variable.enum is not None:
        kind: Any = Literal[tuple(variable.enum)]
    elif variable.type == "array":
        kind = list[_SCALARS[variable.items]] if variable.items else list[Any]
    elif variable.type == "object":
        kind = dict[str, Any]
    else:
        kind = _SCALARS[variable.type]
    return kind if variable.is_required or variable.default is not None else kind | None


def payload_model(spec: ConnectorSpec, name: str, action: ActionSpec, used: set[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for variable in sorted(used):
        declared = spec.variable(action, variable)
        default = ... if declared.is_required else declared.default
        # Fields are named v_<variable> and aliased: a variable may be called `json` or `copy`.
        fields[f"v_{variable}"] = (_annotation(declared), Field(default, alias=variable,
                                                                description=declared.description))
    title = "".join(part.capitalize() for part in f"{spec.name}_{name}".split("_")) + "Payload"
    return create_model(title, __config__=ConfigDict(extra="forbid", validate_by_alias=True, validate_by_name=False,
                                                     serialize_by_alias=True, str_strip_whitespace=True), **fields)


def _prune(tree: Any, given: dict[str, Any]) -> Any:
    """The tree without the values that are exactly an optional variable that was not given."""
    def absent(value: Any) -> bool:
        return isinstance(value, str) and (m := WHOLE_VARIABLE.match(value.strip())) is not None \
            and m.group(1) not in given
    if isinstance(tree, dict):
        return {k: _prune(v, given) for k, v in tree.items() if not absent(v)}
    if isinstance(tree, list):
        return [_prune(v, given) for v in tree if not absent(v)]
    return tree


def render_request(spec: ConnectorSpec, action: ActionSpec, variables: dict[str, Any]) -> HttpRequestPayload:
    """The HTTP request an action makes with these variables (as its payload model dumps them)."""
    given = {k: v for k, v in variables.items() if v is not None}
    try:
        path = _PATH.from_string(action.path).render(**given)
        query = render_tree(_prune(action.query, given), given)
        headers = render_tree(spec.headers | action.headers, given, native=False)
        body = render_tree(_prune(action.body, given), given) if action.body is not None else None
    except MissingVariables as err:
        raise TemplateError(f"variables not given: {', '.join(err.names)}") from err
    except TemplateProblem as err:
        raise TemplateError(f"{'.'.join(map(str, err.path))}: {err.message}") from err
    try:
        return HttpRequestPayload.model_validate({
            "method": action.method, "url": spec.base_url + path, "query": query, "headers": headers,
            "json": body, "timeout_seconds": action.timeout_seconds or spec.timeout_seconds,
            "expected_statuses": action.expected_status, "auth": spec.auth.model_dump(exclude_none=True)})
    except ValidationError as err:
        raise TemplateError(f"the rendered request is invalid: {err}") from err


def task_type(spec: ConnectorSpec, name: str, action: ActionSpec) -> TaskType:
    used = action_variables(spec, action, name)
    model = payload_model(spec, name, action, used)
    full_name = f"{spec.name}.{name}"
    header = action.idempotency_header or spec.idempotency_header

    async def draft(payload: BaseModel, _ctx: DraftContext) -> Draft:
        request = render_request(spec, action, payload.model_dump(mode="json", by_alias=True))
        intro = f"{full_name}: {action.description}" if action.description else full_name
        data = request.model_dump(mode="json", exclude_none=True) | {"idempotency_header": header}
        return Draft(channel="http", subject=f"{full_name}: {request.method} {request.url}",
                     body=f"{intro}\n\n{_summary(request)}", data=data)

    return TaskType(
        name=full_name,
        description=action.description or f"{action.method} {action.path} on {spec.description or spec.name}",
        payload_model=model,
        channel="http",
        draft=draft,
        guardrails=(TargetHosts(),),
        # The connector's credential is the task's tenant's secret, for the connector's host.
        secret_refs=lambda _payload: {"auth.secret": (spec.auth.secret, spec.base_url)} if spec.auth.secret else {},
        guardrail_defaults=lambda _settings: {"allowed_hosts": None},
        default_mode=action.default_mode or spec.default_mode,
        # As http_request: soon, with 4xx answers never retried (followthrough/activities/transports/http.py).
        retry=RetrySpec(max_attempts=6, initial_interval_seconds=2, backoff_coefficient=2,
                        maximum_interval_seconds=120),
        send_timeout_seconds=MAX_TIMEOUT_SECONDS + 5,
    )
