"""A person's decision on a task (approve, reject, complete, cancel, reschedule, pause, resume), taken as a
Workflow Update on its workflow, whichever way it comes: the JSON API, the inbox, an approval link, a bulk
decision."""

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from followthrough.domain.contracts import DecisionAck, RescheduleRequest, TaskOutcome
from followthrough.services.errors import Conflict, Forbidden, NotFound, ServiceError
from followthrough.db.tables import Task

UPDATE_TIMEOUT = timedelta(seconds=30)
log = logging.getLogger("followthrough.api")

_MAYBE_CLOSED = {RPCStatusCode.NOT_FOUND, RPCStatusCode.UNAVAILABLE, RPCStatusCode.ABORTED}


async def task_row(session: AsyncSession, task_id: str) -> Task:
    """The task's mirror row; NotFound for an id no task has."""
    row = await session.get(Task, task_id) if len(task_id) <= 36 else None
    if row is None:
        raise NotFound(f"task {task_id!r} not found")
    return row


async def decide(session: AsyncSession, temporal: Client, task_id: str, update: str, arg: Any) -> DecisionAck:
    """The decision ``update`` (with its ``arg``) on the task with this id."""
    return await decide_row(temporal, await task_row(session, task_id), update, arg)


def run_now_request(actor_id: str, reason: str | None = None) -> RescheduleRequest:
    """A task waiting for its due time made due now, recorded as run now by ``actor_id``."""
    return RescheduleRequest(due_at=datetime.now(timezone.utc), actor_id=actor_id, reason=reason or "run now",
                             run_now=True)


async def run_now(session: AsyncSession, temporal: Client, task_id: str, actor_id: str,
                  reason: str | None = None) -> DecisionAck:
    """Start now the task waiting for its due time; Conflict (with why) for one that is not waiting for it."""
    return await decide(session, temporal, task_id, "reschedule", run_now_request(actor_id, reason))


async def decide_row(temporal: Client, row: Any, update: str, arg: Any,
                     timeout: timedelta = UPDATE_TIMEOUT) -> DecisionAck:
    """The decision as a Workflow Update on the task ``row`` names (its id, workflow_id, status, tenant_id)."""
    handle = temporal.get_workflow_handle(row.workflow_id)
    try:
        ack = await handle.execute_update(update, arg, result_type=DecisionAck, rpc_timeout=timeout)
    except WorkflowUpdateFailedError as err:
        raise update_refused(err) from err
    except RPCError as err:
        # An update that raced the workflow's end (NOT_FOUND once closed; aborted as it closed, which the
        # server reports as UNAVAILABLE) is a decision the task can no longer take: a conflict with how it ended.
        if err.status in _MAYBE_CLOSED:
            ended = await _ended_as(handle, row.status)
            if ended is not None:
                raise Conflict(f"task is already {ended}") from err
        raise decision_failure(err, row.status) from err
    log.info("task %s: %s by %s, now %s", row.id, update, getattr(arg, "actor_id", None) or "-", ack.status,
             extra={"task_id": row.id, "tenant_id": row.tenant_id, "workflow_id": row.workflow_id})
    return ack


def update_refused(err: WorkflowUpdateFailedError) -> ServiceError:
    """The workflow's validator refused the decision: Forbidden for someone not allowed to decide, else a
    Conflict."""
    cause = err.cause
    message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    forbidden = isinstance(cause, ApplicationError) and cause.type == "NotAllowed"
    return Forbidden(message) if forbidden else Conflict(message)


def decision_failure(err: RPCError, status: str) -> Exception:
    """An RPC error answering a decision on an existing task, as the error to raise."""
    if err.status == RPCStatusCode.NOT_FOUND:
        # The workflow has already closed: the task exists but can take no decision.
        return Conflict(f"task is already {status}" if status else "task has already finished")
    return err


async def _ended_as(handle: WorkflowHandle, mirrored: str) -> str | None:
    """How the task's workflow ended, or None while it runs (the mirror may lag: ask Temporal)."""
    try:
        described = await handle.describe(rpc_timeout=timedelta(seconds=5))
    except RPCError:
        return None
    if described.status in (None, WorkflowExecutionStatus.RUNNING):
        return None
    try:
        return (await handle.result(result_type=TaskOutcome, rpc_timeout=timedelta(seconds=5))).status
    except Exception:  # noqa: BLE001 - best effort: it ended; the mirror's status says how
        return mirrored
