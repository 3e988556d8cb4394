"""webhook: POST a signed JSON event to a receiver.

The draft's ``data`` ({"url", "secret", "event", "payload"}) is the contract of
the webhook transport (followthrough/activities/transports/webhook.py); other types may emit
such drafts too.
"""

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough.domain.contracts import Draft, RetrySpec
from followthrough.domain.guardrails import TargetHosts
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.secrets import SECRET_NAME
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.domain.http_rules import http_url
from followthrough.tasktypes.http_request import reject_raw_credentials


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(max_length=2000, examples=["https://hooks.example.com/followthrough"])
    secret: str = Field(pattern=SECRET_NAME.pattern, examples=["acme_webhook"],
                        description="Name of the secret that signs the delivery (never the value).")
    event: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$", examples=["invoice.overdue"])
    payload: dict[str, Any] = Field(default_factory=dict, description="Sent as the event's `data`.")

    _no_raw_credentials = model_validator(mode="before")(reject_raw_credentials)
    _url = field_validator("url")(http_url)

    @field_validator("event")
    @classmethod
    def _not_a_lifecycle_event(cls, value: str) -> str:
        # Subscriptions sign `task.*` events (followthrough/db/mirror.py) with secrets a task may also name: a
        # receiver must be able to trust that a `task.completed` came from followthrough's own lifecycle.
        if value.lower().startswith("task."):
            raise ValueError("events named task.* are followthrough's own lifecycle events; name yours otherwise")
        return value


async def draft(payload: WebhookPayload, _ctx: DraftContext) -> Draft:
    body = "\n".join([
        f"POST {payload.url}", f"Event: {payload.event}",
        f"Signed with the secret {payload.secret!r} (X-Followthrough-Signature)", "",
        json.dumps(payload.payload, indent=2, ensure_ascii=False),
    ])
    return Draft(channel="webhook", subject=f"Webhook {payload.event} to {payload.url}", body=body,
                 data=payload.model_dump(mode="json"))


TASK_TYPE = TaskType(
    name="webhook",
    description="POST a JSON event, signed with HMAC-SHA256 from a named secret, to a receiver's URL; "
                "retried with backoff until it answers 2xx.",
    payload_model=WebhookPayload,
    channel="webhook",
    draft=draft,
    guardrails=(TargetHosts(),),
    outbound_urls=lambda payload: {"url": payload.url},
    secret_refs=lambda payload: {"secret": (payload.secret, str(payload.url))},
    # No allowed_hosts list: any host (a tenant may set one in FOLLOWTHROUGH_GUARDRAILS).
    guardrail_defaults=lambda _settings: {"allowed_hosts": None},
    default_mode=TaskMode.AUTONOMOUS,
    # Receivers go down for minutes at a time: about half an hour of retries before giving up.
    retry=RetrySpec(max_attempts=10, initial_interval_seconds=5, backoff_coefficient=2, maximum_interval_seconds=600),
    # Receivers are expected to answer quickly and do their work afterwards.
    send_timeout_seconds=20,
)
