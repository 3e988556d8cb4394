"""POST /approvals/bulk: approve or reject many waiting tasks at once, or preview which ones."""

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Select, func, select
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from followthrough.api.auth import PrincipalDep, acting_as, require
from followthrough.api.tenancy import listing_tenant
from followthrough.api.deps import SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import detail_of, status_of
from followthrough.domain.principals import Role
from followthrough.domain.contracts import ApprovalDecision, Rejection
from followthrough.domain.lifecycle import TaskStatus
from followthrough.services.decisions import decide_row
from followthrough.services.errors import ServiceError
from followthrough.services.requests import StorableBody, either_case
from followthrough.services.task_queries import TaskFilter
from followthrough.db.tables import Approval, Task

log = logging.getLogger("followthrough.api")

router = APIRouter(dependencies=[require(Role.APPROVER)], prefix="/approvals", tags=["approvals"])

MAX_BULK_LIMIT = 500
# Decisions in flight at once for one request: enough to finish 500 in a few rounds, few enough that one
# request does not crowd out every other caller's Workflow Updates.
BULK_CONCURRENCY = 20
_MAX_AGE_SECONDS = 10 * 365 * 24 * 3600
_UNAVAILABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}
_ITEM_TIMEOUT = timedelta(seconds=30)  # one task's decision, as POST /tasks/{id}/approve waits

TaskId = Annotated[str, StringConstraints(min_length=1, max_length=36)]


class BulkFilter(StorableBody):
    """Which waiting tasks to decide; at least one criterion, so nothing is decided wholesale by accident."""

    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    tenant_id: str | None = Field(None, min_length=1, max_length=128)
    type: str | None = Field(None, min_length=1, max_length=128)
    subject_ref_type: str | None = Field(None, min_length=1, max_length=64)
    subject_ref_id: str | None = Field(None, min_length=1, max_length=256)
    owner_id: str | None = Field(None, min_length=1, max_length=128)
    source: str | None = Field(None, min_length=1, max_length=128)
    older_than_seconds: int | None = Field(None, ge=0, le=_MAX_AGE_SECONDS,
                                           description="Only approvals requested at least this long ago.")
    task_ids: list[TaskId] | None = Field(None, min_length=1, max_length=MAX_BULK_LIMIT)

    @model_validator(mode="after")
    def _names_a_criterion(self) -> "BulkFilter":
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("the filter must name at least one criterion")
        return self


class BulkDecisionBody(StorableBody):
    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    filter: BulkFilter
    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=4000, description="Recorded with each approval.")
    reason: str | None = Field(None, min_length=1, max_length=4000, description="Required to reject.")
    actor_id: str | None = Field(None, min_length=1, max_length=128,
                                 description="Who decides; defaults to the X-Actor-Id header, else 'anonymous'.")
    preview: bool = Field(False, description="List what would be decided, and decide nothing.")
    limit: int = Field(100, ge=1, le=MAX_BULK_LIMIT)

    @model_validator(mode="after")
    def _reject_has_a_reason(self) -> "BulkDecisionBody":
        if self.decision == "reject" and not self.reason:
            raise ValueError("a rejection needs a reason")
        return self


class BulkPreviewItem(BaseModel):
    task_id: str
    title: str
    type: str
    subject_ref_id: str | None
    requested_at: datetime


class BulkDecisionItem(BaseModel):
    task_id: str
    status_code: int
    status: str | None = None
    detail: str | None = None


class BulkPreviewPublic(BaseModel):
    preview: Literal[True] = True
    total: int
    items: list[BulkPreviewItem]


class BulkDecisionPublic(BaseModel):
    preview: Literal[False] = False
    total: int
    items: list[BulkDecisionItem]


def _matching(where: BulkFilter) -> Select:
    """Tasks awaiting approval with a pending approval, matching the filter; one row per task."""
    requested_at = func.min(Approval.requested_at).label("requested_at")
    query = (select(Task.id, Task.title, Task.type, Task.subject_ref_id, Task.workflow_id, Task.status,
                    Task.tenant_id, requested_at)
             .join(Approval, Approval.task_id == Task.id)
             .where(Approval.status == "pending", Task.status == TaskStatus.AWAITING_APPROVAL.value))
    query = TaskFilter(tenant_id=where.tenant_id, type=where.type, subject_ref_type=where.subject_ref_type,
                       subject_ref_id=where.subject_ref_id, owner_id=where.owner_id,
                       source=where.source).apply(query)
    if where.older_than_seconds is not None:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=where.older_than_seconds)
        query = query.where(Approval.requested_at <= cutoff)
    if where.task_ids is not None:
        query = query.where(Task.id.in_(where.task_ids))
    return query.group_by(Task.id, Task.title, Task.type, Task.subject_ref_id, Task.workflow_id, Task.status,
                          Task.tenant_id)


@router.post("/bulk", response_model=BulkPreviewPublic | BulkDecisionPublic)
async def decide_in_bulk(body: BulkDecisionBody, session: SessionDep, temporal: TemporalDep,
                         settings: SettingsDep, principal: PrincipalDep) -> BulkPreviewPublic | BulkDecisionPublic:
    """Approve or reject the waiting tasks a filter selects, oldest request first, up to ``limit``.

    Each task is decided as ``POST /tasks/{id}/approve`` or ``/reject`` would, up to 20 at once, and answered
    with its own ``status_code``: 200 with the task's new status, 403 for an actor not allowed to decide it,
    409 for a task that can no longer take the decision, 503 when Temporal is unavailable, 504 for a task not
    decided within the request's deadline (``FOLLOWTHROUGH_BULK_DECISION_DEADLINE_SECONDS``). With
    ``preview`` nothing is decided.
    """
    body.filter.tenant_id = listing_tenant(principal, body.filter.tenant_id)
    query = _matching(body.filter)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.order_by(query.selected_columns.requested_at, Task.id).limit(body.limit))).all()
    if body.preview:
        return BulkPreviewPublic(total=total, items=[
            BulkPreviewItem(task_id=row.id, title=row.title, type=row.type, subject_ref_id=row.subject_ref_id,
                            requested_at=row.requested_at) for row in rows])

    who = {"actor_id": acting_as(principal, body.actor_id), "actor_roles": sorted(principal.roles)}
    if body.decision == "approve":
        update, arg = "approve", ApprovalDecision(**who, comment=body.comment)
    else:
        update, arg = "reject", Rejection(**who, reason=body.reason or "")

    async def one(row, timeout: timedelta) -> BulkDecisionItem:  # type: ignore[no-untyped-def]
        return await _one(temporal, row, update, arg, timeout)

    items = await each_within_deadline(settings.bulk_decision_deadline_seconds, rows, one, BulkDecisionItem)
    return BulkDecisionPublic(total=total, items=items)


async def each_within_deadline(deadline: float, rows: list, act, item):  # type: ignore[no-untyped-def]
    """``act(row, timeout)`` for every row, up to 20 at once, all within ``deadline`` seconds: a row not begun
    or not answered by then is answered 504 (``item(task_id=..., status_code=504, detail=...)``), and a row's
    own trouble is its item's answer, so nothing raises and nothing waits past the deadline."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + deadline
    slots = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(row):  # type: ignore[no-untyped-def]
        async with slots:
            left = ends_at - loop.time()
            if left <= 0:
                return item(task_id=row.id, status_code=504, detail=(
                    f"not attempted: the request's deadline ({deadline:g} s) passed first; nothing was done"))
            try:
                async with asyncio.timeout(left):
                    # The RPC's own timeout a little later, so the deadline is what ends a slow one.
                    return await act(row, min(_ITEM_TIMEOUT, timedelta(seconds=left + 1)))
            # The SDK answers an update cancelled by the deadline, or past its own timeout, with the latter.
            except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
                waited = (f"the request's deadline ({deadline:g} s)" if loop.time() >= ends_at
                          else f"{_ITEM_TIMEOUT.total_seconds():g} s")
                return item(task_id=row.id, status_code=504, detail=(
                    f"no answer within {waited}; it may still take effect: look at the task before "
                    "trying it again"))

    return list(await asyncio.gather(*(one(row) for row in rows)))


async def _one(temporal: TemporalDep, row, update: str, arg: object,  # type: ignore[no-untyped-def]
               timeout: timedelta) -> BulkDecisionItem:
    try:
        ack = await decide_row(temporal, row, update, arg, timeout=timeout)
    except ServiceError as err:
        return BulkDecisionItem(task_id=row.id, status_code=status_of(err), detail=detail_of(err))
    except RPCError as err:  # one task's trouble must not hide what was already decided
        if err.status in _UNAVAILABLE:
            return BulkDecisionItem(task_id=row.id, status_code=503,
                                    detail="Temporal is unavailable; try again shortly")
        log.exception("unexpected Temporal error deciding task %s", row.id, exc_info=err)
        return BulkDecisionItem(task_id=row.id, status_code=500, detail="internal error talking to Temporal")
    return BulkDecisionItem(task_id=row.id, status_code=200, status=ack.status)
