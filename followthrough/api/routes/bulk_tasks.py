"""POST /tasks/bulk: cancel, retry, pause, resume, reschedule, run now, approve or reject every task a query
selects (the filters of GET /tasks), or preview which ones.

The preview lists what the query selects now and how many, and does nothing. The real call selects again and
acts on exactly what the query selects at that moment, all of it or nothing: a query selecting more than
``limit`` tasks is refused (422) before anything is done. Each task is acted on as its own route would
(``POST /tasks/{id}/cancel`` and so on), up to 20 at once within the request's deadline, and answered on its
own: ``done``, ``skipped`` with why (the task cannot take the action: a 409 or 403 of its own), or ``failed``
(Temporal unavailable, no answer in time). A key acts only in its own tenant, and needs the role each action
needs: approver to approve or reject, submitter for the rest.
"""

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from sqlalchemy import func, select
from temporalio.service import RPCError

from followthrough.api.auth import PrincipalDep, acting_as, demand, require
from followthrough.api.deps import EngineDep, SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, detail_of, status_of
from followthrough.api.routes.bulk_decisions import _UNAVAILABLE, MAX_BULK_LIMIT, each_within_deadline
from followthrough.api.tenancy import listing_tenant
from followthrough.db.tables import Task
from followthrough.domain.contracts import ApprovalDecision, CancelRequest, PauseRequest, Rejection, RescheduleRequest
from followthrough.domain.lifecycle import TaskStatus
from followthrough.domain.principals import Role
from followthrough.services.decisions import decide_row, run_now_request
from followthrough.services.errors import ServiceError
from followthrough.services.requests import StorableBody, either_case, utc_within_range
from followthrough.services.task_creation import TaskCreator
from followthrough.services.task_queries import TaskFilter

log = logging.getLogger("followthrough.api")

router = APIRouter(prefix="/tasks", tags=["tasks"], dependencies=[require(Role.VIEWER)])

TaskId = Annotated[str, StringConstraints(min_length=1, max_length=36)]
Action = Literal["cancel", "retry", "pause", "resume", "reschedule", "run", "approve", "reject"]
# The role each action needs, as its own route does.
ROLE_OF: dict[str, Role] = {"approve": Role.APPROVER, "reject": Role.APPROVER} | {
    action: Role.SUBMITTER for action in ("cancel", "retry", "pause", "resume", "reschedule", "run")}
_SKIPPED = {403, 404, 409, 422}


class BulkTaskFilter(StorableBody):
    """GET /tasks's filters (and a list of ids); at least one, so nothing is acted on wholesale by accident."""

    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    status: list[TaskStatus] | None = Field(None, min_length=1, max_length=len(TaskStatus))
    type: str | None = Field(None, min_length=1, max_length=128)
    owner_id: str | None = Field(None, min_length=1, max_length=128)
    subject_ref_type: str | None = Field(None, min_length=1, max_length=64)
    subject_ref_id: str | None = Field(None, min_length=1, max_length=256)
    source: str | None = Field(None, min_length=1, max_length=128)
    tenant_id: str | None = Field(None, min_length=1, max_length=128)
    due_before: datetime | None = None
    due_after: datetime | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    trigger: Literal["api", "definition", "schedule", "event"] | None = None
    definition_id: str | None = Field(None, min_length=1, max_length=36)
    task_ids: list[TaskId] | None = Field(None, min_length=1, max_length=MAX_BULK_LIMIT)

    @field_validator("due_before", "due_after", "created_before", "created_after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc_within_range(value)

    @model_validator(mode="after")
    def _names_a_criterion(self) -> "BulkTaskFilter":
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("the filter must name at least one criterion")
        return self

    def task_filter(self) -> TaskFilter:
        fields = self.model_dump(exclude={"task_ids"})
        return TaskFilter(**fields)


class BulkTaskBody(StorableBody):
    model_config = ConfigDict(alias_generator=either_case, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)

    filter: BulkTaskFilter
    action: Action
    preview: bool = Field(False, description="List what the query selects and how many; do nothing.")
    limit: int = Field(100, ge=1, le=MAX_BULK_LIMIT,
                       description="The most tasks to act on: a query selecting more is refused (422).")
    due_at: datetime | None = Field(None, description="reschedule: the new due time (ISO 8601; UTC if no offset).")
    reason: str | None = Field(None, min_length=1, max_length=4000,
                               description="Recorded with each task's action; required to reject.")
    comment: str | None = Field(None, max_length=4000, description="approve: recorded with each approval.")
    actor_id: str | None = Field(None, min_length=1, max_length=128,
                                 description="Who acts; defaults to the X-Actor-Id header, else 'anonymous'.")

    @field_validator("due_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc_within_range(value)

    @model_validator(mode="after")
    def _what_the_action_needs(self) -> "BulkTaskBody":
        if self.action == "reject" and not self.reason:
            raise ValueError("a rejection needs a reason")
        if self.action == "reschedule" and self.due_at is None:
            raise ValueError("reschedule needs due_at, the new due time")
        if self.action != "reschedule" and self.due_at is not None:
            raise ValueError("due_at is for reschedule only")
        return self


class BulkTaskPreviewItem(BaseModel):
    task_id: str
    title: str
    type: str
    status: str
    subject_ref_type: str | None
    subject_ref_id: str | None
    due_at: datetime | None
    created_at: datetime


class BulkTaskItem(BaseModel):
    task_id: str
    outcome: Literal["done", "skipped", "failed"] = "failed"
    status_code: int
    status: str | None = None
    detail: Any = None

    @model_validator(mode="after")
    def _outcome(self) -> "BulkTaskItem":
        self.outcome = ("done" if self.status_code < 300 else "skipped" if self.status_code in _SKIPPED
                        else "failed")
        return self


class BulkTaskPreviewPublic(BaseModel):
    preview: Literal[True] = True
    action: str
    total: int = Field(description="How many tasks the query selects now.")
    limit: int
    over_limit: bool = Field(description="The query selects more than limit: the real call would be refused.")
    items: list[BulkTaskPreviewItem] = Field(description="The selected tasks, oldest first, up to limit.")


class BulkTaskPublic(BaseModel):
    preview: Literal[False] = False
    action: str
    total: int
    done: int
    skipped: int
    failed: int
    items: list[BulkTaskItem]


def _selection(body: BulkTaskBody):  # type: ignore[no-untyped-def]
    query = body.filter.task_filter().apply(select(Task))
    if body.filter.task_ids is not None:
        query = query.where(Task.id.in_(body.filter.task_ids))
    return query


@router.post("/bulk", response_model=BulkTaskPreviewPublic | BulkTaskPublic)
async def act_in_bulk(body: BulkTaskBody, session: SessionDep, temporal: TemporalDep, settings: SettingsDep,
                      engine: EngineDep, principal: PrincipalDep) -> BulkTaskPreviewPublic | BulkTaskPublic:
    """Act on every task the filter selects (in the key's tenant), or with ``preview`` list them."""
    demand(principal, ROLE_OF[body.action])
    body.filter.tenant_id = listing_tenant(principal, body.filter.tenant_id)
    query = _selection(body)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    if body.preview:
        rows = (await session.execute(query.order_by(Task.created_at, Task.id).limit(body.limit))).scalars().all()
        return BulkTaskPreviewPublic(action=body.action, total=total, limit=body.limit, over_limit=total > body.limit,
                                     items=[BulkTaskPreviewItem(task_id=r.id, title=r.title, type=r.type,
                                                                status=r.status, subject_ref_type=r.subject_ref_type,
                                                                subject_ref_id=r.subject_ref_id, due_at=r.due_at,
                                                                created_at=r.created_at) for r in rows])
    if total > body.limit:
        raise ApiError(422, f"the filter selects {total} tasks, more than the limit of {body.limit}: nothing was "
                            f"done; narrow the filter, or raise limit (at most {MAX_BULK_LIMIT})")
    # Read again with the limit: tasks created since the count must not take the call past it.
    rows = list((await session.execute(query.order_by(Task.created_at, Task.id).limit(body.limit + 1))).scalars().all())
    if len(rows) > body.limit:
        raise ApiError(422, f"the filter selects more than the limit of {body.limit} tasks now: nothing was done; "
                            f"narrow the filter, or raise limit (at most {MAX_BULK_LIMIT})")
    session.expunge_all()  # the rows as read, kept as they are: each action takes its own path
    await session.rollback()
    actor = acting_as(principal, body.actor_id)
    act = _action(body, actor, sorted(principal.roles), temporal, TaskCreator(settings, temporal, engine))

    async def one(row: Task, timeout: timedelta) -> BulkTaskItem:
        try:
            return await act(row, timeout)
        except ServiceError as err:
            return BulkTaskItem(task_id=row.id, status_code=status_of(err), detail=detail_of(err))
        except ApiError as err:
            return BulkTaskItem(task_id=row.id, status_code=err.status_code, detail=err.detail)
        except RPCError as err:  # one task's trouble must not hide what was already done
            if err.status in _UNAVAILABLE:
                return BulkTaskItem(task_id=row.id, status_code=503, detail="Temporal is unavailable; try again shortly")
            log.exception("unexpected Temporal error in a bulk %s of task %s", body.action, row.id, exc_info=err)
            return BulkTaskItem(task_id=row.id, status_code=500, detail="internal error talking to Temporal")

    items = await each_within_deadline(settings.bulk_decision_deadline_seconds, rows, one, BulkTaskItem)
    return BulkTaskPublic(action=body.action, total=total, items=items,
                          done=sum(i.outcome == "done" for i in items),
                          skipped=sum(i.outcome == "skipped" for i in items),
                          failed=sum(i.outcome == "failed" for i in items))


def _action(body: BulkTaskBody, actor: str, roles: list[str], temporal: TemporalDep,  # type: ignore[no-untyped-def]
            creator: TaskCreator):
    """What is done to one task: a coroutine function of (row, timeout) answering its item."""
    if body.action == "retry":
        async def retry(row: Task, timeout: timedelta) -> BulkTaskItem:
            if row.status != TaskStatus.FAILED.value:
                return BulkTaskItem(task_id=row.id, status_code=409,
                                    detail=f"only a failed task can be retried; this one is {row.status}")
            created = await creator.rerun(row, actor)
            return BulkTaskItem(task_id=row.id, status_code=202, status=created.status)
        return retry

    arg: Any
    update = body.action
    if body.action == "approve":
        arg = ApprovalDecision(actor_id=actor, actor_roles=roles, comment=body.comment)
    elif body.action == "reject":
        arg = Rejection(actor_id=actor, actor_roles=roles, reason=body.reason or "")
    elif body.action == "cancel":
        arg = CancelRequest(actor_id=actor, reason=body.reason)
    elif body.action in ("pause", "resume"):
        arg = PauseRequest(actor_id=actor, reason=body.reason)
    elif body.action == "reschedule":
        assert body.due_at is not None
        arg = RescheduleRequest(due_at=body.due_at, actor_id=actor, reason=body.reason)
    else:  # run
        update, arg = "reschedule", run_now_request(actor, body.reason)

    async def decide(row: Task, timeout: timedelta) -> BulkTaskItem:
        if TaskStatus(row.status).terminal:  # as the task's own route says, without asking Temporal
            return BulkTaskItem(task_id=row.id, status_code=409, detail=f"task is already {row.status}")
        ack = await decide_row(temporal, row, update, arg, timeout=timeout)
        if body.action == "cancel" and ack.status != TaskStatus.CANCELLED.value:
            return BulkTaskItem(task_id=row.id, status_code=409, status=ack.status,
                                detail=f"task was {ack.status} before the cancellation took effect")
        return BulkTaskItem(task_id=row.id, status_code=200, status=ack.status)
    return decide
