"""``followthrough keys create|list|revoke``: API keys, straight in the mirror database
(the API itself needs a key, so keys are made where the database is)."""

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from followthrough import api_keys
from followthrough.database import create_engine
from followthrough.principals import Role
from followthrough.settings import get_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a key; it is printed once and never shown again")
    create.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    create.add_argument("--user", required=True, help="the user id the key acts as (recorded on decisions)")
    create.add_argument("--role", action="append", required=True, dest="roles", metavar="ROLE",
                        help=f"repeatable: {', '.join(r.value for r in Role)}, or a team role such as finance")
    create.add_argument("--name", default="", help="what the key is for")
    listed = sub.add_parser("list", help="list keys (never their secrets)")
    listed.add_argument("--tenant")
    listed.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id", metavar="KEY_ID")


def run(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[Any, argparse.Namespace], Awaitable[int]]] = {
        "create": _create, "list": _list, "revoke": _revoke}
    return asyncio.run(_with_engine(commands[args.keys_command], args))


async def _with_engine(command: Callable[[Any, argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    from followthrough.migrate import upgrade

    engine = create_engine(get_settings().effective_database_url)
    try:
        await upgrade(engine)
        return await command(engine, args)
    except api_keys.KeyError_ as err:
        print(f"followthrough keys: {err}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()


async def _create(engine: Any, args: argparse.Namespace) -> int:
    row, token = await api_keys.create(engine, tenant_id=args.tenant, actor_id=args.user, name=args.name,
                                       roles=args.roles)
    print(f"key {row['id']} for {row['actor_id']} in tenant {row['tenant_id']} ({', '.join(row['roles'])}):\n"
          f"{token}\nKeep it now: it is not stored and cannot be shown again.")
    return 0


async def _list(engine: Any, args: argparse.Namespace) -> int:
    rows = await api_keys.listed(engine, args.tenant)
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    for row in rows:
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "live"
        print(f"{row['id']}  {row['tenant_id']:<16} {row['actor_id']:<16} {','.join(row['roles']):<28} "
              f"{state:<18} {row['name']}")
    return 0


async def _revoke(engine: Any, args: argparse.Namespace) -> int:
    if await api_keys.revoke(engine, args.key_id):
        print(f"key {args.key_id} revoked")
        return 0
    print(f"followthrough keys: no live key {args.key_id!r}", file=sys.stderr)
    return 1
