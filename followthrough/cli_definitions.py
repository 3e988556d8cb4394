"""``followthrough definitions ...`` and ``followthrough schedules ...``: task definitions and their
schedules from a shell, through the HTTP API (see followthrough/api_client.py)."""

import argparse
import json
from typing import Any

import httpx

from followthrough import api_client


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", metavar="URL",
                        help="the API's base URL (default: FOLLOWTHROUGH_API_URL, else http://API_HOST:API_PORT)")
    parser.add_argument("--as", dest="actor", metavar="ACTOR",
                        help="who acts (default: FOLLOWTHROUGH_ACTOR, else your login name)")


def definitions_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list definitions, newest first")
    listing.add_argument("--tenant", metavar="TENANT")
    listing.add_argument("--tag", metavar="TAG")
    listing.add_argument("--type", metavar="TYPE")
    for name, help_text in (("show", "a definition with its variables and schedule"),
                            ("runs", "the tasks a definition created, newest first"),
                            ("delete", "delete a definition (and its schedule)"),
                            ("run", "create a task from a definition")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("definition_id", metavar="DEFINITION_ID")
        if name == "show":
            action.add_argument("--json", action="store_true", help="print the definition as the API answers it")
        if name == "run":
            action.add_argument("--var", action="append", default=[], metavar="NAME=TEXT",
                                help="a variable's value as text (repeatable)")
            action.add_argument("--json-var", action="append", default=[], metavar="NAME=JSON",
                                help="a variable's value as JSON: a number, list or object (repeatable)")
    for action in actions.choices.values():
        _where(action)


def schedules_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (("show", "the schedule's state, next run times and recent runs"),
                            ("pause", "stop the schedule's runs until resumed"),
                            ("resume", "start the schedule's runs again"),
                            ("trigger", "run the schedule's action now"),
                            ("delete", "delete the schedule; the definition stays, without a cron")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("definition_id", metavar="DEFINITION_ID")
        if name in ("pause", "resume"):
            action.add_argument("--note", metavar="TEXT", help="why, kept with the schedule in Temporal")
        _where(action)


def variables(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair, as_json in [(p, False) for p in args.var] + [(p, True) for p in args.json_var]:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise api_client.ApiFailure(f"expected NAME=VALUE, got {pair!r}")
        try:
            found[name] = json.loads(value) if as_json else value
        except ValueError as err:
            raise api_client.ApiFailure(f"--json-var {name}: not JSON ({err})") from err
    return found


def definitions(args: argparse.Namespace, http: httpx.Client) -> str:
    if args.action == "list":
        page = api_client.list_definitions(http, tenant_id=args.tenant, tag=args.tag, type=args.type)
        lines = [_definition_line(d) for d in page["items"]]
        return "\n".join(lines + [f"({page['total']} in all)" if page["total"] > len(lines) else ""]).rstrip() \
            or "no definitions"
    if args.action == "show":
        definition = api_client.get_definition(http, args.definition_id)
        return json.dumps(definition, indent=2, ensure_ascii=False) if args.json else _describe(definition)
    if args.action == "runs":
        runs = api_client.definition_runs(http, args.definition_id)["items"]
        return "\n".join(f"{t['id']}  {t['status']:<17}  {t['trigger']:<10}  {t['created_at'][:19]}  {t['title']}"
                         for t in runs) or "no runs"
    if args.action == "run":
        created = api_client.run_definition(http, args.definition_id, variables(args))
        return f"created task {created['id']}: {created['status']} ({created['links']['self']})"
    api_client.delete_definition(http, args.definition_id)
    return f"deleted definition {args.definition_id}"


def schedules(args: argparse.Namespace, http: httpx.Client) -> str:
    if args.action == "delete":
        api_client.delete_schedule(http, args.definition_id)
        return f"deleted the schedule of definition {args.definition_id}"
    if args.action == "show":
        return _schedule_lines(api_client.get_schedule(http, args.definition_id))
    schedule = api_client.schedule_action(http, args.definition_id, args.action, getattr(args, "note", None))
    if args.action == "trigger":
        return (f"triggered {schedule['id']}; its task follows shortly "
                f"(followthrough definitions runs {args.definition_id})")
    return f"{'paused' if args.action == 'pause' else 'resumed'} {schedule['id']}\n{_schedule_lines(schedule)}"


def _definition_line(d: dict[str, Any]) -> str:
    schedule = d.get("schedule") or {}
    when = f"{d['cron']} ({d['timezone']}, {schedule.get('state', '')})" if d.get("cron") else "unscheduled"
    tags = f"  [{', '.join(d['tags'])}]" if d.get("tags") else ""
    return f"{d['id']}  {d['name']}  {d['type']}  {when}{tags}"


def _describe(d: dict[str, Any]) -> str:
    lines = [f"{d['id']}  {d['name']}  ({d['type']}, mode {d.get('mode') or 'the type default'}, "
             f"version {d['version']})"]
    if d.get("description"):
        lines.append(d["description"])
    if d.get("title"):
        lines.append(f"title:     {d['title']}")
    lines.append(f"variables: {', '.join(d['variables_used']) or 'none'}"
                 + (f" (required: {', '.join(d['variables_required'])})" if d["variables_required"] else ""))
    if d.get("tags"):
        lines.append(f"tags:      {', '.join(d['tags'])}")
    if d.get("schedule"):
        lines.append(_schedule_lines(d["schedule"]))
    return "\n".join(lines)


def _schedule_lines(s: dict[str, Any]) -> str:
    lines = [f"schedule:  {s['cron']} ({s['timezone']}), {s['state']}" + (f": {s['note']}" if s.get("note") else "")]
    if s.get("next_run_times") and not s.get("paused"):
        lines.append(f"next runs: {', '.join(t[:16].replace('T', ' ') + ' UTC' for t in s['next_run_times'][:3])}")
    return "\n".join(lines)
