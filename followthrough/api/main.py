"""The FastAPI application: routes under /api/v1, OpenAPI at /docs."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from temporalio.client import Client

from followthrough.api import errors, metrics
from followthrough.api.codec_cors import CodecCors
from followthrough.api.routes import (agent_reports, approval_links, approvals, artifacts, bulk_decisions, bulk_tasks,
                                      codec, definitions, events, health, inbox, operator, schedules, seed_paths,
                                      streams, subscriptions, task_decisions, task_types, tasks)
from followthrough.api.streams import StreamSlots
from followthrough.api.middleware import LimitBodySize, RefuseNulInUrl
from followthrough.api.query_check import query_check
from followthrough.api.same_origin import RefuseCrossSiteRequests
from followthrough.api.security_headers import SecurityHeaders
from followthrough.api.tenancy import tenant_guard
from followthrough import connectors
from followthrough.infra import logs
from followthrough.infra import outbound
from followthrough.infra import render_pool
from followthrough.infra import tracing
from followthrough.infra.approval_links import generated_key_warning
from followthrough.db.database import create_engine, session_factory
from followthrough.services.results import API_PREFIX
from followthrough.config.settings import Settings, get_settings
from followthrough.infra.temporal_client import connect

log = logging.getLogger("followthrough.api")


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    """Build the app; tests pass their own Temporal client, production connects in the lifespan."""
    settings = settings or get_settings()
    tracing.configure(settings, "followthrough-api")  # with tracing on and its extra missing: stops here
    # Task creation validates connector actions' payloads against these settings' connectors.
    connectors.install(settings)
    logs.redact_access_log()  # however uvicorn is started and configured: link tokens stay out of its log
    # Templates people send render in child processes (started on first use, stopped at exit and by
    # `followthrough api`); see followthrough/infra/render_pool.py.
    render_pool.configure(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await outbound.self_test()  # an SSRF guard that lets loopback through stops the API here
        engine = create_engine(settings.effective_database_url)
        tracing.instrument_engine(engine, settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.streams = StreamSlots(settings.stream_max_connections, settings.stream_max_per_tenant,
                                        settings.stream_max_per_key)
        app.state.temporal = temporal or await connect(settings)
        # Links to runs name the namespace connected to, which a Temporal profile may have chosen. The same
        # settings object, not a copy: everything holding it sees one configuration.
        if settings.temporal_namespace != app.state.temporal.namespace:
            settings.temporal_namespace = app.state.temporal.namespace
        # The codec endpoints use the very codec the API's Temporal client encrypts with.
        app.state.codec = app.state.temporal.data_converter.payload_codec
        logs.redact_access_log()  # again, after uvicorn's own logging config ran
        if link_warning := generated_key_warning(settings):
            log.warning("%s", link_warning)
        try:
            yield
        finally:
            await engine.dispose()

    # The tenant guard runs for every route, before its body is read: see followthrough/api/tenancy.py. So does the
    # query check, before the route's own parameters are read: see followthrough/api/query_check.py.
    app = FastAPI(title="followthrough", version="0.1.0", lifespan=lifespan,
                  dependencies=[Depends(tenant_guard), Depends(query_check)],
                  description="Durable tasks for AI-assisted business work: draft, approve, send, record.")
    errors.install(app)
    app.add_middleware(CodecCors, path_prefix=codec.PREFIX, allowed_origin=settings.temporal_ui_url)
    app.add_middleware(LimitBodySize, limit=settings.max_body_bytes)
    app.add_middleware(RefuseNulInUrl)
    app.add_middleware(RefuseCrossSiteRequests, public_url=settings.effective_public_url, exempt_prefix=codec.PREFIX)
    # Outside the rest, so every answer carries them, the 400s, 403s and 413s above included.
    app.add_middleware(SecurityHeaders)
    if settings.metrics_enabled:
        # Outermost, so the answers of the middleware above (400, 413) are counted too. /metrics is a plain
        # route: no key, no tenant guard, not in the OpenAPI schema (docs/observability.md: Metrics).
        app.add_middleware(metrics.RequestMetrics)
        app.add_route(metrics.PATH, metrics.metrics_endpoint, methods=["GET"], include_in_schema=False)
    for module in (bulk_tasks, tasks, artifacts, agent_reports, task_decisions, bulk_decisions, approvals,
                   approval_links, task_types, subscriptions, definitions, schedules, streams, events, health):
        app.include_router(module.router, prefix=API_PREFIX, responses=errors.COMMON_ERRORS)
    app.include_router(seed_paths.router)  # the seeds' own paths: where to go instead
    app.include_router(inbox.router)  # /ui: a page for people, outside the API prefix
    app.include_router(operator.router)  # /ui/tasks: the operator page beside the inbox
    app.include_router(codec.router, responses=errors.COMMON_ERRORS)  # /codec: the UI calls <endpoint>/decode
    tracing.instrument_app(app, settings)  # outside every middleware above: their answers are traced too
    return app
