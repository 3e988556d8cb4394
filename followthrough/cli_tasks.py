"""``followthrough tasks ...``, ``followthrough types`` and ``followthrough status``: tasks from a shell,
through the HTTP API (see followthrough/api_client.py). Readable tables by default, ``--json`` for the
API's own answer."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from followthrough import api_client
from followthrough.domain.lifecycle import TaskStatus

_STATUSES = [s.value for s in TaskStatus]


def where(parser: argparse.ArgumentParser, *, acts: bool = True) -> None:
    parser.add_argument("--api", metavar="URL",
                        help="the API's base URL (default: FOLLOWTHROUGH_API_URL, else http://API_HOST:API_PORT)")
    parser.add_argument("--json", action="store_true", help="print the API's answer as it is")
    if acts:
        parser.add_argument("--as", dest="actor", metavar="ACTOR",
                            help="who acts, under anonymous access (default: FOLLOWTHROUGH_ACTOR, else your login "
                                 "name); with FOLLOWTHROUGH_API_KEY the key's user acts")


def _action(actions: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    return actions.add_parser(name, help=help_text, description=help_text)


def tasks_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = _action(actions, "create", "create and start a task")
    create.add_argument("--type", required=True, metavar="TYPE", help="a task type (see `followthrough types`)")
    create.add_argument("--payload", required=True, metavar="JSON",
                        help="the payload as JSON, or @FILE to read it from a file (@- for stdin)")
    create.add_argument("--title", metavar="TEXT")
    create.add_argument("--mode", metavar="MODE", help="suggest, review, assisted, autonomous or manual")
    create.add_argument("--priority", metavar="PRIORITY", help="low, normal, high or urgent")
    create.add_argument("--subject-ref", metavar="TYPE:ID", help="what the task is about, e.g. INVOICE:INV-123")
    create.add_argument("--owner", metavar="TYPE:ID", help="who owns it, e.g. user:alice")
    create.add_argument("--source", metavar="NAME")
    create.add_argument("--due", metavar="WHEN", help="ISO 8601 time to start at, e.g. 2026-12-01T09:00:00Z")
    create.add_argument("--tenant", metavar="TENANT", help="under anonymous access; a key's tenant otherwise")
    create.add_argument("--idempotency-key", metavar="KEY", help="repeats with this key answer the first creation")

    listing = _action(actions, "list", "list tasks, newest first")
    listing.add_argument("--status", action="append", choices=_STATUSES, metavar="STATUS",
                         help="only tasks in this status (repeatable)")
    listing.add_argument("--type", metavar="TYPE")
    listing.add_argument("--subject-ref", metavar="TYPE:ID")
    listing.add_argument("--tenant", metavar="TENANT")
    listing.add_argument("--order", choices=["newest", "oldest", "priority", "due"], default="newest")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="how many (50; the API caps it)")
    listing.add_argument("--offset", type=int, default=0, metavar="N")

    show = _action(actions, "show", "a task's status, draft and last events")
    show.add_argument("--events", type=int, default=10, metavar="N", help="how many of the last events (10)")
    _action(actions, "events", "every event of a task, oldest first")
    approve = _action(actions, "approve", "approve a task waiting for a decision")
    approve.add_argument("--comment", metavar="TEXT")
    approve.add_argument("--subject", metavar="TEXT", help="replace the drafted subject")
    body = approve.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="replace the drafted body")
    body.add_argument("--body-file", metavar="PATH", help="replace the drafted body with a file's text (- for stdin)")
    reject = _action(actions, "reject", "reject a task waiting for a decision")
    reject.add_argument("--reason", metavar="TEXT", required=True)
    cancel = _action(actions, "cancel", "cancel a task that has not ended")
    cancel.add_argument("--reason", metavar="TEXT")
    _action(actions, "retry", "start a new run of a failed task")
    for name in ("show", "events", "approve", "reject", "cancel", "retry"):
        actions.choices[name].add_argument("task_id", metavar="TASK_ID")
    for action in actions.choices.values():
        where(action, acts=action.prog.split()[-1] not in ("list", "show", "events"))


def types_arguments(parser: argparse.ArgumentParser) -> None:
    where(parser, acts=False)


def status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", metavar="TENANT", help="under anonymous access; a key's tenant otherwise")
    parser.add_argument("--type", metavar="TYPE", help="only tasks of this type")
    where(parser, acts=False)


# ---- running them -----------------------------------------------------------

def tasks(args: argparse.Namespace, http: httpx.Client) -> str:
    return _ACTIONS[args.action](args, http)


def types(args: argparse.Namespace, http: httpx.Client) -> str:
    found = api_client.task_types(http)
    if args.json:
        return _json(found)
    return table(["TYPE", "CHANNEL", "MODE", "DESCRIPTION"],
                 [[t["name"], t["channel"], t["default_mode"], _first_line(t["description"])] for t in found])


def status(args: argparse.Namespace, http: httpx.Client) -> str:
    stats = api_client.task_stats(http, tenant_id=args.tenant, type=args.type)
    if args.json:
        return _json(stats)
    rows = [[name, str(count)] for name, count in stats["counts"].items()]
    lines = [table(["STATUS", "TASKS"], rows + [["total", str(stats["total"])]])]
    oldest = stats.get("oldest_awaiting_approval")
    if oldest:
        lines.append(f"\noldest waiting approval: {oldest['task_id']}  {oldest['title']}  "
                     f"({oldest['type']}, waiting {_age(oldest['waiting_seconds'])} since "
                     f"{_when(oldest['requested_at'])})")
    else:
        lines.append("\nno task is waiting for approval")
    return "\n".join(lines)


def _create(args: argparse.Namespace, http: httpx.Client) -> str:
    body: dict[str, Any] = {"type": args.type, "payload": _payload(args.payload)}
    for name, value in (("title", args.title), ("mode", args.mode), ("priority", args.priority),
                        ("source", args.source), ("due_at", args.due), ("tenant_id", args.tenant)):
        if value is not None:
            body[name] = value
    if args.subject_ref:
        body["subject_ref_type"], body["subject_ref_id"] = _pair("--subject-ref", args.subject_ref)
    if args.owner:
        body["owner_type"], body["owner_id"] = _pair("--owner", args.owner)
    if args.idempotency_key:
        http.headers["Idempotency-Key"] = args.idempotency_key
    created = api_client.create_task(http, body)
    return _json(created) if args.json else f"created {created['id']}: {created['status']}"


def _list(args: argparse.Namespace, http: httpx.Client) -> str:
    subject_type, subject_id = _pair("--subject-ref", args.subject_ref) if args.subject_ref else (None, None)
    page = api_client.list_tasks(http, status=args.status, type=args.type, tenant_id=args.tenant,
                                 subject_ref_type=subject_type, subject_ref_id=subject_id, order=args.order,
                                 limit=args.limit, offset=args.offset)
    if args.json:
        return _json(page)
    if not page["items"]:
        return "no tasks"
    rows = [[t["id"], t["status"], t["stage"], t["type"], t.get("mode") or "", _when(t["created_at"]), t["title"]]
            for t in page["items"]]
    shown = f"{page['offset'] + 1}-{page['offset'] + len(rows)} of {page['total']}"
    more = f"; next: --offset {page['next_offset']}" if page.get("next_offset") is not None else ""
    return table(["ID", "STATUS", "STAGE", "TYPE", "MODE", "CREATED", "TITLE"], rows) + f"\n({shown}{more})"


def _show(args: argparse.Namespace, http: httpx.Client) -> str:
    task = api_client.get_task(http, args.task_id)
    if args.json:
        return _json(task)
    events = api_client.get_events(http, args.task_id) if args.events > 0 else []
    return api_client.describe(task, events[-args.events:] if args.events > 0 else [])


def _events(args: argparse.Namespace, http: httpx.Client) -> str:
    events = api_client.get_events(http, args.task_id)
    if args.json:
        return _json(events)
    rows = []
    for e in events:
        old, new = e.get("old_status"), e.get("new_status")
        change = f"{old} -> {new}" if old and new else (f"-> {new}" if new else "")
        data = e.get("data") or {}
        note = next((f"{k}: {data[k]}" for k in ("comment", "reason", "error", "message") if data.get(k)), "")
        rows.append([_when(e["occurred_at"]), e["type"], change, e.get("actor_id") or "", note])
    return table(["WHEN", "EVENT", "STATUS", "ACTOR", "NOTE"], rows) if rows else "no events"


def _decision(verb: str):  # noqa: ANN202 - an action
    def run(args: argparse.Namespace, http: httpx.Client) -> str:
        if verb == "approved":
            answer = api_client.approve(http, args.task_id, comment=args.comment, subject=args.subject,
                                        body=read_body(args))
        elif verb == "rejected":
            answer = api_client.reject(http, args.task_id, reason=args.reason)
        else:
            answer = api_client.cancel(http, args.task_id, reason=args.reason)
        return _json(answer) if args.json else api_client.decision_line(verb, answer)
    return run


def _retry(args: argparse.Namespace, http: httpx.Client) -> str:
    answer = api_client.retry(http, args.task_id)
    return _json(answer) if args.json else f"retrying {answer['id']}: {answer['status']}"


_ACTIONS = {"create": _create, "list": _list, "show": _show, "events": _events, "approve": _decision("approved"),
            "reject": _decision("rejected"), "cancel": _decision("cancelled"), "retry": _retry}


# ---- input and output -------------------------------------------------------

def read_body(args: argparse.Namespace) -> str | None:
    if args.body_file is None:
        return args.body
    try:
        return sys.stdin.read() if args.body_file == "-" else Path(args.body_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise api_client.ApiFailure(f"cannot read --body-file {args.body_file}: {err}", exit_code=2) from err


def _payload(value: str) -> Any:
    source = "--payload"
    if value.startswith("@"):
        source = value[1:]
        try:
            value = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise api_client.ApiFailure(f"cannot read the payload from {source}: {err}", exit_code=2) from err
    try:
        return json.loads(value)
    except ValueError as err:
        raise api_client.ApiFailure(f"{source} is not JSON: {err}", exit_code=2) from err


def _pair(option: str, value: str) -> tuple[str, str]:
    kind, sep, ident = value.partition(":")
    if not sep or not kind or not ident:
        raise api_client.ApiFailure(f"{option} takes TYPE:ID, got {value!r}", exit_code=2)
    return kind, ident


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns aligned to their widest cell; the last one runs free."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers) - 1)]
    return "\n".join("  ".join([str(cell).ljust(width) for cell, width in zip(row, widths)] + [str(row[-1])]).rstrip()
                     for row in [headers, *rows])


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


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
