"""The Temporal worker: every workflow and activity of followthrough on one task queue."""

import asyncio
import logging
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from followthrough.activities import build_activities
from followthrough.activities.notifications import NotificationActivities
from followthrough.activities.transports.webhook import TRANSPORT as WEBHOOK
from followthrough import connectors
from followthrough.infra import heap
from followthrough.infra import metrics
from followthrough.services import notification_sweep
from followthrough.infra import render_pool
from followthrough.infra import tracing
from followthrough.infra.approval_links import generated_key_warning
from followthrough.db.database import create_engine
from followthrough.infra.logs import ActivityLogContext, configure
from followthrough.infra.outbound import guarded_client, self_test
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings, get_settings
from followthrough.tasktypes import unserved_types
from followthrough.infra.temporal_client import connect, metrics_runtime
from followthrough.workflows.all import ALL_WORKFLOWS

log = logging.getLogger("followthrough.worker")

# Deterministic libraries the workflows use only through pydantic (the agent loop checks email addresses in tool
# calls): passed through, so a run does not import them anew inside the sandbox.
# The tracing interceptor's workflow side (FOLLOWTHROUGH_TRACING) needs nothing here: it lives in temporalio, passed
# through already, and reaches OpenTelemetry through modules imported outside the sandbox.
SANDBOX = SandboxRestrictions.default.with_passthrough_modules("email_validator", "idna")


def build_worker(client: Client, settings: Settings, engine: AsyncEngine, task_queue: str | None = None,
                 http: httpx.AsyncClient | None = None, outbound: httpx.AsyncClient | None = None) -> Worker:
    """The worker. ``http`` is shared by the calls to configured endpoints (the LLM), ``outbound`` by the
    requests tasks and subscriptions aim (guarded against internal addresses): one pool each per process."""
    connectors.install(settings)  # the connectors' actions, as these settings see them, are task types too
    render_pool.configure(settings)  # templates render in child processes, started on first use
    http = http or httpx.AsyncClient(follow_redirects=False)
    outbound = outbound or guarded_client(settings.outbound_allow)
    # With tracing on: a span per LLM and outbound request; workflow and activity spans come with the client's
    # interceptors (followthrough/infra/tracing.py).
    for each in (http, outbound):
        tracing.instrument_client(each, settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=ALL_WORKFLOWS,
        activities=build_activities(settings, engine, http, client, outbound),
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_local_activities=settings.worker_max_concurrent_activities,
        max_cached_workflows=settings.worker_max_cached_workflows,
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX) if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
        interceptors=[ActivityLogContext()],  # activities' log records name their task and tenant
        # A cancel reaches a running activity with the answer to its next heartbeat: send them
        # at least every 2 s, so a cancelled draft stops within a few seconds.
        max_heartbeat_throttle_interval=timedelta(seconds=2),
    )


def notification_sender(settings: Settings, engine: AsyncEngine, outbound: httpx.AsyncClient
                        ) -> notification_sweep.Send:
    """What the outbox sweep re-sends with: the NOTIFY activity's own webhook, through the guarded client."""
    return NotificationActivities(settings, engine, outbound, SecretStore(settings.secrets_file), WEBHOOK).resend


async def _stop_sweep(sweeping: asyncio.Task | None, stop: asyncio.Event) -> None:
    """Let a sweep under way finish for a few seconds, then cancel it: a row it holds is tried again, under the
    same key, once its claim runs out."""
    if sweeping is None:
        return
    stop.set()
    try:
        await asyncio.wait_for(sweeping, timeout=5)
    except TimeoutError:  # cancelled by wait_for
        pass


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or forever), then shut down gracefully."""
    await self_test()  # an SSRF guard that lets loopback through stops the worker here
    tracing.configure(settings, "followthrough-worker")  # with tracing on and its extra missing: stops here
    engine = create_engine(settings.effective_database_url)
    tracing.instrument_engine(engine, settings)
    # The SDK's metrics come from the runtime the worker's client was connected with.
    runtime = metrics_runtime(settings.worker_metrics_address) if settings.worker_metrics_address else None
    client = await connect(settings, runtime)
    if runtime:
        log.info("Temporal SDK metrics at http://%s/metrics", settings.worker_metrics_address)
    stop_app_metrics = metrics.serve(settings.worker_app_metrics_address, metrics.TASKS) \
        if settings.worker_app_metrics_address else None
    if stop_app_metrics:
        log.info("task metrics at http://%s/metrics", settings.worker_app_metrics_address)
    async with httpx.AsyncClient(follow_redirects=False) as http, guarded_client(settings.outbound_allow) as outbound:
        worker = build_worker(client, settings, engine, http=http, outbound=outbound)
        log.info("worker polling task queue %r on %s, namespace %s", settings.task_queue,
                 client.service_client.config.target_host, client.namespace)
        if unserved := unserved_types():
            log.warning("task types this worker does not serve: %s", "; ".join(unserved.values()))
        if link_warning := generated_key_warning(settings):
            log.warning("%s", link_warning)
        # Every worker process sweeps the notification outbox; claims keep two sweeps off one row.
        sweep_stop, sweeping = asyncio.Event(), None
        if settings.notify_sweep_interval_seconds:
            sweeping = asyncio.create_task(notification_sweep.run(
                engine, notification_sender(settings, engine, outbound),
                notification_sweep.SweepConfig.from_settings(settings), settings.notify_sweep_interval_seconds,
                sweep_stop))
        try:
            async with worker:
                heap.freeze_setup()
                await (stop.wait() if stop else asyncio.Event().wait())
        finally:
            await _stop_sweep(sweeping, sweep_stop)
            await engine.dispose()
            render_pool.shutdown()  # the template render processes go with the worker
            if stop_app_metrics:
                stop_app_metrics()


if __name__ == "__main__":
    configure(get_settings().log_format, get_settings().log_level)
    asyncio.run(run_worker(get_settings()))
