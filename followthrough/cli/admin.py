"""Administration: ``keys``, ``reconcile``, ``temporal setup`` and ``connectors``. Keys are made straight in the
mirror database (the API itself needs a key, so keys are made where the database is); the others talk to
Temporal, the database or the connector files, never to the API."""

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from followthrough.cli.common import fail, print_table
from followthrough.domain.principals import Role
from followthrough.config.settings import Settings, get_settings

if TYPE_CHECKING:
    from followthrough.services.reconcile import Report

keys = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
temporal = typer.Typer(no_args_is_help=True,
                       help="Prepare an existing Temporal cluster: `setup` registers the search attributes.")


# ---- keys ------------------------------------------------------------------------

def _with_engine(command: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``command(engine)`` on the mirror database, brought to the newest schema first."""
    from followthrough.db import api_keys
    from followthrough.db.database import create_engine
    from followthrough.db.migrate import upgrade

    async def main() -> None:
        engine = create_engine(get_settings().effective_database_url)
        try:
            await upgrade(engine)
            await command(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except api_keys.KeyError_ as err:
        fail(str(err), 2)


@keys.command("create")
def key_create(
    tenant: Annotated[str, typer.Option("--tenant", metavar="TENANT", help="the tenant the key belongs to")],
    user: Annotated[str, typer.Option(
        "--user", metavar="USER", help="the user id the key acts as (recorded on decisions)")],
    roles: Annotated[list[str], typer.Option(
        "--role", metavar="ROLE", help=f"repeatable: {', '.join(r.value for r in Role)}, or a team role such as "
                                       f"finance")],
    name: Annotated[str, typer.Option("--name", metavar="TEXT", help="what the key is for")] = "",
) -> None:
    """Make a key; it is printed once and never shown again."""
    from followthrough.db import api_keys
    async def create(engine: Any) -> None:
        row, token = await api_keys.create(engine, tenant_id=tenant, actor_id=user, name=name, roles=roles)
        print(f"key {row['id']} for {row['actor_id']} in tenant {row['tenant_id']} ({', '.join(row['roles'])}):\n"
              f"{token}\nKeep it now: it is not stored and cannot be shown again.")

    _with_engine(create)


@keys.command("list")
def key_list(tenant: Annotated[str | None, typer.Option("--tenant", metavar="TENANT")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="print the keys as JSON")] = False) -> None:
    """List keys (never their secrets)."""
    from followthrough.db import api_keys
    async def listing(engine: Any) -> None:
        rows = await api_keys.listed(engine, tenant)
        if as_json:
            print(json.dumps(rows, default=str, indent=2))
        elif not rows:
            print("no keys")
        else:
            print_table(["ID", "TENANT", "USER", "ROLES", "STATE", "NAME"],
                        [[row["id"], row["tenant_id"], row["actor_id"], ",".join(row["roles"]),
                          f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "live", row["name"]]
                         for row in rows])

    _with_engine(listing)


@keys.command("revoke")
def key_revoke(key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="the key's id")]) -> None:
    """Revoke a key for good."""
    from followthrough.db import api_keys
    async def revoke(engine: Any) -> None:
        if not await api_keys.revoke(engine, key_id):
            fail(f"no live key {key_id!r}")
        print(f"key {key_id} revoked")

    _with_engine(revoke)


# ---- reconcile -----------------------------------------------------------------------

def reconcile(
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN", help="only runs started (and rows created) since then: an ISO time or an age "
                                        "such as 30m, 24h, 7d (default: everything Temporal still holds)")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", metavar="TENANT", help="only this tenant's tasks")] = None,
    repair: Annotated[bool, typer.Option(
        "--repair", help="rewrite the mirror from Temporal where they differ")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Compare the mirror with Temporal, report drift, and with --repair rewrite it.

    Exit 0: no drift (or all of it repaired); 1: drift left; 2: bad arguments or settings."""
    from followthrough.cli.running import codec_problem
    from followthrough.db.database import create_engine
    from followthrough.services.reconcile import reconcile as compare
    from followthrough.infra.temporal_client import connect

    try:
        start = parse_since(since)
    except ValueError:
        fail(f"--since {since!r} is neither an ISO time nor an age like 24h", 2)
    if problem := codec_problem("reconcile"):
        print(problem, file=sys.stderr)
        raise typer.Exit(2)
    settings = get_settings()

    async def main() -> bool:
        client = await connect(settings)
        engine = create_engine(settings.effective_database_url)
        try:
            report = await compare(client, engine, task_queue=settings.task_queue, since=start, tenant=tenant,
                                   repair=repair)
        finally:
            await engine.dispose()
        if as_json:
            print(json.dumps(report.as_json(), indent=2, default=str))
        else:
            _print_report(report)
        return report.clean

    raise typer.Exit(0 if asyncio.run(main()) else 1)


def parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _print_report(report: "Report") -> None:
    def state(view: dict[str, Any] | None) -> str:
        return "-" if view is None else f"{view['status']}/{view['stage']}"

    if report.drift:
        print_table(["KIND", "TASK", "WORKFLOW", "MIRROR", "TEMPORAL", "REPAIRED" if report.repair else "DETAIL"],
                    [[d.kind, d.task_id or "-", d.workflow_id, state(d.mirror), state(d.temporal),
                      ("yes" if d.repaired else "no") if report.repair else d.detail] for d in report.drift])
    for item in report.unverified:
        print(f"unverified: {item['workflow_id']}: {item['reason']}")
    summary = f"{report.workflows} workflows checked, {len(report.drift)} drift"
    if report.repair:
        summary += f", {sum(d.repaired for d in report.drift)} repaired"
    print(summary)


# ---- temporal setup --------------------------------------------------------------------

@temporal.command(help="Register the task's search attributes in the namespace (idempotent).\n\n"
                        "`followthrough dev` registers them itself; a cluster of your own needs this once per "
                        "namespace, before the first worker runs (a run that sets an attribute the namespace does "
                        "not know fails its workflow task).")
def setup(address: Annotated[str | None, typer.Option(
              "--address", metavar="HOST:PORT",
              help="the Temporal frontend (default: FOLLOWTHROUGH_TEMPORAL_ADDRESS)")] = None,
          namespace: Annotated[str | None, typer.Option(
              "--namespace", metavar="NAMESPACE",
              help="the namespace (default: FOLLOWTHROUGH_TEMPORAL_NAMESPACE)")] = None) -> None:
    from temporalio.service import RPCError

    from followthrough.infra import search_attribute_setup
    from followthrough.infra.secrets import SecretNotFound
    from followthrough.infra.temporal_client import TemporalConnectionError, connect, converter_for

    settings = get_settings()
    if address and address != settings.temporal_address:
        settings = Settings()  # another Temporal than a dev stack's: the environment's settings alone
    try:
        converter_for(settings)
    except (RuntimeError, SecretNotFound, ValueError) as err:  # as `followthrough worker` and `api` refuse
        _exit_now(f"followthrough temporal setup: {err}", 2)

    async def register() -> tuple[str, str, list[str], list[str]]:
        # Operator calls only, but connected as every project client is (profile, TLS, API key, codec): whatever
        # this command grows to send is encrypted, since the worker refuses unencrypted payloads.
        client = await connect(settings, address=address, namespace=namespace)
        added, present = await search_attribute_setup.register(client, client.namespace)
        return client.namespace, client.service_client.config.target_host, added, present

    try:
        namespace_used, address_used, added, present = asyncio.run(register())
    except TemporalConnectionError as err:  # as main says it for the other commands
        _exit_now(f"followthrough temporal setup: {err}", 2)
    except (RPCError, search_attribute_setup.SearchAttributeConflict) as err:
        _exit_now(f"followthrough temporal setup: namespace {namespace or settings.temporal_namespace}: {err}", 1)
    print(f"search attributes in namespace {namespace_used} at {address_used}: "
          f"added {', '.join(added) or 'none'}; already registered {', '.join(present) or 'none'}")
    _exit_now(None, 0)


def _exit_now(problem: str | None, code: int) -> NoReturn:
    """End the process now: the Temporal client's native threads can outlive the event loop, and a
    short-lived process then sometimes aborts while the interpreter shuts down (temporalio/sdk-python#300),
    turning a finished setup into exit code -6. Nothing is left to clean up here."""
    if problem:
        print(problem, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ---- connectors -------------------------------------------------------------------------

def connectors(directory: Annotated[Path | None, typer.Option(
        "--dir", metavar="DIR", help="a folder of connector files to check instead of "
                                     "FOLLOWTHROUGH_CONNECTORS_DIR")] = None) -> None:
    """Check the connector files and list each connector's actions (task types)."""
    from followthrough.connectors import ConnectorError, describe, load

    settings = get_settings()
    try:
        specs = load(directory or settings.connectors_dir, settings.connector_base_urls)
    except ConnectorError as err:
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(describe(specs))
