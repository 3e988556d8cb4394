"""Drafting: render a task's content and assess it against its guardrails.

A type with a prompt template has its subject and body written by the LLM
when one is configured (followthrough/infra/llm.py); otherwise, and for every other
type, its templates write the draft.
"""

import httpx
from jinja2 import TemplateError
from pydantic import BaseModel
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from followthrough.activities.attempts import record_failed_attempt
from followthrough.activities.errors import llm_failure, permanent, reports_attempt, typed_payload
from followthrough.activities.heartbeat import heartbeating
from followthrough.domain import activity_names, policies
from followthrough.domain.contracts import Draft, DraftOrigin, DraftRequest, DraftResult, TaskInput
from followthrough.domain.guardrails import FirstContact, GuardrailFacts, LowConfidence, assess
from followthrough.infra.llm import LlmConfig, LlmError, api_key, llm_config
from followthrough.tasktypes.llm_drafting import draft_messages, write_draft
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings
from followthrough.db.tables import Contact
from followthrough.tasktypes.base import Blocked, DraftContext, TaskType

CONTACTS: Table = Contact.__table__  # type: ignore[attr-defined]


class DraftingActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine | None = None, http: httpx.AsyncClient | None = None,
                 secrets: SecretStore | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._http = http
        self._secrets = secrets or SecretStore(settings.secrets_file)

    @activity.defn(name=activity_names.DRAFT)
    @reports_attempt
    async def draft(self, request: DraftRequest) -> DraftResult:
        task = request.task
        task_type, payload = typed_payload(task)
        config = llm_config(self._settings, task_type.name) if task_type.prompt else None
        draft: Draft | None = None
        try:
            # A cancelled task's draft stops here, at the next heartbeat.
            draft = await heartbeating(task_type.draft(payload, DraftContext(self._settings, task, self._engine)))
            messages = draft_messages(task_type, task, payload, draft) if config else []
            origin = DraftOrigin()
            if config is not None:
                draft, origin = await self._llm_draft(config, task, messages, draft)
        except TemplateError as err:
            raise permanent(f"template failed to render: {err}", policies.TEMPLATE_ERROR) from err
        except Blocked as blocked:
            # The engine cannot do this one: a person must, and then marks it done.
            return DraftResult(draft=draft or Draft(channel="none", subject=task.title, body=blocked.reason),
                               origin=blocked.origin or DraftOrigin(), blocked=blocked.reason)
        return DraftResult(draft=draft, flags=await self._assess(task_type, task, payload, draft, origin),
                           origin=origin)

    async def _llm_draft(self, config: LlmConfig, task: TaskInput, messages: list[dict[str, str]],
                         baseline: Draft) -> tuple[Draft, DraftOrigin]:
        # Leave the attempt a moment to report its outcome before Temporal's own timeout.
        limit = (activity.info().start_to_close_timeout or policies.DRAFT_TIMEOUT).total_seconds() - 5
        try:
            key = api_key(config, self._secrets)
            return await heartbeating(write_draft(await self._client(), config, key, messages, baseline,
                                                  timeout_seconds=max(1.0, min(config.timeout_seconds, limit))))
        except LlmError as err:
            if self._engine is not None:
                await record_failed_attempt(self._engine, task.task_id, task.run_number, "draft", err, err.retryable)
            raise llm_failure(err) from err

    async def _assess(self, task_type: TaskType, task: TaskInput, payload: BaseModel, draft: Draft,
                      origin: DraftOrigin) -> list[str]:
        params = {"min_confidence": self._settings.llm_confidence_threshold} | task_type.guardrail_params(
            self._settings, task.tenant_id)
        # Looking up past recipients costs a query; only a first-contact check needs them.
        wanted = params.get("flag_first_contact") and any(isinstance(g, FirstContact) for g in task_type.guardrails)
        facts = GuardrailFacts(known_recipients=await self._known(task.tenant_id, draft.to) if wanted else frozenset(),
                               llm_drafted=origin.drafter == "llm", confidence=origin.confidence)
        return assess(task_type.guardrails + (LowConfidence(),), payload, draft, params, facts)

    async def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    async def _known(self, tenant_id: str, addresses: list[str]) -> frozenset[str]:
        if not addresses or self._engine is None:
            return frozenset()
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(CONTACTS.c.address).where(
                CONTACTS.c.tenant_id == tenant_id, CONTACTS.c.address.in_([a.lower() for a in addresses])))
            return frozenset(rows.scalars())
