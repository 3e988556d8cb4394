"""Timeouts and retry policies for every activity the workflows call.

Errors that retrying cannot fix are raised by activities as non-retryable
ApplicationErrors, whose ``type`` is one of NON_RETRYABLE below.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy

from followthrough.domain.contracts import RetrySpec

# Error types activities raise for failures no retry can fix.
INVALID_PAYLOAD = "InvalidPayload"
TEMPLATE_ERROR = "TemplateError"
UNKNOWN_TASK_TYPE = "UnknownTaskType"
DELIVERY_REFUSED = "DeliveryRefused"
# The SSRF guard refused the target: an internal address not in FOLLOWTHROUGH_OUTBOUND_ALLOW (followthrough/infra/outbound.py).
OUTBOUND_REFUSED = "OutboundRefused"
# The LLM endpoint refused the request (400, 401, 403, 404, ...) or its API key secret is missing.
LLM_REFUSED = "LlmRequestRefused"
# An LLM is configured but its API key secret is not.
LLM_NOT_CONFIGURED = "LlmNotConfigured"
# A plan names an unknown task type, an invalid mode or a payload its type does not accept.
INVALID_PLAN = "InvalidPlan"
NON_RETRYABLE = [INVALID_PAYLOAD, TEMPLATE_ERROR, UNKNOWN_TASK_TYPE, DELIVERY_REFUSED, OUTBOUND_REFUSED, LLM_REFUSED,
                 LLM_NOT_CONFIGURED, INVALID_PLAN]
# An extract task's page lacks a required field, a value has the wrong type, or the object fails its schema.
# Raised non-retryable by the send activity itself (as every PermanentDeliveryError is), so the policies'
# lists above, which workflows already carry, stay as they were.
EXTRACTION_FAILED = "ExtractionFailed"
# A task named a secret its tenant has not (or not for that host), or one whose value cannot be sent; raised
# non-retryable by the activity itself, like EXTRACTION_FAILED.
SECRET_REFUSED = "SecretRefused"
# The task's type or channel needs an optional part (a pip extra, followthrough/infra/extras.py) this worker lacks;
# raised non-retryable by the activity itself, like EXTRACTION_FAILED.
PART_MISSING = "PartMissing"
# Retryable, for the record: LlmUnavailable (timeouts, 429, 5xx; a Retry-After header sets the next delay)
# and LlmAnswerInvalid (an answer that is not the JSON asked for: the next sample may be).

# Room for one LLM call (FOLLOWTHROUGH_LLM_TIMEOUT_SECONDS, at most 110 s) and the work around it.
DRAFT_TIMEOUT = timedelta(seconds=120)
# Drafting heartbeats, so a cancelled task's draft (which may be a slow model call) stops
# within a heartbeat, and a worker that died mid-draft is noticed before the timeout.
DRAFT_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
DRAFT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)

SEND_TIMEOUT = timedelta(seconds=30)
# A send heartbeats too, so a worker that died mid-send is noticed early; a cancel does not
# stop it (the workflow waits for the send to finish, see followthrough/workflows/task.py).
SEND_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# A send whose attempts all failed only because the database (its delivery record) was away is not a
# failed task: the workflow waits this long and sends again, with fresh attempts and the same key.
DATABASE_UNAVAILABLE = "DatabaseUnavailable"
DATABASE_WAIT = timedelta(seconds=10)

# Planning a task's subtasks: a type's planning function now, possibly a model call later.
PLAN_TIMEOUT = timedelta(seconds=120)
PLAN_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
PLAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)


def send_retry(spec: RetrySpec | None) -> RetryPolicy:
    """The send step's policy: the task's (its type's defaults, or its own overrides)."""
    spec = spec or RetrySpec()
    return RetryPolicy(
        initial_interval=timedelta(seconds=spec.initial_interval_seconds),
        backoff_coefficient=spec.backoff_coefficient,
        maximum_interval=timedelta(seconds=spec.maximum_interval_seconds),
        maximum_attempts=spec.max_attempts,
        non_retryable_error_types=NON_RETRYABLE,
    )

# Mirror writes retry without limit: Temporal is the source of truth and the
# mirror must catch up once its database is back, however long that takes.
RECORD_TIMEOUT = timedelta(seconds=15)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)

# Notifications to subscribers: a few minutes of patience, then give up (the
# task's own outcome never depends on a subscriber).
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=8,
    non_retryable_error_types=NON_RETRYABLE,
)

# A scheduled run of a definition: create its task. Retried while Temporal or the database is away (the
# creation is keyed on the run, so a retry never makes a second task); a definition that no longer renders
# to a valid task is non-retryable.
DEFINITION_RUN_TIMEOUT = timedelta(seconds=30)
DEFINITION_RUN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=20,
    non_retryable_error_types=NON_RETRYABLE,
)

# An agent task's turn: one model call, with room like a draft's; the same retries (a refused request or a
# missing key is final, a timeout, 429 or 5xx is tried again).
AGENT_TURN_TIMEOUT = DRAFT_TIMEOUT
AGENT_TURN_HEARTBEAT_TIMEOUT = DRAFT_HEARTBEAT_TIMEOUT
AGENT_TURN_RETRY = DRAFT_RETRY
# An agent's tool call: room for the longest HTTP request (60 s) and recording it. Few attempts: a tool
# that keeps failing is reported to the model, which can try something else.
TOOL_TIMEOUT = timedelta(seconds=75)
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=4,
    non_retryable_error_types=NON_RETRYABLE,
)
