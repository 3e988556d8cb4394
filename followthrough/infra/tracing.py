"""OpenTelemetry traces, off unless FOLLOWTHROUGH_TRACING=otlp (docs/observability.md, "Tracing"; the `tracing`
extra).

With it on, one trace follows a task from the API's ``POST /tasks`` (FastAPI) through the Temporal client's
StartWorkflow, the workflow run and its activities (temporalio's TracingInterceptor, which carries the trace
in Temporal headers only: the workflow's commands stay as they are), the mirror's SQL (SQLAlchemy) and the
outbound call (httpx; the receiver gets a ``traceparent`` header), SMTP as a span of its own.

Spans go to an OTLP/HTTP exporter the SDK configures from the standard environment (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, ...). The SDK and the instrumentation
are imported only when tracing is on, so a process without the extra runs as before while tracing is off.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from followthrough.config.settings import Settings

EXTRA = "tracing"
INSTALL = f"pip install 'followthrough[{EXTRA}]'"
TRACER_NAME = "followthrough"

_provider: Any = None  # the TracerProvider of this process, made on first use while tracing is on


class TracingUnavailable(RuntimeError):
    """Tracing is asked for but the packages of the `tracing` extra are not installed."""


def enabled(settings: Settings) -> bool:
    return settings.tracing != "off"


def configure(settings: Settings, service: str = "followthrough") -> Any:
    """The tracer provider when tracing is on (None when off), made once per process: called at the start of
    the API and the worker so a missing extra stops them at once. ``service`` is the service name unless
    OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise."""
    global _provider
    if not enabled(settings):
        return None
    if reason := missing_extra(settings):
        raise TracingUnavailable(reason)
    if _provider is None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        provider = TracerProvider(resource=resource)  # flushes its spans at exit
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)  # for any other instrumented library in the process
        _provider = provider
    return _provider


def use_provider(provider: Any) -> None:
    """Send this process's spans to ``provider`` instead of the OTLP exporter (the tests: an in-memory
    exporter); None forgets it. Affects only what runs with tracing on."""
    global _provider
    _provider = provider


def missing_extra(settings: Settings) -> str | None:
    """Why tracing cannot run as the settings ask (the extra is not installed), or None."""
    if not enabled(settings):
        return None
    try:  # the API alone comes with FastAPI: the SDK is the first part only the extra brings
        import opentelemetry.sdk.trace  # noqa: F401
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.instrumentation.fastapi  # noqa: F401
        import opentelemetry.instrumentation.httpx  # noqa: F401
        import opentelemetry.instrumentation.sqlalchemy  # noqa: F401
        import temporalio.contrib.opentelemetry  # noqa: F401
    except ImportError as err:
        return (f"FOLLOWTHROUGH_TRACING={settings.tracing} needs the {EXTRA!r} extra, not installed here ({err}): "
                f"{INSTALL}, or set FOLLOWTHROUGH_TRACING=off (docs/observability.md, \"Tracing\")")
    return None


def interceptors(settings: Settings) -> list[Any]:
    """The Temporal client's interceptors: the SDK's TracingInterceptor when tracing is on, none when off.
    A worker built on the client uses it too (activities and workflows, in the sandbox included)."""
    if not enabled(settings):
        return []
    provider = configure(settings)  # first: without the extra, TracingUnavailable rather than an ImportError
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider.get_tracer("temporalio"))]


def instrument_app(app: Any, settings: Settings) -> None:
    """Server spans for the API's requests, continuing a caller's ``traceparent``. OTEL_PYTHON_FASTAPI_EXCLUDED_URLS
    leaves paths out (e.g. ``metrics,healthz``)."""
    if enabled(settings):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=configure(settings))


def instrument_client(client: Any, settings: Settings) -> None:
    """Client spans for an httpx client's requests, each sent with a ``traceparent`` header."""
    if enabled(settings):
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=configure(settings))


def instrument_engine(engine: Any, settings: Settings) -> None:
    """Spans for the SQL an async engine runs. The instrumentor's own ``instrument(engine=...)`` works once per
    process, and a process may hold several engines (the tests run an API and a worker in one): each gets the
    instrumentor's engine tracer directly."""
    if not enabled(settings):
        return
    from opentelemetry.instrumentation.sqlalchemy import __version__
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    tracer = configure(settings).get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)
    # Connection-pool usage is a metric; without a meter provider it goes nowhere.
    connections = get_meter("opentelemetry.instrumentation.sqlalchemy", __version__).create_up_down_counter(
        name="db.client.connections.usage", unit="connections")
    EngineTracer(tracer, engine.sync_engine, connections)


@contextmanager
def client_span(settings: Settings, name: str, **attributes: str | int) -> Iterator[None]:
    """A client span around a call no instrumentation covers (SMTP); nothing when tracing is off."""
    if not enabled(settings):
        yield
        return
    from opentelemetry.trace import SpanKind

    with configure(settings).get_tracer(TRACER_NAME).start_as_current_span(name, kind=SpanKind.CLIENT,
                                                                           attributes=attributes):
        yield


def current_span_context() -> Any:
    """The context of the span being recorded now (tracing on, under a traced call), else None: what work done
    later for several callers at once links back to."""
    try:
        from opentelemetry import trace
    except ImportError:  # no OpenTelemetry at all: nothing is traced
        return None
    span = trace.get_current_span()
    return span.get_span_context() if span.is_recording() else None


@contextmanager
def linked_span(name: str, contexts: Iterable[Any], **attributes: str | int) -> Iterator[None]:
    """A span in a trace of its own, linked to each of ``contexts`` (from current_span_context), for work done
    for several traced calls at once (the mirror's group commit); nothing when none of them is traced."""
    traced = [c for c in contexts if c is not None]
    if not traced or _provider is None:
        yield
        return
    from opentelemetry.trace import Link

    with _provider.get_tracer(TRACER_NAME).start_as_current_span(name, links=[Link(c) for c in traced],
                                                                 attributes=attributes):
        yield
