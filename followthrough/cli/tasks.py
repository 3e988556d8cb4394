"""``followthrough tasks ...``, ``types`` and ``status``: tasks and their decisions from a shell, through the HTTP
API (followthrough/cli/api_client.py). Readable tables by default, ``--json`` for the API's own answer."""

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from followthrough.cli import api_client
from followthrough.cli.common import (STATUS_STYLES, Actor, ApiUrl, AsJson, api, fail, one_of, print_json,
                                      print_table, when)
from followthrough.domain.lifecycle import Priority, TaskMode, TaskStatus

app = typer.Typer(no_args_is_help=True, help="Create, list, show, follow and decide tasks, through the HTTP API.")

TaskId = Annotated[str, typer.Argument(metavar="TASK_ID", help="the task's id")]


class Order(StrEnum):  # the API's TaskOrder (followthrough/services/task_queries.py), without importing the API here
    NEWEST = "newest"
    OLDEST = "oldest"
    PRIORITY = "priority"
    DUE = "due"


def _mode(value: str) -> str:
    """The API takes older systems' names for a mode too, in any case (TaskMode.parse): so does the option."""
    return TaskMode.parse(value).value


# ---- creating and listing -------------------------------------------------------

@app.command(rich_help_panel="Tasks")
def create(
    task_type: Annotated[str, typer.Option("--type", metavar="TYPE", help="a task type (see `followthrough types`)")],
    payload: Annotated[str, typer.Option(
        "--payload", metavar="JSON", help="the payload as JSON, or @FILE to read it from a file (@- for stdin)")],
    title: Annotated[str | None, typer.Option("--title", metavar="TEXT")] = None,
    mode: Annotated[str | None, typer.Option("--mode", parser=_mode, metavar="MODE", help=(
        f"{one_of(TaskMode)} (default: the type's)"))] = None,
    priority: Annotated[Priority | None, typer.Option(
        "--priority", metavar="PRIORITY", case_sensitive=False, help=f"{one_of(Priority)} (default: normal)")] = None,
    subject_ref: Annotated[str | None, typer.Option(
        "--subject-ref", metavar="TYPE:ID", help="what the task is about, e.g. INVOICE:INV-123")] = None,
    owner: Annotated[str | None, typer.Option(
        "--owner", metavar="TYPE:ID", help="who owns it, e.g. user:alice")] = None,
    source: Annotated[str | None, typer.Option("--source", metavar="NAME")] = None,
    due: Annotated[str | None, typer.Option(
        "--due", metavar="WHEN", help="ISO 8601 time to start at, e.g. 2026-12-01T09:00:00Z")] = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="under anonymous access; a key's tenant otherwise")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", metavar="KEY", help="repeats with this key answer the first creation")] = None,
    url: ApiUrl = None, as_json: AsJson = False, actor: Actor = None,
) -> None:
    """Create and start a task."""
    body: dict[str, Any] = {"type": task_type, "payload": _payload(payload)}
    for name, value in (("title", title), ("mode", mode), ("priority", priority and priority.value),
                        ("source", source), ("due_at", due), ("tenant_id", tenant)):
        if value is not None:
            body[name] = value
    if subject_ref:
        body["subject_ref_type"], body["subject_ref_id"] = _pair("--subject-ref", subject_ref)
    if owner:
        body["owner_type"], body["owner_id"] = _pair("--owner", owner)
    with api(url, actor) as http:
        if idempotency_key:
            http.headers["Idempotency-Key"] = idempotency_key
        created = api_client.create_task(http, body)
    if as_json:
        print_json(created)
    else:
        print(f"created {created['id']}: {created['status']}")


@app.command("list", rich_help_panel="Tasks")
def listing(
    status: Annotated[list[TaskStatus] | None, typer.Option(
        "--status", metavar="STATUS", help=f"only tasks in this status (repeatable): {one_of(TaskStatus)}")] = None,
    task_type: Annotated[str | None, typer.Option("--type", metavar="TYPE")] = None,
    subject_ref: Annotated[str | None, typer.Option("--subject-ref", metavar="TYPE:ID")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", metavar="TENANT")] = None,
    order: Annotated[Order, typer.Option("--order", metavar="ORDER", help=one_of(Order))] = Order.NEWEST,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="how many (the API caps it)")] = 50,
    offset: Annotated[int, typer.Option("--offset", metavar="N")] = 0,
    url: ApiUrl = None, as_json: AsJson = False,
) -> None:
    """List tasks, newest first."""
    subject_type, subject_id = _pair("--subject-ref", subject_ref) if subject_ref else (None, None)
    with api(url) as http:
        page = api_client.list_tasks(http, status=[s.value for s in status or []], type=task_type, tenant_id=tenant,
                                     subject_ref_type=subject_type, subject_ref_id=subject_id, order=order.value,
                                     limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        print("no tasks")
        return
    rows = [[t["id"], t["status"], t["stage"], t["type"], t.get("mode") or "", when(t["created_at"]), t["title"]]
            for t in page["items"]]
    print_table(["ID", "STATUS", "STAGE", "TYPE", "MODE", "CREATED", "TITLE"], rows,
                styles={"STATUS": STATUS_STYLES})
    more = f"; next: --offset {page['next_offset']}" if page.get("next_offset") is not None else ""
    print(f"({page['offset'] + 1}-{page['offset'] + len(rows)} of {page['total']}{more})")


# ---- one task -------------------------------------------------------------------

@app.command(rich_help_panel="Tasks")
def show(
    task_id: TaskId,
    events: Annotated[int, typer.Option("--events", metavar="N", help="how many of the last events")] = 10,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="then print each new event as it happens, until the task ends (or Ctrl-C); with "
                               "--json, one JSON object a line: the task, then its new events")] = False,
    url: ApiUrl = None, as_json: AsJson = False,
) -> None:
    """A task's status, draft and last events; with --follow, then its new events as they happen."""
    with api(url) as http:
        task = api_client.get_task(http, task_id)
        history = api_client.get_events(http, task_id) if events > 0 or follow else []
        if as_json:
            print_json(task, compact=follow)
        else:
            print(api_client.describe(task, history[-events:] if events > 0 else []), flush=True)
        if follow:
            try:
                _follow(http, task_id, {e["id"] for e in history}, as_json)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None


# How long a stream that went away may stay out of reach before --follow gives up.
_LOST_STREAM_SECONDS = 60.0


def _follow(http: httpx.Client, task_id: str, shown: set[str], as_json: bool) -> None:
    """Print the task's new events from its event stream until the stream says the task has ended. The stream
    starts with the events so far, whose ids ``shown`` holds (they are skipped); across a lost connection it
    resumes after the last message received (Last-Event-ID), as the API's stream allows."""
    def emit(event: dict[str, Any]) -> None:
        printed.add(event["id"])
        if as_json:
            print_json(event, compact=True)
        else:
            print(f"  {api_client.event_line(event)}", flush=True)

    printed: set[str] = set()
    cursor: str | None = None  # the last message's id: until one comes, nothing has been printed
    delay, connected, lost_since = 2.0, False, None
    if not as_json and sys.stderr.isatty():
        print("following its events until it ends (Ctrl-C to stop) ...", file=sys.stderr, flush=True)
    while True:
        try:
            for message in api_client.task_stream(http, task_id, cursor):
                connected, lost_since = True, None
                delay = message.retry / 1000 if message.retry is not None else delay
                cursor = message.id or cursor
                if message.event == "task_event" and message.data["id"] not in shown:
                    emit(message.data)
                elif message.event == "reset":  # resumed too far back: what was missed comes from the list
                    for event in api_client.get_events(http, task_id):
                        if event["id"] not in shown and event["id"] not in printed:
                            emit(event)
                elif message.event == "end":
                    if "status" not in message.data:  # the stream's key was revoked
                        fail(message.data.get("reason", "the stream ended"))
                    if not as_json:
                        print(f"ended: {message.data['status']}", flush=True)
                    return
        except api_client.StreamLost as lost:
            if not connected:  # as for any other call: the API's refusal (exit 1), or out of reach (2)
                raise api_client.ApiFailure(str(lost), exit_code=1 if lost.answered else 2) from lost
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > _LOST_STREAM_SECONDS:
                raise api_client.ApiFailure(f"{lost}; gave up after {_LOST_STREAM_SECONDS:.0f}s",
                                            exit_code=2) from lost
        time.sleep(delay)  # the stream's own reconnect delay (its retry: field)


@app.command(rich_help_panel="Tasks")
def events(task_id: TaskId, url: ApiUrl = None, as_json: AsJson = False) -> None:
    """Every event of a task, oldest first."""
    with api(url) as http:
        found = api_client.get_events(http, task_id)
    if as_json:
        print_json(found)
        return
    if not found:
        print("no events")
        return
    rows = []
    for e in found:
        old, new = e.get("old_status"), e.get("new_status")
        change = f"{old} -> {new}" if old and new else (f"-> {new}" if new else "")
        data = e.get("data") or {}
        note = next((f"{k}: {data[k]}" for k in ("comment", "reason", "error", "message") if data.get(k)), "")
        rows.append([when(e["occurred_at"]), e["type"], change, e.get("actor_id") or "", note])
    print_table(["WHEN", "EVENT", "STATUS", "ACTOR", "NOTE"], rows)


@app.command(rich_help_panel="Tasks")
def cancel(task_id: TaskId, reason: Annotated[str | None, typer.Option("--reason", metavar="TEXT")] = None,
           url: ApiUrl = None, as_json: AsJson = False, actor: Actor = None) -> None:
    """Cancel a task that has not ended."""
    with api(url, actor) as http:
        _decided("cancelled", api_client.cancel(http, task_id, reason=reason), as_json)


@app.command(rich_help_panel="Tasks")
def retry(task_id: TaskId, url: ApiUrl = None, as_json: AsJson = False, actor: Actor = None) -> None:
    """Start a new run of a failed task."""
    with api(url, actor) as http:
        answer = api_client.retry(http, task_id)
    if as_json:
        print_json(answer)
    else:
        print(f"retrying {answer['id']}: {answer['status']}")


# ---- decisions --------------------------------------------------------------------

@app.command(rich_help_panel="Approvals")
def approve(
    task_id: TaskId,
    comment: Annotated[str | None, typer.Option("--comment", metavar="TEXT")] = None,
    subject: Annotated[str | None, typer.Option(
        "--subject", metavar="TEXT", help="replace the drafted subject")] = None,
    body: Annotated[str | None, typer.Option("--body", metavar="TEXT", help="replace the drafted body")] = None,
    body_file: Annotated[str | None, typer.Option(
        "--body-file", metavar="PATH", help="replace the drafted body with a file's text (- for stdin)")] = None,
    url: ApiUrl = None, as_json: AsJson = False, actor: Actor = None,
) -> None:
    """Approve a task waiting for a decision."""
    if body is not None and body_file is not None:
        raise typer.BadParameter("not allowed with --body", param_hint="--body-file")
    text = body if body_file is None else _read("--body-file", body_file)
    with api(url, actor) as http:
        _decided("approved", api_client.approve(http, task_id, comment=comment, subject=subject, body=text),
                 as_json)


@app.command(rich_help_panel="Approvals")
def reject(task_id: TaskId, reason: Annotated[str, typer.Option("--reason", metavar="TEXT")],
           url: ApiUrl = None, as_json: AsJson = False, actor: Actor = None) -> None:
    """Reject a task waiting for a decision."""
    with api(url, actor) as http:
        _decided("rejected", api_client.reject(http, task_id, reason=reason), as_json)


def _decided(verb: str, answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer)
    else:
        print(api_client.decision_line(verb, answer))


# ---- types and status (top-level commands) -----------------------------------------

def types(url: ApiUrl = None, as_json: AsJson = False) -> None:
    """The task types the engine runs, through the HTTP API."""
    with api(url) as http:
        found = api_client.task_types(http)
    if as_json:
        print_json(found)
        return
    print_table(["TYPE", "CHANNEL", "MODE", "DESCRIPTION"],
                [[t["name"], t["channel"], t["default_mode"], _first_line(t["description"])] for t in found])


def status(
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="under anonymous access; a key's tenant otherwise")] = None,
    task_type: Annotated[str | None, typer.Option("--type", metavar="TYPE", help="only tasks of this type")] = None,
    url: ApiUrl = None, as_json: AsJson = False,
) -> None:
    """How many tasks are in each status, and the oldest waiting approval, through the HTTP API."""
    with api(url) as http:
        stats = api_client.task_stats(http, tenant_id=tenant, type=task_type)
    if as_json:
        print_json(stats)
        return
    rows = [[name, str(count)] for name, count in stats["counts"].items()]
    print_table(["STATUS", "TASKS"], rows + [["total", str(stats["total"])]], right=["TASKS"],
                styles={"STATUS": STATUS_STYLES})
    oldest = stats.get("oldest_awaiting_approval")
    if oldest:
        print(f"\noldest waiting approval: {oldest['task_id']}  {oldest['title']}  "
              f"({oldest['type']}, waiting {_age(oldest['waiting_seconds'])} since "
              f"{when(oldest['requested_at'])})")
    else:
        print("\nno task is waiting for approval")


# ---- input --------------------------------------------------------------------------

def _read(source: str, path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read {source} {path}: {err}", 2)


def _payload(value: str) -> Any:
    source = "--payload"
    if value.startswith("@"):
        source = value[1:]
        value = _read("the payload from", source)
    try:
        return json.loads(value)
    except ValueError as err:
        fail(f"{source} is not JSON: {err}", 2)


def _pair(option: str, value: str) -> tuple[str, str]:
    kind, sep, ident = value.partition(":")
    if not sep or not kind or not ident:
        fail(f"{option} takes TYPE:ID, got {value!r}", 2)
    return kind, ident


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
