"""Running followthrough: ``dev``, ``api``, ``worker``, ``worker-health`` and ``migrate``. Their settings come
from the environment alone (never a dev stack's file), and they log as FOLLOWTHROUGH_LOG_FORMAT says."""

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import typer

from followthrough.infra import logs
from followthrough.cli import worker_health
from followthrough.domain.principals import ANONYMOUS_WARNING, is_loopback
from followthrough.config.settings import get_settings


def _configure_logs(command: str) -> None:
    settings = get_settings()
    # `dev` is for a person at a terminal: readable lines unless FOLLOWTHROUGH_LOG_FORMAT says otherwise.
    explicit = "FOLLOWTHROUGH_LOG_FORMAT" in os.environ
    logs.configure(settings.log_format if explicit or command != "dev" else "text", settings.log_level)


def codec_problem(command: str) -> str | None:
    """Why the payload codec cannot be built from the settings, said before anything starts."""
    from followthrough.infra.codec_keys import codec_for
    from followthrough.infra.secrets import SecretNotFound

    try:
        codec_for(get_settings())
    except (RuntimeError, SecretNotFound, ValueError) as err:
        return f"followthrough {command}: {err}"
    return None


def _link_key_problem(command: str) -> str | None:
    """Why the approval-link key named in the settings cannot be read, said before anything starts."""
    from followthrough.infra.approval_links import signing_key
    from followthrough.infra.secrets import SecretNotFound

    settings = get_settings()
    if not settings.approval_link_secret:
        return None
    try:
        signing_key(settings)
    except (SecretNotFound, ValueError) as err:
        return f"followthrough {command}: {err}"
    return None


def _tracing_problem(command: str) -> str | None:
    """Tracing asked for without the packages it needs, said before anything starts. Otherwise tracing starts
    here (when on), before any connection, under the service name of the command."""
    from followthrough.infra.tracing import TracingUnavailable, configure

    try:
        configure(get_settings(), f"followthrough-{command}")
    except TracingUnavailable as err:
        return f"followthrough {command}: {err}"
    return None


def _refuse_on_problem(command: str) -> None:
    if problem := codec_problem(command) or _link_key_problem(command) or _tracing_problem(command):
        print(problem, file=sys.stderr)
        raise typer.Exit(2)


def dev() -> None:
    """Run the Temporal dev server, the worker and the API together."""
    from followthrough.cli.devstack import run_dev

    _configure_logs("dev")
    raise typer.Exit(run_dev(get_settings()))


def api() -> None:
    """Run the HTTP API against FOLLOWTHROUGH_TEMPORAL_ADDRESS."""
    import uvicorn

    from followthrough.api.main import create_app

    _configure_logs("api")
    settings = get_settings()
    if settings.anonymous_access:
        if not is_loopback(settings.api_host):
            print(f"followthrough api: anonymous access is only allowed on 127.0.0.1, not on {settings.api_host}; "
                  f"create API keys with `followthrough keys create`", file=sys.stderr)
            raise typer.Exit(2)
        print(ANONYMOUS_WARNING, file=sys.stderr, flush=True)
    _refuse_on_problem("api")
    from followthrough.infra import heap, render_pool
    from followthrough.infra.temporal_client import connect

    asyncio.run(connect(settings))  # an unreachable Temporal is one line here, not a failed lifespan's traceback
    app = create_app(settings)
    heap.freeze_setup()
    try:
        # log_config=None: uvicorn's records go to the handler followthrough.infra.logs configured, in its format.
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info",
                    log_config=None)
    finally:
        render_pool.shutdown()  # the template render processes go with the API


def worker() -> None:
    """Run the Temporal worker against FOLLOWTHROUGH_TEMPORAL_ADDRESS."""
    from followthrough.worker import run_worker

    _configure_logs("worker")
    _refuse_on_problem("worker")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(get_settings(), stop)

    _run_event_loop(main())


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed: the worker spends much of its time in the event loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def worker_health_probe() -> None:
    """Exit 0 while a worker of this host polls the task queue (a container healthcheck)."""
    _configure_logs("worker-health")
    raise typer.Exit(worker_health.run())


def migrate() -> None:
    """Bring the mirror database to the newest schema."""
    from followthrough.db.database import create_engine
    from followthrough.db.migrate import upgrade

    _configure_logs("migrate")

    async def main() -> None:
        engine = create_engine(get_settings().effective_database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())
