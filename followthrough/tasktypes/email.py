"""email: send a message whose subject and body are templates filled from ``variables``."""

from dataclasses import dataclass, replace
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from followthrough.domain.contracts import Draft
from followthrough.domain.guardrails import FirstContact, Guardrail, GuardrailFacts, RecipientDomains
from followthrough.domain.lifecycle import TaskMode
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.infra.render_pool import RenderLimits, render_strings
from followthrough.tasktypes.rendering import environment
from followthrough.infra.templating import TemplateProblem


def check_template(source: str) -> str:
    """A template that does not parse is refused when the task is created (422), not when it runs."""
    try:
        environment().parse(source)
    except TemplateSyntaxError as err:
        raise ValueError(f"template does not parse: {err.message} (line {err.lineno})") from err
    except RecursionError:
        raise ValueError("template is nested too deeply to read") from None
    return source


async def render_texts(ctx: DraftContext, sources: list[str], variables: dict[str, Any]) -> list[str]:
    """The payload's templates rendered in the render pool (bounded, off the worker's event loop); a
    template that fails or is over a bound is jinja2's TemplateError, which fails the draft for good."""
    try:
        return await render_strings(sources, variables, RenderLimits.of(ctx.settings))
    except TemplateProblem as err:
        raise TemplateError(err.message) from None


class EmailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[EmailStr] = Field(min_length=1, max_length=50)
    cc: list[EmailStr] = Field(default_factory=list, max_length=50)
    subject: str = Field(min_length=1, max_length=998, description="Jinja2 template, e.g. 'Hello {{ name }}'.")
    body: str = Field(min_length=1, max_length=100_000, description="Jinja2 template.")
    variables: dict[str, Any] = Field(default_factory=dict, description="Values the templates refer to.")

    @field_validator("subject", "body")
    @classmethod
    def _parses(cls, value: str) -> str:
        return check_template(value)


@dataclass(frozen=True)
class WithCc:
    """Runs a recipient guardrail over To and Cc together, so a Cc cannot slip past a domain policy."""

    inner: Guardrail

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        return self.inner.check(payload, replace(draft, to=draft.to + list(draft.data.get("cc", []))),
                                params, facts)


async def draft(payload: EmailPayload, ctx: DraftContext) -> Draft:
    subject, body = await render_texts(ctx, [payload.subject, payload.body], payload.variables)
    return Draft(
        channel="email",
        to=[str(a) for a in payload.to],
        subject=subject,
        body=body,
        data={"cc": [str(a) for a in payload.cc]} if payload.cc else {},
    )


TASK_TYPE = TaskType(
    name="email",
    description="Send an email whose subject and body are templates rendered from `variables`.",
    payload_model=EmailPayload,
    channel="email",
    draft=draft,
    # First contact looks at To only: the engine learns which addresses are known from To.
    guardrails=(WithCc(RecipientDomains()), FirstContact()),
    guardrail_defaults=lambda _settings: {"flag_first_contact": False},
    default_mode=TaskMode.REVIEW,
    prompt="email.prompt.j2",
)
