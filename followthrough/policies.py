"""Timeouts and retry policies for every activity the workflows call.

Errors that retrying cannot fix are raised by activities as non-retryable
ApplicationErrors, whose ``type`` is one of NON_RETRYABLE below.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy

from followthrough.contracts import RetrySpec

# Error types activities raise for failures no retry can fix.
INVALID_PAYLOAD = "InvalidPayload"
TEMPLATE_ERROR = "TemplateError"
UNKNOWN_TASK_TYPE = "UnknownTaskType"
DELIVERY_REFUSED = "DeliveryRefused"
NON_RETRYABLE = [INVALID_PAYLOAD, TEMPLATE_ERROR, UNKNOWN_TASK_TYPE, DELIVERY_REFUSED]

DRAFT_TIMEOUT = timedelta(seconds=60)
DRAFT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)

SEND_TIMEOUT = timedelta(seconds=30)


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
