"""The ``followthrough`` command line."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from followthrough.settings import get_settings


def _run_worker() -> int:
    from worker import run_worker

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(get_settings(), stop)

    run_event_loop(main())
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed: the worker spends much of its time in the event loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _run_api() -> int:
    import uvicorn

    from api.main import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
    return 0


def _run_dev() -> int:
    from followthrough.devstack import run_dev

    return run_dev(get_settings())


def _run_migrate() -> int:
    from followthrough.database import create_engine
    from followthrough.migrate import upgrade

    async def main() -> None:
        engine = create_engine(get_settings().effective_database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())
    return 0


COMMANDS = {
    "dev": (_run_dev, "run the Temporal dev server, the worker and the API together"),
    "worker": (_run_worker, "run the Temporal worker against FOLLOWTHROUGH_TEMPORAL_ADDRESS"),
    "api": (_run_api, "run the HTTP API against FOLLOWTHROUGH_TEMPORAL_ADDRESS"),
    "migrate": (_run_migrate, "bring the mirror database to the newest schema"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="followthrough", description="Durable tasks on Temporal.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_fn, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return COMMANDS[args.command][0]()


if __name__ == "__main__":
    sys.exit(main())
