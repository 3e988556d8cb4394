"""Guardrails: declarative checks a type lists; each finding makes an assisted or
autonomous task wait for a person.

A guardrail reads its parameters (limits, allowed domains, ...) from the
type's defaults merged with the tenant's overrides in settings, so one
tenant's policy can be stricter than another's without code.
"""

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel

from followthrough.domain.contracts import Draft


@dataclass(frozen=True)
class GuardrailFacts:
    """What the engine knows beyond the task, gathered before the checks run."""

    known_recipients: frozenset[str] = frozenset()
    # Whether an LLM wrote the draft, and the model's rating of it (0..1; None if it gave none).
    llm_drafted: bool = False
    confidence: float | None = None


class Guardrail(Protocol):
    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        """A reason a person must approve, or None."""


@dataclass(frozen=True)
class AmountAbove:
    """Flags when ``payload.<field>`` exceeds the ``amount_limit`` parameter."""

    field: str
    currency_field: str | None = None

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        limit = params.get("amount_limit")
        amount = getattr(payload, self.field, None)
        if limit is None or amount is None or amount <= limit:
            return None
        currency = f" {getattr(payload, self.currency_field)}" if self.currency_field else ""
        return f"{self.field} {amount:.2f}{currency} is above the limit of {float(limit):.2f}"


@dataclass(frozen=True)
class RecipientDomains:
    """Flags recipients outside the ``allowed_domains`` parameter (no list: any domain)."""

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        allowed = {d.lower() for d in params.get("allowed_domains") or []}
        outside = sorted(r for r in draft.to if allowed and r.rsplit("@", 1)[-1].lower() not in allowed)
        return f"recipients outside the allowed domains: {', '.join(outside)}" if outside else None


@dataclass(frozen=True)
class FirstContact:
    """Flags recipients this tenant has never sent to, when ``flag_first_contact`` is on."""

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        if not params.get("flag_first_contact"):
            return None
        new = sorted(r for r in draft.to if r.lower() not in facts.known_recipients)
        return f"first contact with {', '.join(new)}" if new else None


@dataclass(frozen=True)
class TargetHosts:
    """Flags a request whose URL host is outside the ``allowed_hosts`` parameter (no list: any host)."""

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        allowed = {h.lower() for h in params.get("allowed_hosts") or []}
        host = (urlsplit(str(draft.data.get("url", ""))).hostname or "").lower()
        return f"target host {host!r} is not in the allowed hosts" if allowed and host not in allowed else None


@dataclass(frozen=True)
class LowConfidence:
    """Flags an LLM draft its model rated below the ``min_confidence`` parameter, or did not rate at all.

    Every type gets it when an LLM drafts; the parameter defaults to FOLLOWTHROUGH_LLM_CONFIDENCE_THRESHOLD.
    """

    def check(self, payload: BaseModel, draft: Draft, params: dict[str, Any], facts: GuardrailFacts) -> str | None:
        if not facts.llm_drafted:
            return None
        threshold = float(params.get("min_confidence", 0))
        if facts.confidence is None:
            return "low confidence: the drafting model did not rate its draft"
        if facts.confidence < threshold:
            return f"low confidence: the drafting model rated its draft {facts.confidence:.2f}, below {threshold:.2f}"
        return None


def assess(guardrails: tuple[Guardrail, ...], payload: BaseModel, draft: Draft, params: dict[str, Any],
           facts: GuardrailFacts) -> list[str]:
    return [reason for g in guardrails if (reason := g.check(payload, draft, params, facts))]
