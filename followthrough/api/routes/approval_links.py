"""Signed approval links: minted per approver and approval request, opened in a browser, used once.

GET shows a confirmation page and changes nothing, so mail scanners and link
previews that fetch the link cannot decide; only the form's POST acts. A link
decides only the approval request it was minted for (a retry's run or an
agent's next tool call asks afresh and needs new links), and using either link
of a pair spends both.
"""

from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, select_autoescape
from pydantic import BaseModel, Field
from sqlalchemy import delete, or_, select
from temporalio.service import RPCError

from followthrough.api.auth import require
from followthrough.api.deps import SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, CONFLICT, NOT_FOUND, detail_of, status_of
from followthrough.api.lookups import task_row_or_404
from followthrough.infra import approval_links
from followthrough.domain.approver_ids import ApproverId
from followthrough.domain.principals import Role
from followthrough.infra.approval_links import ApprovalLink, ExpiredToken, InvalidToken, OutdatedToken
from followthrough.domain.contracts import ApprovalDecision, Rejection
from followthrough.domain.lifecycle import TaskStatus
from followthrough.db.mirror import insert_ignoring_duplicates
from followthrough.services.decisions import decide
from followthrough.services.errors import Conflict, Forbidden, ServiceError
from followthrough.db.tables import Approval, ApprovalLinkUse, Task

router = APIRouter(tags=["approval links"], responses=NOT_FOUND | CONFLICT)

_MAX_TEXT = 4000
# same-origin, not no-referrer: the form's POST must carry this server's Origin (followthrough/api/same_origin.py).
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin", "X-Robots-Tag": "noindex, nofollow"}

_PAGE = Environment(autoescape=select_autoescape(default=True, default_for_string=True)).from_string("""\
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow"><title>{{ heading }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
pre{white-space:pre-wrap;background:#f4f4f4;padding:.75rem;border-radius:4px}
textarea{width:100%;min-height:6rem}button{font-size:1rem;padding:.5rem 1.25rem}.error{color:#a00}</style>
</head>
<body>
<h1>{{ heading }}</h1>
{% if message %}<p{% if error %} class="error"{% endif %}>{{ message }}</p>{% endif %}
{% if task %}
<p><strong>Task:</strong> {{ task.title }}<br><strong>Status:</strong> {{ task.status }}
{% if link %}<br><strong>Decision:</strong> {{ link.decision }} as {{ link.approver }}{% endif %}</p>
{% if draft %}
<h2>Draft</h2>
{% if draft.subject %}<p><strong>Subject:</strong> {{ draft.subject }}</p>{% endif %}
{% if draft.body %}<pre>{{ draft.body }}</pre>{% endif %}
{% endif %}
{% endif %}
{% if form %}
<form method="post" action="{{ action }}">
{% if link.decision == "reject" %}
<p><label for="reason">Reason for rejecting (required)</label><br>
<textarea id="reason" name="reason" required maxlength="4000"></textarea></p>
<button type="submit">Reject</button>
{% else %}
<p><label for="comment">Comment (optional)</label><br>
<textarea id="comment" name="comment" maxlength="4000"></textarea></p>
<button type="submit">Approve</button>
{% endif %}
</form>
{% endif %}
</body>
</html>
""")


class LinkRequest(BaseModel):
    approver: ApproverId = Field(description="The user id the links decide as.")
    ttl_seconds: int | None = Field(None, gt=0, le=366 * 24 * 3600,
                                    description="Lifetime; default FOLLOWTHROUGH_APPROVAL_LINK_TTL_SECONDS.")


class LinksPublic(BaseModel):
    approve: str
    reject: str
    expires_at: datetime


def _page(status_code: int, heading: str, message: str = "", *, error: bool = False, task: Task | None = None,
          link: ApprovalLink | None = None, form: bool = False, action: str = "") -> HTMLResponse:
    draft = task.draft if task is not None and isinstance(task.draft, dict) else None
    html = _PAGE.render(heading=heading, message=message, error=error, task=task, link=link, draft=draft,
                        form=form, action=action)
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS)


async def _open_approval(session: SessionDep, task_id: str) -> Approval | None:
    return (await session.execute(select(Approval).where(Approval.task_id == task_id)
                                  .order_by(Approval.requested_at.desc(), Approval.id.desc()).limit(1)
                                  .execution_options(populate_existing=True))).scalar()


async def _fresh_task(session: SessionDep, task_id: str) -> Task | None:
    return await session.get(Task, task_id, populate_existing=True)


def _outcome(task: Task | None, approval: Approval | None) -> str:
    """What has become of the task, in a sentence."""
    if approval is not None and approval.status in ("approved", "rejected", "expired", "cancelled", "failed"):
        return f"This task was already {approval.status}."
    if task is not None and TaskStatus(task.status).terminal:
        return f"This task is already {task.status}."
    if task is not None:
        return f"The task is {task.status.replace('_', ' ')}."
    return ""


@router.post("/tasks/{task_id}/approval-links", response_model=LinksPublic, status_code=201,
             dependencies=[require(Role.ADMIN)])
async def create_approval_links(task_id: str, body: LinkRequest, session: SessionDep,
                                settings: SettingsDep) -> LinksPublic:
    """An approve and a reject link for one approver of a task awaiting approval."""
    task = await task_row_or_404(session, task_id)
    if task.status != TaskStatus.AWAITING_APPROVAL.value:
        raise ApiError(409, f"task is {task.status}, not awaiting approval")
    approval = await _open_approval(session, task_id)
    if approval is None or approval.status != "pending":
        # The links name the open request; the mirror has not recorded it (yet).
        raise ApiError(409, "the task's approval request is not on record yet; try again in a moment")
    if (approval.approvers or approval.approver_roles) and body.approver not in approval.approvers:
        # A link decides as a user with no team roles, so a request decided by role takes named approvers only.
        allowed = (f"name one of its approvers: {', '.join(approval.approvers)}" if approval.approvers
                   else "it is decided by team role, which a link cannot carry")
        raise ApiError(403, f"{body.approver!r} may not decide this task; {allowed}")
    return LinksPublic.model_validate(approval_links.links_for(settings, task_id, approval.id, body.approver,
                                                               body.ttl_seconds))


async def _verified(settings: SettingsDep, token: str) -> ApprovalLink | HTMLResponse:
    try:
        return approval_links.check(approval_links.signing_key(settings), token)
    except ExpiredToken:
        return _page(410, "Link expired", "This approval link has expired. Ask for a new one.", error=True)
    except OutdatedToken:
        return _page(410, "Link no longer works", "This approval link was made before links named the approval "
                     "request they decide, and no longer works. Ask for a new link.", error=True)
    except InvalidToken:
        return _page(401, "Invalid link", "This approval link is not valid: it may have been cut short or altered.",
                     error=True)


async def _used(session: SessionDep, link: ApprovalLink) -> str | None:
    """Why the link is spent: its pair has been used, or another pair of its approver on the same request."""
    rows = (await session.execute(select(ApprovalLinkUse.nonce).where(or_(
        ApprovalLinkUse.nonce == link.nonce,
        (ApprovalLinkUse.approval_id == link.approval_id) & (ApprovalLinkUse.approver == link.approver))))
            ).scalars().all()
    if not rows:
        return None
    if link.nonce in rows:
        return "This link has already been used."
    return f"An approval link for {link.approver} on this request has already been used."


async def _refusal(session: SessionDep, link: ApprovalLink, task: Task) -> HTMLResponse | None:
    """The page to answer with when the link cannot decide now; None when it can."""
    approval = await _open_approval(session, task.id)
    spent = await _used(session, link)
    if spent is not None:
        return _page(409, "Link already used", " ".join(filter(None, [spent, _outcome(task, approval)])),
                     error=True, task=task)
    # The latest request is another one: a retry's run or an agent's next tool call asked afresh. (With no
    # request on record the workflow, which knows the open one, checks the link's.)
    if approval is not None and approval.id != link.approval_id:
        return _page(410, "Link out of date", "This link was made for an earlier approval request of this task, "
                     "which is no longer open; the task has asked again. Ask for a new link.", error=True, task=task)
    if task.status != TaskStatus.AWAITING_APPROVAL.value:
        return _page(409, "No decision needed", _outcome(task, approval), error=True, task=task)
    return None


async def _decidable_task(session: SessionDep, link: ApprovalLink) -> Task | HTMLResponse:
    """The link's task, when the link can decide it now; else the page to answer with."""
    task = await session.get(Task, link.task_id)
    if task is None:
        return _page(404, "Task not found", "The task this link was made for no longer exists.", error=True)
    return await _refusal(session, link, task) or task


@router.get("/approval-links/{token}", response_class=HTMLResponse)
async def show_approval_link(token: str, request: Request, session: SessionDep,
                             settings: SettingsDep) -> HTMLResponse:
    """The confirmation page; opening it changes nothing."""
    link = await _verified(settings, token)
    if isinstance(link, HTMLResponse):
        return link
    task = await _decidable_task(session, link)
    if isinstance(task, HTMLResponse):
        return task
    verb = "Approve" if link.decision == "approve" else "Reject"
    return _page(200, f"{verb} this task?", "Nothing happens until you press the button below.",
                 task=task, link=link, form=True, action=request.url.path)


def _form_field(fields: dict[str, list[str]], name: str) -> str | None:
    value = (fields.get(name) or [""])[0].strip()
    return value or None


@router.post("/approval-links/{token}", response_class=HTMLResponse)
async def use_approval_link(token: str, request: Request, session: SessionDep, settings: SettingsDep,
                            temporal: TemporalDep) -> HTMLResponse:
    """Take the link's decision, once: form fields ``comment`` (approve) or ``reason`` (reject)."""
    link = await _verified(settings, token)
    if isinstance(link, HTMLResponse):
        return link
    raw = await request.body()
    if len(raw) > 64 * 1024:
        return _page(413, "Too long", "The comment or reason is too long.", error=True)
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return _page(400, "Unreadable form", "The form could not be read; please try again.", error=True)
    comment, reason = _form_field(fields, "comment"), _form_field(fields, "reason")
    text = reason if link.decision == "reject" else comment
    if text is not None and (len(text) > _MAX_TEXT or "\x00" in text):
        return _page(422, "Not accepted", f"The text must be at most {_MAX_TEXT} characters.", error=True)
    task = await _decidable_task(session, link)
    if isinstance(task, HTMLResponse):
        return task
    if link.decision == "reject" and reason is None:
        return _page(422, "A reason is required", "Say why you reject this task.", error=True, task=task,
                     link=link, form=True, action=request.url.path)

    # Whoever inserts first has used the pair (its nonce) and, with it, every link of this approver on this
    # request ((approval_id, approver) is unique); everyone else is told what happened.
    conn = await session.connection()
    claimed = await insert_ignoring_duplicates(conn, ApprovalLinkUse.__table__, [dict(
        nonce=link.nonce, task_id=link.task_id, approval_id=link.approval_id, approver=link.approver,
        decision=link.decision, used_at=datetime.now(timezone.utc))])
    await session.commit()
    if not claimed:
        task = await _fresh_task(session, link.task_id)
        outcome = _outcome(task, await _open_approval(session, link.task_id)) if task else ""
        spent = await _used(session, link) or "This link has already been used."
        return _page(409, "Link already used", f"{spent} {outcome}".strip(), error=True, task=task)

    # The workflow refuses the decision unless this request is still the open one, whatever the mirror says.
    arg: Any = (ApprovalDecision(actor_id=link.approver, comment=comment, approval_id=link.approval_id)
                if link.decision == "approve"
                else Rejection(actor_id=link.approver, reason=reason or "", approval_id=link.approval_id))
    try:
        ack = await decide(session, temporal, link.task_id, link.decision, arg)
    except ServiceError as err:
        if not isinstance(err, (Forbidden, Conflict)):
            await _release(session, link.nonce)
        task = await _fresh_task(session, link.task_id)
        if isinstance(err, Conflict):
            approval = await _open_approval(session, link.task_id)
            decided = approval is not None and approval.status != "pending"
            outcome = _outcome(task, approval) if decided else f"The decision was not taken: {err.message}."
            return _page(409, "Nothing to decide", outcome, error=True, task=task)
        if isinstance(err, Forbidden):
            return _page(403, "Not allowed", f"{link.approver} may not decide this task.", error=True, task=task)
        return _page(status_of(err), "Not done", detail_of(err), error=True, task=task)
    except RPCError:
        await _release(session, link.nonce)
        return _page(503, "Try again shortly", "The decision could not be taken just now; the link still works.",
                     error=True)
    except Exception:
        await _release(session, link.nonce)
        raise

    task = await _fresh_task(session, link.task_id)
    if link.decision == "reject":
        message = "You rejected this task. Nothing will be sent."
    elif ack.status == TaskStatus.AWAITING_APPROVAL.value:
        message = "Your approval was recorded. The task still waits for more approvals."
    else:
        message = "You approved this task. It is on its way."
    heading = "Rejected" if link.decision == "reject" else "Approved"
    return _page(200, heading, f"{message} (status: {ack.status.replace('_', ' ')})", task=task)


async def _release(session: SessionDep, nonce: str) -> None:
    """The decision failed for a reason a retry can fix: the link may be used again."""
    try:
        await session.rollback()
        await session.execute(delete(ApprovalLinkUse).where(ApprovalLinkUse.nonce == nonce))
        await session.commit()
    except Exception:  # noqa: BLE001 - the original failure is what the caller reports
        pass
