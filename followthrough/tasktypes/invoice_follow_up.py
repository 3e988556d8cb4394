"""invoice_follow_up: remind a customer of an overdue invoice by email."""

from datetime import date

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from followthrough.domain.contracts import Draft
from followthrough.domain.lifecycle import TaskMode
from followthrough.domain.guardrails import AmountAbove, FirstContact, RecipientDomains
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.tasktypes.rendering import render


class InvoiceFollowUpPayload(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    customer_name: str = Field(min_length=1, max_length=200)
    customer_email: EmailStr
    invoice_number: str = Field(min_length=1, max_length=100)
    invoice_amount: float = Field(gt=0, description="Amount due, in `currency`.")
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code, e.g. USD.")
    due_date: date
    days_overdue: int = Field(ge=0)

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


async def draft(payload: InvoiceFollowUpPayload, _ctx: DraftContext) -> Draft:
    variables = payload.model_dump(mode="json") | {"invoice_amount": payload.invoice_amount}
    return Draft(
        channel="email",
        to=[str(payload.customer_email)],
        subject=render("invoice_follow_up.subject.j2", variables),
        body=render("invoice_follow_up.body.j2", variables),
    )


TASK_TYPE = TaskType(
    name="invoice_follow_up",
    description="Remind a customer by email that an invoice is overdue (seed 000's INVOICE_FOLLOW_UP).",
    payload_model=InvoiceFollowUpPayload,
    channel="email",
    draft=draft,
    guardrails=(AmountAbove("invoice_amount", "currency"), RecipientDomains(), FirstContact()),
    guardrail_defaults=lambda settings: {"amount_limit": settings.invoice_amount_limit},
    default_mode=TaskMode.ASSISTED,
    prompt="invoice_follow_up.prompt.j2",
)
