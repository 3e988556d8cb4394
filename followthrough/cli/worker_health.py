"""``followthrough worker-health``: exit 0 while a worker of this host polls its task queue, else 1.

The container healthcheck of a worker (docker-compose.yml). Temporal lists each poller of a task queue by its
identity, ``<pid>@<hostname>`` (the SDK's default), and a container's hostname is its own; the probe connects
as every project client does, so it needs no `temporal` CLI in the image.
"""

import asyncio
import os
import socket
import sys

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError

from followthrough.infra.secrets import SecretNotFound
from followthrough.config.settings import Settings, get_settings
from followthrough.infra.temporal_client import TemporalConnectionError, connect


async def pollers(settings: Settings) -> list[str]:
    """The identities polling the task queue for workflow tasks, as the Temporal frontend lists them."""
    client = await connect(settings)  # the namespace a Temporal profile may have chosen is the client's
    answer = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=settings.task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
    return [poller.identity for poller in answer.pollers]


def run() -> int:
    settings = get_settings()
    host = socket.gethostname()
    try:
        polling = [identity for identity in asyncio.run(pollers(settings)) if identity.endswith(f"@{host}")]
    except TemporalConnectionError as err:
        print(f"followthrough worker-health: {err}", file=sys.stderr)
        return _exit(1)
    except (RPCError, RuntimeError, SecretNotFound, ValueError) as err:  # a refusal, or codec keys missing
        print(f"followthrough worker-health: {settings.temporal_address}: {err}", file=sys.stderr)
        return _exit(1)
    if not polling:
        print(f"followthrough worker-health: no worker of {host} polls task queue {settings.task_queue!r}",
              file=sys.stderr)
        return _exit(1)
    print(f"polling task queue {settings.task_queue!r}: {', '.join(polling)}")
    return _exit(0)


def _exit(code: int) -> int:
    """End the process now, as `followthrough temporal setup` does: the Temporal client's native threads can
    outlive the event loop and abort a short-lived process at shutdown (temporalio/sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
