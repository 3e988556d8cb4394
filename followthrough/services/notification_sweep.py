"""The worker's sweep of the notification outbox: it re-sends what the workflow could not deliver, and prunes.

The workflow delivers each notification itself, with a few minutes of retries (policies.NOTIFY_RETRY, about 8
minutes in all). A row still undelivered after the grace period is one those retries gave up on (its receiver
was down longer), or one never tried (its run was terminated or failed first). The sweep re-sends it under its
delivery key, the key the receiver dedups on (and the ``deliveries`` row keeps a key already delivered from being
sent again), with a bounded number of attempts of its own and a growing delay between them, then gives it up.
Rows delivered or given up longer ago than the retention period are deleted, a bounded batch at a time.

Every worker process runs the sweep (``run``, started by followthrough/worker.py); two at once never send one row
twice: a sweep takes a row with a conditional update (claimed_until past, the row still owed) and sends only what
it took. A claim outlasts the sweep's whole send phase, which has a deadline of its own, so a claim never runs out
under a send still in flight. ``sweep`` takes the time as an argument: it reads no clock of its own.

docs/operations.md, "Notification sweep".
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from followthrough.infra import metrics
from followthrough.db import notification_outbox
from followthrough.infra import redaction
from followthrough.domain import policies
from followthrough.domain.contracts import Notification
from followthrough.db.notification_outbox import OUTBOX
from followthrough.config.settings import Settings
from followthrough.db.tables import Subscription

log = logging.getLogger("followthrough.services.notification_sweep")

SUBSCRIPTIONS: Table = Subscription.__table__  # type: ignore[attr-defined]

# Sends the webhook for (notification, delivery key, the sweep's attempt number); raises when it was not accepted.
Send = Callable[[Notification, str, int], Awaitable[Any]]

DB_TIMEOUT_SECONDS = 15.0  # each statement
SEND_TIMEOUT_SECONDS = policies.NOTIFY_TIMEOUT.total_seconds()  # each send, as the workflow's own
SEND_CONCURRENCY = 10  # sends at once per sweep
SEND_PHASE = timedelta(minutes=4)  # every send of one sweep, claims to outcomes; rows not reached wait for the next
CLAIM = SEND_PHASE + timedelta(minutes=1)  # longer than the send phase: no claim runs out under a send in flight
SWEEP_TIMEOUT_SECONDS = 10 * 60.0  # one whole sweep, pruning included
PRUNE_BATCHES = 10  # per sweep and kind (delivered, given up); the rest waits for the next sweep
ERROR_CHARS = 1000

DELIVERED, FAILED, GIVEN_UP, UNSUBSCRIBED = "delivered", "failed", "given_up", "unsubscribed"
UNSUBSCRIBED_ERROR = "not sent: the subscription was deleted"


@dataclass(frozen=True)
class SweepConfig:
    grace: timedelta = timedelta(minutes=10)
    max_attempts: int = 10
    backoff: timedelta = timedelta(minutes=1)
    max_backoff: timedelta = timedelta(hours=1)
    batch_size: int = 20
    retention: timedelta = timedelta(days=30)
    prune_batch_size: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> "SweepConfig":
        return cls(grace=timedelta(seconds=settings.notify_sweep_grace_seconds),
                   max_attempts=settings.notify_sweep_max_attempts,
                   backoff=timedelta(seconds=settings.notify_sweep_backoff_seconds),
                   max_backoff=timedelta(seconds=settings.notify_sweep_max_backoff_seconds),
                   batch_size=settings.notify_sweep_batch_size,
                   retention=timedelta(seconds=settings.notify_retention_seconds))

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt: the first delay, doubled each time, up to the cap."""
        seconds = self.backoff.total_seconds() * 2.0 ** min(attempts - 1, 40)
        return timedelta(seconds=min(seconds, self.max_backoff.total_seconds()))


@dataclass
class SweepResult:
    delivered: int = 0
    failed: int = 0  # attempts that failed; the row is tried again after its delay
    given_up: int = 0  # rows whose last attempt failed
    unsubscribed: int = 0  # rows whose subscription was deleted: not sent, given up
    pruned: int = 0
    full: bool = False  # a whole batch was owed: more may be waiting


async def _execute(engine: AsyncEngine, statement: Executable) -> int:
    async with asyncio.timeout(DB_TIMEOUT_SECONDS):
        async with engine.begin() as conn:
            return max((await conn.execute(statement)).rowcount, 0)


def _still_owed(key: str) -> Any:
    return (OUTBOX.c.id == key) & OUTBOX.c.delivered_at.is_(None) & OUTBOX.c.given_up_at.is_(None)


def _free(now: datetime) -> Any:
    """Due (past its delay) and held by no sweep."""
    return (or_(OUTBOX.c.next_attempt_at.is_(None), OUTBOX.c.next_attempt_at <= now)
            & or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now))


async def _owed(engine: AsyncEngine, config: SweepConfig, now: datetime) -> list[Any]:
    """Rows past the grace period, due and free, oldest first, each with whether its subscription is active."""
    query = (select(OUTBOX, SUBSCRIPTIONS.c.active)
             .select_from(OUTBOX.outerjoin(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == OUTBOX.c.subscription_id))
             .where(OUTBOX.c.delivered_at.is_(None), OUTBOX.c.given_up_at.is_(None),
                    OUTBOX.c.created_at <= now - config.grace, _free(now))
             .order_by(OUTBOX.c.created_at, OUTBOX.c.id).limit(config.batch_size))
    async with asyncio.timeout(DB_TIMEOUT_SECONDS):
        async with engine.connect() as conn:
            return list((await conn.execute(query)).all())


async def _give_up(engine: AsyncEngine, key: str, now: datetime, **values: Any) -> bool:
    return await _execute(engine, update(OUTBOX).where(_still_owed(key), _free(now))
                          .values(given_up_at=now, claimed_until=None, **values)) == 1


async def _resend(engine: AsyncEngine, send: Send, config: SweepConfig, now: datetime, row: Any,
                  slots: asyncio.Semaphore) -> str | None:
    """One row's attempt; its outcome, or None when another sweep (or the workflow) had it first."""
    key = row.id
    if not row.active and not notification_outbox.is_direct(row.subscription_id):
        return UNSUBSCRIBED if await _give_up(engine, key, now, last_error=UNSUBSCRIBED_ERROR) else None
    if row.attempts >= config.max_attempts:  # a sweep took its last attempt and stopped before the outcome
        return GIVEN_UP if await _give_up(engine, key, now) else None
    async with slots:
        # Taken only if no one has since: the same attempt count, still owed, due and free.
        claimed = await _execute(engine, update(OUTBOX).where(
            _still_owed(key), _free(now), OUTBOX.c.attempts == row.attempts,
        ).values(attempts=OUTBOX.c.attempts + 1, claimed_until=now + CLAIM))
        if not claimed:
            return None
        attempt = row.attempts + 1
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await send(notification_outbox.notification_of(row), key, attempt)
        except Exception as err:  # whatever stopped it, the attempt counts; a later one may succeed
            error = redaction.redact(f"{type(err).__name__}: {err}")[:ERROR_CHARS]
            last = attempt >= config.max_attempts
            later = {"given_up_at": now} if last else {"next_attempt_at": now + config.delay(attempt)}
            await _execute(engine, update(OUTBOX).where(OUTBOX.c.id == key, OUTBOX.c.delivered_at.is_(None))
                           .values(last_error=error, claimed_until=None, **later))
            if not last:
                return FAILED
            log.warning("notification %s (%s of task %s) gave up after %d attempts of the sweep: %s", key,
                        row.event, row.task_id, attempt, error,
                        extra={"task_id": row.task_id, "tenant_id": row.tenant_id})
            return GIVEN_UP
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            await notification_outbox.mark_delivered(engine, key, now)
        return DELIVERED


async def resend_owed(engine: AsyncEngine, send: Send, config: SweepConfig, now: datetime,
                      result: SweepResult) -> None:
    rows = await _owed(engine, config, now)
    result.full = len(rows) == config.batch_size
    slots = asyncio.Semaphore(SEND_CONCURRENCY)
    attempts = [asyncio.create_task(_resend(engine, send, config, now, row, slots)) for row in rows]
    if not attempts:
        return
    # Past the deadline (or when the worker stops) the rest are cancelled: those not yet claimed wait untouched
    # for the next sweep, one cancelled mid-send keeps its claim until it runs out and is then tried again under
    # the same key.
    try:
        await asyncio.wait(attempts, timeout=SEND_PHASE.total_seconds())
    finally:
        unfinished = [each for each in attempts if not each.done()]
        for each in unfinished:
            each.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
    if unfinished:
        log.warning("the notification sweep reached its deadline with %d rows not done", len(unfinished))
    for each in attempts:
        if each.cancelled():
            continue
        if each.exception() is not None:
            log.error("the notification sweep could not handle a row", exc_info=each.exception())
        elif outcome := each.result():
            setattr(result, outcome, getattr(result, outcome) + 1)
            metrics.NOTIFICATIONS_RESENT.labels(outcome).inc()


async def prune(engine: AsyncEngine, config: SweepConfig, now: datetime) -> int:
    """Delete rows delivered, or given up, longer than the retention period ago; a batch per transaction, so no
    lock is held long. A row still owed is kept however old: a retried mirror write finds nothing owed for a
    deleted one, which is right for these."""
    cutoff, pruned = now - config.retention, 0
    for column, kind in ((OUTBOX.c.delivered_at, OUTBOX.c.delivered_at < cutoff),
                         (OUTBOX.c.given_up_at, OUTBOX.c.delivered_at.is_(None) & (OUTBOX.c.given_up_at < cutoff))):
        for _ in range(PRUNE_BATCHES):
            batch = select(OUTBOX.c.id).where(kind).order_by(column).limit(config.prune_batch_size)
            deleted = await _execute(engine, delete(OUTBOX).where(OUTBOX.c.id.in_(batch)))
            pruned += deleted
            if deleted < config.prune_batch_size:
                break
    if pruned:
        metrics.NOTIFICATIONS_PRUNED.inc(pruned)
    return pruned


async def sweep(engine: AsyncEngine, send: Send, config: SweepConfig, now: datetime) -> SweepResult:
    """One sweep at time ``now``: re-send a batch of what is owed, then prune."""
    result = SweepResult()
    await resend_owed(engine, send, config, now, result)
    result.pruned = await prune(engine, config, now)
    return result


async def run(engine: AsyncEngine, send: Send, config: SweepConfig, interval_seconds: float, stop: asyncio.Event,
              clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
    """Sweep every ``interval_seconds`` until ``stop`` is set: the first at a random point within the first
    interval (workers started together spread out), the next at once after a full batch. A failed sweep (the
    database away) is logged and the next comes as usual."""
    wait = random.uniform(0, interval_seconds)
    while True:
        try:
            await asyncio.wait_for(stop.wait(), wait)
            return
        except TimeoutError:
            pass
        try:
            async with asyncio.timeout(SWEEP_TIMEOUT_SECONDS):
                result = await sweep(engine, send, config, clock())
        except Exception:
            log.exception("the notification sweep failed; the next runs in %.0f s", interval_seconds)
            result = None
        wait = min(1.0, interval_seconds) if result and result.full else interval_seconds
