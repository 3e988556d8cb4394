"""The API process killed (SIGKILL) and started again twice during a burst of two hundred creates, each
sent with its own Idempotency-Key and repeated with that key until it is answered 201, as a careful client
does: every key ends with one task, one mirror row and one workflow; no row lacks a workflow, no workflow
lacks a row."""

import asyncio
import random
import subprocess
import uuid
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.db.mirror import TASKS
from followthrough.services.reconcile import reconcile
from tests.conftest import make_settings, worker_for
from tests.helpers import eventually, free_port
from tests.reliability.processes import kill, process_env, start

CREATES = 200
IN_FLIGHT = 16
SEED = 200_2026


async def _serving(url: str, api: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(60):
        while True:
            assert api.poll() is None, "the API exited"
            try:
                if (await http.get(f"{url}/healthz", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def test_api_killed_during_a_burst_of_creates(dev_env, mirror_engine: AsyncEngine, tmp_path: Path):
    rng = random.Random(SEED)
    settings = make_settings(mirror_engine.url.render_as_string(hide_password=False), tmp_path)
    tenant = f"burst-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1"
    env = process_env(settings, dev_env.client.service_client.config.target_host,
                      FOLLOWTHROUGH_API_HOST="127.0.0.1", FOLLOWTHROUGH_API_PORT=str(port))
    log = tmp_path / "api.log"
    created: dict[str, str] = {}  # Idempotency-Key -> the id of its 201
    answers: dict[str, set[str]] = {}  # every id any 201 for the key carried
    api = start("api", env, log)
    async with worker_for(dev_env, settings, mirror_engine):
        try:
            await _serving(url, api)
            limit = asyncio.Semaphore(IN_FLIGHT)

            async def create(n: int, http: httpx.AsyncClient) -> None:
                key = f"burst-{n}-{uuid.uuid4().hex[:6]}"
                body = {"type": "invoice_follow_up", "mode": "suggest", "tenant_id": tenant, "title": f"burst {n}",
                        "payload": {"customer_name": "ACME", "customer_email": "billing@acme.example",
                                    "invoice_number": f"INV-{n}", "invoice_amount": 100, "currency": "USD",
                                    "due_date": "2025-12-20", "days_overdue": 3}}
                async with limit:
                    while True:
                        try:
                            response = await http.post(f"{url}/tasks", json=body, timeout=15,
                                                       headers={"Idempotency-Key": key})
                        except httpx.HTTPError:  # refused, reset or unanswered: the API is away
                            await asyncio.sleep(0.2)
                            continue
                        if response.status_code == 201:
                            answers.setdefault(key, set()).add(response.json()["id"])
                            created[key] = response.json()["id"]
                            return
                        # 409: the key's first request is still unanswered (it died with the process); 5xx
                        assert response.status_code == 409 or response.status_code >= 500, response.text
                        await asyncio.sleep(0.3)

            async with httpx.AsyncClient() as http:
                burst = asyncio.gather(*(create(n, http) for n in range(CREATES)))
                for _ in range(2):
                    # Somewhere in the burst: after a seeded number of answers, wherever the requests then are.
                    target = len(created) + rng.randint(15, 60)
                    await eventually(lambda: asyncio.sleep(0, len(created)), lambda n: n >= target, timeout=60)
                    kill(api)
                    api = start("api", env, log)
                    await _serving(url, api)
                await asyncio.wait_for(burst, timeout=80)
            ids = set(created.values())
            assert len(created) == CREATES and len(ids) == CREATES
            assert all(len(seen) == 1 for seen in answers.values())  # a repeat answers with the same task

            async def rows() -> tuple[set[str], set[str], int]:
                """Rows no 201 named, 201s without a row, rows not completed."""
                async with mirror_engine.connect() as conn:
                    found = (await conn.execute(select(TASKS.c.id, TASKS.c.status)
                                                .where(TASKS.c.tenant_id == tenant))).all()
                return {r.id for r in found} - ids, ids - {r.id for r in found}, sum(
                    r.status != "completed" for r in found)
            # A row the killed API never inserted is written by the task's workflow.
            await eventually(rows, lambda diff: diff == (set(), set(), 0), timeout=60)

            async def workflows() -> set[str]:
                query = f'TaskQueue="{settings.task_queue}"'
                return {w.id async for w in dev_env.client.list_workflows(query)}
            async with mirror_engine.connect() as conn:
                workflow_ids = set((await conn.execute(select(TASKS.c.workflow_id)
                                                       .where(TASKS.c.tenant_id == tenant))).scalars())
            await eventually(workflows, lambda found: found == workflow_ids, timeout=30)
            report = await reconcile(dev_env.client, mirror_engine, task_queue=settings.task_queue, tenant=tenant)
            assert report.drift == [] and report.unverified == [] and report.workflows == CREATES
        finally:
            kill(api)
