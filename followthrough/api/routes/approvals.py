"""Approvals as records: a task's approval, and an approver's queue."""

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, func, or_, select

from followthrough.api.auth import PrincipalDep, require
from followthrough.api.deps import SessionDep, SettingsDep
from followthrough.api.errors import NOT_FOUND, ApiError
from followthrough.api.tenancy import listing_tenant
from followthrough.api.lookups import task_row_or_404
from followthrough.api.paging import LimitQuery, OffsetQuery, next_offset, page_size
from followthrough.api.schemas import ApprovalDecisionPublic, ApprovalListPublic, ApprovalPublic
from followthrough.domain.approver_ids import ApproverId, key_part, role_part
from followthrough.domain.principals import Role
from followthrough.db.tables import Approval, ApprovalDecisionRecord

router = APIRouter(dependencies=[require(Role.VIEWER)], tags=["approvals"], responses=NOT_FOUND)


async def _public(session: SessionDep, approvals: list[Approval]) -> list[ApprovalPublic]:
    ids = [a.id for a in approvals]
    rows = (await session.execute(select(ApprovalDecisionRecord).where(ApprovalDecisionRecord.approval_id.in_(ids))
                                  .order_by(ApprovalDecisionRecord.decided_at, ApprovalDecisionRecord.id)
                                  )).scalars().all() if ids else []
    decisions: dict[str, list[ApprovalDecisionPublic]] = {i: [] for i in ids}
    for row in rows:
        decisions[row.approval_id].append(ApprovalDecisionPublic.model_validate(row.model_dump()))
    return [ApprovalPublic.model_validate(a.model_dump() | {"decisions": decisions[a.id]}) for a in approvals]


def may_decide(approver: str | None, roles: Iterable[str] = ()) -> ColumnElement[bool]:
    """Approvals this user (or a holder of these roles) may decide: those naming them or one of
    the roles, and those naming nobody (anyone may decide)."""
    names = ([key_part(approver)] if approver is not None else []) + [role_part(r) for r in roles]
    return or_(Approval.approvers_key == "", *(Approval.approvers_key.like(f"%|{_escaped(n)}|%", escape="\\")
                                              for n in names))


def _escaped(name: str) -> str:
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@router.get("/tasks/{task_id}/approval", response_model=ApprovalPublic)
async def get_task_approval(task_id: str, session: SessionDep) -> ApprovalPublic:
    """The task's latest approval request, with every decision taken on it."""
    await task_row_or_404(session, task_id)
    latest = (await session.execute(select(Approval).where(Approval.task_id == task_id)
                                    .order_by(Approval.requested_at.desc(), Approval.id.desc()).limit(1))).scalar()
    if latest is None:
        raise ApiError(404, f"task {task_id!r} has not asked for a decision")
    return (await _public(session, [latest]))[0]


@router.get("/approvals", response_model=ApprovalListPublic)
async def list_approvals(
    session: SessionDep, settings: SettingsDep, status: str | None = "pending",
    approver: Annotated[ApproverId | None, Query(description="Only approvals this user may decide.")] = None,
    role: Annotated[list[str] | None, Query(max_length=20, description=(
        "With approver: also those a holder of these team roles may decide. Alone: those naming the role."))] = None,
    tenant_id: str | None = None,
    limit: LimitQuery = None, offset: OffsetQuery = 0,
    *, principal: PrincipalDep,
) -> ApprovalListPublic:
    limit = page_size(settings, limit)
    tenant_id = listing_tenant(principal, tenant_id)
    query = select(Approval)
    if status:
        query = query.where(Approval.status == status)
    if tenant_id is not None:
        query = query.where(Approval.tenant_id == tenant_id)
    if approver is not None or role:
        query = query.where(may_decide(approver, role or []))
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.order_by(Approval.requested_at, Approval.id).limit(limit).offset(offset))
            ).scalars().all()
    return ApprovalListPublic(items=await _public(session, list(rows)), total=total, limit=limit, offset=offset,
                              next_offset=next_offset(offset, limit, total))
