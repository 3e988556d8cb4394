"""Ordered, batched, non-blocking writes of task events to the SQL mirror.

The task flow appends events and carries on; a background coroutine writes
whatever has accumulated in one local activity, in order. A slow or absent
mirror database therefore never holds a task back, and the workflow drains the
queue before it finishes so nothing is lost.
"""

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from followthrough.domain import activity_names, policies
    from followthrough.domain.contracts import MirrorAck, MirrorBatch, MirrorEvent, Notification, TaskInput


class MirrorPump:
    def __init__(self, task: TaskInput) -> None:
        self._task = task
        self._queue: list[MirrorEvent] = []
        self._busy = False
        self._closing = False
        self._sent_snapshot = False
        self._runner: asyncio.Task | None = None
        self._notifying: list[asyncio.Task] = []

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run())

    def append(self, event: MirrorEvent) -> None:
        self._queue.append(event)

    def idle(self) -> bool:
        """Nothing queued, being written or being notified: the run may hand over to a new one."""
        return not self._queue and not self._busy and all(n.done() for n in self._notifying)

    async def close(self) -> None:
        """Write everything still queued and finish notifying, then stop."""
        self._closing = True
        assert self._runner is not None
        while True:
            try:
                await asyncio.shield(self._runner)
                await asyncio.shield(asyncio.gather(*self._notifying))
                return
            except asyncio.CancelledError:
                # A workflow cancellation arriving now must not drop events.
                continue

    async def _run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._queue) or self._closing)
            if not self._queue:
                return
            events, self._queue = self._queue, []
            batch = MirrorBatch(task_id=self._task.task_id, workflow_id=workflow.info().workflow_id, events=events,
                                task=None if self._sent_snapshot else self._task,
                                run_number=self._task.run_number, tenant_id=self._task.tenant_id)
            self._busy = True
            try:
                ack = await workflow.execute_local_activity(
                    activity_names.RECORD, batch,
                    result_type=MirrorAck,
                    start_to_close_timeout=policies.RECORD_TIMEOUT,
                    retry_policy=policies.RECORD_RETRY,
                    summary=f"Record {len(events)} event{'s' if len(events) != 1 else ''} in the mirror",
                )
            finally:
                self._busy = False
            self._sent_snapshot = True
            self._notifying += [asyncio.create_task(_notify(n)) for n in ack.notifications]


async def _notify(notification: Notification) -> None:
    try:
        await workflow.execute_activity(
            activity_names.NOTIFY, notification, start_to_close_timeout=policies.NOTIFY_TIMEOUT,
            retry_policy=policies.NOTIFY_RETRY, summary=f"Notify a subscriber of {notification.event}",
        )
    except ActivityError as err:
        # A subscriber that stays down does not change the task's outcome.
        workflow.logger.warning("notification %s to %s gave up: %s", notification.event, notification.url, err,
                                extra={"task_id": notification.task.get("id"),
                                       "tenant_id": notification.task.get("tenant_id")})
