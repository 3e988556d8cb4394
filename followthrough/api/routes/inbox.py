"""/ui: a server-rendered inbox of the tasks awaiting the caller's decision.

No front-end build step and no JavaScript needed: one page lists the caller's
queue (the same query as ``GET /approvals?approver=…``), each task with its
draft in editable fields and Approve / Reject (or, for a manual task, Mark done)
buttons; each form posts to ``/ui/tasks/{id}/decide``, which decides through the
same path as the JSON API and redirects back to the inbox. Where JavaScript runs, a few
lines (``/ui/live.js``) listen to ``/ui/events``: a task decided elsewhere leaves the list at once, and a
new request refreshes it.

A person signs in with their API key (it needs the approver role). The key is checked and forgotten: the
browser gets a random session id in an HttpOnly, SameSite=Strict cookie for ``/ui`` only, the database
keeps its hash (followthrough/db/inbox_sessions.py), and the JSON API never accepts it. Every form that
posts carries a CSRF token: the session's, or before sign-in (and under anonymous access) one that must
match a cookie of its own (double submit); and followthrough/api/same_origin.py refuses a post another site sends.
With anonymous access (dev on 127.0.0.1) the caller names themself with ``?as=<user id>`` (else the
``X-Actor-Id`` header, else the page asks who they are).
"""

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select
from temporalio.service import RPCError

from followthrough.api import streams
from followthrough.api.deps import SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, detail_of, status_of
from followthrough.api.query_check import takes_query
from followthrough.api.routes.approvals import may_decide
from followthrough.domain.contracts import ApprovalDecision, Completion, Rejection
from followthrough.domain.lifecycle import TaskStatus
from followthrough.db import inbox_sessions
from followthrough.domain import approver_ids
from followthrough.db.api_keys import principal_for
from followthrough.domain.naming import temporal_ui_link
from followthrough.domain.principals import Role
from followthrough.services import decisions
from followthrough.services.errors import Conflict, Forbidden, ServiceError
from followthrough.config.settings import Settings
from followthrough.db.tables import Approval, ApprovalDecisionRecord, Task

router = APIRouter(tags=["inbox"], include_in_schema=False)

_MAX_ACTOR = 128
_MAX_TEXT = 4000
_MAX_SUBJECT = 1000
_MAX_BODY = 100_000
_MAX_FORM = 512 * 1024
_LIST_LIMIT = 200
# Referrer-Policy (same-origin), CSP and the rest: followthrough/api/security_headers.py, on every answer.
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}

SESSION_COOKIE = "followthrough_session"  # the session id; the table keeps its hash
FORM_COOKIE = "followthrough_form"  # the double-submit token of forms posted without a session
_OLD_KEY_COOKIE = "followthrough_key"  # where earlier versions kept the raw key: cleared at sign-in and out
_COOKIE_PATH = "/ui"  # a browser sends neither cookie to the JSON API
_BAD_TOKEN = ("This form's security token is missing or out of date, so nothing was done: a form must come "
              "from a page of this inbox. Reload the inbox and try again.")

# The flash message after a decision: a fixed set, so the query string cannot inject text.
_OUTCOMES = {
    "approved": "You approved task {id}. It is on its way.",
    "recorded": "Your approval of task {id} was recorded; it still waits for more approvals.",
    "rejected": "You rejected task {id}. Nothing will be sent.",
    "completed": "You marked task {id} done.",
}

def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


_ENV = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True))
_ENV.filters["when"] = _when
_ENV.filters["format_role"] = lambda role: f"anyone with the role {role}"
_PAGE = _ENV.get_template("inbox.html")


@dataclass
class _Caller:
    actor: str
    roles: list[str]
    keyed: bool  # signed in with an API key, rather than named under anonymous access
    tenant_id: str | None = None  # a key's tenant; None under anonymous access (every tenant)
    session_id: str | None = None  # the sign-in session, when keyed


@dataclass
class _Item:
    task: Task
    approval: Approval
    approved: int
    mine: bool
    ui_link: str
    manual: bool
    draft: dict[str, str] | None = field(default=None)


def _draft(task: Task) -> dict[str, str] | None:
    if not isinstance(task.draft, dict):
        return None
    return {"subject": str(task.draft.get("subject") or ""), "body": str(task.draft.get("body") or "")}


async def _queue(session: SessionDep, settings: Settings, caller: _Caller,
                 tenant_id: str | None) -> tuple[list[_Item], bool]:
    """The pending approvals the caller may decide, oldest first, with their tasks."""
    actor = caller.actor
    query = (select(Approval, Task).join(Task, Task.id == Approval.task_id)
             .where(Approval.status == "pending", may_decide(actor, caller.roles)))
    if tenant_id is not None:
        query = query.where(Approval.tenant_id == tenant_id)
    if caller.tenant_id is not None:
        query = query.where(Approval.tenant_id == caller.tenant_id)
    rows = (await session.execute(query.order_by(Approval.requested_at, Approval.id).limit(_LIST_LIMIT + 1)
                                  .execution_options(populate_existing=True))).all()
    truncated = len(rows) > _LIST_LIMIT
    rows = rows[:_LIST_LIMIT]
    ids = [approval.id for approval, _ in rows]
    approved: dict[str, int] = {}
    mine: set[str] = set()
    if ids:
        counts = await session.execute(
            select(ApprovalDecisionRecord.approval_id, func.count())
            .where(ApprovalDecisionRecord.approval_id.in_(ids), ApprovalDecisionRecord.decision == "approve")
            .group_by(ApprovalDecisionRecord.approval_id))
        approved = {approval_id: n for approval_id, n in counts.all()}
        by_me = await session.execute(
            select(ApprovalDecisionRecord.approval_id)
            .where(ApprovalDecisionRecord.approval_id.in_(ids), ApprovalDecisionRecord.decision == "approve",
                   ApprovalDecisionRecord.actor_id == actor))
        mine = set(by_me.scalars())
    items = [_Item(task=task, approval=approval, approved=approved.get(approval.id, 0), mine=approval.id in mine,
                   ui_link=temporal_ui_link(settings.temporal_ui_url, settings.temporal_namespace, task.workflow_id),
                   manual=task.stage == "awaiting_person" or task.mode == "manual", draft=_draft(task))
             for approval, task in rows]
    return items, truncated


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or "\x00" in value:
        return None
    return value[:limit]


def _secure(settings: Settings) -> bool:
    return settings.effective_public_url.startswith("https://")


def _form_cookie(request: Request) -> str | None:
    value = request.cookies.get(FORM_COOKIE)
    return value if value and 32 <= len(value) <= 128 else None


def _expected_token(request: Request, *, signing_in: bool = False) -> str | None:
    """The token a posted form must carry: its session's, else (sign-in, anonymous access) the form cookie's."""
    session_id = None if signing_in else request.cookies.get(SESSION_COOKIE)
    return inbox_sessions.csrf_token(session_id) if session_id else _form_cookie(request)


def _token_ok(request: Request, fields: dict[str, list[str]], *, signing_in: bool = False) -> bool:
    presented = (fields.get("csrf") or [""])[0]
    return inbox_sessions.same_token(_expected_token(request, signing_in=signing_in), presented)


async def _render(request: Request, session: SessionDep, settings: Settings, caller: _Caller | None,
                  tenant_id: str | None, *, flash: str = "", error: str = "", status_code: int = 200) -> HTMLResponse:
    items: list[_Item] = []
    truncated = False
    if caller:
        items, truncated = await _queue(session, settings, caller, tenant_id)
    new_form_token = None
    if caller and caller.session_id:
        csrf = inbox_sessions.csrf_token(caller.session_id)
    else:
        csrf = _form_cookie(request) or ""
        if not csrf:
            csrf = new_form_token = secrets.token_urlsafe(32)
    html = _PAGE.render(actor=caller.actor if caller else None, keyed=bool(caller and caller.keyed),
                        anonymous=settings.anonymous_access, tenant_id=tenant_id, items=items, truncated=truncated,
                        flash=flash, error=error, csrf=csrf)
    response = HTMLResponse(html, status_code=status_code, headers=_HEADERS)
    if new_form_token:
        response.set_cookie(FORM_COOKIE, new_form_token, httponly=True, samesite="strict", path=_COOKIE_PATH,
                            secure=_secure(settings))
    if request.cookies.get(SESSION_COOKIE) and not (caller and caller.session_id):
        response.delete_cookie(SESSION_COOKIE, path=_COOKIE_PATH)  # ended: the sign-in form uses the form cookie
    return response


async def _caller(request: Request, settings: Settings, named: str | None) -> _Caller | str | None:
    """Who is deciding: whoever signed in to this session; under anonymous access whoever ``named`` says.
    A string is why the caller cannot go on; None means nobody has signed in."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        principal = await inbox_sessions.principal_for(request.app.state.engine, session_id)
        if principal is None:
            return "Your sign-in has ended (it expired, you signed out, or its key was revoked); sign in again."
        if not principal.grants(Role.APPROVER):
            return "Your key does not carry the approver role, so it cannot decide tasks."
        return _Caller(principal.actor_id, sorted(principal.roles), keyed=True, tenant_id=principal.tenant_id,
                       session_id=session_id)
    if settings.anonymous_access and named:
        return _Caller(named, [], keyed=False)
    return None


def _inbox_url(actor: str, tenant_id: str | None, **extra: str) -> str:
    params = {"as": actor} | ({"tenant_id": tenant_id} if tenant_id else {}) | extra
    return f"/ui?{urlencode(params)}"


# Live updates, where JavaScript runs (the page works without): a task decided elsewhere leaves the list; a
# new request reloads the page, unless a form on it is being filled in, when a link offers to.
_LIVE = """\
(function () {
  if (!window.EventSource) { return; }
  var tenant = document.currentScript.getAttribute("data-tenant-id");
  var source = new EventSource("/ui/events" + (tenant ? "?tenant_id=" + encodeURIComponent(tenant) : ""));
  var typing = false;
  document.addEventListener("input", function () { typing = true; });
  source.onopen = function () { document.body.setAttribute("data-live", "on"); };
  // Too long away to catch up: show the inbox as it is now.
  source.addEventListener("reset", function () {
    if (typing) { document.getElementById("news").hidden = false; } else { window.location.reload(); }
  });
  source.addEventListener("task_event", function (message) {
    var event = JSON.parse(message.data);
    var card = document.getElementById("task-" + event.task_id);
    if (event.old_status === "awaiting_approval" && card) {
      card.remove();
      var left = document.querySelectorAll("section.task").length;
      document.getElementById("count").textContent = left ? left + (left === 1 ? " task" : " tasks") +
        " awaiting your decision." : "Nothing awaits your decision.";
    } else if (event.new_status === "awaiting_approval" || event.type === "TASK_APPROVAL_ESCALATED" ||
               (event.type === "TASK_APPROVAL_RECORDED" && card)) {
      if (typing) { document.getElementById("news").hidden = false; } else { window.location.reload(); }
    }
  });
})();
"""


_CSS = (Path(__file__).resolve().parent.parent / "templates" / "inbox.css").read_text()


@router.get("/ui/live.js")
async def live_script() -> Response:
    return Response(_LIVE, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/ui/inbox.css")
async def stylesheet() -> Response:
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "no-cache"})


@router.get("/ui/events", response_class=StreamingResponse)
@takes_query("tenant_id")
async def live_events(request: Request, settings: SettingsDep) -> Response:
    """The live page's event stream: the signed-in key's tenant (under anonymous access, ``tenant_id``'s),
    until the session ends. The JSON API's stream takes API keys only, never this session."""
    caller = await _caller(request, settings, "anonymous")
    if not isinstance(caller, _Caller):
        return Response(caller or "Sign in first.", status_code=401, media_type="text/plain", headers=_HEADERS)
    tenant_id = caller.tenant_id if caller.keyed else _clean(request.query_params.get("tenant_id"), 128)
    reader = streams.EventReader(request.app.state.engine, streams.Scope(tenant_id=tenant_id),
                                 timedelta(seconds=settings.stream_overlap_seconds))
    resume_from = request.headers.get("last-event-id")  # EventSource reconnecting: nothing missed meanwhile
    if resume_from:
        try:
            reader.resume(resume_from)
        except ApiError:
            await reader.start_at_now()  # not a cursor of ours: the page reloads as after a reset
            reader.reset = True
        else:
            if await reader.beyond(settings.stream_resume_max_events):
                reader.restart()
    else:
        await reader.start_at_now()
    engine, session_id = request.app.state.engine, caller.session_id

    async def session_live() -> bool:
        return await inbox_sessions.principal_for(engine, session_id or "") is not None

    give_back = request.app.state.streams.take(tenant_id, session_id)  # no await from here to the response
    return streams.EventStream(streams.events(request, reader, settings, session_live if session_id else None),
                               give_back)


@router.get("/ui", response_class=HTMLResponse)
@takes_query("as", "tenant_id", "done", "outcome")
async def inbox(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """The caller's inbox (signed in with a key, or ``?as=<user id>`` / X-Actor-Id under anonymous
    access), optionally ``tenant_id``."""
    query = request.query_params
    named = _clean(query.get("as"), _MAX_ACTOR + 1) or _clean(request.headers.get("x-actor-id"), _MAX_ACTOR + 1)
    tenant_id = _clean(query.get("tenant_id"), 129)
    if (named and len(named) > _MAX_ACTOR) or (tenant_id and len(tenant_id) > 128):
        return await _render(request, session, settings, None, None, error="That name is too long.",
                             status_code=422)
    if named and (why := approver_ids.problem(named)) is not None:  # it names whose queue to list
        return await _render(request, session, settings, None, None, error=f"That name cannot be used: {why}.",
                             status_code=422)
    caller = await _caller(request, settings, named)
    if isinstance(caller, str):
        return await _render(request, session, settings, None, None, error=caller, status_code=401)
    flash = ""
    done, outcome = _clean(query.get("done"), 64), query.get("outcome")
    if caller and done and outcome in _OUTCOMES:
        flash = _OUTCOMES[outcome].format(id=done)
    return await _render(request, session, settings, caller, tenant_id, flash=flash,
                         status_code=200 if caller or settings.anonymous_access else 401)


def _clear_sign_in(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=_COOKIE_PATH)
    response.delete_cookie(_OLD_KEY_COOKIE, path="/")


def small_form(raw: bytes) -> dict[str, list[str]]:
    """A sign-in or sign-out form's few fields; a form with more (or none readable) has none, so its token check
    refuses it (403) rather than the parser's error becoming a 500."""
    try:
        return parse_qs(raw[:4096].decode("utf-8", errors="replace"), max_num_fields=5)
    except ValueError:
        return {}


@router.post("/ui/login")
async def login(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Form fields ``key`` and ``csrf`` (the sign-in page's): the key is checked, a session begins, and the
    browser keeps the session's id, never the key."""
    raw = await request.body()
    fields = small_form(raw)
    if not _token_ok(request, fields, signing_in=True):
        return await _render(request, session, settings, None, None, status_code=403, error=_BAD_TOKEN)
    key = (fields.get("key") or [""])[0].strip()
    async with request.app.state.engine.connect() as conn:
        principal = await principal_for(conn, key) if key else None
    if principal is None or principal.key_id is None:
        return await _render(request, session, settings, None, None, status_code=401,
                             error="That key is not valid or has been revoked.")
    if not principal.grants(Role.APPROVER):
        return await _render(request, session, settings, None, None, status_code=403,
                             error="That key does not carry the approver role, so it cannot decide tasks; "
                                   "sign in with an approver's key.")
    engine = request.app.state.engine
    if previous := request.cookies.get(SESSION_COOKIE):
        await inbox_sessions.end(engine, previous)  # a new sign-in never keeps an id the browser held before
    session_id = await inbox_sessions.create(engine, principal.key_id, settings.inbox_session_seconds)
    response = RedirectResponse("/ui", status_code=303, headers=_HEADERS)
    response.delete_cookie(_OLD_KEY_COOKIE, path="/")
    response.set_cookie(SESSION_COOKIE, session_id, max_age=settings.inbox_session_seconds, httponly=True,
                        samesite="strict", path=_COOKIE_PATH, secure=_secure(settings))
    return response


@router.post("/ui/logout")
async def logout(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Form field ``csrf`` (the session's): the session is deleted, so its cookie is worth nothing after."""
    raw = await request.body()
    fields = small_form(raw)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        if not _token_ok(request, fields):
            caller = await _caller(request, settings, None)
            return await _render(request, session, settings, caller if isinstance(caller, _Caller) else None,
                                 None, status_code=403, error=_BAD_TOKEN)
        await inbox_sessions.end(request.app.state.engine, session_id)
    response = RedirectResponse("/ui", status_code=303, headers=_HEADERS)
    _clear_sign_in(response)
    return response


async def _settled(request: Request, task_id: str, actor: str) -> None:
    """Wait briefly for the mirror to show the decision, so the inbox we redirect to is current."""
    deadline = asyncio.get_running_loop().time() + 3
    while asyncio.get_running_loop().time() < deadline:
        async with request.app.state.sessions() as session:
            approval = (await session.execute(
                select(Approval).where(Approval.task_id == task_id)
                .order_by(Approval.requested_at.desc(), Approval.id.desc()).limit(1))).scalar()
            if approval is None or approval.status != "pending":
                return
            mine = (await session.execute(select(func.count()).select_from(ApprovalDecisionRecord).where(
                ApprovalDecisionRecord.approval_id == approval.id,
                ApprovalDecisionRecord.actor_id == actor))).scalar_one()
            if mine:
                return
        await asyncio.sleep(0.05)


@router.post("/ui/tasks/{task_id}/decide", response_class=HTMLResponse)
async def decide(task_id: str, request: Request, session: SessionDep, settings: SettingsDep,
                 temporal: TemporalDep) -> Response:
    """Form fields: ``as``, ``action`` (approve, reject, complete), ``approval_id`` (the request the page
    showed), ``subject``, ``body``, ``comment``, ``reason``, ``result``; a decision taken redirects (303) to the
    inbox with a message."""
    raw = await request.body()
    if len(raw) > _MAX_FORM:
        return await _render(request, session, settings, None, None, error="The form is too long.", status_code=413)
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=30)
    except (UnicodeDecodeError, ValueError):
        return await _render(request, session, settings, None, None,
                             error="The form could not be read; please try again.", status_code=400)

    def text(name: str) -> str | None:
        return (fields.get(name) or [None])[0]

    named = _clean(text("as"), _MAX_ACTOR + 1)
    tenant_id = _clean(text("tenant_id"), 129)
    if tenant_id and len(tenant_id) > 128:
        tenant_id = None
    caller = await _caller(request, settings, named if named and len(named) <= _MAX_ACTOR else None)
    if isinstance(caller, str):
        return await _render(request, session, settings, None, tenant_id, error=caller, status_code=401)
    if caller is None:
        return await _render(request, session, settings, None, tenant_id,
                             error="Say who you are before deciding." if settings.anonymous_access
                             else "Sign in with your API key before deciding.",
                             status_code=422 if settings.anonymous_access else 401)
    if not _token_ok(request, fields):
        return await _render(request, session, settings, caller, tenant_id, error=_BAD_TOKEN, status_code=403)
    actor, who = caller.actor, {"actor_id": caller.actor, "actor_roles": caller.roles}
    # The request the page showed: the workflow refuses the decision once another one is open (an agent's
    # next tool call, a retry's run), so a page left open never approves what it did not show.
    approval_id = _clean(text("approval_id"), 129)

    async def failed(status_code: int, message: str) -> HTMLResponse:
        await session.rollback()
        return await _render(request, session, settings, caller, tenant_id, error=message, status_code=status_code)

    action = text("action")
    comment, reason = _clean(text("comment"), _MAX_TEXT + 1), _clean(text("reason"), _MAX_TEXT + 1)
    for name, value in (("comment", comment), ("reason", reason), ("result", _clean(text("result"), _MAX_TEXT + 1))):
        if value is not None and len(value) > _MAX_TEXT:
            return await failed(422, f"The {name} must be at most {_MAX_TEXT} characters.")
    task = await session.get(Task, task_id) if len(task_id) <= 36 else None
    if task is None or (caller.tenant_id is not None and task.tenant_id != caller.tenant_id):
        return await failed(404, f"Task {task_id} does not exist.")

    arg: Any
    if action == "approve":
        subject, body = _edits(task, text("subject"), text("body"))
        if subject is not None and len(subject) > _MAX_SUBJECT:
            return await failed(422, f"The subject must be at most {_MAX_SUBJECT} characters.")
        if body is not None and len(body) > _MAX_BODY:
            return await failed(422, f"The body must be at most {_MAX_BODY} characters.")
        arg = ApprovalDecision(**who, comment=comment, subject=subject, body=body, approval_id=approval_id)
    elif action == "reject":
        if reason is None:
            return await failed(422, f"Say why you reject “{task.title}”: a reason is required to reject.")
        arg = Rejection(**who, reason=reason, approval_id=approval_id)
    elif action == "complete":
        result = _clean(text("result"), _MAX_TEXT)
        arg = Completion(**who, comment=comment, result={"note": result} if result else None)
    else:
        return await failed(422, "Choose approve, reject or mark done.")

    try:
        ack = await decisions.decide(session, temporal, task_id, action, arg)
    except ServiceError as err:
        if isinstance(err, Forbidden):
            return await failed(403, f"{actor} may not decide “{task.title}”: {err.message}")
        if isinstance(err, Conflict):
            return await failed(409, f"“{task.title}” was not decided: {err.message}")
        return await failed(status_of(err), str(detail_of(err)))
    except RPCError:
        return await failed(503, "The decision could not be taken just now; please try again shortly.")

    if action == "approve":
        outcome = "recorded" if ack.status == TaskStatus.AWAITING_APPROVAL.value else "approved"
    else:
        outcome = "rejected" if action == "reject" else "completed"
    await session.rollback()
    await _settled(request, task_id, actor)
    return RedirectResponse(_inbox_url(actor, tenant_id, done=task_id, outcome=outcome), status_code=303,
                            headers=_HEADERS)


def _edits(task: Task, subject: str | None, body: str | None) -> tuple[str | None, str | None]:
    """The subject and body to send with an approval: only those that differ from the draft."""
    draft = _draft(task) or {"subject": "", "body": ""}
    if subject is not None:
        subject = subject.strip()
        subject = subject if subject and subject != draft["subject"].strip() else None
    if body is not None:
        body = body.replace("\r\n", "\n").replace("\r", "\n")  # browsers send a textarea's lines with CRLF
        body = body if body.strip() and body != draft["body"].replace("\r\n", "\n") else None
    return subject, body
