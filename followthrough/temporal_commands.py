"""``followthrough temporal setup``: prepare an existing Temporal cluster for followthrough by registering
the task's custom search attributes (TaskStatus, TaskType, ...) in its namespace. Safe to repeat.

``followthrough dev`` registers them itself; a cluster of your own needs this once per namespace, before the
first worker runs (a run that sets an attribute the namespace does not know fails its workflow task).
"""

import argparse
import asyncio
import os
import sys

from temporalio.service import RPCError

from followthrough import search_attribute_setup
from followthrough.secrets import SecretNotFound
from followthrough.settings import Settings, get_settings
from followthrough.temporal_client import TemporalConnectionError, connect, converter_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="temporal_command", required=True)
    setup = sub.add_parser("setup", help="register the task's search attributes in the namespace (idempotent)",
                           description=__doc__.split("\n\n")[0].removeprefix("``followthrough temporal setup``: "))
    setup.add_argument("--address", help="host:port of the Temporal frontend (default: FOLLOWTHROUGH_TEMPORAL_ADDRESS)")
    setup.add_argument("--namespace", help="the namespace (default: FOLLOWTHROUGH_TEMPORAL_NAMESPACE)")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.address and args.address != settings.temporal_address:
        settings = Settings()  # another Temporal than a dev stack's: the environment's settings alone
    try:
        converter_for(settings)
    except (RuntimeError, SecretNotFound, ValueError) as err:  # as `followthrough worker` and `api` refuse
        print(f"followthrough temporal setup: {err}", file=sys.stderr)
        return _exit(2)
    try:
        namespace, address, added, present = asyncio.run(_setup(settings, args.address, args.namespace))
    except TemporalConnectionError as err:  # as cli.main says it for the other commands
        print(f"followthrough temporal setup: {err}", file=sys.stderr)
        return _exit(2)
    except (RPCError, search_attribute_setup.SearchAttributeConflict) as err:
        print(f"followthrough temporal setup: namespace {args.namespace or settings.temporal_namespace}: {err}",
              file=sys.stderr)
        return _exit(1)
    print(f"search attributes in namespace {namespace} at {address}: "
          f"added {', '.join(added) or 'none'}; already registered {', '.join(present) or 'none'}")
    return _exit(0)


def _exit(code: int) -> int:
    """End the process now: the Temporal client's native threads can outlive the event loop, and a
    short-lived process then sometimes aborts while the interpreter shuts down (temporalio/sdk-python#300),
    turning a finished setup into exit code -6. Nothing is left to clean up here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _setup(settings: Settings, address: str | None,
                 namespace: str | None) -> tuple[str, str, list[str], list[str]]:
    # Operator calls only, but connected as every project client is (profile, TLS, API key, codec): whatever
    # this command grows to send is encrypted, since the worker refuses unencrypted payloads.
    client = await connect(settings, address=address, namespace=namespace)
    added, present = await search_attribute_setup.register(client, client.namespace)
    return client.namespace, client.service_client.config.target_host, added, present
