"""The worker's re-send sweep of the notification outbox (followthrough/services/notification_sweep.py).

Real parts: receivers on 127.0.0.1, the real webhook transport and SSRF-guarded client, SQLite and PostgreSQL.
Time is the sweep's ``now`` argument, so nothing here sleeps through a grace period or a backoff. Each test
works in a time of its own far in the past: rows other tests leave in the shared database (created at the real
time) are never old enough for these sweeps, and each test removes its own rows at the end.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.common import RetryPolicy

from followthrough.infra import metrics
from followthrough.db import notification_outbox
from followthrough.services import notification_sweep
from followthrough.infra import signing
from followthrough.activities.transports.http import delivery_id_for
from followthrough.domain import policies
from followthrough.domain.contracts import Notification
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from followthrough.db.mirror import SUBSCRIPTIONS
from followthrough.db.notification_outbox import OUTBOX
from followthrough.services.notification_sweep import SweepConfig, sweep
from followthrough.infra.outbound import guarded_client
from followthrough.config.settings import Settings
from tests.conftest import TEST_CODEC_ENV, make_settings, running_stack
from tests.helpers import add_task_secret, eventually, free_port, task_body
from tests.receivers import Receiver
from followthrough.worker import notification_sender, run_worker

SECRET_NAME, SECRET = "sweep_hook", "sweep-secret-value"


def _epoch(n: int) -> datetime:
    """The start of test ``n``'s own time."""
    return datetime(2001, 1, 1, tzinfo=timezone.utc) + timedelta(days=1000 * n)


def _counted(outcome: str) -> float:
    return metrics.TASKS.get_sample_value("followthrough_notifications_resent_total", {"outcome": outcome}) or 0.0


class Outbox:
    """One tenant's subscription and outbox rows, written as the mirror writes them, and the sender."""

    def __init__(self, engine: AsyncEngine, settings: Settings, send: notification_sweep.Send) -> None:
        self.engine, self.settings, self.send = engine, settings, send
        self.tenant = f"sweep-{uuid.uuid4().hex[:10]}"
        self.config = SweepConfig.from_settings(settings)

    async def subscribe(self, url: str, active: bool = True) -> str:
        subscription = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            await conn.execute(SUBSCRIPTIONS.insert().values(
                id=subscription, tenant_id=self.tenant, url=url, events=["task.completed"], secret=SECRET_NAME,
                active=active, created_at=datetime.now(timezone.utc)))
        return subscription

    async def add(self, subscription: str, url: str, created_at: datetime, **values: object) -> str:
        notification = Notification(subscription_id=subscription, url=url, secret=SECRET_NAME, event="task.completed",
                                    event_id=str(uuid.uuid4()), task={"id": str(uuid.uuid4()), "type": "webhook",
                                                                      "title": "t", "status": "completed",
                                                                      "tenant_id": self.tenant, "workflow_id": "w"})
        row = notification_outbox.row_of(notification, self.tenant, created_at) | values
        async with self.engine.begin() as conn:
            await conn.execute(OUTBOX.insert().values(**row))
        return row["id"]

    async def row(self, key: str):
        async with self.engine.connect() as conn:
            return (await conn.execute(select(OUTBOX).where(OUTBOX.c.id == key))).one_or_none()

    async def keys(self) -> set[str]:
        async with self.engine.connect() as conn:
            return set((await conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.tenant_id == self.tenant))).scalars())

    async def sweep(self, now: datetime, engine: AsyncEngine | None = None,
                    config: SweepConfig | None = None) -> notification_sweep.SweepResult:
        return await sweep(engine or self.engine, self.send, config or self.config, now)


@asynccontextmanager
async def outbox_for(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Outbox]:
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path)
    async with guarded_client(settings.outbound_allow) as outbound:
        outbox = Outbox(engine, settings, notification_sender(settings, engine, outbound))
        add_task_secret(settings, outbox.tenant, SECRET_NAME, SECRET, hosts=["127.0.0.1"])
        try:
            yield outbox
        finally:
            async with engine.begin() as conn:
                await conn.execute(delete(OUTBOX).where(OUTBOX.c.tenant_id == outbox.tenant))


async def test_a_notification_the_workflow_gave_up_on_is_delivered_once_when_its_receiver_is_back(
        dev_env, engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The receiver stays down longer than the workflow's retries (shortened here) allow.
    monkeypatch.setattr(policies, "NOTIFY_RETRY", RetryPolicy(initial_interval=timedelta(milliseconds=100),
                                                              maximum_attempts=2))
    port = free_port()
    async with running_stack(dev_env, engine, tmp_path) as stack, outbox_for(engine, tmp_path) as outbox:
        add_task_secret(stack.settings, stack.tenant, SECRET_NAME, SECRET, hosts=["127.0.0.1"])
        subscribed = await stack.http.post("/subscriptions", json={
            "tenant_id": stack.tenant, "url": f"http://127.0.0.1:{port}/hooks", "secret": SECRET_NAME,
            "events": ["task.completed"]})
        assert subscribed.status_code == 201, subscribed.text
        created = (await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="suggest"))).json()
        # The run drains its notifications before it ends: by then the workflow has given up on this one.
        await dev_env.client.get_workflow_handle(created["workflow_id"]).result()
        outbox.tenant = stack.tenant  # the rows to remove at the end
        [key] = await outbox.keys()
        assert (await outbox.row(key)).delivered_at is None

        # The row as the sweep would find it in its own time: written at `start`.
        start = _epoch(1)
        async with engine.begin() as conn:
            await conn.execute(update(OUTBOX).where(OUTBOX.c.id == key).values(created_at=start))
        with Receiver(port) as receiver:
            assert (await outbox.sweep(start + timedelta(minutes=5))).delivered == 0  # the workflow's own time
            assert receiver.requests == []
            delivered_at = start + outbox.config.grace
            assert (await outbox.sweep(delivered_at)).delivered == 1
            for later in (timedelta(minutes=1), timedelta(hours=5), timedelta(days=2)):
                assert (await outbox.sweep(delivered_at + later)).delivered == 0
        [hook] = receiver.requests
        assert hook.headers["idempotency-key"] == key  # what the receiver dedups on, as the workflow sent it
        assert hook.headers["x-followthrough-delivery"] == hook.json()["id"] == delivery_id_for(key)
        assert signing.verify(SECRET, hook.headers[signing.HEADER.lower()], hook.body)
        assert hook.json()["data"]["task"]["id"] == created["id"]
        row = await outbox.row(key)
        assert (row.delivered_at, row.attempts, row.given_up_at) == (delivered_at, 1, None)


async def test_two_sweeps_at_once_deliver_each_notification_once(engine, tmp_path: Path):
    start = _epoch(2)
    async with outbox_for(engine, tmp_path) as outbox:
        with Receiver() as receiver:
            for _ in range(5):
                receiver.answer(200, delay=0.3)  # slow enough for the sweeps to overlap
            url = f"{receiver.url}/hooks"
            subscription = await outbox.subscribe(url)
            keys = {await outbox.add(subscription, url, start) for _ in range(5)}
            other = create_engine(engine.url.render_as_string(hide_password=False))  # a second worker process's
            try:
                results = await asyncio.gather(*(outbox.sweep(start + outbox.config.grace, engine=e)
                                                 for e in (engine, other, engine, other)))
            finally:
                await other.dispose()
        assert sum(r.delivered for r in results) == 5
        assert sorted(r.headers["idempotency-key"] for r in receiver.requests) == sorted(keys)
        for key in keys:
            assert (await outbox.row(key)).delivered_at is not None


async def test_a_row_delivered_meanwhile_is_skipped(engine, tmp_path: Path):
    start = _epoch(3)
    async with outbox_for(engine, tmp_path) as outbox:
        with Receiver() as receiver:
            url = f"{receiver.url}/hooks"
            key = await outbox.add(await outbox.subscribe(url), url, start)
            await notification_outbox.mark_delivered(engine, key)  # the workflow's own NOTIFY got there first
            assert (await outbox.sweep(start + outbox.config.grace)).delivered == 0
        assert receiver.requests == []


async def test_failed_attempts_back_off_and_give_up_at_the_limit(engine, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture):
    start = _epoch(4)
    async with outbox_for(engine, tmp_path) as outbox:
        config = replace(outbox.config, max_attempts=3, backoff=timedelta(minutes=1),
                         max_backoff=timedelta(minutes=90))
        with Receiver() as receiver:
            for _ in range(10):
                receiver.answer(503, "down for maintenance")
            url = f"{receiver.url}/hooks"
            key = await outbox.add(await outbox.subscribe(url), url, start)
            given_up_before = _counted("given_up")
            first = start + config.grace
            assert (await outbox.sweep(first, config=config)).failed == 1
            row = await outbox.row(key)
            assert (row.attempts, row.next_attempt_at, row.delivered_at, row.given_up_at) == (
                1, first + timedelta(minutes=1), None, None)
            assert "503" in row.last_error
            # Not before its next attempt is due; then with the delay doubled.
            assert (await outbox.sweep(first + timedelta(seconds=59), config=config)).failed == 0
            second = first + timedelta(minutes=1)
            assert (await outbox.sweep(second, config=config)).failed == 1
            assert (await outbox.row(key)).next_attempt_at == second + timedelta(minutes=2)
            with caplog.at_level(logging.WARNING, logger="followthrough.services.notification_sweep"):
                result = await outbox.sweep(second + timedelta(minutes=2), config=config)
            assert (result.failed, result.given_up) == (0, 1)
            row = await outbox.row(key)
            assert (row.attempts, row.delivered_at, row.given_up_at) == (3, None, second + timedelta(minutes=2))
            assert _counted("given_up") - given_up_before == 1
            assert any(key in r.getMessage() and "gave up" in r.getMessage() for r in caplog.records)
            # Given up is final.
            assert (await outbox.sweep(second + timedelta(days=1), config=config)).given_up == 0
        assert [r.headers["idempotency-key"] for r in receiver.requests] == [key] * 3
        assert len({r.json()["id"] for r in receiver.requests}) == 1  # one delivery, attempted three times


async def test_a_deleted_subscription_is_not_sent_to(engine, tmp_path: Path):
    start = _epoch(5)
    async with outbox_for(engine, tmp_path) as outbox:
        with Receiver() as receiver:
            url = f"{receiver.url}/hooks"
            key = await outbox.add(await outbox.subscribe(url, active=False), url, start)
            before = _counted("unsubscribed")
            result = await outbox.sweep(start + outbox.config.grace)
        assert (result.delivered, result.unsubscribed) == (0, 1)
        assert receiver.requests == []
        row = await outbox.row(key)
        assert row.given_up_at is not None and "subscription" in row.last_error
        assert _counted("unsubscribed") - before == 1


async def test_old_delivered_and_given_up_rows_are_pruned_in_batches_and_recent_ones_kept(engine, tmp_path: Path):
    now = _epoch(6)
    async with outbox_for(engine, tmp_path) as outbox:
        config = replace(outbox.config, retention=timedelta(days=30), prune_batch_size=2)
        url = "http://127.0.0.1:9/hooks"
        subscription = await outbox.subscribe(url)
        old, recent = now - timedelta(days=31), now - timedelta(days=29)
        pruned = {await outbox.add(subscription, url, old, delivered_at=old + timedelta(seconds=i)) for i in range(4)}
        pruned.add(await outbox.add(subscription, url, old, given_up_at=old + timedelta(hours=5)))
        kept = {await outbox.add(subscription, url, recent, delivered_at=recent),
                await outbox.add(subscription, url, recent, given_up_at=recent),
                # Still owed (its next attempt is not due yet): never deleted, however old.
                await outbox.add(subscription, url, old, attempts=2, next_attempt_at=now + timedelta(hours=1))}
        counted = metrics.TASKS.get_sample_value("followthrough_notifications_pruned_total") or 0.0
        result = await outbox.sweep(now, config=config)
        assert (result.pruned, result.delivered, result.failed) == (5, 0, 0)
        assert await outbox.keys() == kept
        assert metrics.TASKS.get_sample_value("followthrough_notifications_pruned_total") - counted == 5


async def test_the_worker_runs_the_sweep(dev_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A database of this test's own: the sweep runs on the real clock here, and must see no other test's rows.
    for name, secret in TEST_CODEC_ENV.items():
        monkeypatch.setenv(name, secret)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'own.db'}")
    await upgrade(engine)
    settings = make_settings(engine.url.render_as_string(), tmp_path,
                             temporal_address=dev_env.client.service_client.config.target_host,
                             notify_sweep_interval_seconds=0.1)
    stop = asyncio.Event()
    try:
        async with outbox_for(engine, tmp_path) as outbox:
            with Receiver() as receiver:
                url = f"{receiver.url}/hooks"
                key = await outbox.add(await outbox.subscribe(url), url,
                                       datetime.now(timezone.utc) - outbox.config.grace - timedelta(minutes=1))
                running = asyncio.create_task(run_worker(settings, stop))
                try:
                    await eventually(lambda: asyncio.sleep(0, list(receiver.requests)), bool, timeout=20)
                    await eventually(lambda: outbox.row(key), lambda r: r.delivered_at is not None, timeout=10)
                finally:
                    stop.set()
                    await asyncio.wait_for(running, timeout=30)
            assert [r.headers["idempotency-key"] for r in receiver.requests] == [key]
    finally:
        await engine.dispose()


def test_sweep_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    config = SweepConfig.from_settings(Settings())
    assert (config.grace, config.max_attempts, config.retention) == (
        timedelta(minutes=10), 10, timedelta(days=30))
    for name, value in {"INTERVAL_SECONDS": "30", "GRACE_SECONDS": "900", "MAX_ATTEMPTS": "4",
                        "BACKOFF_SECONDS": "120", "MAX_BACKOFF_SECONDS": "7200", "BATCH_SIZE": "5"}.items():
        monkeypatch.setenv(f"FOLLOWTHROUGH_NOTIFY_SWEEP_{name}", value)
    monkeypatch.setenv("FOLLOWTHROUGH_NOTIFY_RETENTION_SECONDS", str(7 * 86400))
    settings = Settings()
    config = SweepConfig.from_settings(settings)
    assert settings.notify_sweep_interval_seconds == 30
    assert (config.grace, config.max_attempts, config.backoff, config.max_backoff, config.batch_size,
            config.retention) == (timedelta(minutes=15), 4, timedelta(minutes=2), timedelta(hours=2), 5,
                                  timedelta(days=7))
    # A grace shorter than a minute would race the workflow's own delivery; a cap below the first delay is a typo.
    for bad in ({"notify_sweep_grace_seconds": 5}, {"notify_sweep_backoff_seconds": 600,
                                                    "notify_sweep_max_backoff_seconds": 60}):
        with pytest.raises(ValueError):
            Settings(**bad)
