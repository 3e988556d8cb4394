"""A large mirror for the query benchmark, written with bulk inserts (no Temporal, no API).

Tasks spread over tenants (a few large, many small), types, statuses (mostly
finished, as in a mirror that has run for months), owners, priorities, due
dates and six months of creation times; each with the events its status
implies, and an approval row (with its decision) where it asked for one.
"""

import random
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.db.tables import Approval, ApprovalDecisionRecord, Task, TaskEvent

TYPES = ["invoice_follow_up", "email", "reminder", "webhook", "http_request", "report"]
STATUSES = {"completed": 55, "awaiting_approval": 10, "scheduled": 10, "failed": 5, "cancelled": 5,
            "rejected": 4, "in_progress": 3, "expired": 3, "paused": 3, "pending": 2}
PRIORITIES = {"low": 15, "normal": 60, "high": 20, "urgent": 5}
ROLES = ["finance", "legal", "ops", "support"]
APPROVERS = 50  # approver-0 … approver-49
OWNERS = 200  # user-0 … user-199


def tenants(n: int) -> list[str]:
    return [f"tenant-{i}" for i in range(n)]


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _approvers(rng: random.Random) -> tuple[list[str], list[str]]:
    draw = rng.random()
    if draw < 0.3:
        return [], []  # anyone may decide
    if draw < 0.7:
        return [f"approver-{rng.randrange(APPROVERS)}"], []
    if draw < 0.85:
        return [], [rng.choice(ROLES)]
    return [f"approver-{rng.randrange(APPROVERS)}"], [rng.choice(ROLES)]


def build(n: int, n_tenants: int = 20, seed: int = 7) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """Rows of tasks, events, approvals and approval decisions."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    names = tenants(n_tenants)
    tenant_weights = [1 / (i + 1) for i in range(n_tenants)]  # tenant-0 the largest
    tasks, events, approvals, decisions = [], [], [], []
    for i in range(n):
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        status = _pick(rng, STATUSES)
        priority = _pick(rng, PRIORITIES)
        created = now - timedelta(seconds=rng.uniform(0, 180 * 86400))
        due = created + timedelta(days=rng.uniform(-5, 60)) if rng.random() < 0.4 else None
        tenant = rng.choices(names, weights=tenant_weights)[0]
        kind = rng.choice(TYPES)
        started = created + timedelta(seconds=rng.uniform(1, 60)) if status not in ("pending", "scheduled") else None
        finished = (started or created) + timedelta(minutes=rng.uniform(1, 600)) \
            if status in ("completed", "failed", "cancelled", "rejected", "expired") else None
        stage = {"pending": "queued", "scheduled": "waiting_until_due", "in_progress": "drafting",
                 "awaiting_approval": "awaiting_approval", "paused": "drafting"}.get(status, "done")
        tasks.append({
            "id": task_id, "tenant_id": tenant, "type": kind, "title": f"{kind} #{i}", "mode": "review",
            "priority": priority, "priority_rank": {"low": 0, "normal": 1, "high": 2, "urgent": 3}[priority],
            "status": status, "stage": stage, "payload": {"invoice_number": f"INV-{i}", "amount": rng.randrange(10**5)},
            "owner_type": "user", "owner_id": f"user-{rng.randrange(OWNERS)}" if rng.random() < 0.8 else None,
            "subject_ref_type": "INVOICE", "subject_ref_id": f"INV-{i}", "source": "bench",
            "draft": {"subject": f"Reminder #{i}", "body": "…"} if started else None,
            "attempts": 1 if started else 0, "run_number": 1, "workflow_id": f"task-bench-{task_id}",
            "approval_timeout_seconds": 86400, "due_at": due, "created_at": created,
            "updated_at": finished or started or created, "started_at": started, "finished_at": finished,
            "trigger": "api",
        })
        steps = [("TASK_CREATED", None, "pending", created)]
        if status == "scheduled":
            steps.append(("TASK_STATUS_CHANGED", "pending", "scheduled", created))
        if started:
            steps += [("TASK_STATUS_CHANGED", "pending", "in_progress", started),
                      ("TASK_DRAFTED", None, None, started + timedelta(seconds=2))]
        asked = status in ("awaiting_approval", "rejected", "expired") or (status == "completed" and rng.random() < 0.4)
        if asked:
            requested = started + timedelta(seconds=3)
            event_id = f"{task_id}:approval:1"
            steps.append(("TASK_APPROVAL_REQUESTED", "in_progress", "awaiting_approval", requested))
            people, roles = _approvers(rng)
            key = "" if not (people or roles) else "|" + "|".join(people + [f"role:{r}" for r in roles]) + "|"
            outcome = {"awaiting_approval": "pending", "completed": "approved"}.get(status, status)
            approvals.append({
                "id": event_id, "task_id": task_id, "tenant_id": tenant, "run_number": 1, "status": outcome,
                "required": 1, "approvers": people, "approver_roles": roles, "approvers_key": key,
                "reason": "review mode", "flags": [], "requested_at": requested,
                "deadline": requested + timedelta(days=1), "decided_at": finished if outcome != "pending" else None})
            if outcome in ("approved", "rejected"):
                decisions.append({"id": f"{task_id}:decision:1", "approval_id": event_id,
                                  "actor_id": people[0] if people else f"approver-{rng.randrange(APPROVERS)}",
                                  "actor_type": "user", "decision": outcome[:-1] if outcome == "approved" else "reject",
                                  "decided_at": finished})
        if finished:
            steps.append(("TASK_STATUS_CHANGED", "in_progress", status, finished))
        for seq, (kind_, old, new, when) in enumerate(steps):
            events.append({"id": f"{task_id}:{seq}", "task_id": task_id, "seq": seq, "type": kind_,
                           "old_status": old, "new_status": new, "actor_type": "system", "actor_id": None,
                           "data": {}, "occurred_at": when, "recorded_at": when})
    return tasks, events, approvals, decisions


async def seed(engine: AsyncEngine, n: int, n_tenants: int = 20, chunk: int = 5000) -> dict[str, int]:
    """Insert the rows in chunks; returns the row count per table."""
    tables = dict(zip([Task, TaskEvent, Approval, ApprovalDecisionRecord], build(n, n_tenants)))
    for table, rows in tables.items():
        for start in range(0, len(rows), chunk):
            async with engine.begin() as conn:
                await conn.execute(insert(table.__table__), rows[start:start + chunk])
    return {table.__tablename__: len(rows) for table, rows in tables.items()}
