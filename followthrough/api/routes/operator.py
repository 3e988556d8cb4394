"""/ui/tasks: the operator page beside the approval inbox, server-rendered, no JavaScript needed.

``/ui/tasks`` lists tasks (newest first) with filters (status, type, a search in the title and the subject)
and pages; ``/ui/tasks/{id}`` shows one task's timeline: its events, runs and attempts, deliveries (HTTP
calls, webhooks, emails), artifacts and subtasks, with Run now, Cancel and Retry buttons as the task can take
them. Each button is a form posting to ``/ui/tasks/{id}/act``, which acts through the same services as the
JSON API (``POST /tasks/{id}/run``, ``/cancel``, ``/retry``) and redirects back to the task.

Sign-in and forms are the inbox's (followthrough/api/routes/inbox.py): a key signed in at ``/ui/tasks/login``
(any key with the viewer role) or at the inbox gives the browser the same session cookie; every form carries
the inbox's CSRF token, and followthrough/api/same_origin.py refuses a post another site sends. Looking needs
the viewer role, acting the submitter role; a key sees and touches its own tenant's tasks only. Under
anonymous access (dev on 127.0.0.1) every tenant is shown (``tenant_id`` narrows it) and ``?as=<user id>``
names who acts. Everything shown is escaped: titles and payloads come from whoever created the task.
"""

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, or_, select
from temporalio.service import RPCError

from followthrough.api.deps import SessionDep, SettingsDep, TemporalDep
from followthrough.api.errors import ApiError, detail_of, status_of
from followthrough.api.query_check import takes_query
from followthrough.api.routes import inbox
from followthrough.config.settings import Settings
from followthrough.db import inbox_sessions
from followthrough.db.api_keys import principal_for
from followthrough.db.tables import Delivery, OutboxMessage, Task, TaskArtifact, TaskEvent, TaskRun
from followthrough.domain import approver_ids
from followthrough.domain.contracts import CancelRequest
from followthrough.domain.lifecycle import TaskStatus
from followthrough.domain.naming import temporal_ui_link
from followthrough.domain.principals import Principal, Role, anonymous
from followthrough.services import decisions
from followthrough.services.errors import ServiceError
from followthrough.services.task_creation import TaskCreator

router = APIRouter(tags=["operator"], include_in_schema=False)

PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
_MAX_SEARCH = 200
_MAX_REASON = 4000
_TIMELINE_LIMIT = 500
_LIST = inbox._ENV.get_template("operator_tasks.html")
_TASK = inbox._ENV.get_template("operator_task.html")
_ENDED = {s.value for s in TaskStatus if s.terminal}

# The flash message after an action: a fixed set, so the query string cannot inject text.
_OUTCOMES = {"run": "Task started now.", "cancel": "Task cancelled.", "retry": "A new run of the task started."}
_ACTIONS = {"run", "cancel", "retry"}


@dataclass
class _Operator:
    principal: Principal
    keyed: bool
    session_id: str | None = None

    @property
    def actor(self) -> str:
        return self.principal.actor_id

    @property
    def tenant_id(self) -> str | None:
        return self.principal.tenant_id


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or "\x00" in value or len(value) > limit:
        return None
    return value


async def _operator(request: Request, settings: Settings, named: str | None) -> _Operator | str | None:
    """Who is looking: the signed-in key (its session), else under anonymous access whoever ``named`` says
    (or "anonymous"). A string says why they cannot go on; None: nobody has signed in."""
    session_id = request.cookies.get(inbox.SESSION_COOKIE)
    if session_id:
        principal = await inbox_sessions.principal_for(request.app.state.engine, session_id)
        if principal is None:
            return "Your sign-in has ended (it expired, you signed out, or its key was revoked); sign in again."
        if not principal.grants(Role.VIEWER):
            return "Your key does not carry the viewer role, so it cannot see tasks."
        return _Operator(principal, keyed=True, session_id=session_id)
    if settings.anonymous_access:
        if named and approver_ids.problem(named) is not None:
            named = None
        return _Operator(anonymous(named), keyed=False)
    return None


def _csrf(request: Request, operator: _Operator | None) -> tuple[str, str | None]:
    """The token this page's forms carry, and a new form cookie to set when there was none."""
    if operator and operator.session_id:
        return inbox_sessions.csrf_token(operator.session_id), None
    existing = inbox._form_cookie(request)
    if existing:
        return existing, None
    made = secrets.token_urlsafe(32)
    return made, made


def _page(request: Request, settings: Settings, template: Any, operator: _Operator | None, status_code: int = 200,
          **values: Any) -> HTMLResponse:
    csrf, new_cookie = _csrf(request, operator)
    html = template.render(operator=operator, actor=operator.actor if operator else None,
                           keyed=bool(operator and operator.keyed), anonymous=settings.anonymous_access,
                           may_act=bool(operator and operator.principal.grants(Role.SUBMITTER)), csrf=csrf,
                           **({"error": "", "flash": "", "as_query": _as_query(operator)} | values))
    response = HTMLResponse(html, status_code=status_code, headers=inbox._HEADERS)
    if new_cookie:
        response.set_cookie(inbox.FORM_COOKIE, new_cookie, httponly=True, samesite="strict", path="/ui",
                            secure=inbox._secure(settings))
    return response


def _as_query(operator: _Operator | None, **params: str | int | None) -> str:
    """The query string of a link on the page: who is acting under anonymous access, and the filters."""
    values = {k: v for k, v in params.items() if v not in (None, "")}
    if operator and not operator.keyed and operator.actor != "anonymous":
        values = {"as": operator.actor} | values
    return urlencode(values)


def _refused(request: Request, settings: Settings, operator: _Operator | str | None) -> HTMLResponse:
    error = operator if isinstance(operator, str) else "Sign in with your API key to see tasks."
    return _page(request, settings, _LIST, None, status_code=401, error=error, rows=[], filters={}, total=0,
                 statuses=[s.value for s in TaskStatus], prev_link=None, next_link=None, page=1, pages=1)


@router.get("/ui/tasks", response_class=HTMLResponse)
@takes_query("as", "status", "type", "q", "tenant_id", "page", "per_page")
async def task_list(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Tasks, newest first: ``status``, ``type``, ``q`` (in the title or the subject), ``tenant_id`` (anonymous
    access only; a key shows its own tenant), ``page`` and ``per_page`` (25, at most 200)."""
    query = request.query_params
    operator = await _operator(request, settings, _clean(query.get("as"), 128))
    if not isinstance(operator, _Operator):
        return _refused(request, settings, operator)
    statuses = [s.value for s in TaskStatus]
    status = query.get("status") if query.get("status") in statuses else None
    type_ = _clean(query.get("type"), 128)
    search = _clean(query.get("q"), _MAX_SEARCH)
    tenant_id = operator.tenant_id or _clean(query.get("tenant_id"), 128)
    try:
        page = max(1, min(int(query.get("page") or 1), 100_000))
        per_page = max(1, min(int(query.get("per_page") or PAGE_SIZE), MAX_PAGE_SIZE))
    except ValueError:
        page, per_page = 1, PAGE_SIZE
    where = []
    if tenant_id is not None:
        where.append(Task.tenant_id == tenant_id)
    if status is not None:
        where.append(Task.status == status)
    if type_ is not None:
        where.append(Task.type == type_)
    if search is not None:
        needle = search.lower()
        where.append(or_(func.lower(Task.title).contains(needle, autoescape=True),
                         func.lower(Task.subject_ref_id).contains(needle, autoescape=True),
                         func.lower(Task.subject_ref_type).contains(needle, autoescape=True)))
    total = (await session.execute(select(func.count()).select_from(Task).where(*where))).scalar_one()
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    rows = (await session.execute(select(Task).where(*where).order_by(Task.created_at.desc(), Task.id.desc())
                                  .limit(per_page).offset((page - 1) * per_page))).scalars().all()
    filters = {"status": status, "type": type_, "q": search,
               "tenant_id": None if operator.tenant_id else tenant_id}
    sized = {"per_page": per_page if per_page != PAGE_SIZE else None}
    link = lambda n: f"/ui/tasks?{_as_query(operator, **filters, **sized, page=n)}"  # noqa: E731
    return _page(request, settings, _LIST, operator, rows=rows, filters=filters | sized, total=total,
                 statuses=statuses,
                 page=page, pages=pages, prev_link=link(page - 1) if page > 1 else None,
                 next_link=link(page + 1) if page < pages else None,
                 task_link=lambda t: f"/ui/tasks/{t.id}" + (f"?{q}" if (q := _as_query(operator)) else ""))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False) if value not in (None, {}) \
        else ""


async def _task_of(session: SessionDep, operator: _Operator, task_id: str) -> Task | None:
    task = await session.get(Task, task_id) if len(task_id) <= 36 else None
    if task is None or (operator.tenant_id is not None and task.tenant_id != operator.tenant_id):
        return None  # another tenant's task is answered as one that does not exist
    return task


async def _task_page(request: Request, session: SessionDep, settings: Settings, operator: _Operator, task: Task,
                     *, flash: str = "", error: str = "", status_code: int = 200) -> HTMLResponse:
    events = (await session.execute(select(TaskEvent).where(TaskEvent.task_id == task.id)
                                    .order_by(TaskEvent.occurred_at, TaskEvent.seq, TaskEvent.id)
                                    .limit(_TIMELINE_LIMIT))).scalars().all()
    runs = (await session.execute(select(TaskRun).where(TaskRun.task_id == task.id)
                                  .order_by(TaskRun.number))).scalars().all()
    deliveries = (await session.execute(select(Delivery).where(Delivery.task_id == task.id)
                                        .order_by(Delivery.created_at).limit(_TIMELINE_LIMIT))).scalars().all()
    emails = (await session.execute(select(OutboxMessage).where(OutboxMessage.task_id == task.id)
                                    .order_by(OutboxMessage.created_at).limit(_TIMELINE_LIMIT))).scalars().all()
    artifacts = (await session.execute(
        select(TaskArtifact.id, TaskArtifact.step_index, TaskArtifact.name, TaskArtifact.kind,
               TaskArtifact.content_type, TaskArtifact.size, TaskArtifact.created_at)
        .where(TaskArtifact.task_id == task.id).order_by(TaskArtifact.step_index, TaskArtifact.name)
        .limit(_TIMELINE_LIMIT))).all()
    subtasks = (await session.execute(select(Task).where(Task.parent_id == task.id)
                                      .order_by(Task.created_at, Task.subtask_index, Task.id)
                                      .limit(_TIMELINE_LIMIT))).scalars().all()
    as_query = _as_query(operator)
    return _page(request, settings, _TASK, operator, status_code=status_code, flash=flash, error=error, task=task,
                 events=events, runs=runs, deliveries=deliveries, emails=emails, artifacts=artifacts,
                 subtasks=subtasks, pretty=_pretty, as_query=as_query, ended=task.status in _ENDED,
                 ui_link=temporal_ui_link(settings.temporal_ui_url, settings.temporal_namespace, task.workflow_id),
                 task_link=lambda t: f"/ui/tasks/{t.id}" + (f"?{as_query}" if as_query else ""))


def _not_found(request: Request, settings: Settings, operator: _Operator, task_id: str) -> HTMLResponse:
    return _page(request, settings, _LIST, operator, status_code=404, error=f"Task {task_id} does not exist.",
                 rows=[], filters={}, total=0, statuses=[s.value for s in TaskStatus], prev_link=None,
                 next_link=None, page=1, pages=1)


@router.get("/ui/tasks/{task_id}", response_class=HTMLResponse)
@takes_query("as", "done")
async def task_timeline(task_id: str, request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    query = request.query_params
    operator = await _operator(request, settings, _clean(query.get("as"), 128))
    if not isinstance(operator, _Operator):
        return _refused(request, settings, operator)
    task = await _task_of(session, operator, task_id)
    if task is None:
        return _not_found(request, settings, operator, task_id)
    done = query.get("done")
    return await _task_page(request, session, settings, operator, task, flash=_OUTCOMES.get(done or "", ""))


async def _settled(request: Request, task_id: str, before: str, run_number: int) -> None:
    """Wait briefly for the mirror to show what was done, so the page we redirect to is current."""
    deadline = asyncio.get_running_loop().time() + 3
    while asyncio.get_running_loop().time() < deadline:
        async with request.app.state.sessions() as session:
            row = await session.get(Task, task_id)
            if row is None or row.status != before or row.run_number != run_number:
                return
        await asyncio.sleep(0.05)


@router.post("/ui/tasks/{task_id}/act", response_class=HTMLResponse)
async def act(task_id: str, request: Request, session: SessionDep, settings: SettingsDep,
              temporal: TemporalDep) -> Response:
    """Form fields ``csrf``, ``action`` (run, cancel, retry), ``reason``, ``as``: done, it redirects (303) to
    the task's page with a message; refused, the page says why."""
    raw = await request.body()
    try:
        fields = parse_qs(raw[:16_384].decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        fields = {}

    def text(name: str) -> str | None:
        return (fields.get(name) or [None])[0]

    operator = await _operator(request, settings, _clean(text("as"), 128))
    if not isinstance(operator, _Operator):
        return _refused(request, settings, operator)
    task = await _task_of(session, operator, task_id)
    if task is None:
        return _not_found(request, settings, operator, task_id)

    async def failed(status_code: int, message: str) -> HTMLResponse:
        await session.rollback()
        fresh = await session.get(Task, task_id, populate_existing=True) or task
        return await _task_page(request, session, settings, operator, fresh, error=message, status_code=status_code)

    if not inbox_sessions.same_token(inbox._expected_token(request), text("csrf")):
        return await failed(403, inbox._BAD_TOKEN.replace("this inbox", "followthrough"))
    if not operator.principal.grants(Role.SUBMITTER):
        return await failed(403, "Your key does not carry the submitter role, so it cannot run, cancel or retry "
                                 "tasks.")
    action = text("action")
    if action not in _ACTIONS:
        return await failed(422, "Choose run now, cancel or retry.")
    reason = _clean(text("reason"), _MAX_REASON)
    actor, before, run_number = operator.actor, task.status, task.run_number
    try:
        if action == "run":
            await decisions.run_now(session, temporal, task_id, actor, reason)
        elif action == "cancel":
            ack = await decisions.decide(session, temporal, task_id, "cancel",
                                         CancelRequest(actor_id=actor, reason=reason))
            if ack.status != TaskStatus.CANCELLED.value:
                return await failed(409, f"The task was {ack.status} before the cancellation took effect.")
        else:
            if task.status != TaskStatus.FAILED.value:
                return await failed(409, f"Only a failed task can be retried; this one is {task.status}.")
            await TaskCreator(settings, temporal, request.app.state.engine).rerun(task, actor)
    except ServiceError as err:
        return await failed(status_of(err), f"Nothing was done: {detail_of(err)}")
    except ApiError as err:
        return await failed(err.status_code, f"Nothing was done: {err.detail}")
    except RPCError:
        return await failed(503, "Temporal could not be reached just now; please try again shortly.")
    await session.rollback()
    await _settled(request, task_id, before, run_number)
    params = _as_query(operator, done=action)
    return RedirectResponse(f"/ui/tasks/{task_id}?{params}", status_code=303, headers=inbox._HEADERS)


@router.get("/ui/tasks-login", response_class=HTMLResponse)
async def login_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _refused(request, settings, None)


@router.post("/ui/tasks-login")
async def login(request: Request, settings: SettingsDep) -> Response:
    """Form fields ``key`` and ``csrf``: any key with the viewer role signs in (the inbox's session)."""
    raw = await request.body()
    fields = inbox.small_form(raw)
    if not inbox._token_ok(request, fields, signing_in=True):
        return _page(request, settings, _LIST, None, status_code=403, error=inbox._BAD_TOKEN, rows=[], filters={},
                     total=0, statuses=[], prev_link=None, next_link=None, page=1, pages=1)
    key = (fields.get("key") or [""])[0].strip()
    async with request.app.state.engine.connect() as conn:
        principal = await principal_for(conn, key) if key else None
    if principal is None or principal.key_id is None or not principal.grants(Role.VIEWER):
        return _page(request, settings, _LIST, None, status_code=401, rows=[], filters={}, total=0, statuses=[],
                     prev_link=None, next_link=None, page=1, pages=1,
                     error="That key is not valid, has been revoked, or cannot see tasks.")
    engine = request.app.state.engine
    if previous := request.cookies.get(inbox.SESSION_COOKIE):
        await inbox_sessions.end(engine, previous)
    session_id = await inbox_sessions.create(engine, principal.key_id, settings.inbox_session_seconds)
    response = RedirectResponse("/ui/tasks", status_code=303, headers=inbox._HEADERS)
    response.set_cookie(inbox.SESSION_COOKIE, session_id, max_age=settings.inbox_session_seconds, httponly=True,
                        samesite="strict", path="/ui", secure=inbox._secure(settings))
    return response
