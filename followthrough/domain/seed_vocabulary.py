"""The vocabulary of the systems followthrough replaces (docs/api.md: Calls of the systems followthrough
replaces), mapped onto ours in one place: their status, mode and type names, the fields of their task bodies
and the query parameters of their lists. The API applies it (followthrough/api/query_check.py for query
strings, followthrough/services/requests.py for bodies); what has no equivalent is answered with a 4xx that
says what to send instead."""

from typing import Any

# Modes: the seeds' names for who acts (TaskMode.parse takes these besides our own, case-insensitively).
MODE_ALIASES: dict[str, str] = {
    "suggestion": "suggest",
    "semi_automated": "review",
    "fully_automated": "autonomous",
    "automatic": "autonomous",
}

# Task types: the seeds' names for ours. A type is also found by its name in any case (INVOICE_FOLLOW_UP).
TYPE_ALIASES: dict[str, str] = {
    "api_call": "http_request",
    "browser_automation": "browser",
    "data_extraction": "extract",
    "report_generation": "report",
}

# Fields of a task body (POST /tasks) under the seeds' names; camelCase of our own names is accepted anyway.
BODY_ALIASES: dict[str, str] = {
    "executionType": "mode", "execution_type": "mode",
    "scheduledFor": "due_at", "scheduled_for": "due_at",
    "taskType": "type", "task_type": "type",
    "executionConfig": "payload", "execution_config": "payload",
}

# Fields of a task body that mean nothing here, with what to send instead.
BODY_REFUSALS: dict[str, str] = {
    "assignedToBot": "not needed: the mode says who acts (manual: a person; otherwise followthrough); drop it",
    "requiresHumanReview": "send mode: review to hold every send for approval (assisted: only when a guardrail "
                           "flags risk); drop requiresHumanReview",
    "prompt_template": "a template with {{variables}} is a task definition: POST /api/v1/definitions with name, "
                       "type and a payload holding the {{variables}}, then POST /api/v1/definitions/{id}/run",
}

# A task type's payload fields under the seeds' names (seed 004's executionConfig of an api_call).
PAYLOAD_ALIASES: dict[str, dict[str, str]] = {
    "http_request": {"apiEndpoint": "url", "apiMethod": "method", "timeout": "timeout_seconds"},
}

_SECRET_AUTH = ('send auth: {"type": "bearer" | "api_key" | "basic", "secret": "<name of a task secret>"}; '
                'credentials are never sent in a task')
PAYLOAD_REFUSALS: dict[str, dict[str, str]] = {
    "http_request": {"authType": _SECRET_AUTH, "bearerToken": _SECRET_AUTH, "apiKey": _SECRET_AUTH,
                     "basicAuth": _SECRET_AUTH},
}

# Query parameters under the seeds' names, for the parameter each one stands for: used on a route that
# takes that parameter. camelCase spellings of a route's own parameters (ownerId) are taken as well.
QUERY_ALIASES: dict[str, str] = {
    "before": "due_before",
    "after": "due_after",
    "agent_id": "owner_id",
    "task_type": "type",
    "tags": "tag",
    "is_scheduled": "scheduled",
}
# Aliases whose value may list several, comma-separated (tags=a,b), and that mean "no filter" when empty
# (seed 003 sends ?tags=&is_scheduled=).
QUERY_LISTS = frozenset({"tags"})

# Parameters of the seeds that some other route of ours takes: named in the 422 of a route that does not.
QUERY_HINTS: dict[str, str] = {
    "tags": "tags filter task definitions: GET /api/v1/definitions?tags=...",
    "is_scheduled": "is_scheduled filters task definitions: GET /api/v1/definitions?is_scheduled=true",
    "scheduled": "scheduled filters task definitions: GET /api/v1/definitions?scheduled=true",
}


def canonical_type_name(name: str) -> str:
    """A seed's type name as ours would spell it (lower case, aliases applied); not checked against the
    registry."""
    key = name.strip().lower()
    return TYPE_ALIASES.get(key, key)


def task_body(data: Any) -> Any:
    """A task body with the seeds' field names renamed to ours; a ValueError says what to send instead
    of a field with no equivalent, or which of two names for one field to keep."""
    if not isinstance(data, dict):
        return data
    for field, why in BODY_REFUSALS.items():
        if field in data:
            raise ValueError(f"{field}: {why}")
    renamed = dict(data)
    for seed_name, ours in BODY_ALIASES.items():
        if seed_name not in renamed:
            continue
        taken = [n for n in (ours, _camel(ours)) if n in renamed]
        if taken:
            raise ValueError(f"{seed_name} and {taken[0]} name the same field ({ours}); send one of them")
        value = renamed.pop(seed_name)
        renamed[ours] = value
    payload, type_name = renamed.get("payload"), renamed.get("type")
    if isinstance(payload, dict) and isinstance(type_name, str):
        renamed["payload"] = _payload(canonical_type_name(type_name), payload)
    return renamed


def _payload(type_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    for field, why in PAYLOAD_REFUSALS.get(type_name, {}).items():
        if field in payload:
            raise ValueError(f"payload.{field}: {why}")
    aliases = PAYLOAD_ALIASES.get(type_name, {})
    if not any(name in payload for name in aliases):
        return payload
    out = dict(payload)
    for seed_name, ours in aliases.items():
        if seed_name in out:
            if ours in out:
                raise ValueError(f"payload.{seed_name} and payload.{ours} name the same field; send one of them")
            out[ours] = out.pop(seed_name)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
