"""Approvals as records: the mirror writer turns approval events into rows of
``approvals`` and ``approval_decisions`` in the same transaction as the events."""

import difflib
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from followthrough.domain.approver_ids import key_part, role_part
from followthrough.domain.contracts import MirrorBatch, MirrorEvent
from followthrough.domain.lifecycle import EventType
from followthrough.db.tables import Approval, ApprovalDecisionRecord

APPROVALS: Table = Approval.__table__  # type: ignore[attr-defined]
DECISIONS: Table = ApprovalDecisionRecord.__table__  # type: ignore[attr-defined]

# Event type → (decision recorded, approval status it ends with; None while still open).
_DECISIONS: dict[str, tuple[str | None, str | None]] = {
    EventType.TASK_APPROVAL_RECORDED.value: ("approve", None),
    EventType.TASK_APPROVED.value: ("approve", "approved"),
    EventType.TASK_REJECTED.value: ("reject", "rejected"),
    EventType.TASK_EXECUTION_COMPLETED.value: ("complete", "completed"),
    # A person reported the work failed (a send failure names no approval request, so closes none).
    EventType.TASK_EXECUTION_FAILED.value: ("fail", "failed"),
    EventType.TASK_EXPIRED.value: (None, "expired"),
    EventType.TASK_CANCELLED.value: (None, "cancelled"),
}


def closing_status(event_type: str) -> str | None:
    """The status an approval ends with when an event of this type names it; None if it stays open."""
    return _DECISIONS.get(event_type, (None, None))[1]


def approvers_key(approvers: list[str], roles: list[str] | None = None) -> str:
    """"|alice|role:finance|": who may decide, as one string a queue can match with LIKE; "" for anyone.
    Each part is unambiguous (followthrough/domain/approver_ids.py): no id can smuggle in a separator or a role."""
    names = [key_part(a) for a in approvers] + [role_part(r) for r in roles or []]
    return "".join(f"|{a}" for a in names) + "|" if names else ""


def diff(original: dict[str, Any] | None, edited: dict[str, Any] | None) -> str | None:
    if not original or not edited or edited.get("body") is None:
        return None
    return "".join(difflib.unified_diff((original.get("body") or "").splitlines(keepends=True),
                                        edited["body"].splitlines(keepends=True), "drafted", "approved"))


async def record(conn: AsyncConnection, batch: MirrorBatch, fresh: list[MirrorEvent], insert: Any) -> None:
    """Called by the mirror writer with the batch's newly inserted events and its insert-ignoring helper."""
    for event in fresh:
        if event.type == EventType.TASK_APPROVAL_REQUESTED.value:
            approvers = list(event.data.get("approvers") or [])
            roles = list(event.data.get("approver_roles") or [])
            await insert(conn, APPROVALS, [{
                "id": event.id, "task_id": batch.task_id, "tenant_id": batch.tenant_id,
                "run_number": batch.run_number, "status": "pending", "required": event.data.get("required", 1),
                "approvers": approvers, "approver_roles": roles, "approvers_key": approvers_key(approvers, roles),
                "reason": (event.data.get("reason") or "")[:200] or None, "flags": event.data.get("flags") or [],
                "requested_at": event.occurred_at, "deadline": event.changes.approval_deadline,
                "decided_at": None}])
            continue
        approval_id = event.data.get("approval_id")
        if approval_id and event.type == EventType.TASK_APPROVAL_ESCALATED.value:
            await _add_approvers(conn, approval_id, list(event.data.get("escalate_to") or []))
            continue
        if not approval_id or event.type not in _DECISIONS:
            continue
        decision, closes = _DECISIONS[event.type]
        if not await _exists(conn, approval_id):
            # Its request is not in the mirror (a row lost and re-created by `followthrough reconcile`):
            # the decision stays on record in the task's events.
            continue
        if decision is not None and event.actor_id is not None:
            edited = event.data.get("edited")
            await insert(conn, DECISIONS, [{
                "id": event.id, "approval_id": approval_id, "actor_id": event.actor_id,
                "actor_type": event.actor_type, "decision": decision,
                "comment": event.data.get("comment") or event.data.get("reason")
                or (event.data.get("message") if decision == "fail" else None), "edited": edited,
                "diff": diff(event.data.get("original"), edited), "decided_at": event.occurred_at}])
        if closes is not None:
            await conn.execute(update(APPROVALS).where(APPROVALS.c.id == approval_id)
                               .values(status=closes, decided_at=event.occurred_at))


async def _exists(conn: AsyncConnection, approval_id: str) -> bool:
    return (await conn.execute(select(APPROVALS.c.id).where(APPROVALS.c.id == approval_id))).first() is not None


async def _add_approvers(conn: AsyncConnection, approval_id: str, added: list[str]) -> None:
    row = (await conn.execute(select(APPROVALS.c.approvers, APPROVALS.c.approver_roles)
                              .where(APPROVALS.c.id == approval_id))).first()
    if row is None or not (row.approvers or row.approver_roles):  # unknown, or anyone may decide already
        return
    approvers = row.approvers + [a for a in added if a not in row.approvers]
    await conn.execute(update(APPROVALS).where(APPROVALS.c.id == approval_id)
                       .values(approvers=approvers, approvers_key=approvers_key(approvers, row.approver_roles)))
