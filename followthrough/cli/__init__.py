"""The ``followthrough`` command line, on Typer: its commands in three groups as people use them, running
followthrough (running.py), working with tasks, definitions and approvals through the HTTP API (tasks.py,
definitions.py), and administration (admin.py).

A command imports what it runs (the API, the worker, the Temporal client, the database) when it runs: that keeps
`followthrough --help` and the HTTP commands at about 0.5 s to start instead of 1.7 s."""

import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
import typer.core

from followthrough.cli import admin, common, definitions, running, tasks
from followthrough.config.settings import read_dev_stack_file
from followthrough.infra.temporal_client import TemporalConnectionError
from followthrough.infra.tracing import TracingUnavailable

RUNNING = "Running"
WORK = "Tasks, definitions and approvals"
ADMINISTRATION = "Administration"

_listed: list[str] = []  # the commands in the order they are listed


class _Group(typer.core.TyperGroup):
    """Lists the commands in the order they were added here (Typer's own lists every group after the commands)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return sorted(super().list_commands(ctx), key=lambda name: _listed.index(name))


# Tracebacks stay Python's own: Typer's pretty ones can show local variables, which may hold a secret.
app = typer.Typer(name="followthrough", help="Durable tasks on Temporal.", cls=_Group, no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich",
                  context_settings={"help_option_names": ["-h", "--help"]})


def _command(name: str, function: Callable[..., None], panel: str | None = None, hidden: bool = False) -> None:
    app.command(name, rich_help_panel=panel, hidden=hidden)(function)
    _listed.append(name)


def _group(name: str, group: typer.Typer, panel: str) -> None:
    app.add_typer(group, name=name, rich_help_panel=panel)
    _listed.append(name)


_command("dev", running.dev, RUNNING)
_command("api", running.api, RUNNING)
_command("worker", running.worker, RUNNING)
_command("migrate", running.migrate, RUNNING)
_command("worker-health", running.worker_health_probe, RUNNING)

_group("tasks", tasks.app, WORK)
_command("types", tasks.types, WORK)
_command("status", tasks.status, WORK)
_group("definitions", definitions.definitions, WORK)
_group("schedules", definitions.schedules, WORK)
# The spellings from before `tasks` existed: they still work, but are listed once, under `tasks`.
_command("approve", tasks.approve, hidden=True)
_command("reject", tasks.reject, hidden=True)
_command("show", tasks.show, hidden=True)

_group("keys", admin.keys, ADMINISTRATION)
_command("reconcile", admin.reconcile, ADMINISTRATION)
_group("temporal", admin.temporal, ADMINISTRATION)
_command("connectors", admin.connectors, ADMINISTRATION)


# The commands a person runs beside `followthrough dev`, which take what it chose as defaults
# (followthrough/config/dev_stack_file.py). Never the long-running `dev`, `api` and `worker`, nor the worker's health
# probe: their settings come from the environment alone (`dev` hands its own children theirs).
BESIDE_DEV = {"migrate", "connectors", "reconcile", "approve", "reject", "show", "tasks", "types", "status", "keys",
              "temporal", "definitions", "schedules"}


def _version(asked: bool) -> None:
    if asked:
        try:
            print(f"followthrough {version('followthrough')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("followthrough (not installed)")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context, _: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    common.invoked = ctx.invoked_subcommand or ""
    if ctx.invoked_subcommand in BESIDE_DEV:
        read_dev_stack_file()  # beside a running `followthrough dev`, use what it chose


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (2 for a usage error)."""
    try:
        app(args=argv, prog_name="followthrough")
    except SystemExit as done:  # how Typer ends every command, with its code
        if isinstance(done.code, str):  # sys.exit("why"), as Python itself would print it
            print(done.code, file=sys.stderr, flush=True)
            return 1
        return done.code or 0
    except TemporalConnectionError as err:  # whichever command connects: what was tried and what to set
        print(f"followthrough {common.invoked}: {err}", file=sys.stderr, flush=True)
        # Ended at once: the SDK's native threads can abort an interpreter that finalizes after a failed
        # connect (temporalio/sdk-python#300), turning this exit into a crash dump.
        os._exit(2)
    except TracingUnavailable as err:  # FOLLOWTHROUGH_TRACING=otlp for a command that connects, without the extra
        print(f"followthrough {common.invoked}: {err}", file=sys.stderr, flush=True)
        return 2
    return 0
