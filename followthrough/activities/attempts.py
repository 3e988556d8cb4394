"""Recording each failed attempt of a step as a task event.

Temporal retries an activity without waking the workflow, so only the
activity sees its own failed attempts; it writes them to the mirror itself.
Best effort: a mirror outage must not turn a retryable failure into another.
"""

import logging
from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from followthrough.infra import redaction
from followthrough.domain.contracts import MirrorBatch, MirrorEvent, TaskChanges
from followthrough.domain.lifecycle import EventType
from followthrough.db.mirror import record_batch

log = logging.getLogger("followthrough.activities")


async def record_failed_attempt(engine: AsyncEngine, task_id: str, run_number: int, step: str,
                                err: BaseException, retryable: bool) -> None:
    info = activity.info()
    event = MirrorEvent(
        id=f"{info.workflow_run_id}:{info.activity_id}:attempt:{info.attempt}", task_id=task_id,
        seq=1000 + info.attempt, type=EventType.TASK_ATTEMPT_FAILED.value, occurred_at=datetime.now(timezone.utc),
        data={"step": step, "attempt": info.attempt, "error_type": type(err).__name__, "message": redaction.redact(str(err))[:1000],
              "will_retry": retryable and (info.retry_policy is None or not info.retry_policy.maximum_attempts
                                           or info.attempt < info.retry_policy.maximum_attempts)},
        changes=TaskChanges(attempts=info.attempt),
    )
    try:
        await record_batch(engine, MirrorBatch(task_id=task_id, workflow_id=info.workflow_id or "", events=[event],
                                               run_number=run_number))
    except Exception as write_error:  # noqa: BLE001 - see module docstring
        log.warning("could not record failed attempt %s of task %s: %s", info.attempt, task_id, write_error)
