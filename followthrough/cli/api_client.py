"""A small client for the HTTP API, used by the command line's tasks, decisions, definitions and schedules.

Each call answers the API's JSON or raises :class:`ApiFailure`, whose message
is meant for a person and whose ``exit_code`` is the command's: 1 when the API
answered with an error, 2 when it could not be reached at all.
"""

import getpass
import json as jsonlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from followthrough.config.settings import Settings, get_settings

API_PREFIX = "/api/v1"
# Decisions are Workflow Updates that the API gives 30 s to answer; wait a little longer than that.
TIMEOUT_SECONDS = 40.0
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


class ApiFailure(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# ---- where and who ----------------------------------------------------------

def api_url(explicit: str | None = None, settings: Settings | None = None) -> str:
    """--api, else FOLLOWTHROUGH_API_URL, else the API's own host and port from the settings."""
    url = explicit or os.environ.get("FOLLOWTHROUGH_API_URL")
    if not url:
        settings = settings or get_settings()
        host = "127.0.0.1" if settings.api_host in _ANY_ADDRESS else settings.api_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        url = f"http://{host}:{settings.api_port}"
    url = url.rstrip("/")
    return url.removesuffix(API_PREFIX)  # either form is accepted: http://host:8000 or …/api/v1


def actor_id(explicit: str | None = None) -> str | None:
    """--as, else FOLLOWTHROUGH_ACTOR, else the login name (None when there is none to be had)."""
    if explicit:
        return explicit
    if os.environ.get("FOLLOWTHROUGH_ACTOR"):
        return os.environ["FOLLOWTHROUGH_ACTOR"]
    try:
        return getpass.getuser() or None
    except Exception:  # noqa: BLE001 - no login name in this environment (KeyError or OSError)
        return None


def client(base_url: str, actor: str | None) -> httpx.Client:
    """With FOLLOWTHROUGH_API_KEY set, calls carry the key (and act as its user); without one,
    X-Actor-Id names the actor, which only a server with anonymous access accepts."""
    headers = {"X-Actor-Id": actor} if actor else {}
    if os.environ.get("FOLLOWTHROUGH_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['FOLLOWTHROUGH_API_KEY']}"
    return httpx.Client(base_url=base_url + API_PREFIX, headers=headers, timeout=TIMEOUT_SECONDS)


# ---- calls ------------------------------------------------------------------

def _path(task_id: str, suffix: str = "") -> str:
    return f"/tasks/{quote(task_id, safe='')}{suffix}"


def _call(http: httpx.Client, method: str, path: str, task_id: str, json: Any = None,
          params: dict[str, Any] | None = None) -> Any:
    base = str(http.base_url).rstrip("/").removesuffix(API_PREFIX)
    try:
        response = http.request(method, path, json=json, params=params)
    except httpx.TransportError as err:  # refused, unresolvable, timed out, cut off
        raise ApiFailure(f"cannot reach the API at {base} ({err or type(err).__name__})", exit_code=2) from err
    if response.status_code == 204:
        return None
    if response.is_success:
        try:
            return response.json()
        except ValueError as err:
            raise ApiFailure(f"{base} answered {response.status_code} without JSON; "
                             f"is that the followthrough API?") from err
    raise ApiFailure(error_message(response, task_id))


def approve(http: httpx.Client, task_id: str, *, comment: str | None = None, subject: str | None = None,
            body: str | None = None) -> dict[str, Any]:
    fields = {"comment": comment, "subject": subject, "body": body}
    return _call(http, "POST", _path(task_id, "/approve"), task_id,
                 json={k: v for k, v in fields.items() if v is not None})


def reject(http: httpx.Client, task_id: str, *, reason: str) -> dict[str, Any]:
    return _call(http, "POST", _path(task_id, "/reject"), task_id, json={"reason": reason})


def cancel(http: httpx.Client, task_id: str, *, reason: str | None = None) -> dict[str, Any]:
    return _call(http, "POST", _path(task_id, "/cancel"), task_id, json={"reason": reason} if reason else None)


def retry(http: httpx.Client, task_id: str) -> dict[str, Any]:
    return _call(http, "POST", _path(task_id, "/retry"), task_id)


def create_task(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    return _call(http, "POST", "/tasks", "", json=body)


def list_tasks(http: httpx.Client, **filters: Any) -> dict[str, Any]:
    return _call(http, "GET", "/tasks", "", params={k: v for k, v in filters.items() if v not in (None, [])})


def task_stats(http: httpx.Client, **filters: Any) -> dict[str, Any]:
    return _call(http, "GET", "/tasks/stats", "", params={k: v for k, v in filters.items() if v is not None})


def task_types(http: httpx.Client) -> list[dict[str, Any]]:
    return _call(http, "GET", "/task-types", "")["items"]


def get_task(http: httpx.Client, task_id: str) -> dict[str, Any]:
    return _call(http, "GET", _path(task_id), task_id)


def get_events(http: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    """All of a task's events, oldest first, page by page."""
    events: list[dict[str, Any]] = []
    while True:
        page = _call(http, "GET", _path(task_id, "/events"), task_id, params={"offset": len(events)})
        events.extend(page["items"])
        if page.get("next_offset") is None or not page["items"]:
            return events


# The stream sends a keep-alive every 15 s (FOLLOWTHROUGH_STREAM_KEEPALIVE_SECONDS): quiet for longer than this,
# it is taken as lost and resumed.
STREAM_READ_SECONDS = 60.0


class StreamLost(Exception):
    """The event stream could not be opened or was cut off; it can be resumed from the last message's id.
    ``answered``: the API answered (over a cap, 429 or 503) rather than being out of reach."""

    def __init__(self, message: str, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


@dataclass(frozen=True)
class StreamMessage:
    """One server-sent message: its ``event`` name, its JSON ``data``, the stream's last ``id`` (the cursor to
    resume after) and the reconnect delay in ms the stream asked for, if this message carried one."""

    event: str
    data: Any
    id: str | None
    retry: int | None = None


def task_stream(http: httpx.Client, task_id: str, last_event_id: str | None = None) -> Iterator[StreamMessage]:
    """``GET /tasks/{id}/stream`` message by message, after ``last_event_id`` when given (docs/api.md,
    "Live updates"). An error answer raises ApiFailure; an API out of reach or a cut stream, StreamLost."""
    base = str(http.base_url).rstrip("/").removesuffix(API_PREFIX)
    headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    try:
        with http.stream("GET", _path(task_id, "/stream"), headers=headers,
                         timeout=httpx.Timeout(TIMEOUT_SECONDS, read=STREAM_READ_SECONDS)) as response:
            if not response.is_success:
                response.read()
                if response.status_code in (429, 503):  # the API's stream caps: a place frees up shortly
                    raise StreamLost(error_message(response, task_id), answered=True)
                raise ApiFailure(error_message(response, task_id))
            yield from _messages(response.iter_lines(), base)
    except httpx.TransportError as err:
        raise StreamLost(f"cannot reach the API at {base} ({err or type(err).__name__})") from err


def _messages(lines: Iterable[str], base: str) -> Iterator[StreamMessage]:
    """The text/event-stream format: ``field: value`` lines, a blank line ending each message, ``:`` comments
    (the keep-alives). The last id seen carries over to the messages after it, as the format says."""
    event, data, last_id, retry = "", [], None, None
    for line in lines:
        if not line:
            if data or retry is not None:
                try:
                    value = jsonlib.loads("\n".join(data)) if data else None
                except ValueError as err:
                    raise ApiFailure(f"{base} streamed a message that is not JSON; is that the followthrough "
                                     f"API?") from err
                yield StreamMessage(event or "message", value, last_id, retry)
            event, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


def _definition_path(definition_id: str, suffix: str = "") -> str:
    return f"/definitions/{quote(definition_id, safe='')}{suffix}"


def list_definitions(http: httpx.Client, **filters: Any) -> dict[str, Any]:
    return _call(http, "GET", "/definitions", "", params={k: v for k, v in filters.items() if v is not None})


def get_definition(http: httpx.Client, definition_id: str) -> dict[str, Any]:
    return _call(http, "GET", _definition_path(definition_id), definition_id)


def run_definition(http: httpx.Client, definition_id: str, variables: dict[str, Any]) -> dict[str, Any]:
    return _call(http, "POST", _definition_path(definition_id, "/run"), definition_id, json={"variables": variables})


def definition_runs(http: httpx.Client, definition_id: str) -> dict[str, Any]:
    return _call(http, "GET", _definition_path(definition_id, "/runs"), definition_id)


def delete_definition(http: httpx.Client, definition_id: str) -> None:
    _call(http, "DELETE", _definition_path(definition_id), definition_id)


def schedule_action(http: httpx.Client, definition_id: str, action: str, note: str | None = None) -> dict[str, Any]:
    """pause, resume or trigger a definition's schedule; answers the schedule."""
    body = {"note": note} if note else None
    return _call(http, "POST", _definition_path(definition_id, f"/schedule/{action}"), definition_id, json=body)


def get_schedule(http: httpx.Client, definition_id: str) -> dict[str, Any]:
    return _call(http, "GET", _definition_path(definition_id, "/schedule"), definition_id)


def delete_schedule(http: httpx.Client, definition_id: str) -> None:
    _call(http, "DELETE", _definition_path(definition_id, "/schedule"), definition_id)


# ---- what a person reads ----------------------------------------------------

def error_message(response: httpx.Response, task_id: str) -> str:
    """The API's ``detail``: a sentence for 404/409/503, a list of field errors for 422."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if response.status_code == 404:
        return detail if isinstance(detail, str) and detail else f"task {task_id!r} not found"
    if response.status_code == 401:
        return f"{detail or 'the API needs a key'}; {_key_hint()}"
    if isinstance(detail, list):
        return "invalid input: " + "; ".join(_field_error(e) for e in detail)
    if isinstance(detail, str) and detail:
        return detail
    text = response.text.strip()[:200]
    return f"the API answered {response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")


def _key_hint() -> str:
    make = "make one with `followthrough keys create --tenant TENANT --user YOU --role submitter --role approver`"
    if os.environ.get("FOLLOWTHROUGH_API_KEY"):
        return f"the key in FOLLOWTHROUGH_API_KEY was refused: {make} and set FOLLOWTHROUGH_API_KEY to it"
    return f"set FOLLOWTHROUGH_API_KEY to an API key ({make}; docs/api.md, \"Keys and roles\")"


def _field_error(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    loc = [str(part) for part in error.get("loc", [])]
    if loc and loc[0] in {"body", "query", "path", "header"}:
        loc = loc[1:]
    message = error.get("msg", "invalid")
    return f"{'.'.join(loc)}: {message}" if loc else message


def decision_line(verb: str, answer: dict[str, Any]) -> str:
    """``approved 21c2…: in_progress (sending)``."""
    return f"{verb} {answer['id']}: {answer['status']} ({answer['stage']})"


def describe(task: dict[str, Any], events: list[dict[str, Any]]) -> str:
    lines = [f"{task['id']}  {task.get('type', '')}  {task.get('title', '')}".rstrip(),
             f"status:  {task['status']}  (stage: {task['stage']})"]
    if task.get("mode"):
        lines.append(f"mode:    {task['mode']}")
    if task.get("approval_deadline") and task["status"] == "awaiting_approval":
        lines.append(f"decide:  before {task['approval_deadline']}")
    draft = task.get("draft") or {}
    if draft:
        lines.append("draft:")
        if draft.get("to"):
            to = draft["to"]
            lines.append(f"  to:      {', '.join(to) if isinstance(to, list) else to}")
        if draft.get("subject") is not None:
            lines.append(f"  subject: {draft['subject']}")
        if draft.get("body") is not None:
            lines.append("  body:")
            lines.extend(f"    {line}".rstrip() for line in str(draft["body"]).splitlines() or [""])
    if task.get("error"):
        lines.append(f"error:   {task['error']}")
    if events:
        lines.append(f"last events ({len(events)}):")
        lines.extend(f"  {event_line(e)}" for e in events)
    return "\n".join(lines)


def event_line(event: dict[str, Any]) -> str:
    old, new = event.get("old_status"), event.get("new_status")
    change = f"{old} -> {new}" if old and new and old != new else (f"-> {new}" if new and not old else "")
    data = event.get("data") or {}
    note = next((f"{key}: {data[key]}" for key in ("comment", "reason", "error") if data.get(key)), "")
    parts = [str(event.get("occurred_at", ""))[:19].replace("T", " "), f"{event['type']:<25}", f"{change:<33}",
             event.get("actor_id") or "", note]
    return "  ".join(parts).rstrip()
