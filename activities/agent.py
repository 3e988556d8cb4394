"""The agent task's side effects: one model call per turn, and one activity per tool
(followthrough/agent_tools.py names them).

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
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client

from activities.errors import llm_failure, permanent, reports_attempt
from activities.heartbeat import heartbeating
from activities.transports import DeliveryContext, PermanentDeliveryError, Transport, build_transports
from followthrough import activity_names, policies, redaction
from followthrough.agent_tools import TOOLS
from followthrough.contracts import AgentTurnRequest, AgentTurnResult, Draft, ToolCallRequest, ToolCallResult
from followthrough.llm import LlmError, api_key, complete_with_tools, llm_config
from followthrough.secrets import SecretNotFound, SecretStore
from followthrough.settings import Settings
from followthrough.task_secrets import task_secrets_for

# Every answer the model may read: statuses 2xx-4xx come back to it; 5xx and timeouts are retried first.
_ANSWERED = list(range(200, 500))
_SUBTASK_IDS = uuid.UUID("9e3c6a52-7d1b-4f0e-a8c4-2b5d9f1e6c37")


def _tool_error(err: Exception) -> ToolCallResult:
    """What the model (and the task's events) hear of a failed tool call: never a secret's value."""
    text = redaction.redact(str(err))
    return ToolCallResult(output=f"error: {text}", detail={"error": text})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


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
        try:
            ctx = self._delivery(request, self._outbound)
            result = await heartbeating(self._transports["http"].deliver(draft, ctx), finish_on_cancel=True)
        except PermanentDeliveryError as err:
            # Refused by the SSRF guard or the request itself: the model hears why, the task goes on.
            return _tool_error(err)
        answer = {k: result.get(k) for k in ("status", "headers", "body", "body_truncated")}
        return ToolCallResult(output=_json(answer), detail={k: result.get(k) for k in (
            "status", "duration_ms", "delivery_id", "duplicate")})

    async def _fetch_and_extract(self, request: ToolCallRequest) -> ToolCallResult:
        # The extract task's own channel (activities/transports/extract.py): the SSRF guard on every hop,
        # size and content-type limits; a timeout or a 5xx is retried, anything else goes back to the model.
        draft = Draft(channel="extract", subject="extract", body="", data=request.arguments)
        try:
            result = await heartbeating(self._transports["extract"].deliver(draft, self._delivery(request,
                                                                                                   self._outbound)))
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
        # Imported here: the API's creation path is only needed by the worker, not by the workflow sandbox.
        from api.errors import ApiError
        from api.schemas import TaskCreate
        from api.task_creation import TaskCreator

        args = request.arguments
        if args["type"] not in request.subtask_types:
            allowed = ", ".join(request.subtask_types) or "none"
            return ToolCallResult(output=f"refused: this agent may not create {args['type']!r} tasks; allowed: "
                                         f"{allowed}", detail={"refused": True})
        if self._temporal is None:
            raise permanent("create_subtask needs a Temporal client", policies.DELIVERY_REFUSED)
        try:
            body = TaskCreate.model_validate({"type": args["type"], "title": args["title"], "payload": args["payload"],
                                              "mode": args.get("mode"), "tenant_id": request.tenant_id,
                                              "source": f"agent:{request.task_id}"})
            created = await TaskCreator(self._settings, self._temporal, self._engine).create(
                body, request.created_by or "agent",
                task_id=str(uuid.uuid5(_SUBTASK_IDS, request.idempotency_key)))
        except RequestValidationError as err:
            return ToolCallResult(output=f"error: the task is invalid: {_json(jsonable_encoder(err.errors()))}",
                                  detail={"error": "invalid"})
        except ApiError as err:
            return ToolCallResult(output=f"error: {err.detail}", detail={"error": err.detail})
        except ValueError as err:  # pydantic's ValidationError of the body
            return ToolCallResult(output=f"error: the task is invalid: {err}", detail={"error": "invalid"})
        return ToolCallResult(output=_json({"task_id": created.id, "status": "started"}),
                              detail={"task_id": created.id, "workflow_id": created.workflow_id})


def _tool_activity(name: str, handler: Callable[[ToolCallRequest], Awaitable[ToolCallResult]]):
    async def run(request: ToolCallRequest) -> ToolCallResult:
        return await handler(request)

    run.__name__ = name
    return activity.defn(name=name)(reports_attempt(run))
