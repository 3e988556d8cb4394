"""No notification is lost to a worker killed between a mirror write's commit and the workflow hearing of it.

The first worker commits the approval request's event (and, with it, its subscriber's notification) and is
SIGKILLed before its workflow task completes; a new worker replays, writes the same events again (inserting
nothing) and must still send the approval-request webhook, with its approval links, exactly once. Two real
worker processes and a workflow-task timeout make this one of the slower tests: it is the only one that covers
an acknowledgement lost after the commit."""

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
from followthrough.infra import approval_links
from followthrough.db.database import session_factory
from followthrough.db.tables import NotificationOutbox
from tests.conftest import TEST_CODEC_ENV, make_settings
from tests.helpers import add_task_secret, eventually, task_body
from tests.receivers import Receiver

SECRET = "outbox-crash-secret"


def _start(env: dict[str, str], *command: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_an_approval_request_committed_before_a_kill_is_notified_once(dev_env, engine, tmp_path: Path):
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path)
    add_task_secret(settings, "outbox", "outbox_hook", SECRET, hosts=["127.0.0.1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "FOLLOWTHROUGH_TASK_QUEUE": settings.task_queue,
        "FOLLOWTHROUGH_DATABASE_URL": settings.database_url,
        "FOLLOWTHROUGH_DATA_DIR": str(tmp_path),  # the approval-link key the API checks links with
        "FOLLOWTHROUGH_TASK_SECRETS_FILE": str(settings.task_secrets_file),
        "FOLLOWTHROUGH_OUTBOUND_ALLOW": json.dumps(settings.outbound_allow),  # the receiver is on 127.0.0.1
    } | TEST_CODEC_ENV
    marker = tmp_path / "committed"
    app = create_app(settings, temporal=dev_env.client)
    with Receiver() as receiver:
        worker = _start(env, "tests.mirror_pause_worker", str(marker))
        try:
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://testserver/api/v1") as http:
                subscribed = await http.post("/subscriptions", json={
                    "tenant_id": "outbox", "url": f"{receiver.url}/hooks", "secret": "outbox_hook",
                    "events": ["task.awaiting_approval"]})
                assert subscribed.status_code == 201, subscribed.text
                created = await http.post("/tasks", json=task_body(tenant_id="outbox",
                                                                   approval={"approvers": ["alice"]}))
                assert created.status_code == 201, created.text
                task = created.json()
                await eventually(lambda: asyncio.sleep(0, marker.exists()), bool, timeout=60)
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                async with session_factory(engine)() as session:
                    [row] = (await session.execute(select(NotificationOutbox).where(
                        NotificationOutbox.task_id == task["id"]))).scalars().all()
                assert row.event == "task.awaiting_approval" and row.delivered_at is None
                assert receiver.requests == []  # the kill came before anyone heard of it

                worker = _start(env, "followthrough.cli", "worker")
                [hook] = await eventually(lambda: asyncio.sleep(0, list(receiver.requests)), bool, timeout=90)
                body = hook.json()
                assert hook.headers["x-followthrough-event"] == "task.awaiting_approval"
                assert body["data"]["task"]["id"] == task["id"]
                # The links in the message work: alice rejects from it, and the run ends.
                reject = body["data"]["approval_links"]["alice"]["reject"]
                approval_links.check(approval_links.signing_key(settings), reject.rsplit("/", 1)[1])
                page = await http.post(reject.removeprefix("http://testserver/api/v1"), content=b"reason=not+now",
                                       headers={"content-type": "application/x-www-form-urlencoded"})
                assert page.status_code == 200, page.text
                # The run drains its notifications before it ends: anything sent twice is in by now.
                await dev_env.client.get_workflow_handle(task["workflow_id"]).result()
        finally:
            worker.kill()
            worker.wait()

    assert [r.headers["x-followthrough-event"] for r in receiver.requests] == ["task.awaiting_approval"]
    async with session_factory(engine)() as session:
        [row] = (await session.execute(select(NotificationOutbox).where(
            NotificationOutbox.task_id == task["id"]))).scalars().all()
    assert row.delivered_at is not None
