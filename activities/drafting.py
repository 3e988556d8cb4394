"""Drafting: render a task's content and assess it against its guardrails."""

from jinja2 import TemplateError
from pydantic import ValidationError
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.errors import permanent, reports_attempt
from activities.heartbeat import heartbeating
from followthrough import activity_names, policies
from followthrough.contracts import DraftRequest, DraftResult
from followthrough.guardrails import FirstContact, GuardrailFacts, assess
from followthrough.settings import Settings
from followthrough.tables import Contact
from followthrough.tasktypes import UnknownTaskType, get_type
from followthrough.tasktypes.base import DraftContext

CONTACTS: Table = Contact.__table__  # type: ignore[attr-defined]


class DraftingActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self._settings = settings
        self._engine = engine

    @activity.defn(name=activity_names.DRAFT)
    @reports_attempt
    async def draft(self, request: DraftRequest) -> DraftResult:
        task = request.task
        try:
            task_type = get_type(task.type)
        except UnknownTaskType as err:
            raise permanent(str(err), policies.UNKNOWN_TASK_TYPE) from err
        try:
            payload = task_type.payload_model.model_validate(task.payload)
        except ValidationError as err:
            raise permanent(f"payload is invalid: {err}", policies.INVALID_PAYLOAD) from err
        try:
            # A cancelled task's draft stops here, at the next heartbeat.
            draft = await heartbeating(task_type.draft(payload, DraftContext(self._settings, task, self._engine)))
        except TemplateError as err:
            raise permanent(f"template failed to render: {err}", policies.TEMPLATE_ERROR) from err
        params = task_type.guardrail_params(self._settings, task.tenant_id)
        # Looking up past recipients costs a query; only a first-contact check needs them.
        wanted = params.get("flag_first_contact") and any(isinstance(g, FirstContact) for g in task_type.guardrails)
        facts = GuardrailFacts(known_recipients=await self._known(task.tenant_id, draft.to) if wanted else frozenset())
        return DraftResult(draft=draft, flags=assess(task_type.guardrails, payload, draft, params, facts))

    async def _known(self, tenant_id: str, addresses: list[str]) -> frozenset[str]:
        if not addresses or self._engine is None:
            return frozenset()
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(CONTACTS.c.address).where(
                CONTACTS.c.tenant_id == tenant_id, CONTACTS.c.address.in_([a.lower() for a in addresses])))
            return frozenset(rows.scalars())
