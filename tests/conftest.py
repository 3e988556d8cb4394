"""Test environments: the time-skipping server for long waits, the real dev
server for integration, SQLite always and PostgreSQL when TEST_DATABASE_URL is
set (then it must be reachable: the tests fail rather than skip).

The suite runs in several processes (pytest-xdist, `-n` in pyproject.toml). Each process has its own Temporal
servers and SQLite files, and its own PostgreSQL database beside TEST_DATABASE_URL's: `<database>_gw0`,
`<database>_gw1`, ..., created on first use. The scheduler below keeps the tests of a module with module-scoped
fixtures in one process and spreads all others one by one (docs/development.md, "Tests")."""

import asyncio
import base64
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from followthrough.api.main import create_app
from followthrough.db import tables  # noqa: F401
from followthrough.domain import search_attributes
from followthrough.infra import search_attribute_setup
from followthrough.infra.binaries import find_binary
from followthrough.infra.codec import CodecKey, EncryptionCodec, data_converter
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from followthrough.config.settings import Settings
from tests.helpers import free_port
from followthrough.worker import build_worker



def worker_database_url(url: str | None) -> str | None:
    """TEST_DATABASE_URL for this process: under xdist, the database `<database>_<worker>` on the same server."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


BASE_POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
POSTGRES_URL = worker_database_url(BASE_POSTGRES_URL)
DATABASES = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]

# Every test encrypts payloads: one key for the session, a named secret like any production key, so
# processes the tests start (a worker, `followthrough dev`) can be given it through the environment.
TEST_CODEC_SECRET = "test_codec"
TEST_CODEC_ENV = {"FOLLOWTHROUGH_SECRET_TEST_CODEC": base64.b64encode(os.urandom(32)).decode(),
                  "FOLLOWTHROUGH_CODEC_KEYS": f'["{TEST_CODEC_SECRET}"]'}
os.environ["FOLLOWTHROUGH_SECRET_TEST_CODEC"] = TEST_CODEC_ENV["FOLLOWTHROUGH_SECRET_TEST_CODEC"]
TEST_CODEC_KEY = CodecKey(TEST_CODEC_SECRET, base64.b64decode(TEST_CODEC_ENV["FOLLOWTHROUGH_SECRET_TEST_CODEC"]))
TEST_CODEC = EncryptionCodec([TEST_CODEC_KEY])  # refuses unencrypted payloads, as production does
TEST_CONVERTER = data_converter(TEST_CODEC)


def make_settings(database_url: str, tmp: Path, **overrides: object) -> Settings:
    # The sandbox stays on in every test, whatever the environment says, so a
    # non-deterministic call in workflow code fails here.
    # Anonymous access (callers named by X-Actor-Id, every role) unless a test asks for keys.
    # The receivers tests send to listen on 127.0.0.1, which the SSRF guard refuses unless allowed: allowed here;
    # tests of the guard itself override outbound_allow (tests/api/test_ssrf.py).
    # Task secrets (per tenant) from a file of the test's own: tests/helpers.py add_task_secret writes it.
    # The outbox sweep runs in a worker only where a test asks for it (tests/activities/test_notification_sweep.py): on the
    # real clock it would re-send rows other tests left in the shared database.
    values: dict[str, object] = {"anonymous_access": True, "codec_keys": [TEST_CODEC_SECRET],
                                 "outbound_allow": ["127.0.0.1/32"],
                                 "task_secrets_file": tmp / "task-secrets.json",
                                 "notify_sweep_interval_seconds": 0} | overrides
    return Settings(database_url=database_url, data_dir=tmp, task_queue=f"tq-{uuid.uuid4()}",
                    public_url="http://testserver", workflow_sandbox=True, **values)


# ---- databases --------------------------------------------------------------

@pytest_asyncio.fixture(scope="session")
async def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncEngine]:
    path = tmp_path_factory.mktemp("mirror") / "mirror.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="session")
async def postgres_engine() -> AsyncIterator[AsyncEngine]:
    assert POSTGRES_URL and BASE_POSTGRES_URL, "TEST_DATABASE_URL is not set"
    if POSTGRES_URL != BASE_POSTGRES_URL:
        await _create_database(BASE_POSTGRES_URL, make_url(POSTGRES_URL).database)
    engine = create_engine(POSTGRES_URL)
    # Start from an empty schema so the migration itself is exercised every run.
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def _create_database(server_url: str, name: str) -> None:
    """Create `name` on the server of `server_url` (connecting to its database) unless it exists. An unreachable
    server raises: the tests that need it fail."""
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest) -> AsyncEngine:
    return request.getfixturevalue(f"{request.param}_engine")


# ---- Temporal ---------------------------------------------------------------

@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"), data_converter=TEST_CONVERTER)
    # The test server refuses upserts of attributes it does not know, like a real cluster.
    await search_attribute_setup.register(env.client, env.client.namespace)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"), data_converter=TEST_CONVERTER,
        search_attributes=search_attributes.ALL,
        # A deleted run (what retention does to an old one) is gone at once rather than after visibility's
        # ~30 s catch-up: the retry tests delete runs (tests/api/test_runs_and_decisions.py).
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
                               "--dynamic-config-value", "history.transferProcessorEnsureCloseBeforeDelete=false"])
    yield env
    await env.shutdown()


# ---- the engine wired together ----------------------------------------------

class Stack:
    """A worker on a fresh task queue plus an HTTP client for the API in front of it."""

    def __init__(self, settings: Settings, client: Client, engine: AsyncEngine, http: httpx.AsyncClient) -> None:
        self.settings, self.client, self.engine, self.http = settings, client, engine, http
        self.tenant = f"t-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def running_stack(env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                        **overrides: object) -> AsyncIterator[Stack]:
    """Worker + API for one test, with settings overridden as the test needs (SMTP, guardrails, ...)."""
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path, **overrides)
    app = create_app(settings, temporal=env.client)
    async with build_worker(env.client, settings, engine), app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/api/v1") as http:
            yield Stack(settings, env.client, engine, http)


@pytest_asyncio.fixture
async def stack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, engine, tmp_path) as running:
        yield running


@asynccontextmanager
async def served_api(env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path, port: int | None = None,
                     **overrides: object) -> AsyncIterator[tuple[str, Settings]]:
    """The API under uvicorn on 127.0.0.1 (a free port unless given), with a worker on the same settings:
    real HTTP, for clients that cannot use an in-process transport (a browser, the command line)."""
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path, **overrides)
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, temporal=env.client), host="127.0.0.1", port=port,
                                           log_level="warning"))
    async with build_worker(env.client, settings, engine):
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:
                    assert not serving.done(), "uvicorn stopped before it started"
                    await asyncio.sleep(0.02)
            yield f"http://127.0.0.1:{port}", settings
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=30)


def worker_for(env: WorkflowEnvironment, settings: Settings, engine: AsyncEngine) -> Worker:
    return build_worker(env.client, settings, engine)


# ---- processes (pytest-xdist) -------------------------------------------------

# The reliability tests kill and restart processes under bursts of load and wait for the engine to catch up:
# they run one after another in one process, never against each other.
_ONE_AT_A_TIME = "tests/reliability/"
_SHARED_FIXTURE = re.compile(r"""scope\s*=\s*["'](module|class|package)["']""")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """With `--dist load` (what `-n` alone means): tests spread over the processes one by one, except a module that has module-scoped fixtures (a built
    wheel, a compose project, a server): its tests stay in one process, so the fixture is set up once; so do
    all of tests/reliability/. Those groups go out first (the largest first), the single tests fill in behind."""
    from xdist.scheduler import LoadScopeScheduling

    if config.getoption("dist") != "load":
        return None  # another --dist asked for by name: xdist's own

    class ModuleFixturesTogether(LoadScopeScheduling):
        def __init__(self, config: pytest.Config, log: object = None) -> None:
            super().__init__(config, log)
            self._grouped: dict[str, bool] = {}

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module.startswith(_ONE_AT_A_TIME):
                return _ONE_AT_A_TIME
            if module not in self._grouped:
                path = Path(config.rootpath, module)
                self._grouped[module] = path.is_file() and bool(_SHARED_FIXTURE.search(path.read_text()))
            return module if self._grouped[module] else nodeid

    return ModuleFixturesTogether(config, log)
