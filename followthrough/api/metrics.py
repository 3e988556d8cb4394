"""The API's request metrics and the ``/metrics`` endpoint that serves them (docs/observability.md: Metrics).

Requests are labelled by route template (``/api/v1/tasks/{task_id}``), never by the path asked for, so ids
never become labels; a request no route matched is ``<unmatched>``.
"""

import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from followthrough.infra import metrics
PATH = "/metrics"
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Count every HTTP request by method, route template and status class, and time it. Outermost, so it
    sees the answers other middleware give (413, 400) too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception that escapes is a server error

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            route = route_template(scope)
            metrics.REQUESTS.labels(method, route, f"{status // 100}xx").inc()
            metrics.REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)
            if status >= 500:
                metrics.REQUEST_ERRORS.labels(method, route).inc()


def route_template(scope: Scope) -> str:
    """The template of the route that answered (``/api/v1/tasks/{task_id}``), or ``<unmatched>``.

    The matched route knows its template relative to the router that holds it (``/tasks/{task_id}``); the
    path asked for supplies the prefixes above it, in which any segment a path parameter took (a router
    prefix such as ``/definitions/{definition_id}/schedule``) is put back as ``{name}``.
    """
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    if ":path}" in template:  # a parameter spanning segments: the prefix cannot be told apart
        return template
    wanted = len([s for s in template.split("/") if s])
    segments = [s for s in scope.get("path", "").split("/") if s]
    by_value = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    prefix = ["{%s}" % by_value[s] if s in by_value else s for s in segments[:max(len(segments) - wanted, 0)]]
    head = "".join(f"/{segment}" for segment in prefix)
    return (head + template) or "/"


async def metrics_endpoint(_request: Request) -> Response:
    """The API process's metrics in Prometheus' text format. Each API process serves its own."""
    return Response(generate_latest(metrics.API), media_type=CONTENT_TYPE_LATEST)
