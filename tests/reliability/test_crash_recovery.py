"""Exactly-once effects across a worker crash: the worker process is killed
(SIGKILL) while webhook sends are in flight, another is started, and every
task completes with exactly one delivery at the receiver."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import select

from followthrough.api.main import create_app
from followthrough.db.database import session_factory
from followthrough.db.tables import Delivery
from tests.conftest import TEST_CODEC_ENV, make_settings
from tests.helpers import add_task_secret, eventually
from tests.receivers import Receiver

TASKS = 20
SECRET = "crash-test-secret"


def _start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "followthrough.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_worker_killed_mid_send_still_delivers_each_task_once(dev_env, engine, tmp_path: Path):
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path)
    add_task_secret(settings, "crash", "crash_hook", SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "FOLLOWTHROUGH_TASK_QUEUE": settings.task_queue,
        "FOLLOWTHROUGH_DATABASE_URL": settings.database_url,
        "FOLLOWTHROUGH_TASK_SECRETS_FILE": str(settings.task_secrets_file),
        "FOLLOWTHROUGH_OUTBOUND_ALLOW": json.dumps(settings.outbound_allow),  # the receiver is on 127.0.0.1
    } | TEST_CODEC_ENV
    app = create_app(settings, temporal=dev_env.client)
    with Receiver() as receiver:
        for _ in range(TASKS * 2):
            receiver.answer(200, delay=0.4)  # slow answers keep sends in flight when the worker dies
        worker = _start_worker(env)
        try:
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as http:
                ids = []
                for i in range(TASKS):
                    response = await http.post("/tasks", json={
                        "type": "webhook", "mode": "autonomous", "tenant_id": "crash", "subject_ref_id": f"c-{i}",
                        "source": str(tmp_path), "payload": {"url": f"{receiver.url}/hook", "secret": "crash_hook",
                                                           "event": "invoice.overdue", "payload": {"n": i}}})
                    assert response.status_code == 201, response.text
                    ids.append(response.json()["id"])
                await eventually(lambda: asyncio.sleep(0, len(receiver.requests)), lambda n: n >= 3, timeout=30)
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                worker = _start_worker(env)

                async def statuses() -> list[str]:
                    return [(await http.get(f"/tasks/{i}")).json()["status"] for i in ids]

                await eventually(statuses, lambda s: s == ["completed"] * TASKS, timeout=120)
        finally:
            worker.kill()
            worker.wait()

    delivered = [r.headers["x-followthrough-delivery"] for r in receiver.requests]
    # A receiver drops repeats by delivery id, as the webhook docs tell it to; a send cut off
    # mid-call is repeated with the same id, never with a new one.
    assert len(set(delivered)) == TASKS
    async with session_factory(engine)() as session:
        rows = (await session.execute(select(Delivery).where(Delivery.task_id.in_(ids)))).scalars().all()
    assert sorted(r.task_id for r in rows) == sorted(ids)  # one delivery record per task
    assert {r.status for r in rows} == {"delivered"}
    assert {r.id for r in rows} == set(delivered)
