"""browser: run a list of steps (navigate, click, type, wait, extract, screenshot) in headless Chromium.

The payload is the script; the draft shows it to the approver and carries it in ``data`` to the
browser transport (followthrough/activities/transports/browser.py), which runs every step in one page and stores
screenshots and extracted values as the task's artifacts (GET /tasks/{id}/artifacts).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough.domain.contracts import Draft, RetrySpec
from followthrough.domain.guardrails import TargetHosts
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.secrets import SECRET_NAME
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.domain.http_rules import http_url

MAX_STEPS = 50
MAX_STEP_TIMEOUT_MS = 60_000
MAX_WAIT_MS = 30_000
MAX_TIMEOUT_SECONDS = 300
MAX_ELEMENTS = 500
ARTIFACT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_SELECTOR = Field(min_length=1, max_length=1000, examples=["#submit"])


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    timeout_ms: int = Field(10_000, ge=100, le=MAX_STEP_TIMEOUT_MS,
                            description="How long the step may wait (for its selector, for the page to load).")


class NavigateStep(_Step):
    action: Literal["navigate"]
    url: str = Field(max_length=2000, examples=["https://example.com/login"])
    wait_until: Literal["load", "domcontentloaded", "networkidle"] = "load"

    _url = field_validator("url")(http_url)


class ClickStep(_Step):
    action: Literal["click"]
    selector: str = _SELECTOR


class TypeStep(_Step):
    """Fills a field with ``text``, or with the value of the secret ``secret`` (read only when the step runs)."""

    action: Literal["type"]
    selector: str = _SELECTOR
    text: str | None = Field(None, max_length=10_000)
    secret: str | None = Field(None, pattern=SECRET_NAME.pattern,
                               description="Name of a secret whose value is typed (never stored or shown).")

    @model_validator(mode="after")
    def _one_source(self) -> "TypeStep":
        if (self.text is None) == (self.secret is None):
            raise ValueError("give either `text` or `secret` (the name of a secret), not both")
        return self


class WaitStep(_Step):
    action: Literal["wait"]
    selector: str | None = Field(None, min_length=1, max_length=1000,
                                 description="Wait until an element matching it is visible.")
    ms: int | None = Field(None, ge=1, le=MAX_WAIT_MS, description="Or wait this long.")

    @model_validator(mode="after")
    def _one_kind(self) -> "WaitStep":
        if (self.selector is None) == (self.ms is None):
            raise ValueError("give either `selector` or `ms`, not both")
        return self


class ExtractStep(_Step):
    action: Literal["extract"]
    selector: str = _SELECTOR
    name: str = Field(pattern=ARTIFACT_NAME, description="The key in the result and the artifact's name.")
    attribute: str | None = Field(None, min_length=1, max_length=200,
                                  description="Read this attribute; without it, the element's visible text.")
    all: bool = Field(False, description=f"Every matching element (a list, at most {MAX_ELEMENTS}), not the first.")


class ScreenshotStep(_Step):
    action: Literal["screenshot"]
    name: str = Field(pattern=ARTIFACT_NAME)
    full_page: bool = False


Step = Annotated[NavigateStep | ClickStep | TypeStep | WaitStep | ExtractStep | ScreenshotStep,
                 Field(discriminator="action")]


class BrowserPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    timeout_seconds: float = Field(60, gt=0, le=MAX_TIMEOUT_SECONDS, description="For the whole run.")
    viewport_width: int = Field(1280, ge=200, le=3840)
    viewport_height: int = Field(800, ge=200, le=2160)

    @model_validator(mode="after")
    def _coherent(self) -> "BrowserPayload":
        if not isinstance(self.steps[0], NavigateStep):
            raise ValueError("the first step must be navigate: a page starts blank")
        names: set[str] = set()
        for index, step in enumerate(self.steps):
            name = getattr(step, "name", None)
            if name is not None:
                if name in names:
                    raise ValueError(f"step {index}: the name {name!r} is taken by an earlier step")
                names.add(name)
        return self


def describe(step: BaseModel) -> str:
    """A step in a few words: ``click '#submit'``. Never a typed text or a secret's value."""
    s: Any = step
    match s.action:
        case "navigate":
            return f"navigate {s.url!r}"
        case "wait":
            return f"wait {s.selector!r}" if s.selector is not None else f"wait {s.ms} ms"
        case "screenshot":
            return f"screenshot {s.name!r}"
        case _:
            return f"{s.action} {s.selector!r}"


def _line(index: int, step: BaseModel) -> str:
    s: Any = step
    extra = ""
    if s.action == "type":
        extra = f" with the secret {s.secret!r}" if s.secret else f" with {len(s.text)} characters"
    elif s.action == "extract":
        what = f"attribute {s.attribute!r}" if s.attribute else "text"
        extra = f" ({what}{', all matches' if s.all else ''}) as {s.name!r}"
    elif s.action == "screenshot" and s.full_page:
        extra = " (full page)"
    return f"{index}. {describe(step)}{extra}"


async def draft(payload: BrowserPayload, _ctx: DraftContext) -> Draft:
    body = "\n".join([_line(i, s) for i, s in enumerate(payload.steps)]
                     + ["", f"In headless Chromium; times out after {payload.timeout_seconds:g} s."])
    first: Any = payload.steps[0]
    return Draft(channel="browser", subject=f"Browser steps on {first.url}", body=body,
                 data=payload.model_dump(mode="json", exclude_none=True) | {"url": first.url})


def navigations(payload: BrowserPayload) -> dict[str, str]:
    return {f"steps.{i}.url": s.url for i, s in enumerate(payload.steps) if isinstance(s, NavigateStep)}


TASK_TYPE = TaskType(
    name="browser",
    description="Run steps (navigate, click, type, wait, extract, screenshot) in headless Chromium; screenshots "
                "and extracted values become the task's artifacts, the extracted values its result too.",
    payload_model=BrowserPayload,
    channel="browser",
    draft=draft,
    needs_part="browser",  # the worker's transport drives Chromium with Playwright
    # The first navigation's host (draft data `url`), against a tenant's allowed_hosts when it sets one.
    guardrails=(TargetHosts(),),
    outbound_urls=navigations,
    # The host a secret is typed on is the page's at that step, which redirects decide: checked at run time.
    secret_refs=lambda payload: {f"steps.{i}.secret": (s.secret, None) for i, s in enumerate(payload.steps)
                                 if isinstance(s, TypeStep) and s.secret},
    guardrail_defaults=lambda _settings: {"allowed_hosts": None},
    default_mode=TaskMode.AUTONOMOUS,
    # A crashed browser or an unreachable site is worth a few more tries; a missing element is not retried.
    retry=RetrySpec(max_attempts=3, initial_interval_seconds=2, backoff_coefficient=2, maximum_interval_seconds=30),
    # Room for the longest allowed run, launching Chromium and storing the artifacts.
    send_timeout_seconds=MAX_TIMEOUT_SECONDS + 30,
)
