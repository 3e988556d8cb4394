"""The ``followthrough`` command line."""

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from followthrough import api_client, cli_definitions, cli_tasks, key_commands, logs, temporal_commands, worker_health
from followthrough.principals import ANONYMOUS_WARNING, is_loopback
from followthrough.settings import get_settings, read_dev_stack_file
from followthrough.temporal_client import TemporalConnectionError
from followthrough.tracing import TracingUnavailable


def _codec_problem(command: str) -> str | None:
    """Why the payload codec cannot be built from the settings, said before anything starts."""
    from followthrough.codec_keys import codec_for
    from followthrough.secrets import SecretNotFound

    try:
        codec_for(get_settings())
    except (RuntimeError, SecretNotFound, ValueError) as err:
        return f"followthrough {command}: {err}"
    return None


def _link_key_problem(command: str) -> str | None:
    """Why the approval-link key named in the settings cannot be read, said before anything starts."""
    from followthrough.approval_links import signing_key
    from followthrough.secrets import SecretNotFound

    settings = get_settings()
    if not settings.approval_link_secret:
        return None
    try:
        signing_key(settings)
    except (SecretNotFound, ValueError) as err:
        return f"followthrough {command}: {err}"
    return None


def _tracing_problem(command: str) -> str | None:
    """Tracing asked for without the packages it needs, said before anything starts. Otherwise tracing starts
    here (when on), before any connection, under the service name of the command."""
    from followthrough.tracing import TracingUnavailable, configure

    try:
        configure(get_settings(), f"followthrough-{command}")
    except TracingUnavailable as err:
        return f"followthrough {command}: {err}"
    return None


def _run_worker() -> int:
    from followthrough.worker import run_worker

    if problem := _codec_problem("worker") or _link_key_problem("worker") or _tracing_problem("worker"):
        print(problem, file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(get_settings(), stop)

    run_event_loop(main())
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed: the worker spends much of its time in the event loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _run_api() -> int:
    import uvicorn

    from followthrough.api.main import create_app

    settings = get_settings()
    if settings.anonymous_access:
        if not is_loopback(settings.api_host):
            print(f"followthrough api: anonymous access is only allowed on 127.0.0.1, not on {settings.api_host}; "
                  f"create API keys with `followthrough keys create`", file=sys.stderr)
            return 2
        print(ANONYMOUS_WARNING, file=sys.stderr, flush=True)
    if problem := _codec_problem("api") or _link_key_problem("api") or _tracing_problem("api"):
        print(problem, file=sys.stderr)
        return 2
    # log_config=None: uvicorn's records go to the handler followthrough.logs configured, in its format.
    from followthrough import render_pool
    from followthrough.temporal_client import connect

    asyncio.run(connect(settings))  # an unreachable Temporal is one line here, not a failed lifespan's traceback
    try:
        uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info",
                    log_config=None)
    finally:
        render_pool.shutdown()  # the template render processes go with the API
    return 0


def _run_dev() -> int:
    from followthrough.devstack import run_dev

    return run_dev(get_settings())


def _connectors(args: argparse.Namespace) -> int:
    """Check the connector files (shipped, and FOLLOWTHROUGH_CONNECTORS_DIR or --dir) and list their actions."""
    from followthrough.connectors import ConnectorError, describe, load

    settings = get_settings()
    try:
        specs = load(args.dir or settings.connectors_dir, settings.connector_base_urls)
    except ConnectorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(describe(specs))
    return 0


def _connectors_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help="a folder of connector files to check instead of "
                                                 "FOLLOWTHROUGH_CONNECTORS_DIR")


def _run_migrate() -> int:
    from followthrough.database import create_engine
    from followthrough.migrate import upgrade

    async def main() -> None:
        engine = create_engine(get_settings().effective_database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())
    return 0


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="WHEN",
                        help="only runs started (and rows created) since then: an ISO time or an age such as 30m, "
                             "24h, 7d (default: everything Temporal still holds)")
    parser.add_argument("--tenant", metavar="TENANT", help="only this tenant's tasks")
    parser.add_argument("--repair", action="store_true", help="rewrite the mirror from Temporal where they differ")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_since(value: str | None) -> datetime | None:
    from datetime import timedelta, timezone

    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _reconcile(args: argparse.Namespace) -> int:
    """Exit 0: no drift (or all of it repaired); 1: drift left; 2: bad arguments or settings."""
    from followthrough.database import create_engine
    from followthrough.reconcile import reconcile, render
    from followthrough.temporal_client import connect

    try:
        since = parse_since(args.since)
    except ValueError:
        print(f"followthrough reconcile: --since {args.since!r} is neither an ISO time nor an age like 24h",
              file=sys.stderr)
        return 2
    if problem := _codec_problem("reconcile"):
        print(problem, file=sys.stderr)
        return 2
    settings = get_settings()

    async def main() -> int:
        client = await connect(settings)
        engine = create_engine(settings.effective_database_url)
        try:
            report = await reconcile(client, engine, task_queue=settings.task_queue, since=since,
                                     tenant=args.tenant, repair=args.repair)
        finally:
            await engine.dispose()
        print(json.dumps(report.as_json(), indent=2, default=str) if args.json else render(report))
        return 0 if report.clean else 1

    return asyncio.run(main())


# ---- decisions through the HTTP API -----------------------------------------

def _client_arguments(parser: argparse.ArgumentParser, *, decides: bool = True) -> None:
    parser.add_argument("task_id", metavar="TASK_ID")
    parser.add_argument("--api", metavar="URL",
                        help="the API's base URL (default: FOLLOWTHROUGH_API_URL, else http://API_HOST:API_PORT)")
    if decides:
        parser.add_argument("--as", dest="actor", metavar="ACTOR",
                            help="who decides (default: FOLLOWTHROUGH_ACTOR, else your login name)")


def _approve_arguments(parser: argparse.ArgumentParser) -> None:
    _client_arguments(parser)
    parser.add_argument("--comment", metavar="TEXT")
    parser.add_argument("--subject", metavar="TEXT", help="replace the drafted subject")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="replace the drafted body")
    body.add_argument("--body-file", metavar="PATH", help="replace the drafted body with a file's text (- for stdin)")


def _reject_arguments(parser: argparse.ArgumentParser) -> None:
    _client_arguments(parser)
    parser.add_argument("--reason", metavar="TEXT", required=True)


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _client_arguments(parser, decides=False)
    parser.add_argument("--json", action="store_true", help="print the task as the API answers it")
    parser.add_argument("--events", type=int, default=10, metavar="N", help="how many of the last events (10)")


def _client_command(run: Callable[[argparse.Namespace, httpx.Client], str]) -> Callable[[argparse.Namespace], int]:
    """Run ``run(args, http)`` and print its line; an API error goes to stderr with exit 1, no API with 2."""
    def command(args: argparse.Namespace) -> int:
        try:
            with api_client.client(api_client.api_url(args.api),
                                   api_client.actor_id(getattr(args, "actor", None))) as http:
                print(run(args, http))
        except api_client.ApiFailure as failure:
            print(f"followthrough {args.command}: {failure.message}", file=sys.stderr)
            return failure.exit_code
        return 0

    return command


@_client_command
def _approve(args: argparse.Namespace, http: httpx.Client) -> str:
    answer = api_client.approve(http, args.task_id, comment=args.comment, subject=args.subject,
                                body=cli_tasks.read_body(args))
    return api_client.decision_line("approved", answer)


@_client_command
def _reject(args: argparse.Namespace, http: httpx.Client) -> str:
    return api_client.decision_line("rejected", api_client.reject(http, args.task_id, reason=args.reason))


@_client_command
def _show(args: argparse.Namespace, http: httpx.Client) -> str:
    task = api_client.get_task(http, args.task_id)
    if args.json:
        return json.dumps(task, indent=2, ensure_ascii=False)
    events = api_client.get_events(http, args.task_id) if args.events > 0 else []
    return api_client.describe(task, events[-args.events:] if args.events > 0 else [])


_tasks = _client_command(cli_tasks.tasks)
_types = _client_command(cli_tasks.types)
_status = _client_command(cli_tasks.status)
_definitions = _client_command(cli_definitions.definitions)
_schedules = _client_command(cli_definitions.schedules)


COMMANDS = {
    "dev": (_run_dev, "run the Temporal dev server, the worker and the API together"),
    "worker": (_run_worker, "run the Temporal worker against FOLLOWTHROUGH_TEMPORAL_ADDRESS"),
    "worker-health": (worker_health.run,
                      "exit 0 while a worker of this host polls the task queue (a container healthcheck)"),
    "api": (_run_api, "run the HTTP API against FOLLOWTHROUGH_TEMPORAL_ADDRESS"),
    "migrate": (_run_migrate, "bring the mirror database to the newest schema"),
    "connectors": (_connectors, "check the connector files and list each connector's actions (task types)",
                   _connectors_arguments),
    "reconcile": (_reconcile, "compare the mirror with Temporal, report drift, and with --repair rewrite it",
                  _reconcile_arguments),
    # approve, reject and show: the same as `tasks approve`, `tasks reject` and `tasks show`
    "approve": (_approve, "approve a task waiting for a decision, through the HTTP API", _approve_arguments),
    "reject": (_reject, "reject a task waiting for a decision, through the HTTP API", _reject_arguments),
    "show": (_show, "show a task's status, draft and last events, through the HTTP API", _show_arguments),
    "tasks": (_tasks, "create, list, show and decide tasks, through the HTTP API", cli_tasks.tasks_arguments),
    "types": (_types, "the task types the engine runs, through the HTTP API", cli_tasks.types_arguments),
    "status": (_status, "how many tasks are in each status, and the oldest waiting approval, through the HTTP API",
               cli_tasks.status_arguments),
    "keys": (key_commands.run, "create, list and revoke API keys", key_commands.add_arguments),
    "temporal": (temporal_commands.run, "prepare an existing Temporal cluster: `setup` registers the search attributes",
                 temporal_commands.add_arguments),
    "definitions": (_definitions, "list, show, run or delete task definitions, through the HTTP API",
                    cli_definitions.definitions_arguments),
    "schedules": (_schedules, "show, pause, resume, trigger or delete a definition's schedule, through the HTTP API",
                  cli_definitions.schedules_arguments),
}


# The commands a person runs beside `followthrough dev`, which take what it chose as defaults
# (followthrough/dev_stack_file.py). Never the long-running `dev`, `api` and `worker`, nor the worker's health
# probe: their settings come from the environment alone (`dev` hands its own children theirs).
BESIDE_DEV = {"migrate", "connectors", "reconcile", "approve", "reject", "show", "tasks", "types", "status", "keys",
              "temporal", "definitions", "schedules"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="followthrough", description="Durable tasks on Temporal.")
    sub = parser.add_subparsers(dest="command", required=True)
    # An entry is (fn, help) for a command without arguments, or (fn, help, add_arguments) for one
    # that declares its own; fn then receives the parsed arguments.
    for name, (_fn, help_text, *add_arguments) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        for add in add_arguments:
            add(command)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except TemporalConnectionError as err:  # whichever command connects: what was tried and what to set
        print(f"followthrough {args.command}: {err}", file=sys.stderr, flush=True)
        # Ended at once: the SDK's native threads can abort an interpreter that finalizes after a failed
        # connect (temporalio/sdk-python#300), turning this exit into a crash dump.
        os._exit(2)
    except TracingUnavailable as err:  # FOLLOWTHROUGH_TRACING=otlp for a command that connects, without the extra
        print(f"followthrough {args.command}: {err}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    fn, _help, *add_arguments = COMMANDS[args.command]
    if args.command in BESIDE_DEV:
        read_dev_stack_file()  # beside a running `followthrough dev`, use what it chose
    if add_arguments:  # the API client's commands: their output is for a person, with no log lines
        return fn(args)
    settings = get_settings()
    # `dev` is for a person at a terminal: readable lines unless FOLLOWTHROUGH_LOG_FORMAT says otherwise.
    explicit = "FOLLOWTHROUGH_LOG_FORMAT" in os.environ
    logs.configure(settings.log_format if explicit or args.command != "dev" else "text", settings.log_level)
    return fn()


if __name__ == "__main__":
    sys.exit(main())
