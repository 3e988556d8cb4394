"""The agent task's side effects: one model call per turn, and one activity per tool
(followthrough/domain/agent_tools.py names them).

Tools with effects outside reuse the task transports, keyed per tool call: an
HTTP request goes through the http transport (SSRF-guarded, one delivery per
key, Idempotency-Key header), an email through the email transport (one
outbox row per key), a subtask through the same creation path as
``POST /tasks`` with a task id derived from the key. So a retried or replayed
call never acts twice.
"""

import json
import uuid
from dataclasses import replace
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client

from followthrough.activities.errors import llm_failure, permanent, reports_attempt
from followthrough.activities.heartbeat import heartbeating
from followthrough.activities.transports import DeliveryContext, PermanentDeliveryError, Transport, build_transports
from followthrough.infra import redaction
from followthrough.domain import activity_names, allowed_hosts, policies
from followthrough.domain.agent_tools import SUBTASK_TYPES_REFUSED, SUBTASK_TYPES_UNBOUNDED_HOSTS, TOOLS
from followthrough.domain.contracts import (AgentTurnRequest, AgentTurnResult, Draft, TaskInput, ToolCallRequest,
                                     ToolCallResult)
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.outbound import OutboundRefused
from followthrough.infra.llm import LlmError, api_key, complete_with_tools, llm_config
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.services.errors import Invalid, ServiceError, jsonable
from followthrough.services.requests import TaskCreate
from followthrough.services.task_creation import TaskCreator
from followthrough.config.settings import Settings
from followthrough.infra.task_secrets import task_secrets_for
from followthrough.tasktypes import UnknownTaskType, get_type
from followthrough.tasktypes.base import DraftContext, TaskType

# Every answer the model may read: statuses 2xx-4xx come back to it; 5xx and timeouts are retried first.
_ANSWERED = list(range(200, 500))
_SUBTASK_IDS = uuid.UUID("9e3c6a52-7d1b-4f0e-a8c4-2b5d9f1e6c37")


def _tool_error(err: Exception) -> ToolCallResult:
    """What the model (and the task's events) hear of a failed tool call: never a secret's value."""
    text = redaction.redact(str(err))
    return ToolCallResult(output=f"error: {text}", detail={"error": text})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class HostNotAllowed(OutboundRefused):
    """A request to a host outside the agent's allowed hosts; the transports report it like the SSRF guard's."""

    def __init__(self, host: str, reason: str) -> None:
        Exception.__init__(self, f"refused: {reason}")
        self.host, self.address, self.reason = host, None, reason


class HostBoundClient:
    """The outbound client, held to host lists: every request it sends (each redirect hop a transport follows
    is a request of its own) is refused unless every list allows its host. The SSRF guard still runs below."""

    def __init__(self, client: httpx.AsyncClient, lists: list[list[str] | None]) -> None:
        self._client, self._lists = client, lists

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        return self._client.build_request(*args, **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if (reason := allowed_hosts.refusal(str(request.url), *self._lists)) is not None:
            raise HostNotAllowed(request.url.host, reason)
        return await self._client.send(request, **kwargs)


class AgentActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient, outbound: httpx.AsyncClient,
                 secrets: SecretStore, temporal: Client | None = None,
                 transports: dict[str, Transport] | None = None) -> None:
        self._settings, self._engine, self._http, self._outbound = settings, engine, http, outbound
        self._secrets, self._temporal = secrets, temporal
        self._task_secrets = task_secrets_for(settings)
        self._transports = transports or build_transports()

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        """The turn activity and one activity per registered tool."""
        handlers = {"http_request": self._http_request, "draft_email": self._draft_email,
                    "send_email": self._send_email, "create_subtask": self._create_subtask,
                    "fetch_and_extract": self._fetch_and_extract}
        missing = set(TOOLS) - set(handlers)
        if missing:
            raise RuntimeError(f"registered tools without an activity: {', '.join(sorted(missing))}")
        return [self.turn] + [_tool_activity(TOOLS[name].activity, handler) for name, handler in handlers.items()]

    @activity.defn(name=activity_names.AGENT_TURN)
    @reports_attempt
    async def turn(self, request: AgentTurnRequest) -> AgentTurnResult:
        config = llm_config(self._settings, "agent")
        if config is None:
            raise permanent("agent tasks need an LLM, and none is configured (FOLLOWTHROUGH_LLM_BASE_URL)",
                            policies.LLM_NOT_CONFIGURED)
        # The task's own model options over the configured ones.
        config = replace(config, model=request.model or config.model,
                         temperature=config.temperature if request.temperature is None else request.temperature)
        limit = (activity.info().start_to_close_timeout or policies.AGENT_TURN_TIMEOUT).total_seconds() - 5
        try:
            key = api_key(config, self._secrets)
            message, usage = await heartbeating(complete_with_tools(
                self._http, config, key, request.messages, request.tools,
                timeout_seconds=max(1.0, min(config.timeout_seconds, limit))))
        except LlmError as err:
            raise llm_failure(err) from err
        return AgentTurnResult(message=message, model=usage.model, prompt_tokens=usage.prompt_tokens,
                               completion_tokens=usage.completion_tokens, latency_ms=usage.latency_ms)

    # ---- tools ------------------------------------------------------------------

    def _host_lists(self, request: ToolCallRequest) -> list[list[str] | None]:
        """The agent's own list and its tenant's (FOLLOWTHROUGH_GUARDRAILS agent.allowed_hosts); None: not set."""
        tenant = self._settings.guardrail_params(request.tenant_id, "agent", {"allowed_hosts": None})
        listed = tenant.get("allowed_hosts")
        if isinstance(listed, str):
            listed = [listed]
        return [request.bounds.allowed_hosts if request.bounds else None,
                None if listed is None else [str(h) for h in listed]]

    def _bounded(self, request: ToolCallRequest) -> httpx.AsyncClient:
        lists = self._host_lists(request)
        if all(hosts is None for hosts in lists):
            return self._outbound
        return HostBoundClient(self._outbound, lists)  # type: ignore[return-value] - the part transports use

    def _refusal(self, request: ToolCallRequest, url: str | None) -> ToolCallResult | None:
        reason = allowed_hosts.refusal(url, *self._host_lists(request)) if url else None
        return None if reason is None else ToolCallResult(output=f"refused: {reason}",
                                                          detail={"refused": True, "error": reason})

    def _delivery(self, request: ToolCallRequest, http: httpx.AsyncClient) -> DeliveryContext:
        info = activity.info()
        timeout = (info.start_to_close_timeout or timedelta(seconds=30)).total_seconds()
        return DeliveryContext(settings=self._settings, engine=self._engine, http=http, secrets=self._secrets,
                               task_secrets=self._task_secrets,
                               task_id=request.task_id, task_type="agent", tenant_id=request.tenant_id,
                               idempotency_key=request.idempotency_key, attempt=info.attempt,
                               timeout_seconds=max(1.0, timeout - 5))

    async def _http_request(self, request: ToolCallRequest) -> ToolCallResult:
        args = request.arguments
        data = {"method": args.get("method", "GET"), "url": args["url"], "query": args.get("query") or {},
                "headers": args.get("headers") or {}, "expected_statuses": _ANSWERED, "timeout_seconds": 30}
        if args.get("json") is not None:
            data["json"] = args["json"]
        draft = Draft(channel="http", subject=f"{data['method']} {data['url']}", body="", data=data)
        if (refused := self._refusal(request, args["url"])) is not None:
            return refused
        try:
            ctx = self._delivery(request, self._bounded(request))
            result = await heartbeating(self._transports["http"].deliver(draft, ctx), finish_on_cancel=True)
        except PermanentDeliveryError as err:
            # Refused by the SSRF guard or the request itself: the model hears why, the task goes on.
            return _tool_error(err)
        answer = {k: result.get(k) for k in ("status", "headers", "body", "body_truncated")}
        return ToolCallResult(output=_json(answer), detail={k: result.get(k) for k in (
            "status", "duration_ms", "delivery_id", "duplicate")})

    async def _fetch_and_extract(self, request: ToolCallRequest) -> ToolCallResult:
        # The extract task's own channel (followthrough/activities/transports/extract.py): the SSRF guard on every hop,
        # size and content-type limits; a timeout or a 5xx is retried, anything else goes back to the model.
        draft = Draft(channel="extract", subject="extract", body="", data=request.arguments)
        if (refused := self._refusal(request, request.arguments.get("url"))) is not None:
            return refused
        try:
            result = await heartbeating(self._transports["extract"].deliver(draft, self._delivery(
                request, self._bounded(request))))
        except PermanentDeliveryError as err:
            return _tool_error(err)
        return ToolCallResult(output=_json(result["data"]),
                              detail={k: result.get(k) for k in ("url", "status", "bytes")})

    async def _draft_email(self, request: ToolCallRequest) -> ToolCallResult:
        args = request.arguments
        text = f"To: {', '.join(args['to'])}\nSubject: {args['subject']}\n\n{args['body']}"
        return ToolCallResult(output=f"drafted (not sent):\n{text}",
                              detail={"draft": {"to": args["to"], "subject": args["subject"], "body": args["body"]}})

    async def _send_email(self, request: ToolCallRequest) -> ToolCallResult:
        args = request.arguments
        draft = Draft(channel="email", subject=args["subject"], body=args["body"], to=list(args["to"]))
        try:
            result = await heartbeating(self._transports["email"].deliver(draft, self._delivery(request, self._http)),
                                        finish_on_cancel=True)
        except (PermanentDeliveryError, SecretNotFound) as err:
            return _tool_error(err)
        return ToolCallResult(output=_json({"sent": True, "status": result.get("status"),
                                            "recipients": result.get("recipients")}),
                              detail={k: result.get(k) for k in ("message_id", "status", "duplicate")})

    async def _create_subtask(self, request: ToolCallRequest) -> ToolCallResult:
        args = request.arguments
        if args["type"] not in request.subtask_types or args["type"] in SUBTASK_TYPES_REFUSED:
            allowed = ", ".join(t for t in request.subtask_types if t not in SUBTASK_TYPES_REFUSED) or "none"
            return ToolCallResult(output=f"refused: this agent may not create {args['type']!r} tasks; allowed: "
                                         f"{allowed}", detail={"refused": True})
        if self._temporal is None:
            raise permanent("create_subtask needs a Temporal client", policies.DELIVERY_REFUSED)
        try:
            task_type = get_type(args["type"])
        except UnknownTaskType as err:
            return ToolCallResult(output=f"error: {err}", detail={"error": "invalid"})
        # The subtask acts no more freely than its agent: a mode no looser than the agent's (a call scheduled
        # before the agent passed its bounds: review), the agent's approvers, deadline and priority.
        bounds = request.bounds
        ceiling = TaskMode.parse(bounds.mode) if bounds else TaskMode.REVIEW
        asked = TaskMode.parse(args["mode"]) if args.get("mode") else task_type.default_mode
        fields: dict[str, Any] = {"type": args["type"], "title": args["title"], "payload": args["payload"],
                                  "mode": asked.no_looser_than(ceiling).value, "tenant_id": request.tenant_id,
                                  "source": f"agent:{request.task_id}"}
        if bounds is not None:
            fields |= {"priority": bounds.priority, "approval_timeout_seconds": bounds.approval_timeout_seconds}
            if bounds.approvers or bounds.approver_roles:
                fields["approval"] = {"approvers": bounds.approvers, "required": bounds.approvals_required,
                                      "roles": bounds.approver_roles}
        task_id = str(uuid.uuid5(_SUBTASK_IDS, request.idempotency_key))
        creator = TaskCreator(self._settings, self._temporal, self._engine)
        actor = request.created_by or "agent"
        try:
            body = TaskCreate.model_validate(fields)
            if (refused := await self._subtask_hosts(request, task_type, creator.build(body, actor,
                                                                                       task_id=task_id))):
                return refused
            # Charged to the tenant's creation rate and cap on tasks in flight like a POST /tasks (not again when
            # a retried call repeats it: the task id is the same).
            created = await creator.create(body, actor, task_id=task_id)
        except Invalid as err:
            if err.errors is None:
                return ToolCallResult(output=f"error: {err.message}", detail={"error": err.message})
            return ToolCallResult(output=f"error: the task is invalid: {_json(jsonable(err.errors))}",
                                  detail={"error": "invalid"})
        except ServiceError as err:
            return ToolCallResult(output=f"error: {err.message}", detail={"error": err.message})
        except ValueError as err:  # pydantic's ValidationError of the body
            return ToolCallResult(output=f"error: the task is invalid: {err}", detail={"error": "invalid"})
        return ToolCallResult(output=_json({"task_id": created.id, "status": "started", "mode": body.mode}),
                              detail={"task_id": created.id, "workflow_id": created.workflow_id,
                                      "mode": body.mode})

    async def _subtask_hosts(self, request: ToolCallRequest, task_type: TaskType,
                             task: TaskInput) -> ToolCallResult | None:
        """A refusal when the subtask (built, not started) would reach a host outside the agent's lists, or is
        of a type whose requests go on to hosts its payload does not name."""
        lists = self._host_lists(request)
        if all(hosts is None for hosts in lists):
            return None
        if task_type.name in SUBTASK_TYPES_UNBOUNDED_HOSTS:
            reason = (f"this agent is held to allowed hosts, and {task_type.name} tasks can go on to others "
                      f"(redirects, navigation)")
            return ToolCallResult(output=f"refused: {reason}", detail={"refused": True, "error": reason})
        payload = task_type.payload_model.model_validate(task.payload)
        urls = list(task_type.outbound_urls(payload).values())
        if task_type.channel == "http" and not urls:
            # A connector's action: its URL (the operator's base URL and the action's path) is in its draft.
            draft = await task_type.draft(payload, DraftContext(self._settings, task, self._engine))
            urls = [str(draft.data.get("url") or "")]
        for url in urls:
            reason = allowed_hosts.refusal(url, *lists) if url else "its URL could not be read"
            if reason is not None:
                return ToolCallResult(output=f"refused: {reason}", detail={"refused": True, "error": reason})
        return None


def _tool_activity(name: str, handler: Callable[[ToolCallRequest], Awaitable[ToolCallResult]]):
    async def run(request: ToolCallRequest) -> ToolCallResult:
        return await handler(request)

    run.__name__ = name
    return activity.defn(name=name)(reports_attempt(run))
