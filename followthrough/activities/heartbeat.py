"""Heartbeating around an activity's work.

Temporal tells an activity that its workflow cancelled it in the answer to a
heartbeat, so long work heartbeats while it runs. What a cancel then does
depends on the work: drafting and planning stop; a delivery that has begun
finishes (its outcome must be known), and the workflow waits for it.
"""

import asyncio
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")


async def heartbeating(work: Awaitable[T], *, finish_on_cancel: bool = False) -> T:
    """Await ``work`` while heartbeating a few times per heartbeat timeout.

    A cancel cancels ``work`` and re-raises, unless ``finish_on_cancel``: then
    the work runs to its end and its result is returned.
    """
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await work
    job = asyncio.ensure_future(work)
    every = max(0.2, timeout.total_seconds() / 4)
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(job), timeout=every)
            return job.result()
        except TimeoutError:
            activity.heartbeat()
        except asyncio.CancelledError:
            if job.done() and not job.cancelled():
                return job.result()
            if not finish_on_cancel:
                job.cancel()
                with suppress(asyncio.CancelledError):
                    await job
                raise
            # Carry on heartbeating until the work ends; the cancel is already known.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
