"""Creating tasks: validating against the type, refusing duplicates, starting
the workflow, and writing the first mirror row."""

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy import update
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.common import Priority as TemporalPriority
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from followthrough.services import tenant_budget
from followthrough.domain import search_attributes
from followthrough.domain.contracts import NotifySpec, SlaPolicy, TaskInput, TaskOrigin
from followthrough.domain.credentials import HOW_TO_REFERENCE, raw_credentials
from followthrough.domain.lifecycle import EventType, Priority, Stage, TaskMode, TaskStatus
from followthrough.db.mirror import EVENTS, TASKS, insert_created, insert_ignoring_duplicates
from followthrough.domain.naming import TEMPORAL_PRIORITY, workflow_id_for
from followthrough.infra.outbound import OutboundPolicy
from followthrough.domain.run_inputs import input_from, record_of
from followthrough.services import event_lookback, idempotency, limits
from followthrough.services.errors import Conflict, Invalid, ServiceError, Unavailable, invalid, located
from followthrough.services.limits import check_payload_size
from followthrough.services.requests import TaskCreate
from followthrough.services.results import API_PREFIX, TaskCreated, task_links
from followthrough.config.settings import Settings
from followthrough.infra.task_secrets import TaskSecretsFileInvalid, task_secrets_for
from followthrough.services.submitter_policy import (clamp_mode, clamp_retry, loosest_mode, looser, mode_refusal,
                                           retry_refusals)
from followthrough.db.tables import Task
from followthrough.tasktypes import UnknownTaskType, get_type, unserved
from followthrough.tasktypes.base import TaskType
from followthrough.workflows import run_texts

log = logging.getLogger("followthrough.api")

# After these the start may have happened or not: the server may have started the workflow and its answer
# been lost (a deadline passed, the connection dropped). The workflow's id says which.
_UNCONFIRMED = frozenset({RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.CANCELLED,
                          RPCStatusCode.UNKNOWN})
_RETRY_SOON = 5  # seconds
# How long a retry waits for the failed run, already recorded as ended, to close in Temporal.
_CLOSING_WAIT = 10  # seconds


class StartUnconfirmed(Exception):
    """Temporal did not answer whether the workflow started."""


def refuse_raw_credentials(payload: dict[str, Any]) -> None:
    """422 for credential-named fields anywhere in a payload, saying how to reference a secret instead."""
    pasted = raw_credentials(payload)
    if pasted:
        raise located([
            {"type": "raw_credential", "loc": ("body", "payload", *where), "input": None,
             "msg": f"raw credentials are not accepted: {HOW_TO_REFERENCE}"} for where in pasted])


class TaskCreator:
    def __init__(self, settings: Settings, temporal: Client, engine: AsyncEngine) -> None:
        self.settings, self.temporal, self.engine = settings, temporal, engine
        self.task_secrets = task_secrets_for(settings)
        self.window = timedelta(seconds=settings.idempotency_window_seconds)

    def build(self, body: TaskCreate, actor: str, origin: TaskOrigin | None = None,
              task_id: str | None = None) -> TaskInput:
        try:
            task_type = get_type(body.type)
        except UnknownTaskType as err:
            raise invalid(("type",), str(err), "unknown_task_type") from err
        if reason := unserved(task_type):
            raise invalid(("type",), reason, "part_missing")
        if task_type.needs_llm and not self.settings.llm_base_url:
            raise invalid(("type",), f"{task_type.name} tasks are planned by an LLM, and none is configured "
                                     f"(FOLLOWTHROUGH_LLM_BASE_URL)")
        refuse_raw_credentials(body.payload)
        check_payload_size(self.settings, body.payload)
        try:
            payload = task_type.payload_model.model_validate(body.payload)
        except ValidationError as err:
            raise located([
                {"type": e["type"], "loc": ("body", "payload", *e["loc"]), "msg": e["msg"], "input": e.get("input")}
                for e in err.errors(include_url=False)
            ]) from err
        policy = OutboundPolicy.from_entries(self.settings.outbound_allow)
        for name, url in task_type.outbound_urls(payload).items():
            if (refusal := policy.refusal_for_url(url)) is not None:
                raise invalid(("payload", *name.split(".")), refusal, "outbound_refused")
        self._check_secrets(task_type, payload, body.tenant_id)
        overrides = body.retry.model_dump(exclude_none=True) if body.retry else {}
        if refused := retry_refusals(overrides, task_type.retry):
            raise located([{"type": "looser_than_policy", "loc": ("body", "retry", name), "msg": msg,
                                           "input": overrides[name]} for name, msg in refused.items()])
        mode = self._mode(body, task_type)
        self._check_subtasks(task_type, payload, mode, body.tenant_id, ("payload",))
        task = TaskInput(
            task_id=task_id or str(uuid.uuid4()), type=task_type.name,
            title=body.title or " ".join(filter(None, [task_type.name, body.subject_ref_id])),
            mode=mode.value, payload=payload.model_dump(mode="json"),
            created_at=datetime.now(timezone.utc),
            approval_timeout_seconds=body.approval_timeout_seconds or self.settings.approval_timeout_seconds,
            priority=body.priority.value, tenant_id=body.tenant_id, owner_type=body.owner_type,
            owner_id=body.owner_id, subject_ref_type=body.subject_ref_type, subject_ref_id=body.subject_ref_id,
            source=body.source, due_at=body.due_at, created_by=actor,
            send_retry=replace(task_type.retry, **overrides), send_timeout_seconds=task_type.send_timeout_seconds,
            approvers=list(dict.fromkeys(body.approval.approvers)) if body.approval else [],
            approvals_required=body.approval.required if body.approval else 1,
            approver_roles=list(dict.fromkeys(body.approval.roles)) if body.approval else [],
            sla=self._sla(body, task_type),
            notify=self._notify(body),
            decompose=task_type.plan is not None, origin=origin, stop_on=list(body.stop_on),
            patch_level=self.settings.workflow_patch_level,
        )
        return task_type.shape(payload, task) if task_type.shape is not None else task

    def _check_secrets(self, task_type: TaskType, payload: Any, tenant_id: str) -> None:
        """422 for a task secret the tenant has not (or not for the URL it goes to); the same words whether the
        name exists elsewhere or not at all, so a submitter learns nothing about other names or tenants."""
        refs = task_type.secret_refs(payload)
        if not refs:
            return
        try:
            problems = [(path, refusal) for path, (name, url) in refs.items()
                        if (refusal := self.task_secrets.refusal(tenant_id, name, url)) is not None]
        except TaskSecretsFileInvalid:  # logged, with where, by followthrough/infra/task_secrets.py
            raise Unavailable("the task secrets file is invalid; an operator must fix it", retry_after=30) from None
        if problems:
            raise located([{"type": "secret_unavailable", "loc": ("body", "payload", *path.split(".")),
                                           "msg": refusal, "input": None} for path, refusal in problems])

    def _notify(self, body: TaskCreate) -> NotifySpec | None:
        """The task's own notifications, held to the tenant's policy as its other outbound sends are: addresses
        within the email type's allowed domains, a webhook past the SSRF guard, within the webhook type's
        allowed hosts and signed by one of the tenant's secrets for its host."""
        if body.notify is None:
            return None
        notify, tenant = body.notify, body.tenant_id
        on = list(dict.fromkeys([*notify.on, *(["task.completed"] if body.notify_on_complete else []),
                                 *(["task.failed"] if body.notify_on_failure else [])]))
        allowed = {d.lower() for d in get_type("email").guardrail_params(self.settings, tenant)
                   .get("allowed_domains") or []}
        for index, address in enumerate(notify.email):
            if allowed and address.rsplit("@", 1)[-1].lower() not in allowed:
                raise invalid(("notify", "email", index), f"{address} is outside this tenant's allowed domains",
                              "looser_than_policy")
        url = secret = None
        if notify.webhook is not None:
            url, secret = notify.webhook.url, notify.webhook.secret
            if (refusal := OutboundPolicy.from_entries(self.settings.outbound_allow).refusal_for_url(url)):
                raise invalid(("notify", "webhook", "url"), refusal, "outbound_refused")
            hosts = {h.lower() for h in get_type("webhook").guardrail_params(self.settings, tenant)
                     .get("allowed_hosts") or []}
            host = (urlsplit(url).hostname or "").lower()
            if hosts and host not in hosts:
                raise invalid(("notify", "webhook", "url"), f"{host} is outside this tenant's allowed hosts",
                              "looser_than_policy")
            try:
                refusal = self.task_secrets.refusal(tenant, secret, url)
            except TaskSecretsFileInvalid:
                raise Unavailable("the task secrets file is invalid; an operator must fix it",
                                  retry_after=30) from None
            if refusal is not None:
                raise invalid(("notify", "webhook", "secret"), refusal, "secret_unavailable")
        return NotifySpec(on=on, email=list(dict.fromkeys(notify.email)), webhook_url=url, webhook_secret=secret)

    def _mode(self, body: TaskCreate, task_type: TaskType) -> TaskMode:
        """The task's mode: as asked, if no looser than the tenant's policy for its type allows (else 422); by
        default the type's, tightened to that policy."""
        limit = loosest_mode(self.settings, body.tenant_id, task_type.name)
        if task_type.only_mode is not None and body.mode not in (None, task_type.only_mode):
            raise invalid(("mode",), f"{task_type.name} tasks run only in {task_type.only_mode.value} mode",
                          "mode_not_supported")
        if body.mode is None:
            return clamp_mode(task_type.default_mode, limit)
        if refusal := mode_refusal(body.mode, limit, f"this tenant's policy for {task_type.name} tasks"):
            raise invalid(("mode",), refusal, "looser_than_policy")
        return body.mode

    def _check_subtasks(self, task_type: TaskType, payload: Any, mode: TaskMode, tenant_id: str,
                        where: tuple[str | int, ...]) -> None:
        """422 for a subtask the payload names in a mode looser than its parent's or than the tenant's policy for
        its own type; those that take their type's default are tightened when planned (followthrough/activities/planning.py)."""
        for loc, type_name, asked, sub_payload in task_type.listed_subtasks(payload):
            sub_type = get_type(type_name)
            if reason := unserved(sub_type):
                raise invalid((*where, *loc[:-1], "type"), reason, "part_missing")
            limit = loosest_mode(self.settings, tenant_id, sub_type.name)
            limit = mode if looser(limit, mode) else limit
            if asked is not None and (refusal := mode_refusal(
                    asked, limit, f"its parent task ({mode.value}) and this tenant's policy for {sub_type.name}")):
                raise invalid((*where, *loc), refusal, "looser_than_policy")
            if sub_type.plan is not None:
                self._check_subtasks(sub_type, sub_type.payload_model.model_validate(sub_payload),
                                     clamp_mode(asked or sub_type.default_mode, limit), tenant_id,
                                     (*where, *loc[:-1], "payload"))

    def _sla(self, body: TaskCreate, task_type: TaskType) -> SlaPolicy | None:
        if body.sla is None:
            return task_type.sla
        mode = self._mode(body, task_type)
        if body.sla.on_deadline == "approve" and mode not in (TaskMode.ASSISTED, TaskMode.AUTONOMOUS):
            raise invalid(("sla", "on_deadline"), f"approve at the deadline needs a mode that may send without a "
                                                   f"person (assisted or autonomous), not {mode.value}")
        timeout = body.approval_timeout_seconds or self.settings.approval_timeout_seconds
        for name in ("remind_after_seconds", "escalate_after_seconds"):
            if (getattr(body.sla, name) or 0) >= timeout:
                raise invalid(("sla", name), f"must come before the approval deadline ({timeout} s)")
        return SlaPolicy(**body.sla.model_dump())

    async def start(self, task: TaskInput, workflow_id: str, once: bool = False) -> None:
        """Start the task's workflow; ``once``: never again under this id, even after it has closed."""
        api = f"{self.settings.effective_public_url}{API_PREFIX}"
        try:
            await self._start(task, workflow_id, once, api)
        except RPCError as err:
            # The request was valid; Temporal refusing the start's arguments means the cluster is not set up
            # for followthrough (most often: its search attributes were never registered).
            if err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION):
                log.error("Temporal refused to start task %s: %s", task.task_id, err.message)
                raise Unavailable(f"Temporal refused to start the task ({err.message}); is the cluster set up? "
                                  f"run `followthrough temporal setup`", retry_after=30) from err
            if err.status == RPCStatusCode.RESOURCE_EXHAUSTED:
                raise Unavailable(f"Temporal is too busy to start the task now ({err.message}); retry shortly",
                                  retry_after=_RETRY_SOON) from err
            if err.status in _UNCONFIRMED:
                raise StartUnconfirmed(err.message) from err
            raise

    async def _started(self, workflow_id: str) -> bool | None:
        """Whether a workflow with this id exists (ids name one task, so it is this task's); None: cannot tell."""
        try:
            await self.temporal.get_workflow_handle(workflow_id).describe(rpc_timeout=timedelta(seconds=5))
        except RPCError as err:
            return False if err.status == RPCStatusCode.NOT_FOUND else None
        return True

    async def _start(self, task: TaskInput, workflow_id: str, once: bool, api: str) -> None:
        await self.temporal.start_workflow(
            "TaskWorkflow", task, id=workflow_id, task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE if once else WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=task.title[:200],
            static_details=run_texts.start_details(task, api),
            # Ids and vocabulary only (Temporal keeps search attributes in clear); the workflow keeps
            # TaskStatus current. The memo tells subtasks where the API is, for their links.
            search_attributes=search_attributes.typed_for(task),
            memo={run_texts.API_MEMO: api},
            priority=TemporalPriority(priority_key=TEMPORAL_PRIORITY[Priority(task.priority)]),
        )

    def tasks_started_by(self, task: TaskInput) -> int:
        """The task and the subtasks its payload lists, every one charged to its tenant when it is created."""
        task_type = get_type(task.type)
        return tenant_budget.tasks_started_by(task_type, task_type.payload_model.model_validate(task.payload))

    async def create(self, body: TaskCreate, actor: str, origin: TaskOrigin | None = None,
                     task_id: str | None = None, admitted: bool = False) -> TaskCreated:
        """Create and start a task, charged to its tenant's budget unless the caller has ``admitted`` it. A given
        ``task_id`` makes the creation repeatable: a repeat (a retried activity, say) is not charged again, and
        finds the task the first attempt started and answers with it."""
        task = self.build(body, actor, origin, task_id)
        if task.stop_on:
            task = replace(task, stopped_by=await event_lookback.earlier_stop(self.settings, self.engine, task))
        count = self.tasks_started_by(task)
        hold = tenant_budget.Hold() if admitted else await limits.admit(
            self.settings, self.engine, {task.tenant_id: count},
            charge_key=f"task:{task_id}" if task_id else None, loc=("payload",))
        return await self._holding(hold, task, count, self._create(task, actor, task_id))

    async def _holding(self, hold: tenant_budget.Hold, task: TaskInput, count: int,
                       start: Awaitable[TaskCreated]) -> TaskCreated:
        """Await ``start`` under ``hold``: given back if it fails; once the task's own row counts it, all but
        the holds for its listed subtasks."""
        try:
            created = await start
        except BaseException:
            await self.release(hold)
            raise
        await self.release(hold, {task.tenant_id: count - 1})
        return created

    async def release(self, hold: tenant_budget.Hold, keep: dict[str, int] | None = None) -> None:
        try:
            await tenant_budget.release(self.engine, hold, keep)
        except (DBAPIError, OSError) as err:  # the hold expires by itself (followthrough/services/tenant_budget.py)
            log.warning("could not release a hold on tasks in flight: %s", err)

    def batch_charge(self, items: list[dict[str, Any]], actor: str,
                     tenant: Callable[[TaskCreate], str]) -> tuple[Counter[str], Counter[str]]:
        """What a batch charges each tenant: every task its valid items start; and of those, the listed
        subtasks (their workflows start them later). An invalid item is answered on its own and costs nothing."""
        wanted: Counter[str] = Counter()
        listed: Counter[str] = Counter()
        for raw in items:
            try:
                body = TaskCreate.model_validate(raw)
                body.tenant_id = tenant(body)
                count = self.tasks_started_by(self.build(body, actor))
            except (ValidationError, ServiceError):
                continue
            wanted[body.tenant_id] += count
            listed[body.tenant_id] += count - 1
        return wanted, listed

    async def _create(self, task: TaskInput, actor: str, task_id: str | None) -> TaskCreated:
        workflow_id = workflow_id_for(task.task_id, task.type, task.subject_ref_id)
        key = idempotency.dedupe_key(task.tenant_id, task.type, task.subject_ref_type, task.subject_ref_id,
                                     task.source) if self.window else None
        if key is not None:
            holder = await idempotency.claim_subject(self.engine, key, task.task_id, self.window)
            if holder is not None and holder != task.task_id:
                raise Conflict("a task for this subject and source was created within the idempotency window",
                               task_id=holder)
        try:
            await self.start(task, workflow_id, once=task_id is not None)
        except WorkflowAlreadyStartedError:
            if task_id is None:
                if key is not None:
                    await idempotency.release_subject(self.engine, key, task.task_id)
                raise
            # The same creation again: the first attempt started the task; its row is written below if lost.
        except StartUnconfirmed as err:
            started = await self._started(workflow_id)
            if started is None:
                # Unknown: the subject stays claimed, so a plain retry cannot make a second task; if the workflow
                # did start, it writes its own mirror row.
                log.warning("start of task %s unconfirmed: %s", task.task_id, err, extra={"task_id": task.task_id})
                raise Unavailable(f"Temporal did not confirm the start of the task ({err}); it may have started: "
                                  f"retry with the same Idempotency-Key, or look for task {task.task_id}",
                                  retry_after=_RETRY_SOON, task_id=task.task_id) from None
            if not started:
                if key is not None:
                    await idempotency.release_subject(self.engine, key, task.task_id)
                raise Unavailable(f"Temporal did not start the task ({err}); retry shortly",
                                  retry_after=_RETRY_SOON) from None
            # It started; only the answer was lost.
        except BaseException:
            if key is not None:
                await idempotency.release_subject(self.engine, key, task.task_id)
            raise
        # The workflow is the source of truth and writes this row itself if this
        # insert is lost, so a mirror failure here does not fail the request.
        try:
            async with self.engine.begin() as conn:
                await insert_created(conn, task, workflow_id)
        except (DBAPIError, OSError) as err:  # asyncpg reports a refused connection as OSError
            log.warning("task %s started; its mirror row will be written by the workflow (%s)", task.task_id, err)
        log.info("task %s created: %s, %s mode, by %s", task.task_id, task.type, task.mode, actor,
                 extra={"task_id": task.task_id, "tenant_id": task.tenant_id, "workflow_id": workflow_id})
        stopped = task.stopped_by
        return TaskCreated(id=task.task_id, status=(TaskStatus.CANCELLED if stopped else TaskStatus.PENDING).value,
                           workflow_id=workflow_id, links=task_links(self.settings, task.task_id, workflow_id),
                           stopped_by_event=None if stopped is None else {
                               "id": stopped.event_id, "type": stopped.event_type,
                               "received_at": stopped.received_at})

    async def rerun(self, row: Task, actor: str) -> TaskCreated:
        """A new run of a failed task, with the input its last run had."""
        last = await self._input_of(row)
        try:
            task_type = get_type(last.type)
        except UnknownTaskType as err:
            raise Conflict(f"this deployment no longer runs {last.type} tasks ({err}); the task cannot be "
                           f"retried here") from None
        # A new run is held to today's policy: an operator who has tightened the mode or the type's retries
        # since, tightens them here; and it never runs looser than the run before it.
        limit = loosest_mode(self.settings, last.tenant_id, last.type)
        mode = clamp_mode(clamp_mode(TaskMode(last.mode), TaskMode(row.mode)), limit)
        task = replace(last, run_number=row.run_number + 1, due_at=None, mode=mode.value,
                       send_retry=clamp_retry(last.send_retry, task_type.retry), carried=None,
                       stopped_by=None, patch_level=self.settings.workflow_patch_level)
        # The new run starts its task (and the subtasks its payload lists) again: charged like a creation.
        count = self.tasks_started_by(task)
        hold = await limits.admit(self.settings, self.engine, {task.tenant_id: count},
                                  charge_key=f"task:{task.task_id}:{task.run_number}", loc=("payload",))
        return await self._holding(hold, task, count, self._rerun(row, task, actor))

    async def _rerun(self, row: Task, task: TaskInput, actor: str) -> TaskCreated:
        try:
            try:
                await self.start(task, row.workflow_id)
            except WorkflowAlreadyStartedError:
                # The failed run records its end in the mirror a moment before it closes in Temporal: a retry
                # in that moment waits for it to close, rather than be told a new run has started.
                if not await self._closes(row):
                    raise
                await self.start(task, row.workflow_id)
        except WorkflowAlreadyStartedError:
            raise Conflict("a new run of this task has already started") from None
        except StartUnconfirmed as err:
            raise Unavailable(f"Temporal did not confirm the new run's start ({err}); look at the task before "
                              f"retrying it", retry_after=_RETRY_SOON) from None
        now = datetime.now(timezone.utc)
        async with self.engine.begin() as conn:
            # Unless the new run has already written, the task reads as pending for it.
            await conn.execute(update(TASKS).where(TASKS.c.id == row.id, TASKS.c.run_number == row.run_number)
                               .values(status=TaskStatus.PENDING.value, stage=Stage.QUEUED.value, error=None,
                                       mode=task.mode, run_input=record_of(task),
                                       result=None, finished_at=None, approval_deadline=None,
                                       run_number=task.run_number, updated_at=now))
            await insert_ignoring_duplicates(conn, EVENTS, [{
                "id": f"{row.id}:retry:{task.run_number}", "task_id": row.id, "seq": 0,
                "type": EventType.TASK_RETRIED.value, "old_status": TaskStatus.FAILED.value,
                "new_status": TaskStatus.PENDING.value, "actor_type": "user", "actor_id": actor,
                "data": {"run": task.run_number, "previous_error": row.error}, "occurred_at": now,
                "recorded_at": now}])
        return TaskCreated(id=row.id, status=TaskStatus.PENDING.value, workflow_id=row.workflow_id,
                           links=task_links(self.settings, row.id, row.workflow_id))

    async def _closes(self, row: Task) -> bool:
        """Whether the run the mirror shows as ended (``row.workflow_run_id``) closes within a few seconds."""
        if not row.workflow_run_id:
            return False
        handle = self.temporal.get_workflow_handle(row.workflow_id, run_id=row.workflow_run_id)
        try:
            await asyncio.wait_for(handle.result(follow_runs=False), timeout=_CLOSING_WAIT)
        except WorkflowFailureError:
            return True  # closed some other way (terminated, timed out): closed all the same
        except (asyncio.TimeoutError, RPCError):
            return False
        return True

    async def _input_of(self, row: Task) -> TaskInput:
        """The task as its last run received it: from the mirror, which keeps it (followthrough/domain/run_inputs.py);
        for a row written before it did, from that run's history while Temporal still has it."""
        if row.run_input is not None:
            try:
                return input_from(row.run_input, row.payload, task_id=row.id, tenant_id=row.tenant_id,
                                  type_name=row.type)
            except (TypeError, ValueError) as err:
                log.error("task %s: its stored run input is unusable: %s", row.id, err,
                          extra={"task_id": row.id, "tenant_id": row.tenant_id})
                raise Conflict("the task's stored input cannot be read, so it cannot be retried exactly; "
                               "create a new task") from None
        handle = self.temporal.get_workflow_handle(row.workflow_id, run_id=row.workflow_run_id)
        try:
            async for event in handle.fetch_history_events():
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                try:
                    [task] = await self.temporal.data_converter.decode(payloads, [TaskInput])
                except ApplicationError:  # started unencrypted, which the codec refuses (followthrough/infra/codec.py)
                    raise Conflict("the task's last run was started with unencrypted input, which this "
                                   "deployment refuses; create a new task") from None
                return task
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise Conflict("the task predates the mirror keeping a run's input, and its last run is no "
                               "longer in Temporal (past the namespace's retention), so its input is gone; "
                               "create a new task") from None
            if err.status in _UNCONFIRMED | {RPCStatusCode.RESOURCE_EXHAUSTED}:
                raise Unavailable(f"Temporal did not answer with the task's last run ({err.message}); retry "
                                  f"shortly", retry_after=_RETRY_SOON) from None
            raise
        raise Conflict("the task's last run is no longer in Temporal's history; create a new task")

    async def create_once(self, body: TaskCreate, actor: str, key: str,
                          origin: TaskOrigin | None = None) -> TaskCreated | idempotency.StoredResponse:
        """``create`` behind an Idempotency-Key: repeats get the first answer (a StoredResponse), to be marked
        as replayed."""
        digest = idempotency.request_hash(body.model_dump(mode="json"))
        try:
            stored = await idempotency.begin(self.engine, body.tenant_id, key, digest, self.window)
        except idempotency.KeyReused:
            raise Invalid("this Idempotency-Key was already used for a different request") from None
        except idempotency.KeyInFlight:
            raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly") from None
        if isinstance(stored, idempotency.StoredResponse):
            return stored
        try:
            # The key's record decides the task's id, so a repeat after the first request died (its process
            # killed between starting the workflow and storing the answer) answers with that task, not a second.
            created = await self.create(body, actor, origin, task_id=stored.task_id)
        except Conflict as err:  # a duplicate subject is an answer worth replaying
            answer = idempotency.StoredResponse(409, {"detail": err.message, **err.extra})
            await idempotency.finish(self.engine, body.tenant_id, key, answer)
            raise
        except BaseException:
            await idempotency.finish(self.engine, body.tenant_id, key, None)
            raise
        await idempotency.finish(self.engine, body.tenant_id, key,
                                 idempotency.StoredResponse(201, created.model_dump(mode="json", by_alias=True)))
        return created
