"""/tasks/{id}/…: the decisions a person can take on a task (approve, reject, complete, cancel,
reschedule, run now, pause, resume), and its retry."""

from typing import Any

from fastapi import APIRouter

from followthrough.api.auth import PrincipalDep, acting_as, demand, require
from followthrough.api.deps import ActorDep, EngineDep, SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, CONFLICT, NOT_FOUND
from followthrough.api.lookups import task_row_or_404
from followthrough.api.schemas import (
    ApproveBody,
    CancelBody,
    CompleteBody,
    DecisionPublic,
    FailBody,
    PauseBody,
    RejectBody,
    RescheduleBody,
    StatusPatch,
)
from followthrough.domain.contracts import (ApprovalDecision, CancelRequest, Completion, Failure, PauseRequest,
                                            Rejection, RescheduleRequest)
from followthrough.domain.lifecycle import TaskStatus
from followthrough.domain.principals import Principal, Role
from followthrough.services.decisions import decide, run_now
from followthrough.services.errors import invalid
from followthrough.services.results import API_PREFIX, TaskCreated
from followthrough.services.task_creation import TaskCreator

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=NOT_FOUND | CONFLICT)


def _who(principal: Principal, named: str | None) -> dict[str, Any]:
    """The decider's id and team roles, for the workflow to check against the task's approvers."""
    return {"actor_id": acting_as(principal, named), "actor_roles": sorted(principal.roles)}


@router.post("/{task_id}/approve", response_model=DecisionPublic, dependencies=[require(Role.APPROVER)])
async def approve_task(task_id: str, body: ApproveBody, session: SessionDep, temporal: TemporalDep,
                       principal: PrincipalDep) -> DecisionPublic:
    decision = ApprovalDecision(**_who(principal, body.actor_id), comment=body.comment, subject=body.subject,
                                body=body.body, approval_id=body.approval_id)
    ack = await decide(session, temporal, task_id, "approve", decision)
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/reject", response_model=DecisionPublic, dependencies=[require(Role.APPROVER)])
async def reject_task(task_id: str, body: RejectBody, session: SessionDep, temporal: TemporalDep,
                      principal: PrincipalDep) -> DecisionPublic:
    ack = await decide(session, temporal, task_id, "reject",
                        Rejection(**_who(principal, body.actor_id), reason=body.reason,
                                  approval_id=body.approval_id))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/complete", response_model=DecisionPublic, dependencies=[require(Role.APPROVER)])
async def complete_task(task_id: str, session: SessionDep, temporal: TemporalDep, principal: PrincipalDep,
                        body: CompleteBody | None = None) -> DecisionPublic:
    """Mark a manual task done, with an optional result."""
    body = body or CompleteBody()
    ack = await decide(session, temporal, task_id, "complete",
                        Completion(**_who(principal, body.actor_id), comment=body.comment, result=body.result))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/fail", response_model=DecisionPublic, dependencies=[require(Role.APPROVER)])
async def fail_task(task_id: str, body: FailBody, session: SessionDep, temporal: TemporalDep,
                    principal: PrincipalDep) -> DecisionPublic:
    """Report that the work of a task waiting for a person (a manual task, a to-do) failed, with the error and
    an optional result."""
    ack = await decide(session, temporal, task_id, "fail",
                       Failure(**_who(principal, body.actor_id), error=body.error, result=body.result))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.patch("/{task_id}", response_model=DecisionPublic)
async def patch_task_status(task_id: str, body: StatusPatch, session: SessionDep, temporal: TemporalDep,
                            principal: PrincipalDep) -> DecisionPublic:
    """The older systems' ``{"newStatus": ...}``: CANCELLED cancels, COMPLETED completes a manual task, FAILED
    (with ``error``) reports a manual task failed, SCHEDULED with ``scheduledAt`` reschedules a task still waiting
    for its due time."""
    row = await task_row_or_404(session, task_id)
    if TaskStatus(row.status).terminal:
        raise ApiError(409, f"cannot update a task in terminal state {row.status}")
    wanted = body.new_status.strip().lower()
    if body.scheduled_at is not None and wanted != TaskStatus.SCHEDULED.value:
        raise invalid(("scheduledAt",), "scheduledAt goes with newStatus SCHEDULED only (a reschedule)")
    if wanted == TaskStatus.SCHEDULED.value:
        if body.scheduled_at is None:
            raise invalid(("scheduledAt",), "newStatus SCHEDULED needs scheduledAt, the new due time; to start a "
                                            f"waiting task now, POST {API_PREFIX}/tasks/{task_id}/run")
        demand(principal, Role.SUBMITTER)
        return await reschedule_task(task_id, RescheduleBody(due_at=body.scheduled_at, actor_id=body.actor_id,
                                                             reason=body.reason), session, temporal, principal)
    if wanted == TaskStatus.CANCELLED.value:
        demand(principal, Role.SUBMITTER)
        return await cancel_task(task_id, session, temporal, principal,
                                 CancelBody(actor_id=body.actor_id, reason=body.reason))
    if wanted == TaskStatus.COMPLETED.value:
        demand(principal, Role.APPROVER)
        return await complete_task(task_id, session, temporal, principal,
                                   CompleteBody(actor_id=body.actor_id, comment=body.comment, result=body.result))
    if wanted == TaskStatus.FAILED.value:
        demand(principal, Role.APPROVER)
        if body.error is None:
            raise ApiError(422, "newStatus FAILED needs `error`: what went wrong")
        return await fail_task(task_id, FailBody(actor_id=body.actor_id, error=body.error, result=body.result),
                               session, temporal, principal)
    raise ApiError(409, f"the engine moves a task to {wanted!r} itself; by hand a task can only be "
                        f"cancelled, completed or failed when it is a manual task waiting for a person, or "
                        f"rescheduled (SCHEDULED with scheduledAt) while it waits for its due time")


@router.post("/{task_id}/retry", response_model=TaskCreated, status_code=202, dependencies=[require(Role.SUBMITTER)])
async def retry_task(task_id: str, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
                     engine: EngineDep, actor: ActorDep) -> TaskCreated:
    """Start a new run of a failed task; the failed run stays on record."""
    row = await task_row_or_404(session, task_id)
    if row.status != TaskStatus.FAILED.value:
        raise ApiError(409, f"only a failed task can be retried; this one is {row.status}")
    return await TaskCreator(settings, temporal, engine).rerun(row, actor)


@router.post("/{task_id}/cancel", response_model=DecisionPublic, dependencies=[require(Role.SUBMITTER)])
async def cancel_task(task_id: str, session: SessionDep, temporal: TemporalDep, principal: PrincipalDep,
                      body: CancelBody | None = None) -> DecisionPublic:
    body = body or CancelBody()
    ack = await decide(session, temporal, task_id, "cancel",
                        CancelRequest(actor_id=acting_as(principal, body.actor_id), reason=body.reason))
    if ack.status != TaskStatus.CANCELLED.value:
        raise ApiError(409, f"task was {ack.status} before the cancellation took effect")
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/reschedule", response_model=DecisionPublic, dependencies=[require(Role.SUBMITTER)])
async def reschedule_task(task_id: str, body: RescheduleBody, session: SessionDep, temporal: TemporalDep,
                          principal: PrincipalDep) -> DecisionPublic:
    """Move the due time of a task still waiting for it (409 once it has started)."""
    ack = await decide(session, temporal, task_id, "reschedule",
                        RescheduleRequest(due_at=body.due_at, actor_id=acting_as(principal, body.actor_id),
                                          reason=body.reason))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/run", response_model=DecisionPublic, dependencies=[require(Role.SUBMITTER)])
async def run_task_now(task_id: str, session: SessionDep, temporal: TemporalDep, principal: PrincipalDep,
                       body: PauseBody | None = None) -> DecisionPublic:
    """Start at once a task waiting for its due time (its due time becomes now; the event says run now and by
    whom). 409 with why for a task not waiting for its due time: already started, paused, ended, or run now a
    moment ago, so a second call never runs it twice."""
    body = body or PauseBody()
    ack = await run_now(session, temporal, task_id, acting_as(principal, body.actor_id), body.reason)
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/pause", response_model=DecisionPublic, dependencies=[require(Role.SUBMITTER)])
async def pause_task(task_id: str, session: SessionDep, temporal: TemporalDep, principal: PrincipalDep,
                     body: PauseBody | None = None) -> DecisionPublic:
    """Hold the task before its next step (a step under way finishes first) until it is resumed."""
    body = body or PauseBody()
    ack = await decide(session, temporal, task_id, "pause",
                        PauseRequest(actor_id=acting_as(principal, body.actor_id), reason=body.reason))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)


@router.post("/{task_id}/resume", response_model=DecisionPublic, dependencies=[require(Role.SUBMITTER)])
async def resume_task(task_id: str, session: SessionDep, temporal: TemporalDep, principal: PrincipalDep,
                      body: PauseBody | None = None) -> DecisionPublic:
    """Let a paused task go on from where it was held."""
    body = body or PauseBody()
    ack = await decide(session, temporal, task_id, "resume",
                        PauseRequest(actor_id=acting_as(principal, body.actor_id), reason=body.reason))
    return DecisionPublic(id=task_id, status=ack.status, stage=ack.stage)
