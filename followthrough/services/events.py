"""Inbound events: something that happened outside (an invoice paid, a customer's reply) for a subject.

Receiving one (POST /events, or a signed webhook):

1. it is kept once per tenant and id (``inbound_events``); a repeat answers what the first post did and changes
   nothing;
2. every task of the tenant for its subject whose ``stop_on`` names its type is asked, by the ``stop`` Workflow
   Update, to stop: the workflow decides — one still waiting (for its due time, a decision, a resume) ends
   cancelled with the event in its events; one doing its work or ended is untouched, and the answer says so;
3. every live definition of the tenant whose trigger is its type starts a run, with the event as the templates'
   ``event`` variable; the run's task id comes from the event and the definition, so one event starts one run.

Each step is idempotent, so a post whose first attempt died part way is finished by its repeat.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from followthrough.config.settings import Settings
from followthrough.db.database import session_factory
from followthrough.db.mirror import insert_ignoring_duplicates
from followthrough.db.tables import InboundEvent, Task, TaskDefinition
from followthrough.domain.contracts import StopRequest, StopResult, TaskOrigin
from followthrough.domain.lifecycle import TERMINAL_STATUSES, TaskStatus
from followthrough.services.definitions import DefinitionRunner, render
from followthrough.services.errors import Conflict, Invalid, ServiceError, TooManyRequests, Unavailable
from followthrough.services.limits import check_payload_size
from followthrough.services.requests import EventIn

log = logging.getLogger("followthrough.api")

EVENTS = InboundEvent.__table__  # type: ignore[attr-defined]
STOP_TIMEOUT = timedelta(seconds=30)
_AT_ONCE = 20
# Task ids of event-triggered runs: the same event and definition always give the same task.
_EVENT_TASKS = uuid.UUID("8f1e2a4c-6b3d-4e5f-9a7b-1c2d3e4f5a6b")


@dataclass
class Received:
    """The answer to an event, and whether this post was its first (201) or a repeat (200)."""

    first: bool
    answer: dict[str, Any]


def event_variables(event: EventIn, received_at: datetime) -> dict[str, Any]:
    """What a triggered definition's templates see as ``event``."""
    return {"id": event.id, "type": event.type, "subject_ref_type": event.subject_ref_type,
            "subject_ref_id": event.subject_ref_id, "data": event.data, "received_at": received_at.isoformat()}


class EventReceiver:
    def __init__(self, settings: Settings, temporal: Client, engine: AsyncEngine) -> None:
        self.settings, self.temporal, self.engine = settings, temporal, engine

    async def receive(self, event: EventIn, source: str, actor: str | None) -> Received:
        check_payload_size(self.settings, event.data, ("data",))
        now = datetime.now(timezone.utc)
        async with self.engine.begin() as conn:
            first = await insert_ignoring_duplicates(conn, EVENTS, [{
                "tenant_id": event.tenant_id, "id": event.id, "type": event.type,
                "subject_ref_type": event.subject_ref_type, "subject_ref_id": event.subject_ref_id,
                "data": event.data, "source": source[:160], "received_by": actor[:128] if actor else None,
                # No "response" key: a JSON column stores None as JSON null, which IS NULL does not match.
                "received_at": now}]) == 1
            if not first:
                stored = (await conn.execute(select(EVENTS).where(
                    EVENTS.c.tenant_id == event.tenant_id, EVENTS.c.id == event.id))).one()
        if not first:
            if (stored.type, stored.subject_ref_type, stored.subject_ref_id) != (
                    event.type, event.subject_ref_type, event.subject_ref_id):
                # Another event under an id this tenant has used: refused, so its sender knows, never taken for
                # the first one's repeat.
                raise Conflict(f"event id {event.id!r} is already that of another event ({stored.type} for "
                               f"{stored.subject_ref_type}:{stored.subject_ref_id}, from {stored.source}); "
                               f"give this one an id of its own")
            if stored.response is not None:
                return Received(False, stored.response | {"duplicate": True})
            # The first post has not finished (or died part way): finish it, as the event it recorded.
            event = EventIn(id=stored.id, type=stored.type, subject_ref_type=stored.subject_ref_type,
                            subject_ref_id=stored.subject_ref_id, data=stored.data, tenant_id=stored.tenant_id)
            now, source = stored.received_at, stored.source
        tasks = await self._stop_tasks(event, now, source)
        runs = await self._start_runs(event, now, actor)
        answer = {"id": event.id, "type": event.type, "tenant_id": event.tenant_id,
                  "subject_ref_type": event.subject_ref_type, "subject_ref_id": event.subject_ref_id,
                  "source": source, "received_at": now.isoformat(), "duplicate": False, "tasks": tasks, "runs": runs}
        # The answer is kept, and a repeat answers it unchanged, only once nothing in it is waiting on a retry:
        # a task Temporal did not answer for, or a run refused for now (busy, over budget) is tried again by
        # posting the event again, as the answer says.
        if not any(item["outcome"] == "error" for item in (*tasks, *runs)):
            async with self.engine.begin() as conn:
                await conn.execute(update(EVENTS).where(
                    EVENTS.c.tenant_id == event.tenant_id, EVENTS.c.id == event.id,
                    EVENTS.c.response.is_(None)).values(response=answer))
        log.info("event %s (%s) for %s:%s: %d task(s) matched, %d run(s)", event.id, event.type,
                 event.subject_ref_type, event.subject_ref_id, len(tasks), len(runs),
                 extra={"tenant_id": event.tenant_id})
        return Received(first, answer if first else answer | {"duplicate": True})

    # ---- stop_on ------------------------------------------------------------

    async def _stop_tasks(self, event: EventIn, received_at: datetime, source: str) -> list[dict[str, Any]]:
        if event.subject_ref_id is None:
            return []
        async with session_factory(self.engine)() as session:
            rows = (await session.execute(
                select(Task).where(Task.tenant_id == event.tenant_id, Task.subject_ref_type == event.subject_ref_type,
                                   Task.subject_ref_id == event.subject_ref_id)
                # Open tasks first: a subject with many ended ones must not crowd out those still waiting.
                .order_by(case((Task.status.in_([s.value for s in TERMINAL_STATUSES]), 1), else_=0),
                          Task.created_at, Task.id)
                .limit(self.settings.event_max_tasks))).scalars().all()
        # The mirror keeps each run's input (followthrough/domain/run_inputs.py), stop_on with it.
        matched = [r for r in rows if event.type in ((r.run_input or {}).get("stop_on") or [])]
        request = StopRequest(event_id=event.id, event_type=event.type, received_at=received_at, source=source)
        slots = asyncio.Semaphore(_AT_ONCE)

        async def one(row: Task) -> dict[str, Any]:
            async with slots:
                return await self._stop(row, request)

        return list(await asyncio.gather(*(one(r) for r in matched)))

    async def _stop(self, row: Task, request: StopRequest) -> dict[str, Any]:
        answer: dict[str, Any] = {"task_id": row.id, "title": row.title}
        if TaskStatus(row.status).terminal:  # terminal is terminal: the workflow has nothing to decide
            return answer | _outcome("already_ended", row.status, row.stage)
        handle = self.temporal.get_workflow_handle(row.workflow_id)
        try:
            result = await handle.execute_update("stop", request, result_type=StopResult, rpc_timeout=STOP_TIMEOUT)
        except WorkflowUpdateFailedError as err:
            return answer | {"outcome": "error", "status": row.status, "detail": str(err.cause or err)}
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            log.warning("event %s: task %s did not answer the stop in time", request.event_id, row.id)
            return answer | {"outcome": "error", "status": row.status,
                             "detail": "the task did not answer in time; post the event again"}
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # its run has closed; the mirror may not say so yet
                ended = await self._status_now(row.id)
                return answer | _outcome("already_ended", ended.status if ended else row.status,
                                         ended.stage if ended else row.stage)
            log.warning("event %s: task %s not asked to stop: %s", request.event_id, row.id, err)
            return answer | {"outcome": "error", "status": row.status,
                             "detail": f"Temporal did not answer ({err.message}); post the event again"}
        return answer | _outcome(result.outcome, result.status, result.stage)

    async def _status_now(self, task_id: str) -> Task | None:
        async with session_factory(self.engine)() as session:
            return await session.get(Task, task_id)

    # ---- triggers -------------------------------------------------------------

    async def _start_runs(self, event: EventIn, received_at: datetime, actor: str | None) -> list[dict[str, Any]]:
        async with session_factory(self.engine)() as session:
            definitions = (await session.execute(
                select(TaskDefinition).where(TaskDefinition.tenant_id == event.tenant_id,
                                             TaskDefinition.trigger_event == event.type,
                                             TaskDefinition.deleted_at.is_(None))
                .order_by(TaskDefinition.created_at, TaskDefinition.id))).scalars().all()
        runner = DefinitionRunner(self.settings, self.temporal, self.engine)
        return [await self._start_run(runner, row, event, received_at) for row in definitions]

    async def _start_run(self, runner: DefinitionRunner, row: TaskDefinition, event: EventIn,
                         received_at: datetime) -> dict[str, Any]:
        answer: dict[str, Any] = {"definition_id": row.id, "definition_name": row.name}
        variables = {"event": event_variables(event, received_at)}
        task_id = str(uuid.uuid5(_EVENT_TASKS, f"{event.tenant_id}\x00{event.id}\x00{row.id}"))
        try:
            body = await render(row, variables, settings=self.settings, fallback={
                "subject_ref_type": event.subject_ref_type, "subject_ref_id": event.subject_ref_id})
            origin = TaskOrigin(trigger="event", definition_id=row.id, definition_version=row.version,
                                variables=row.variables | variables)
            created = await runner.creator.create(body, f"event:{event.id}"[:128], origin, task_id=task_id)
        except Conflict as err:
            return answer | {"outcome": "duplicate", "task_id": err.extra.get("task_id"), "detail": err.message}
        except Invalid as err:
            return answer | {"outcome": "refused", "detail": [
                {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg"))} for e in err.errors]
                if err.errors else err.message}
        except (Unavailable, TooManyRequests) as err:  # for now: the event's repeat tries again
            return answer | {"outcome": "error", "detail": f"{err.message}; post the event again"}
        except ServiceError as err:
            return answer | {"outcome": "refused", "detail": err.message}
        return answer | {"outcome": "created", "task_id": created.id, "status": created.status}


def _outcome(outcome: str, status: str, stage: str) -> dict[str, Any]:
    detail = {"stopped": "stopped while waiting: cancelled", "not_waiting": f"not waiting: {stage}",
              "already_ended": f"already ended: {status}",
              "not_subscribed": "its stop_on does not name this event type"}.get(outcome)
    return {"outcome": outcome, "status": status, "stage": stage, "detail": detail}
