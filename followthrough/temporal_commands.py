"""``followthrough temporal setup``: prepare an existing Temporal cluster for followthrough by registering
the task's custom search attributes (TaskStatus, TaskType, ...) in its namespace. Safe to repeat.

``followthrough dev`` registers them itself; a cluster of your own needs this once per namespace, before the
first worker runs (a run that sets an attribute the namespace does not know fails its workflow task).
"""

import argparse
import asyncio
import os
import sys

from temporalio.client import Client
from temporalio.service import RPCError

from followthrough import search_attributes
from followthrough.secrets import SecretNotFound
from followthrough.settings import Settings, get_settings
from followthrough.temporal_client import converter_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="temporal_command", required=True)
    setup = sub.add_parser("setup", help="register the task's search attributes in the namespace (idempotent)",
                           description=__doc__.split("\n\n")[0].removeprefix("``followthrough temporal setup``: "))
    setup.add_argument("--address", help="host:port of the Temporal frontend (default: FOLLOWTHROUGH_TEMPORAL_ADDRESS)")
    setup.add_argument("--namespace", help="the namespace (default: FOLLOWTHROUGH_TEMPORAL_NAMESPACE)")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    address = args.address or settings.temporal_address
    namespace = args.namespace or settings.temporal_namespace
    try:
        converter_for(settings)
    except (RuntimeError, SecretNotFound, ValueError) as err:  # as `followthrough worker` and `api` refuse
        print(f"followthrough temporal setup: {err}", file=sys.stderr)
        return _exit(2)
    try:
        added, present = asyncio.run(_setup(settings, address, namespace))
    except (RPCError, RuntimeError) as err:
        print(f"followthrough temporal setup: {address} namespace {namespace}: {err}", file=sys.stderr)
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


async def _setup(settings: Settings, address: str, namespace: str) -> tuple[list[str], list[str]]:
    # Operator calls only, but connected as every project client is, with the codec: whatever this command
    # grows to send is encrypted, since the worker refuses unencrypted payloads.
    client = await Client.connect(address, namespace=namespace, data_converter=converter_for(settings))
    return await search_attributes.register(client, namespace)
