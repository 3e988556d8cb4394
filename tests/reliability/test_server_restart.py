"""The Temporal dev server stopped and started again on its database file while tasks wait for approval, wait
for their due time and are in the middle of a send: the worker and the API's client reconnect on their own,
and every task completes with its one effect."""

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from followthrough.api.main import create_app
from followthrough.infra.binaries import find_binary
from followthrough.services.reconcile import reconcile
from followthrough.domain.search_attributes import dev_server_arguments
from tests.conftest import TEST_CONVERTER, make_settings
from tests.helpers import add_task_secret, eventually, free_port
from tests.receivers import Receiver
from tests.reliability.processes import kill, process_env, start


class DevServer:
    """`temporal server start-dev` on fixed free ports and a database file, stoppable and startable again."""

    def __init__(self, db: Path, log: Path) -> None:
        self.port = free_port()
        self.args = [find_binary("temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                     "--port", str(self.port), "--http-port", str(free_port()),
                     "--metrics-port", str(free_port()), "--db-filename", str(db), "--log-level", "warn",
                     "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
                     *dev_server_arguments()]
        self.log, self.process = log, None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        async with asyncio.timeout(60):
            while True:
                assert self.process.poll() is None, f"the dev server exited; see {self.log}"
                try:
                    await Client.connect(self.address)  # it asks the server for its system info
                    return
                except Exception:
                    await asyncio.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: the server shuts down and its file stays."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def test_tasks_continue_across_a_dev_server_restart(mirror_engine: AsyncEngine, tmp_path: Path,
                                                          receiver: Receiver):
    server = DevServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
    await server.start()
    settings = make_settings(mirror_engine.url.render_as_string(hide_password=False), tmp_path)
    tenant = f"restart-{uuid.uuid4().hex[:8]}"
    add_task_secret(settings, tenant, "restart_hook", "restart-secret")  # read by the worker and the API
    env = process_env(settings, server.address)
    client = await Client.connect(server.address, data_converter=TEST_CONVERTER)
    app = create_app(settings, temporal=client)
    worker = start("worker", env, tmp_path / "worker.log")
    # The first send is the slow one: the server goes away while it is in flight and its answer arrives while
    # the server is down (the stop takes about a second, then three seconds without a server).
    receiver.answer(200, delay=4)

    def hook(name: str, **fields: object) -> dict:
        return {"type": "webhook", "tenant_id": tenant, "subject_ref_id": name, "payload": {
            "url": f"{receiver.url}/{name}", "secret": "restart_hook", "event": "restart.test"}} | fields

    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as http:

            async def create(body: dict) -> str:
                response = await http.post("/tasks", json=body)
                assert response.status_code == 201, response.text
                return response.json()["id"]

            async def task(task_id: str) -> dict:
                return (await http.get(f"/tasks/{task_id}")).json()

            sending = await create(hook("slow", mode="autonomous"))
            await eventually(lambda: asyncio.sleep(0, len(receiver.requests)), lambda n: n == 1, timeout=30)
            scheduled = await create(hook("scheduled", mode="autonomous",
                                          due_at=(datetime.now(timezone.utc) + timedelta(seconds=8)).isoformat()))
            await eventually(lambda: task(scheduled), lambda t: t["status"] == "scheduled", timeout=8)
            waiting = await create(hook("waiting", mode="review"))
            await eventually(lambda: task(waiting), lambda t: t["status"] == "awaiting_approval", timeout=30)

            server.stop()
            await asyncio.sleep(3)
            await server.start()  # the same file and port: the worker and client reconnect by themselves

            async def approve() -> int:
                try:
                    return (await http.post(f"/tasks/{waiting}/approve", json={"comment": "after restart"},
                                            headers={"X-Actor-Id": "ops"}, timeout=40)).status_code
                except httpx.HTTPError:
                    return 0
            await eventually(approve, lambda code: code == 200, timeout=40)
            ids = [sending, waiting, scheduled]
            finals = await eventually(lambda: asyncio.gather(*(task(i) for i in ids)),
                                      lambda ts: [t["status"] for t in ts] == ["completed"] * 3, timeout=60)
            report = await reconcile(client, mirror_engine, task_queue=settings.task_queue, tenant=tenant)
    finally:
        kill(worker)
        server.stop()

    assert report.drift == [] and report.unverified == [] and report.workflows == 3
    # One effect each, counted by delivery id; the slow send cut off by the restart may be repeated with its id.
    by_path = {}
    for r in receiver.requests:
        by_path.setdefault(r.path, set()).add(r.headers["x-followthrough-delivery"])
    assert by_path == {f"/{name}": {t["result"]["delivery"]["delivery_id"]}
                       for name, t in zip(["slow", "waiting", "scheduled"], finals)}
    scheduled_task = finals[2]
    assert datetime.fromisoformat(scheduled_task["started_at"]) >= datetime.fromisoformat(
        scheduled_task["due_at"])
