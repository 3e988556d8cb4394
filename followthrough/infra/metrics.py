"""Prometheus metrics of followthrough's own (docs/observability.md: Metrics).

Two registries, one per kind of process, so a process exposes only what it measures even when the API and the
worker share one (as in the tests): ``API`` (requests, served by the API at ``/metrics``) and ``TASKS`` (task
outcomes and approval waits, counted by the worker's mirror writer, and the notification outbox's sweep; served
on ``FOLLOWTHROUGH_WORKER_APP_METRICS_ADDRESS``). Both also carry the process's CPU, memory and file descriptors.
Labels never hold ids, tenants or payload data: only methods, route templates, status classes, task types and
outcomes, all from small fixed sets.
"""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server

from followthrough.config.settings import split_address

API = CollectorRegistry()
TASKS = CollectorRegistry()
ProcessCollector(registry=API)
ProcessCollector(registry=TASKS)

REQUESTS = Counter("followthrough_api_requests", "HTTP requests answered, by method, route template and status class",
                   ["method", "route", "status"], registry=API)
REQUEST_ERRORS = Counter("followthrough_api_request_errors", "HTTP requests answered with a 5xx (or with no answer "
                         "at all, counted as 500), by method and route template", ["method", "route"], registry=API)
REQUEST_SECONDS = Histogram("followthrough_api_request_duration_seconds",
                            "Time from a request's arrival to the end of its answer, by method and route template",
                            ["method", "route"], registry=API,
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

TASKS_FINISHED = Counter("followthrough_tasks_finished", "Task runs that reached a terminal status, by task type and "
                         "that status", ["type", "status"], registry=TASKS)
APPROVAL_WAIT_SECONDS = Histogram("followthrough_approval_wait_seconds",
                                  "Time from an approval's request to its decision, by task type and outcome "
                                  "(approved, rejected, expired, cancelled, completed)", ["type", "outcome"],
                                  registry=TASKS,
                                  buckets=(1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400,
                                           3 * 86400, 7 * 86400))

NOTIFICATIONS_RESENT = Counter("followthrough_notifications_resent",
                               "Re-sends of undelivered notifications by the worker's outbox sweep, by outcome: "
                               "delivered, failed (tried again later), given_up (its last attempt failed), "
                               "unsubscribed (its subscription was deleted: not sent)", ["outcome"], registry=TASKS)
for _outcome in ("delivered", "failed", "given_up", "unsubscribed"):
    NOTIFICATIONS_RESENT.labels(_outcome)  # each outcome shows from the start, at 0
NOTIFICATIONS_PRUNED = Counter("followthrough_notifications_pruned",
                               "Delivered and given-up notification outbox rows the sweep deleted past their "
                               "retention", registry=TASKS)


def serve(address: str, registry: CollectorRegistry) -> Callable[[], None]:
    """Serve ``registry`` at ``http://<address>/metrics`` from a background thread; returns what stops it."""
    host, port = split_address(address)
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
