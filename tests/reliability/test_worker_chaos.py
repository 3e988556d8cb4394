"""The worker killed (SIGKILL) at random moments while fifty tasks of mixed types run: webhooks and HTTP calls
to a real receiver, email to a real SMTP server, review tasks approved and manual tasks completed while the
worker comes and goes, suggestions. Every task ends in its expected state, the mirror agrees with Temporal,
and each external effect happened exactly once, counted as a receiver counts it: by the key the engine sends.

The kill moments are drawn from a seeded generator, but where each one lands in the tasks' progress depends
on the machine's speed: the assertions hold for any kill point."""

import asyncio
import random
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.activities.transports.email import message_id_for
from followthrough.api.main import create_app
from followthrough.db.mirror import EVENTS, TASKS
from followthrough.services.reconcile import reconcile
from followthrough.db.tables import Delivery
from tests.conftest import make_settings
from tests.helpers import add_task_secret
from tests.receivers import Receiver
from tests.reliability.processes import kill, process_env, start
from tests.activities.test_email_transport import start_smtp

SEED = 50_4_2026
KINDS = {"webhook": 14, "http_request": 12, "email": 10, "review": 6, "suggest": 4, "manual": 4}


def _body(kind: str, n: int, tenant: str, receiver: Receiver) -> dict:
    base = {"tenant_id": tenant, "subject_ref_id": f"chaos-{n}", "title": f"chaos {kind} {n}"}
    hook = {"type": "webhook", "payload": {"url": f"{receiver.url}/hook", "secret": "chaos_hook",
                                           "event": "invoice.overdue", "payload": {"n": n}}}
    if kind == "webhook":
        return base | hook | {"mode": "autonomous"}
    if kind == "review":
        return base | hook | {"mode": "review"}
    if kind == "suggest":
        return base | hook | {"mode": "suggest"}
    if kind == "http_request":
        return base | {"type": "http_request", "mode": "autonomous",
                       "payload": {"method": "POST", "url": f"{receiver.url}/call", "json": {"n": n}}}
    if kind == "email":
        return base | {"type": "email", "mode": "autonomous", "payload": {
            "to": [f"customer{n}@example.com"], "subject": "Invoice {{ n }}", "body": "Hello, invoice {{ n }}.",
            "variables": {"n": n}}}
    assert kind == "manual"
    return base | {"type": "invoice_follow_up", "mode": "manual", "subject_ref_type": "INVOICE",
                   "payload": {"customer_name": "ACME", "customer_email": "billing@acme.example",
                               "invoice_number": f"INV-{n}", "invoice_amount": 100, "currency": "USD",
                               "due_date": "2025-12-20", "days_overdue": 3}}


async def _decide(http: httpx.AsyncClient, task_id: str, action: str, body: dict) -> None:
    """Approve or complete a task once it waits, retrying while the worker is away: a call cut off may
    have landed, so the task moving past the wait is success too."""
    while True:
        task = (await http.get(f"/tasks/{task_id}")).json()
        if task["status"] != "awaiting_approval":
            if task["status"] in ("pending", "scheduled", "in_progress"):
                await asyncio.sleep(0.2)
                continue
            return
        try:
            response = await http.post(f"/tasks/{task_id}/{action}", json=body, headers={"X-Actor-Id": "chaos"},
                                       timeout=40)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)


async def _progress(engine: AsyncEngine, tenant: str) -> int:
    """How far the tenant's tasks have got: the events the workers have written for them (the API writes
    TASK_CREATED)."""
    async with engine.connect() as conn:
        tasks = select(TASKS.c.id).where(TASKS.c.tenant_id == tenant)
        return (await conn.execute(select(func.count()).select_from(EVENTS)
                                   .where(EVENTS.c.task_id.in_(tasks), EVENTS.c.type != "TASK_CREATED"))).scalar_one()


async def _statuses(engine: AsyncEngine, ids: list[str]) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(TASKS.c.id, TASKS.c.status).where(TASKS.c.id.in_(ids)))).all()
    return {r.id: r.status for r in rows}


async def test_worker_killed_repeatedly_across_fifty_tasks(dev_env, mirror_engine: AsyncEngine, tmp_path: Path):
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    controller, smtp = start_smtp()
    settings = make_settings(mirror_engine.url.render_as_string(hide_password=False), tmp_path,
                             smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="tasks@followthrough.example")
    tenant = f"chaos-{uuid.uuid4().hex[:8]}"
    env = process_env(settings, dev_env.client.service_client.config.target_host,
                      FOLLOWTHROUGH_SMTP_HOST="127.0.0.1",
                      FOLLOWTHROUGH_SMTP_PORT=str(smtp.port), FOLLOWTHROUGH_MAIL_FROM="tasks@followthrough.example")
    add_task_secret(settings, tenant, "chaos_hook", "chaos-secret")  # the worker and the API read the file
    app = create_app(settings, temporal=dev_env.client)
    log = tmp_path / "worker.log"
    kinds = [kind for kind, count in KINDS.items() for _ in range(count)]
    rng.shuffle(kinds)
    with Receiver() as receiver:
        for _ in range(200):
            receiver.answer(200, delay=rng.uniform(0.2, 1.2))  # slow answers: sends in flight when it dies
        worker = start("worker", env, log)
        kills = 0
        try:
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as http:
                ids: dict[str, str] = {}
                deciders: list[asyncio.Task] = []

                async def create_in_bursts() -> None:
                    # Five bursts of ten, a couple of seconds apart: the kills land among tasks at every step.
                    for n, kind in enumerate(kinds):
                        response = await http.post("/tasks", json=_body(kind, n, tenant, receiver))
                        assert response.status_code == 201, response.text
                        task_id = response.json()["id"]
                        ids[task_id] = kind
                        if kind in ("review", "manual"):  # decided while the worker comes and goes
                            action, body = ("approve", {"comment": "ok"}) if kind == "review" else (
                                "complete", {"result": {"done": True}})
                            deciders.append(asyncio.create_task(_decide(http, task_id, action, body)))
                        if n % 10 == 9:
                            await asyncio.sleep(burst_gaps.pop())

                burst_gaps = [rng.uniform(1.5, 3.0) for _ in range(5)]
                creating = asyncio.create_task(create_in_bursts())
                for _ in range(rng.choice([3, 4])):
                    # Each worker lives until it has moved some task on (it takes a few seconds to start on a
                    # loaded machine), then a random while longer: long enough to take work, short enough to
                    # be cut off in the middle of it.
                    # (Not longer than 8 s: on a fast machine the work may all be done before the last kill.)
                    before, since = await _progress(mirror_engine, tenant), loop.time()
                    while await _progress(mirror_engine, tenant) == before and loop.time() - since < 8:
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(rng.uniform(0.3, 2.5))
                    kill(worker)
                    kills += 1
                    worker = start("worker", env, log)
                await creating
                async with asyncio.timeout(90):
                    await asyncio.gather(*deciders)
                    while True:
                        statuses = await _statuses(mirror_engine, list(ids))
                        if statuses == {task_id: "completed" for task_id in ids}:
                            break
                        await asyncio.sleep(0.5)
                report = await reconcile(dev_env.client, mirror_engine, task_queue=settings.task_queue,
                                         tenant=tenant)
        finally:
            kill(worker)
            controller.stop()

    assert kills >= 3
    assert report.drift == [] and report.unverified == [] and report.workflows == len(ids)
    by_kind = {kind: [t for t, k in ids.items() if k == kind] for kind in KINDS}
    # Webhooks: a receiver drops repeats by delivery id; one delivery id per sending task, recorded once.
    async with mirror_engine.connect() as conn:
        rows = (await conn.execute(select(Delivery.task_id, Delivery.id, Delivery.status)
                                   .where(Delivery.task_id.in_(list(ids))))).all()
    webhook_rows = {r.task_id: r.id for r in rows if ids[r.task_id] in ("webhook", "review")}
    assert sorted(webhook_rows) == sorted(by_kind["webhook"] + by_kind["review"])
    hooks = [r for r in receiver.requests if r.path == "/hook"]
    assert {r.headers["x-followthrough-delivery"] for r in hooks} == set(webhook_rows.values())
    # HTTP calls: the Idempotency-Key is the task's send key; each sending task once, no one else.
    calls = [r for r in receiver.requests if r.path == "/call"]
    assert {r.headers["idempotency-key"] for r in calls} == {f"{t}:send" for t in by_kind["http_request"]}
    assert {r.status for r in rows} == {"delivered"}
    assert sorted(r.task_id for r in rows) == sorted(by_kind["webhook"] + by_kind["review"] + by_kind["http_request"])
    # Email: one Message-ID per task, each accepted by the SMTP server (a repeat would carry the same id).
    mail_ids = [m.message["Message-ID"] for m in smtp.inbox.messages]
    assert set(mail_ids) == {message_id_for(f"{t}:send") for t in by_kind["email"]}
    # Suggestions and manual work send nothing.
    assert not {t for t in by_kind["suggest"] + by_kind["manual"]} & {r.task_id for r in rows}
