"""The mirror database goes away while tasks run, then comes back.

A private PostgreSQL server (tests/private_postgres.py; the shared one is never stopped) holds the mirror of a
worker and API. Twenty tasks are under way — webhook sends to a real receiver, review tasks awaiting approval,
one due a few seconds later — when the server is killed (`pg_ctl stop -m immediate`). While it is down the API
answers 503, the review tasks are approved through Temporal directly, the due task wakes up, and sends already
at the receiver arrive; the workflows move on in Temporal. Sends and the workflows' final mirror writes wait for
the database (a send's idempotent delivery record lives in it, and a run drains its mirror queue before it
ends). Once the server is back, every task completes, each task's events in the mirror are exactly the events
its workflow emitted (seq 0..n, none missing, none twice), every task is delivered once (by delivery id), and
reconciliation finds no drift.
"""

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowHandle

from followthrough.domain import activity_names
from followthrough.domain.contracts import ApprovalDecision, DecisionAck, MirrorAck, TaskOutcome
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from followthrough.db.mirror import EVENTS, TASKS
from followthrough.services.reconcile import reconcile
from tests.conftest import running_stack
from tests.helpers import add_task_secret, eventually
from tests.private_postgres import PrivatePostgres, postgres_server  # noqa: F401 - the fixture
from tests.receivers import Receiver

REVIEW, AUTONOMOUS = 10, 9
SECRET_NAME, SECRET = "outage_hook", "outage-hook-secret"
# Few, quick attempts: they are all spent while the database is away, so each task goes on only because
# its workflow waits for the database and sends again (policies.DATABASE_WAIT) rather than failing.
QUICK_RETRY = {"max_attempts": 3, "initial_interval_seconds": 0.5, "backoff_coefficient": 1.5,
               "maximum_interval_seconds": 2}
# Events an activity writes itself for a failed attempt carry seq 1000 + attempt; the workflow's own are below.
ATTEMPT_SEQ = 1000


def _body(tenant: str, receiver: Receiver, n: int, **fields: object) -> dict:
    return {"type": "webhook", "tenant_id": tenant, "subject_ref_id": f"outage-{n}", "retry": QUICK_RETRY,
            "payload": {"url": f"{receiver.url}/hook", "secret": SECRET_NAME, "event": "invoice.overdue",
                        "payload": {"n": n}}} | fields


async def _states(client: Client, ids: dict[str, str]) -> dict[str, DecisionAck]:
    async def one(workflow_id: str) -> DecisionAck:
        return await client.get_workflow_handle(workflow_id).query("state", result_type=DecisionAck)
    answers = await asyncio.gather(*(one(w) for w in ids.values()))
    return dict(zip(ids, answers))


async def _emitted(handle: WorkflowHandle, client: Client) -> int:
    """How many events the run handed to its mirror writes: the sum, over its completed record_task_events
    local activities (one marker each in the history), of what each write reports written or skipped."""
    total = 0
    async for event in handle.fetch_history_events():
        marker = event.marker_recorded_event_attributes
        if not marker.marker_name or "data" not in marker.details or "result" not in marker.details:
            continue
        data = json.loads(marker.details["data"].payloads[0].data)
        if data.get("activity_type") != activity_names.RECORD:
            continue
        [ack] = await client.data_converter.decode(marker.details["result"].payloads, [MirrorAck])
        total += ack.written + ack.skipped
    return total


async def test_mirror_database_outage(dev_env, postgres_server: PrivatePostgres, tmp_path: Path):
    postgres_server.create_database("outage")
    engine: AsyncEngine = create_engine(postgres_server.url("outage"))
    await upgrade(engine)
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    try:
        with Receiver() as receiver:
            for _ in range(AUTONOMOUS):
                receiver.answer(200, delay=1.0)  # slow answers: sends are in flight when the database dies
            async with running_stack(dev_env, engine, tmp_path) as stack:
                add_task_secret(stack.settings, stack.tenant, SECRET_NAME, SECRET)
                await _run(stack, postgres_server, receiver, since)
    finally:
        await engine.dispose()


async def _run(stack, server: PrivatePostgres, receiver: Receiver, since: datetime) -> None:
    http, client = stack.http, stack.client

    async def create(n: int, **fields: object) -> tuple[str, str]:
        response = await http.post("/tasks", json=_body(stack.tenant, receiver, n, **fields))
        assert response.status_code == 201, response.text
        return response.json()["id"], response.json()["workflow_id"]

    async def status(task_id: str) -> str:
        return (await http.get(f"/tasks/{task_id}")).json()["status"]

    review = dict([await create(n, mode="review") for n in range(REVIEW)])
    for task_id in review:
        await eventually(lambda: status(task_id), lambda s: s == "awaiting_approval", timeout=20)
    due_at = datetime.now(timezone.utc) + timedelta(seconds=6)
    scheduled = dict([await create(REVIEW, mode="autonomous", due_at=due_at.isoformat())])
    [scheduled_id] = scheduled
    await eventually(lambda: status(scheduled_id), lambda s: s == "scheduled", timeout=10)
    autonomous = dict([await create(REVIEW + 1 + n, mode="autonomous") for n in range(AUTONOMOUS)])
    everything = review | scheduled | autonomous
    assert len(everything) == 20
    await eventually(lambda: asyncio.sleep(0, len(receiver.requests)), lambda n: n >= 1, timeout=20)

    # ---- the database dies ------------------------------------------------------------------------
    server.stop("immediate")
    down_at = time.monotonic()

    health = await http.get("/healthz")
    assert health.status_code == 503 and health.json()["database"].startswith("unavailable"), health.text
    listed = await http.get("/tasks", params={"tenant_id": stack.tenant})
    assert listed.status_code == 503, listed.text
    assert "database" in listed.json()["detail"] and listed.headers["retry-after"]
    one = await http.get(f"/tasks/{scheduled_id}")
    assert one.status_code == 503, one.text

    # Decisions go to Temporal directly: the workflows take them without their database.
    decisions = await asyncio.gather(*(
        client.get_workflow_handle(workflow_id).execute_update(
            "approve", ApprovalDecision(actor_id="ops-oncall", comment="approved during the outage"),
            result_type=DecisionAck)
        for workflow_id in review.values()))
    assert all(d.status != "awaiting_approval" for d in decisions), decisions

    # In Temporal the tasks move on: approvals taken, the due task awake, in-flight sends at the receiver.
    states = await eventually(lambda: _states(client, everything),
                              lambda s: s[scheduled_id].status != "scheduled", timeout=20)
    assert all(states[t].status not in ("awaiting_approval", "scheduled", "pending") for t in everything), states
    assert server.running() is False
    outage_deliveries = {r.headers["x-followthrough-delivery"] for r in receiver.requests}
    assert outage_deliveries, "no send reached the receiver"

    # ---- the database returns -------------------------------------------------------------------
    await asyncio.sleep(max(0.0, 8 - (time.monotonic() - down_at)))  # an outage of several seconds
    server.start()

    await eventually(lambda: http.get("/healthz"), lambda r: r.status_code == 200, timeout=15)
    assert (await http.get("/tasks", params={"tenant_id": stack.tenant})).status_code == 200

    # The mirror catches up: every row reaches its terminal status, every workflow ends.
    async def terminal() -> dict[str, str]:
        async with stack.engine.connect() as conn:
            rows = (await conn.execute(select(TASKS.c.id, TASKS.c.status)
                                       .where(TASKS.c.id.in_(list(everything))))).all()
        return dict(rows)
    await eventually(terminal, lambda rows: rows == {t: "completed" for t in everything}, timeout=45)
    outcomes = await asyncio.gather(*(client.get_workflow_handle(w, result_type=TaskOutcome).result()
                                      for w in everything.values()))
    assert {o.status for o in outcomes} == {"completed"}

    # Each task's events are exactly those its workflow emitted: seq 0..n, each once, the last one terminal.
    async with stack.engine.connect() as conn:
        events = (await conn.execute(select(EVENTS.c.task_id, EVENTS.c.id, EVENTS.c.seq, EVENTS.c.type,
                                            EVENTS.c.new_status)
                                     .where(EVENTS.c.task_id.in_(list(everything)))
                                     .order_by(EVENTS.c.task_id, EVENTS.c.seq))).all()
    for task_id, workflow_id in everything.items():
        own = [e for e in events if e.task_id == task_id and e.seq < ATTEMPT_SEQ]
        seqs = [e.seq for e in own]
        emitted = await _emitted(client.get_workflow_handle(workflow_id), client)
        assert seqs == list(range(emitted + 1)), (task_id, seqs, emitted)
        assert len({e.id for e in own}) == len(own)
        assert own[0].type == "TASK_CREATED" and own[-1].new_status == "completed", own
        if task_id in review:
            assert "TASK_APPROVED" in [e.type for e in own]

    # One delivery per task (a send cut off by the outage is repeated with the same delivery id).
    delivered = {r.headers["x-followthrough-delivery"] for r in receiver.requests}
    assert len(delivered) == len(everything)
    results = {o.result["delivery"]["delivery_id"] for o in outcomes}
    assert results == delivered

    report = await reconcile(client, stack.engine, task_queue=stack.settings.task_queue, since=since,
                             tenant=stack.tenant, settle_seconds=0.5)
    assert report.drift == [] and report.unverified == [] and report.workflows == len(everything)
    assert report.clean
