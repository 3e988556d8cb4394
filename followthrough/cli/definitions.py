"""``followthrough definitions ...`` and ``followthrough schedules ...``: task definitions and their schedules
from a shell, through the HTTP API (followthrough/cli/api_client.py)."""

import json
from typing import Annotated, Any

import typer

from followthrough.cli import api_client
from followthrough.cli.common import STATUS_STYLES, Actor, ApiUrl, api, fail, print_json, print_table, when

definitions = typer.Typer(no_args_is_help=True,
                          help="List, show, run or delete task definitions, through the HTTP API.")
schedules = typer.Typer(no_args_is_help=True,
                        help="Show, pause, resume, trigger or delete a definition's schedule, through the HTTP API.")

DefinitionId = Annotated[str, typer.Argument(metavar="DEFINITION_ID", help="the definition's id")]
Note = Annotated[str | None, typer.Option("--note", metavar="TEXT", help="why, kept with the schedule in Temporal")]


@definitions.command("list")
def listing(tenant: Annotated[str | None, typer.Option("--tenant", metavar="TENANT")] = None,
            tag: Annotated[str | None, typer.Option("--tag", metavar="TAG")] = None,
            task_type: Annotated[str | None, typer.Option("--type", metavar="TYPE")] = None,
            url: ApiUrl = None, actor: Actor = None) -> None:
    """List definitions, newest first."""
    with api(url, actor) as http:
        page = api_client.list_definitions(http, tenant_id=tenant, tag=tag, type=task_type)
    if not page["items"]:
        print("no definitions")
        return
    print_table(["ID", "NAME", "TYPE", "SCHEDULE", "TAGS"],
                [[d["id"], d["name"], d["type"], _when(d), ", ".join(d.get("tags") or [])] for d in page["items"]])
    if page["total"] > len(page["items"]):
        print(f"({page['total']} in all)")


@definitions.command()
def show(definition_id: DefinitionId,
         as_json: Annotated[bool, typer.Option("--json", help="print the definition as the API answers it")] = False,
         url: ApiUrl = None, actor: Actor = None) -> None:
    """A definition with its variables and schedule."""
    with api(url, actor) as http:
        definition = api_client.get_definition(http, definition_id)
    if as_json:
        print_json(definition)
    else:
        print(_describe(definition))


@definitions.command()
def runs(definition_id: DefinitionId, url: ApiUrl = None, actor: Actor = None) -> None:
    """The tasks a definition created, newest first."""
    with api(url, actor) as http:
        found = api_client.definition_runs(http, definition_id)["items"]
    if not found:
        print("no runs")
        return
    print_table(["ID", "STATUS", "TRIGGER", "CREATED", "TITLE"],
                [[t["id"], t["status"], t["trigger"], when(t["created_at"]), t["title"]] for t in found],
                styles={"STATUS": STATUS_STYLES})


@definitions.command()
def run(definition_id: DefinitionId,
        var: Annotated[list[str] | None, typer.Option(
            "--var", metavar="NAME=TEXT", help="a variable's value as text (repeatable)")] = None,
        json_var: Annotated[list[str] | None, typer.Option(
            "--json-var", metavar="NAME=JSON", help="a variable's value as JSON: a number, list or object "
                                                    "(repeatable)")] = None,
        url: ApiUrl = None, actor: Actor = None) -> None:
    """Create a task from a definition."""
    values = _variables(var or [], json_var or [])
    with api(url, actor) as http:
        created = api_client.run_definition(http, definition_id, values)
    print(f"created task {created['id']}: {created['status']} ({created['links']['self']})")


@definitions.command()
def delete(definition_id: DefinitionId, url: ApiUrl = None, actor: Actor = None) -> None:
    """Delete a definition (and its schedule)."""
    with api(url, actor) as http:
        api_client.delete_definition(http, definition_id)
    print(f"deleted definition {definition_id}")


@schedules.command("show")
def schedule_show(definition_id: DefinitionId, url: ApiUrl = None, actor: Actor = None) -> None:
    """The schedule's state, next run times and recent runs."""
    with api(url, actor) as http:
        print(_schedule_lines(api_client.get_schedule(http, definition_id)))


@schedules.command()
def pause(definition_id: DefinitionId, note: Note = None, url: ApiUrl = None, actor: Actor = None) -> None:
    """Stop the schedule's runs until resumed."""
    with api(url, actor) as http:
        schedule = api_client.schedule_action(http, definition_id, "pause", note)
    print(f"paused {schedule['id']}\n{_schedule_lines(schedule)}")


@schedules.command()
def resume(definition_id: DefinitionId, note: Note = None, url: ApiUrl = None, actor: Actor = None) -> None:
    """Start the schedule's runs again."""
    with api(url, actor) as http:
        schedule = api_client.schedule_action(http, definition_id, "resume", note)
    print(f"resumed {schedule['id']}\n{_schedule_lines(schedule)}")


@schedules.command()
def trigger(definition_id: DefinitionId, url: ApiUrl = None, actor: Actor = None) -> None:
    """Run the schedule's action now."""
    with api(url, actor) as http:
        schedule = api_client.schedule_action(http, definition_id, "trigger")
    print(f"triggered {schedule['id']}; its task follows shortly (followthrough definitions runs {definition_id})")


@schedules.command("delete")
def schedule_delete(definition_id: DefinitionId, url: ApiUrl = None, actor: Actor = None) -> None:
    """Delete the schedule; the definition stays, without a cron."""
    with api(url, actor) as http:
        api_client.delete_schedule(http, definition_id)
    print(f"deleted the schedule of definition {definition_id}")


def _variables(texts: list[str], jsons: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair, as_json in [(p, False) for p in texts] + [(p, True) for p in jsons]:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"expected NAME=VALUE, got {pair!r}")
        try:
            found[name] = json.loads(value) if as_json else value
        except ValueError as err:
            fail(f"--json-var {name}: not JSON ({err})")
    return found


def _when(d: dict[str, Any]) -> str:
    schedule = d.get("schedule") or {}
    return f"{d['cron']} ({d['timezone']}, {schedule.get('state', '')})" if d.get("cron") else "unscheduled"


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
