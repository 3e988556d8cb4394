"""Drafting: render a task's content and assess it against its guardrails."""

from jinja2 import TemplateError
from pydantic import ValidationError
from temporalio import activity

from activities.errors import permanent, reports_attempt
from followthrough import activity_names, policies
from followthrough.contracts import DraftRequest, DraftResult
from followthrough.settings import Settings
from followthrough.tasktypes import UnknownTaskType, get_type


class DraftingActivities:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name=activity_names.DRAFT)
    @reports_attempt
    async def draft(self, request: DraftRequest) -> DraftResult:
        try:
            task_type = get_type(request.task.type)
        except UnknownTaskType as err:
            raise permanent(str(err), policies.UNKNOWN_TASK_TYPE) from err
        try:
            payload = task_type.payload_model.model_validate(request.task.payload)
        except ValidationError as err:
            raise permanent(f"payload is invalid: {err}", policies.INVALID_PAYLOAD) from err
        try:
            draft = task_type.draft(payload)
        except TemplateError as err:
            raise permanent(f"template failed to render: {err}", policies.TEMPLATE_ERROR) from err
        return DraftResult(draft=draft, flags=task_type.assess(payload, draft, self._settings))
