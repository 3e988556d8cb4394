"""One Settings object for every process, read from the environment.

Every variable is prefixed ``FOLLOWTHROUGH_``; ``DATABASE_URL`` and
``TEMPORAL_ADDRESS`` are also accepted bare because deployment tooling tends to
set those names.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from followthrough.config import dev_stack_file
from followthrough.domain.lifecycle import TaskMode
from followthrough.domain.allowed_hosts import parse_allow
from followthrough.workflows.patches import KNOWN_LEVEL, STAMPED_LEVEL


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) → (host, port); a bare ``:9464`` listens on every interface."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, not {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _env(name: str, *bare: str) -> AliasChoices:
    return AliasChoices(f"FOLLOWTHROUGH_{name}", *bare)


class EventSource(BaseModel):
    """An inbound-webhook source (POST /events/webhooks/{source}): the operator secret that signs its posts
    (a name in the secret store, followthrough/infra/secrets.py) and the tenant its events belong to."""

    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=1, max_length=128)
    tenant: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"secret": value} if isinstance(value, str) else value


class LlmTypeOptions(BaseModel):
    """Per task type: another model or temperature, or no LLM at all for that type."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)


class CodecKeyRef(BaseModel):
    """A payload codec key: its id (stored with every payload it encrypts) and the secret holding it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    secret: str = Field(min_length=1, max_length=128)


# The only variables settings are read from: FOLLOWTHROUGH_* and these two bare names. Field names work in code
# (Settings(codec="off")), never as variables: a CODEC or ANONYMOUS_ACCESS some other tool set must not turn
# encryption off or keys optional here.
BARE_VARIABLES = frozenset({"DATABASE_URL", "TEMPORAL_ADDRESS"})


def ours(variable: str) -> bool:
    upper = variable.upper()
    return upper.startswith("FOLLOWTHROUGH_") or upper in BARE_VARIABLES


class _OurVariables(EnvSettingsSource):
    """The environment, less every variable that is not ours."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.env_vars = {name: value for name, value in self.env_vars.items() if ours(name)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _OurVariables(settings_cls)

    data_dir: Path = Field(Path(".followthrough"), validation_alias=_env("DATA_DIR"))
    database_url: str = Field(
        "", validation_alias=_env("DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy async URL; empty means SQLite under data_dir.",
    )

    temporal_address: str = Field("localhost:7233", validation_alias=_env("TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    # TLS, client certificates, API key (and address and namespace where the two above are unset) come from a
    # Temporal client profile: the SDK's TOML file and TEMPORAL_* variables (followthrough/infra/temporal_client.py).
    temporal_config_file: Path | None = Field(None, validation_alias=_env("TEMPORAL_CONFIG_FILE"))
    temporal_profile: str = Field("", validation_alias=_env("TEMPORAL_PROFILE"))
    temporal_envconfig: bool = Field(True, validation_alias=_env("TEMPORAL_ENVCONFIG"),
                                     description="False: no profile, a plain connection (followthrough dev).")
    task_queue: str = Field("followthrough", validation_alias=_env("TASK_QUEUE"))
    temporal_ui_url: str = Field("http://localhost:8233", validation_alias=_env("TEMPORAL_UI_URL"))

    api_host: str = Field("127.0.0.1", validation_alias=_env("API_HOST"))
    api_port: int = Field(8000, validation_alias=_env("API_PORT"))
    public_url: str = Field("", validation_alias=_env("PUBLIC_URL"),
                            description="Base URL used in links; empty means http://api_host:api_port.")

    # Without a key, callers act as whoever X-Actor-Id names, with every role. For a
    # server bound to 127.0.0.1 only (followthrough dev turns it on there and says so).
    anonymous_access: bool = Field(False, validation_alias=_env("ANONYMOUS_ACCESS"))

    # Dev server ports (followthrough dev only).
    dev_temporal_port: int = Field(7233, validation_alias=_env("DEV_TEMPORAL_PORT"))
    dev_ui_port: int = Field(8233, validation_alias=_env("DEV_UI_PORT"))

    approval_timeout_seconds: int = Field(24 * 3600, gt=0, validation_alias=_env("APPROVAL_TIMEOUT_SECONDS"))
    page_size_default: int = Field(50, gt=0, validation_alias=_env("PAGE_SIZE_DEFAULT"))
    page_size_max: int = Field(200, gt=0, validation_alias=_env("PAGE_SIZE_MAX"))

    # Guardrail: invoice follow-ups above this amount need a person's approval
    # even in assisted/autonomous mode.
    invoice_amount_limit: float = Field(10_000, validation_alias=_env("INVOICE_AMOUNT_LIMIT"))
    # Per-tenant guardrail parameters, overriding a type's defaults:
    # {"<tenant>": {"<task type>": {"amount_limit": 5000, "allowed_domains": ["acme.com"]}}}
    # {"<tenant>": {"agent": {"allowed_hosts": [...]}}} holds the tenant's agents' HTTP tools and subtask URLs
    # to those hosts (followthrough/domain/allowed_hosts.py); an agent's payload can narrow it, never widen it.
    guardrails: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict,
                                                             validation_alias=_env("GUARDRAILS"))
    # The loosest mode a submitter may ask for (followthrough/services/submitter_policy.py), per tenant and type, "*" for
    # any: {"*": {"http_request": "review"}, "acme": {"*": "assisted"}}. Where several entries name a task the
    # strictest holds; none: autonomous. Subtasks are held to it too, and to their parent's mode.
    mode_limits: dict[str, dict[str, str]] = Field(
        default_factory=dict, validation_alias=_env("MODE_LIMITS"),
        description="Loosest mode per tenant and task type ('*' for any); the strictest match holds.")

    # The SSRF guard (followthrough/infra/outbound.py): task requests and notifications reach only public addresses,
    # unless this names the target: addresses or networks (CIDR) and host names ("*.corp" for every name under
    # corp), e.g. ["10.0.0.0/8", "127.0.0.1", "crm.internal"].
    outbound_allow: list[str] = Field(default_factory=list, validation_alias=_env("OUTBOUND_ALLOW"))
    # The Chromium that browser tasks run in (Debian's package; nothing is downloaded at run time).
    chromium_path: Path = Field(Path("/usr/bin/chromium"), validation_alias=_env("CHROMIUM_PATH"))
    # Browser tasks running at once per worker process (each is a Chromium); the others wait their turn.
    browser_max_concurrent: int = Field(4, ge=1, le=100, validation_alias=_env("BROWSER_MAX_CONCURRENT"))

    secrets_file: Path | None = Field(None, validation_alias=_env("SECRETS_FILE"),
                                      description="JSON object of the operator's secrets (never a task's).")
    task_secrets_file: Path | None = Field(
        None, validation_alias=_env("TASK_SECRETS_FILE"),
        description="JSON file of the secrets tasks may send, per tenant, each optionally bound to hosts "
                    "(followthrough/infra/task_secrets.py); the API reads it too, to refuse unknown names.")

    # Connectors (followthrough/connectors/): a folder of connector files loaded beside the shipped ones, and
    # base URLs per connector for this deployment, e.g. {"crm": "https://crm.internal/api/v1"}.
    connectors_dir: Path | None = Field(None, validation_alias=_env("CONNECTORS_DIR"))
    connector_base_urls: dict[str, str] = Field(default_factory=dict, validation_alias=_env("CONNECTOR_BASE_URLS"))

    # Encrypted payloads (followthrough/infra/codec.py). Keys are named secrets holding 32 bytes in base64, as a JSON
    # list of secret names or {"id": ..., "secret": ...}; the first encrypts, all decrypt. `on` refuses to start
    # without keys; `local-key` (what `followthrough dev` uses) falls back to <data_dir>/codec.key; `off` stores
    # payloads in plain JSON.
    codec: Literal["on", "local-key", "off"] = Field("on", validation_alias=_env("CODEC"))
    codec_keys: list[str | CodecKeyRef] = Field(default_factory=list, validation_alias=_env("CODEC_KEYS"))
    # With the codec on, an unencrypted payload (a plain-JSON signal, update or workflow start from a client
    # without the key) is refused. true accepts them: only for the migration window of a deployment turning
    # encryption on, until every run started before has closed (docs/security.md, "Decisions through Temporal").
    codec_accept_plaintext: bool = Field(False, validation_alias=_env("CODEC_ACCEPT_PLAINTEXT"))

    # Outgoing email. Without a host, messages go to the outbox table only.
    smtp_host: str = Field("", validation_alias=_env("SMTP_HOST"))
    smtp_port: int = Field(587, validation_alias=_env("SMTP_PORT"))
    smtp_starttls: bool = Field(False, validation_alias=_env("SMTP_STARTTLS"))
    smtp_username: str = Field("", validation_alias=_env("SMTP_USERNAME"))
    smtp_password_secret: str = Field("", validation_alias=_env("SMTP_PASSWORD_SECRET"),
                                      description="Name of the secret holding the SMTP password.")
    smtp_timeout_seconds: float = Field(20, validation_alias=_env("SMTP_TIMEOUT_SECONDS"))
    mail_from: str = Field("followthrough@localhost", validation_alias=_env("MAIL_FROM"))

    # Signed approval links (approve or reject from an email). Empty secret name: a key generated once and
    # kept in <data_dir>/approval-link.key, so a dev setup needs nothing.
    approval_link_secret: str = Field("", validation_alias=_env("APPROVAL_LINK_SECRET"),
                                      description="Name of the secret that signs approval links.")
    approval_link_ttl_seconds: int = Field(7 * 24 * 3600, gt=0, validation_alias=_env("APPROVAL_LINK_TTL_SECONDS"))

    # POST /approvals/bulk decides in parallel and answers by this deadline whatever Temporal does
    # (docs/concepts.md, "Approvals").
    bulk_decision_deadline_seconds: float = Field(
        60, gt=0, le=600, validation_alias=_env("BULK_DECISION_DEADLINE_SECONDS"),
        description="How long one bulk decision request may take; tasks not decided by then are answered 504.")

    # The /ui inbox's sign-in: a server-side session (docs/security.md: The inbox's sign-in).
    inbox_session_seconds: int = Field(8 * 3600, gt=0, le=30 * 24 * 3600,
                                       validation_alias=_env("INBOX_SESSION_SECONDS"),
                                       description="How long an inbox sign-in lasts before the person signs in "
                                                   "again (it also ends at sign-out or when the key is revoked).")

    # LLM drafting and planning through an OpenAI-compatible chat completions endpoint. Without a base URL
    # every type drafts from its templates. The API key is named, never given: see followthrough/infra/secrets.py.
    llm_base_url: str = Field("", validation_alias=_env("LLM_BASE_URL"),
                              description="e.g. https://api.openai.com/v1; empty: template drafting only.")
    llm_model: str = Field("", validation_alias=_env("LLM_MODEL"))
    llm_api_key_secret: str = Field("", validation_alias=_env("LLM_API_KEY_SECRET"),
                                    description="Name of the secret holding the API key; empty: no key sent.")
    # Per attempt; the draft activity's own timeout (policies.DRAFT_TIMEOUT, 120 s) leaves room for it.
    llm_timeout_seconds: float = Field(30, gt=0, le=110, validation_alias=_env("LLM_TIMEOUT_SECONDS"))
    llm_temperature: float | None = Field(None, ge=0, le=2, validation_alias=_env("LLM_TEMPERATURE"))
    # A draft the model rates below this needs a person's approval (a guardrail flag); a type or tenant may
    # set its own as the guardrail parameter `min_confidence` in FOLLOWTHROUGH_GUARDRAILS.
    llm_confidence_threshold: float = Field(0.7, ge=0, le=1, validation_alias=_env("LLM_CONFIDENCE_THRESHOLD"))
    # {"<task type>": {"model": "...", "temperature": 0.2}} or {"<task type>": {"enabled": false}}
    llm_types: dict[str, LlmTypeOptions] = Field(default_factory=dict, validation_alias=_env("LLM_TYPES"))

    # Deduplication of task creation (tenant, type, subject, source) and Idempotency-Key replay.
    idempotency_window_seconds: int = Field(24 * 3600, ge=0, validation_alias=_env("IDEMPOTENCY_WINDOW_SECONDS"))
    batch_max_items: int = Field(100, gt=0, validation_alias=_env("BATCH_MAX_ITEMS"))

    # Limits (docs/security.md: Limits). 0 turns a limit off.
    max_body_bytes: int = Field(1024 * 1024, ge=0, validation_alias=_env("MAX_BODY_BYTES"))
    # A task's payload as JSON. Temporal refuses a single payload over 2 MB and a history over 50 MB; a task's
    # payload travels in its start event and again in activity inputs, so a tenth of the per-payload limit
    # leaves room for drafts, results and the rest of the history.
    max_payload_bytes: int = Field(256 * 1024, ge=0, validation_alias=_env("MAX_PAYLOAD_BYTES"))
    # Templates a person sends (definitions, email and reminder bodies) render in child processes under
    # these bounds (followthrough/infra/render_pool.py; docs/security.md: Template rendering).
    template_max_chars: int = Field(100_000, ge=1, validation_alias=_env("TEMPLATE_MAX_CHARS"),
                                    description="Longest template string a definition may hold (a 422 beyond).")
    template_max_output_chars: int = Field(1_000_000, ge=1, validation_alias=_env("TEMPLATE_MAX_OUTPUT_CHARS"),
                                           description="Most text one render may produce.")
    template_render_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias=_env("TEMPLATE_RENDER_TIMEOUT_SECONDS"),
        description="Wall-clock time one render may take; its process is then killed and replaced.")
    template_render_memory_mb: int = Field(512, ge=64, validation_alias=_env("TEMPLATE_RENDER_MEMORY_MB"),
                                           description="Address space of each render process, in MiB.")
    template_render_processes: int = Field(2, ge=1, le=32, validation_alias=_env("TEMPLATE_RENDER_PROCESSES"),
                                           description="Render processes per API or worker process.")
    # Task creations per tenant and minute (a token bucket, shared by every API process through the
    # database), and how many may come at once.
    rate_limit_per_minute: int = Field(0, ge=0, validation_alias=_env("RATE_LIMIT_PER_MINUTE"))
    rate_limit_burst: int = Field(0, ge=0, validation_alias=_env("RATE_LIMIT_BURST"),
                                  description="0: as many as the per-minute rate.")
    # Non-terminal tasks a tenant may have; creation beyond is refused until some finish.
    max_tasks_in_flight: int = Field(0, ge=0, validation_alias=_env("MAX_TASKS_IN_FLIGHT"))

    # Live updates (docs/api.md: Live updates): how often a stream reads the mirror's new events, how long it
    # waits before sending an event so that one committed late (a worker's slow commit, clocks apart between
    # worker machines) still comes in order, how long a quiet stream waits before a keep-alive comment, and how
    # many streams one API process holds open at once: in all, per key, per tenant (0: no cap).
    stream_poll_seconds: float = Field(0.5, gt=0, le=60, validation_alias=_env("STREAM_POLL_SECONDS"))
    stream_overlap_seconds: float = Field(2.0, ge=0, le=300, validation_alias=_env("STREAM_OVERLAP_SECONDS"))
    stream_keepalive_seconds: float = Field(15.0, gt=0, le=300, validation_alias=_env("STREAM_KEEPALIVE_SECONDS"))
    # How often an open stream checks that its key has not been revoked meanwhile.
    stream_key_check_seconds: float = Field(10.0, gt=0, le=300, validation_alias=_env("STREAM_KEY_CHECK_SECONDS"))
    stream_max_connections: int = Field(100, ge=0, validation_alias=_env("STREAM_MAX_CONNECTIONS"))
    stream_max_per_key: int = Field(10, ge=0, validation_alias=_env("STREAM_MAX_PER_KEY"))
    stream_max_per_tenant: int = Field(30, ge=0, validation_alias=_env("STREAM_MAX_PER_TENANT"))
    # How many events a Last-Event-ID may lie behind; further back, the stream answers event: reset (0: no cap).
    stream_resume_max_events: int = Field(10_000, ge=0, validation_alias=_env("STREAM_RESUME_MAX_EVENTS"))

    # The worker's re-send sweep of the notification outbox (docs/operations.md: Notification sweep): how often it
    # runs in each worker process (0: not in this one), how old an undelivered row must be before it re-sends it
    # (longer than the workflow's own retries, about 8 minutes, or the two may send at once), how many attempts
    # it makes at one before giving it up, the delay after a failed attempt (doubled each time, up to the cap),
    # how many rows one sweep takes, and how long it keeps a row once delivered or given up.
    notify_sweep_interval_seconds: float = Field(60, ge=0, le=86400,
                                                 validation_alias=_env("NOTIFY_SWEEP_INTERVAL_SECONDS"))
    notify_sweep_grace_seconds: float = Field(600, ge=60, validation_alias=_env("NOTIFY_SWEEP_GRACE_SECONDS"))
    notify_sweep_max_attempts: int = Field(10, ge=1, le=100, validation_alias=_env("NOTIFY_SWEEP_MAX_ATTEMPTS"))
    notify_sweep_backoff_seconds: float = Field(60, gt=0, validation_alias=_env("NOTIFY_SWEEP_BACKOFF_SECONDS"))
    notify_sweep_max_backoff_seconds: float = Field(3600, gt=0,
                                                    validation_alias=_env("NOTIFY_SWEEP_MAX_BACKOFF_SECONDS"))
    notify_sweep_batch_size: int = Field(20, ge=1, le=100, validation_alias=_env("NOTIFY_SWEEP_BATCH_SIZE"))
    notify_retention_seconds: int = Field(30 * 86400, gt=0, validation_alias=_env("NOTIFY_RETENTION_SECONDS"))

    # Inbound events (POST /events): how far back an event still stops a task created after it whose stop_on
    # names it; how many tasks of one subject an event looks at; the signed webhook sources, as JSON
    # {"billing": {"secret": "billing-hook", "tenant": "acme"}} (or {"billing": "billing-hook"}: tenant default),
    # and how old (or ahead) a webhook's signed timestamp may be.
    event_lookback_seconds: int = Field(24 * 3600, ge=0, le=365 * 86400,
                                        validation_alias=_env("EVENT_LOOKBACK_SECONDS"))
    event_max_tasks: int = Field(500, ge=1, le=10000, validation_alias=_env("EVENT_MAX_TASKS"))
    event_sources: dict[str, EventSource] = Field(default_factory=dict, validation_alias=_env("EVENT_SOURCES"))
    event_webhook_tolerance_seconds: int = Field(300, ge=1, le=3600,
                                                 validation_alias=_env("EVENT_WEBHOOK_TOLERANCE_SECONDS"))

    # The sandbox re-imports workflow code for every run and checks it for
    # non-deterministic calls. The test suite always runs with it; a worker
    # whose workflow code is already proven may turn it off for throughput.
    workflow_sandbox: bool = Field(True, validation_alias=_env("WORKFLOW_SANDBOX"))
    # The patch level runs are stamped with (followthrough/workflows/patches.py): a level above the default
    # only once every worker that may run or replay them knows it.
    workflow_patch_level: int = Field(STAMPED_LEVEL, ge=0, le=KNOWN_LEVEL, validation_alias=_env("WORKFLOW_PATCH_LEVEL"))
    worker_max_concurrent_activities: int = Field(200, gt=0, validation_alias=_env("WORKER_MAX_CONCURRENT_ACTIVITIES"))
    # Runs kept in the worker's memory between workflow tasks (the SDK's sticky cache). Bigger saves
    # replays; each cached run costs memory (docs/benchmarks.md: Scale). 0 keeps none.
    worker_max_cached_workflows: int = Field(1000, ge=0, validation_alias=_env("WORKER_MAX_CACHED_WORKFLOWS"))

    # Observability (docs/observability.md: Metrics, Logs). The API serves its metrics at /metrics (no key:
    # scrape it on the internal network); the worker serves the Temporal SDK's metrics and its own task metrics each on an
    # address of its own (host:port; empty: not served).
    metrics_enabled: bool = Field(True, validation_alias=_env("METRICS_ENABLED"))
    worker_metrics_address: str = Field("", validation_alias=_env("WORKER_METRICS_ADDRESS"))
    worker_app_metrics_address: str = Field("", validation_alias=_env("WORKER_APP_METRICS_ADDRESS"))
    # json: one JSON object per line (for log collectors); text: one readable line per record.
    log_format: Literal["json", "text"] = Field("json", validation_alias=_env("LOG_FORMAT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    # Traces (docs/observability.md: Tracing; followthrough/infra/tracing.py): otlp sends them to the OTLP/HTTP
    # endpoint the standard OTEL_* variables name; needs the `tracing` extra.
    tracing: Literal["off", "otlp"] = Field("off", validation_alias=_env("TRACING"))

    @field_validator("worker_metrics_address", "worker_app_metrics_address")
    @classmethod
    def _metrics_address(cls, value: str) -> str:
        if value:
            split_address(value)  # refuses anything but host:port
        return value

    @model_validator(mode="after")
    def _two_metrics_ports(self) -> "Settings":
        if self.worker_metrics_address and self.worker_metrics_address == self.worker_app_metrics_address:
            raise ValueError("FOLLOWTHROUGH_WORKER_METRICS_ADDRESS and FOLLOWTHROUGH_WORKER_APP_METRICS_ADDRESS "
                             "must differ: the SDK's exporter and the task metrics each need a port of their own")
        return self

    @model_validator(mode="after")
    def _sweep_backoff(self) -> "Settings":
        if self.notify_sweep_max_backoff_seconds < self.notify_sweep_backoff_seconds:
            raise ValueError("FOLLOWTHROUGH_NOTIFY_SWEEP_MAX_BACKOFF_SECONDS must be at least "
                             "FOLLOWTHROUGH_NOTIFY_SWEEP_BACKOFF_SECONDS, the first delay it caps")
        return self

    @field_validator("log_format", "log_level", "tracing", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object, info: Any) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("mode_limits")
    @classmethod
    def _mode_limits(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for by_type in value.values():
            for mode in by_type.values():
                TaskMode.parse(mode)  # refuses an unknown mode, naming the known ones
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _outbound_allow(cls, value: list[str]) -> list[str]:
        parse_allow(value)  # refuses an entry that is neither an address, a network nor a host name
        return value

    def guardrail_params(self, tenant_id: str, task_type: str, defaults: dict[str, Any]) -> dict[str, Any]:
        return defaults | self.guardrails.get(tenant_id, {}).get(task_type, {})

    @property
    def effective_rate_burst(self) -> int:
        return self.rate_limit_burst or self.rate_limit_per_minute

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mirror.db').resolve()}"

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")


# Whether get_settings() takes defaults from a running `followthrough dev` in the data folder
# (followthrough/config/dev_stack_file.py): the command line turns it on for its own commands, never for `api`,
# `worker` or `dev`, whose settings come from the environment alone.
_beside_dev = False


def read_dev_stack_file() -> None:
    global _beside_dev
    _beside_dev = True
    get_settings.cache_clear()


# A Temporal client profile the SDK finds by itself (followthrough/infra/temporal_client.py): named, it points a
# command at a Temporal of its own as surely as an address does.
_SDK_PROFILE_VARIABLES = ("TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE")


def _named_in_environment(name: str) -> bool:
    """Whether the environment sets this field, under any of the variables it is read from (matched without
    case, as the settings themselves are)."""
    alias = Settings.model_fields[name].validation_alias
    names = {*(alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else [])}
    present = {key.upper() for key in os.environ}
    return any(isinstance(n, str) and n.upper() in present for n in names)


def beside_dev_stack(settings: Settings) -> Settings:
    """The settings with a live dev stack's choices as defaults below the environment's. The file applies as
    a whole or not at all: not when the environment points this command at another Temporal (an address or a
    Temporal client profile of its own) or database, so a dev stack's codec mode never follows a command to a
    deployment."""
    found = dev_stack_file.live(settings.data_dir)
    if found is None:
        return settings
    explicit = settings.model_fields_set | {name for name in {*dev_stack_file.FIELDS, *dev_stack_file.POINTERS}
                                             if _named_in_environment(name)}
    if any(os.environ.get(variable) for variable in _SDK_PROFILE_VARIABLES):
        return settings
    for where in dev_stack_file.POINTERS:
        if where in explicit and getattr(settings, where) != found.get(where, Settings.model_fields[where].default):
            return settings
    defaults = {name: found[name] for name in dev_stack_file.FIELDS if name in found and name not in explicit}
    try:
        return Settings(**(settings.model_dump(include=settings.model_fields_set) | defaults))
    except ValueError:  # not values a dev stack writes: ignore the file
        return settings


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    return beside_dev_stack(settings) if _beside_dev else settings
