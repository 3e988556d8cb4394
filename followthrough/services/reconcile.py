"""Reconciliation: compare the SQL mirror with Temporal, report drift, and on request repair the mirror.

Temporal is the source of truth. Each TaskWorkflow run in the namespace's visibility (scoped to the task
queue, and optionally to runs started since a time) is compared with its task's mirror row: a closed run by
its result (``TaskOutcome.status``), an open one by its ``state`` query (status and stage). Mirror rows that
are not terminal and whose workflow Temporal does not know are orphans.

Drift kinds:
  missing_row      a task runs (or ran) in Temporal but has no mirror row
  status_mismatch  the row's status or stage (or, for a closed run, finished_at) differs from Temporal's
  orphan_row       a row not yet terminal whose workflow does not exist in Temporal

A repair rewrites the row from Temporal and appends a TASK_RECONCILED event with the row's values before and
after. A missing row is inserted from the run's input (the TaskInput in its first history event). An orphan
row is never deleted: it is marked ``failed`` with the reason, since its task can never progress. Terminal
rows whose workflow is gone are not drift: Temporal deletes closed runs after the namespace's retention period.
"""

import asyncio
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import (Client, WorkflowExecution, WorkflowExecutionStatus, WorkflowHandle,
                               WorkflowQueryFailedError)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from followthrough.db.approval_records import APPROVALS
from followthrough.domain.contracts import DecisionAck, TaskInput, TaskOutcome
from followthrough.domain.lifecycle import EventType, Stage, TaskStatus
from followthrough.db.mirror import EVENTS, RUNS, TASKS, TERMINAL_VALUES, insert_created, insert_ignoring_duplicates

MISSING_ROW, STATUS_MISMATCH, ORPHAN_ROW = "missing_row", "status_mismatch", "orphan_row"
QUERY_TIMEOUT_SECONDS = 10
# A pending approval of a task found terminal is closed with the status its task ended with.
_APPROVAL_CLOSES = {"completed": "completed", "rejected": "rejected", "expired": "expired",
                    "cancelled": "cancelled", "failed": "cancelled"}


@dataclass
class Truth:
    """What Temporal says about a task's latest run."""

    workflow_id: str
    run_id: str
    task_queue: str
    closed: bool
    status: str
    stage: str
    started_at: datetime | None = None
    closed_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Drift:
    kind: str
    workflow_id: str
    task_id: str | None
    mirror: dict[str, Any] | None
    temporal: dict[str, Any] | None
    detail: str
    repaired: bool = False


@dataclass
class Report:
    workflows: int = 0
    drift: list[Drift] = field(default_factory=list)
    # Runs that could not be checked (a query with no worker to answer it, say), with the reason.
    unverified: list[dict[str, str]] = field(default_factory=list)
    repair: bool = False

    @property
    def clean(self) -> bool:
        """No drift left: none found, or every one repaired."""
        return all(d.repaired for d in self.drift)

    def as_json(self) -> dict[str, Any]:
        return {"workflows": self.workflows, "repair": self.repair, "drift": [asdict(d) for d in self.drift],
                "unverified": self.unverified, "clean": self.clean}


class Unverifiable(Exception):
    pass


def visibility_query(task_queue: str | None, since: datetime | None) -> str:
    query = 'WorkflowType="TaskWorkflow"'
    if task_queue:
        query += f' AND TaskQueue="{task_queue}"'
    if since is not None:
        query += f' AND StartTime >= "{since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"'
    return query


def _row_view(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    finished = row.finished_at.isoformat() if row.finished_at else None
    return {"status": row.status, "stage": row.stage, "finished_at": finished}


def _truth_view(truth: Truth) -> dict[str, Any]:
    return {"status": truth.status, "stage": truth.stage, "closed": truth.closed, "run_id": truth.run_id}


async def _truth(client: Client, execution: WorkflowExecution) -> Truth:
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=TaskOutcome)
    base = dict(workflow_id=execution.id, run_id=execution.run_id, task_queue=execution.task_queue,
                started_at=execution.start_time)
    status = execution.status
    if status in (None, WorkflowExecutionStatus.RUNNING):
        try:
            state = await handle.query("state", result_type=DecisionAck,
                                       rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS))
        except RPCError as err:
            raise Unverifiable(f"state query failed: {err.message}") from err
        except WorkflowQueryFailedError as err:  # the worker answered, refusing: e.g. a run it cannot decode
            raise Unverifiable(f"state query failed: {err.message}") from err
        if state.status in TERMINAL_VALUES:  # perhaps closed since visibility last saw it
            described = await _described(client, execution.id, execution.run_id)
            if described.status not in (None, WorkflowExecutionStatus.RUNNING):
                return await _truth(client, described)
        return Truth(closed=False, status=state.status, stage=state.stage, **base)
    if status is WorkflowExecutionStatus.CONTINUED_AS_NEW:
        # A run that waited long handed over to a new one (followthrough/workflows/task.py): the task is that run's.
        return await _truth(client, await _described(client, execution.id))
    closed = dict(base, closed=True, closed_at=execution.close_time, stage=Stage.DONE.value)
    if status is WorkflowExecutionStatus.COMPLETED:
        outcome = await handle.result(follow_runs=False)
        return Truth(status=outcome.status, result=outcome.result, error=outcome.error, **closed)
    if status is WorkflowExecutionStatus.CANCELED:
        return Truth(status=TaskStatus.CANCELLED.value, **closed)
    # Failed, terminated or timed out in Temporal itself: the task did not finish.
    return Truth(status=TaskStatus.FAILED.value, error=f"workflow {status.name.lower()} in Temporal", **closed)


async def _described(client: Client, workflow_id: str, run_id: str | None = None) -> WorkflowExecution:
    return await client.get_workflow_handle(workflow_id, run_id=run_id).describe()


async def _input_of(client: Client, handle: WorkflowHandle) -> TaskInput:
    async for event in handle.fetch_history_events():
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            try:
                [task] = await client.data_converter.decode(payloads, [TaskInput])
            except ApplicationError as err:  # started unencrypted, which the codec refuses (followthrough/infra/codec.py)
                raise Unverifiable(f"the run's input cannot be read: {err}") from None
            return task
        break
    raise Unverifiable("the run's first history event is not its start")


def _differences(row: Any, truth: Truth) -> list[str]:
    found = []
    if row.status != truth.status:
        found.append(f"status {row.status} ≠ {truth.status}")
    if row.stage != truth.stage:
        found.append(f"stage {row.stage} ≠ {truth.stage}")
    if truth.closed and row.finished_at is None:
        found.append("finished_at missing")
    return found


async def _rows_by_workflow(engine: AsyncEngine, workflow_ids: list[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    async with engine.connect() as conn:
        for start in range(0, len(workflow_ids), 500):
            chunk = workflow_ids[start:start + 500]
            for row in (await conn.execute(select(TASKS).where(TASKS.c.workflow_id.in_(chunk)))).all():
                rows[row.workflow_id] = row
    return rows


async def _row_by_id(engine: AsyncEngine, task_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(TASKS).where(TASKS.c.id == task_id))).first()


class Reconciler:
    def __init__(self, client: Client, engine: AsyncEngine, *, task_queue: str | None = None,
                 since: datetime | None = None, tenant: str | None = None, settle_seconds: float = 2.0,
                 concurrency: int = 16) -> None:
        self.client, self.engine = client, engine
        self.task_queue, self.since, self.tenant = task_queue, since, tenant
        self.settle_seconds = settle_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self.inputs: dict[str, TaskInput] = {}
        self.truths: dict[str, Truth] = {}
        self.checked: set[str] = set()  # workflows in scope (of the tenant, when one is given)

    async def run(self, repair: bool = False) -> Report:
        report = Report(repair=repair)
        latest = await self._latest_runs()
        rows = await _rows_by_workflow(self.engine, list(latest))
        found = await asyncio.gather(*(self._check(e, rows.get(wid), report) for wid, e in latest.items()))
        drift = [d for d in found if d is not None]
        drift += await self._orphans(set(latest), report)
        report.workflows = len(self.checked)
        # The mirror trails an open run by a write or two: what still differs after a moment is drift.
        lagging = [d for d in drift if d.kind != ORPHAN_ROW and not self.truths[d.workflow_id].closed]
        if lagging and self.settle_seconds > 0:
            await asyncio.sleep(self.settle_seconds)
            for d in lagging:
                drift.remove(d)
                execution = await _described(self.client, d.workflow_id, self.truths[d.workflow_id].run_id)
                row = await _row_by_id(self.engine, d.task_id) if d.task_id else None
                again = await self._check(execution, row, report)
                if again is not None:
                    drift.append(again)
        report.drift = sorted(drift, key=lambda d: (d.kind, d.workflow_id))
        if repair:
            for d in report.drift:
                await self._repair(d)
        return report

    async def _latest_runs(self) -> dict[str, WorkflowExecution]:
        """The latest run of each workflow: a retried task has one run per attempt under one workflow id."""
        latest: dict[str, WorkflowExecution] = {}
        async for execution in self.client.list_workflows(visibility_query(self.task_queue, self.since)):
            known = latest.get(execution.id)
            if known is None or execution.start_time > known.start_time:
                latest[execution.id] = execution
        return latest

    async def _check(self, execution: WorkflowExecution, row: Any, report: Report) -> Drift | None:
        async with self._limit:
            try:
                truth = await _truth(self.client, execution)
                self.truths[execution.id] = truth
                if row is None:
                    handle = self.client.get_workflow_handle(execution.id, run_id=truth.run_id)
                    task = self.inputs.get(execution.id) or await _input_of(self.client, handle)
                    self.inputs[execution.id] = task
                    row = await _row_by_id(self.engine, task.task_id)
                    if row is None:
                        if self.tenant and task.tenant_id != self.tenant:
                            return None
                        self.checked.add(execution.id)
                        return Drift(MISSING_ROW, execution.id, task.task_id, None, _truth_view(truth),
                                     "no mirror row for this task")
            except Unverifiable as err:
                report.unverified.append({"workflow_id": execution.id, "reason": str(err)})
                return None
        if self.tenant and row.tenant_id != self.tenant:
            return None
        self.checked.add(execution.id)
        differences = _differences(row, truth)
        if not differences:
            return None
        return Drift(STATUS_MISMATCH, execution.id, row.id, _row_view(row), _truth_view(truth), "; ".join(differences))

    async def _orphans(self, listed: set[str], report: Report) -> list[Drift]:
        """Rows not yet terminal whose workflow was not listed: orphans if Temporal does not know it;
        otherwise a run visibility has not caught up with (checked like any other) or on another queue."""
        statement = select(TASKS).where(TASKS.c.status.not_in(TERMINAL_VALUES))
        if self.since is not None:
            statement = statement.where(TASKS.c.created_at >= self.since)
        if self.tenant:
            statement = statement.where(TASKS.c.tenant_id == self.tenant)
        async with self.engine.connect() as conn:
            rows = [r for r in (await conn.execute(statement)).all() if r.workflow_id not in listed]
        drift = []
        for row in rows:
            try:
                execution = await _described(self.client, row.workflow_id)
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    report.unverified.append({"workflow_id": row.workflow_id, "reason": err.message})
                    continue
                drift.append(Drift(ORPHAN_ROW, row.workflow_id, row.id, _row_view(row), None,
                                   "the row's workflow does not exist in Temporal"))
                continue
            if self.task_queue and execution.task_queue != self.task_queue:
                continue  # another deployment's task, sharing this database
            listed.add(execution.id)
            if (found := await self._check(execution, row, report)) is not None:
                drift.append(found)
        return drift

    # ---- repair ---------------------------------------------------------------

    async def _repair(self, drift: Drift) -> None:
        now = datetime.now(timezone.utc)
        async with self.engine.begin() as conn:
            if drift.kind == MISSING_ROW:
                task = self.inputs[drift.workflow_id]
                await insert_created(conn, task, drift.workflow_id)
            assert drift.task_id is not None
            row = (await conn.execute(select(TASKS).where(TASKS.c.id == drift.task_id))).first()
            if row is None:
                return
            if drift.kind == ORPHAN_ROW:
                values: dict[str, Any] = {
                    "status": TaskStatus.FAILED.value, "stage": Stage.DONE.value, "finished_at": now,
                    "error": f"orphaned: workflow {row.workflow_id} does not exist in Temporal"}
                truth = None
            else:
                truth = self.truths[drift.workflow_id]
                values = {"status": truth.status, "stage": truth.stage, "workflow_run_id": truth.run_id}
                if truth.closed:
                    values |= {"result": truth.result, "error": truth.error,
                               "finished_at": row.finished_at or truth.closed_at or now}
                else:
                    values |= {"finished_at": None}
                if row.started_at is None and truth.stage not in (Stage.QUEUED.value, Stage.WAITING_UNTIL_DUE.value):
                    values["started_at"] = truth.started_at
                if drift.kind == MISSING_ROW:
                    values["run_number"] = self.inputs[drift.workflow_id].run_number
            await conn.execute(update(TASKS).where(TASKS.c.id == row.id).values(**values, updated_at=now))
            await self._record(conn, row, values, drift, truth, now)
            if values["status"] in TERMINAL_VALUES:
                await _close_run(conn, row.id, values.get("run_number", row.run_number), values["status"], now)
        drift.repaired = True

    async def _record(self, conn: AsyncConnection, row: Any, values: dict[str, Any], drift: Drift,
                      truth: Truth | None, now: datetime) -> None:
        before = {k: _plain(getattr(row, k)) for k in values}
        after = {k: _plain(v) for k, v in values.items()}
        await insert_ignoring_duplicates(conn, EVENTS, [{
            "id": f"{row.id}:reconciled:{uuid.uuid4().hex}", "task_id": row.id, "seq": 0,
            "type": EventType.TASK_RECONCILED.value, "old_status": row.status, "new_status": values["status"],
            "actor_type": "system", "actor_id": "reconcile",
            "data": {"kind": drift.kind, "detail": drift.detail, "workflow_id": row.workflow_id,
                     "run_id": truth.run_id if truth else None, "before": before, "after": after},
            "occurred_at": now, "recorded_at": now}])


async def _close_run(conn: AsyncConnection, task_id: str, number: int, status: str, now: datetime) -> None:
    """A task found terminal: its run goes on record and its pending approvals are closed."""
    copy = select(TASKS.c.id, TASKS.c.run_number, TASKS.c.workflow_run_id, TASKS.c.status, TASKS.c.error,
                  TASKS.c.attempts, TASKS.c.started_at, TASKS.c.created_at, TASKS.c.finished_at
                  ).where(TASKS.c.id == task_id)
    row = (await conn.execute(copy)).one()
    await insert_ignoring_duplicates(conn, RUNS, [{
        "task_id": row.id, "number": number, "workflow_run_id": row.workflow_run_id, "status": row.status,
        "error": row.error, "attempts": row.attempts, "started_at": row.started_at or row.created_at,
        "finished_at": row.finished_at}])
    await conn.execute(update(APPROVALS).where(APPROVALS.c.task_id == task_id, APPROVALS.c.status == "pending")
                       .values(status=_APPROVAL_CLOSES.get(status, "cancelled"), decided_at=now))


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def reconcile(client: Client, engine: AsyncEngine, *, task_queue: str | None = None,
                    since: datetime | None = None, tenant: str | None = None, repair: bool = False,
                    settle_seconds: float = 2.0) -> Report:
    """Compare the mirror with Temporal (and with ``repair``, rewrite it from Temporal)."""
    reconciler = Reconciler(client, engine, task_queue=task_queue, since=since, tenant=tenant,
                            settle_seconds=settle_seconds)
    return await reconciler.run(repair=repair)
