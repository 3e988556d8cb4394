"""Running a browser task's steps in one headless Chromium page.

A browser session does not survive an activity, so one call runs the whole list: Chromium is launched,
every request passes the SSRF guard (followthrough/activities/browser_guard.py), each step heartbeats, and screenshots
and extracted values are stored as artifacts as they are made. A failure names its step:
``step 3 (click '#submit'): timed out after 10000 ms waiting for the selector``.

Retrying decides the split: a crashed browser or a site that cannot be reached (connection refused, a 5xx)
is retried; a selector still missing after the step's own wait, a 4xx page or a refused address is not.
"""

import asyncio
import re
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, ElementHandle, Error as PlaywrightError, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from followthrough.activities.browser_guard import RequestGuard
from followthrough.activities.browser_proxy import REFUSED_HEADER, GuardedProxy
from followthrough.activities.transports.base import PermanentDeliveryError, SecretRefused, TargetRefused
from followthrough.db import artifacts
from followthrough.infra import redaction
from followthrough.infra.task_secrets import TaskSecretError, TaskSecrets
from followthrough.tasktypes.browser import MAX_ELEMENTS, BrowserPayload, describe

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--dns-prefetch-disable", "--no-first-run", "--disable-default-apps"]
LAUNCH_TIMEOUT_MS = 30_000
MAX_SCREENSHOT_BYTES = 5 * 1024 * 1024
MAX_SCREENSHOTS_BYTES = 20 * 1024 * 1024
MAX_DATA_BYTES = 64 * 1024
MAX_TOTAL_DATA_BYTES = 256 * 1024
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Playwright's words for a page or browser that is gone.
_LOST_SIGNS = ("has been closed", "Target crashed", "Page crashed")
# The attribute (or, without one, the visible text) of the matching elements.
_READ_ONE = "(e, attr) => attr ? e.getAttribute(attr) : e.innerText.trim()"
_READ_ALL = "(els, [attr, max]) => els.slice(0, max).map(e => attr ? e.getAttribute(attr) : e.innerText.trim())"


class StepFailed(PermanentDeliveryError):
    """A step failed in a way a retry would repeat: a missing element, a 4xx page, an artifact too large."""

    error_type = "BrowserStepFailed"


class StepRefused(TargetRefused):
    """The SSRF guard refused the address a navigation (or one of its redirects) went to."""


class BrowserFailure(Exception):
    """Chromium crashed or could not start, or the site could not be reached: retried."""


@dataclass(frozen=True)
class RunContext:
    engine: AsyncEngine
    # The tenant's task secrets; a `type` step's secret is typed only into a page of a host it is bound to.
    task_secrets: TaskSecrets
    task_id: str
    tenant_id: str
    chromium: Path


@dataclass
class _Run:
    page: Page
    browser: Browser
    guard: RequestGuard
    ctx: RunContext
    extracted: dict[str, Any] = field(default_factory=dict)
    stored: list[artifacts.Stored] = field(default_factory=list)
    status: int | None = None
    crashed: bool = False
    # Secret values typed so far: kept out of every error message.
    typed_secrets: list[str] = field(default_factory=list)
    # The elements they were typed into, by step: while one is still in the page, a screenshot would show it.
    secret_fields: list[tuple[int, ElementHandle]] = field(default_factory=list)

    def lost(self) -> bool:
        return self.crashed or self.page.is_closed() or not self.browser.is_connected()

    def redact(self, text: str) -> str:
        for value in self.typed_secrets:
            text = text.replace(value, redaction.REDACTED)
        return redaction.redact(text)

    async def step(self, index: int, step: Any) -> None:
        where = f"step {index} ({describe(step)})"
        refused_before, unreachable_before = len(self.guard.refused), len(self.guard.unreachable)
        try:
            await getattr(self, f"_{step.action}")(index, step)
        except PlaywrightTimeoutError as err:
            if self.lost():
                raise BrowserFailure(f"{where}: the browser crashed or closed") from err
            what = "for the page to load" if step.action == "navigate" else "for the selector"
            raise StepFailed(f"{where}: timed out after {step.timeout_ms} ms waiting {what}") from err
        except PlaywrightError as err:
            # Playwright's first line, without the API call it names ("Page.goto: ").
            first = err.message.splitlines()[0] if err.message else type(err).__name__
            message = self.redact(re.sub(r"^\w+\.\w+: ", "", first))
            if self.lost() or any(sign in message for sign in _LOST_SIGNS):
                raise BrowserFailure(f"{where}: the browser crashed or closed: {message}") from err
            if step.action == "navigate" and "net::ERR_" in message:
                # The guard or its proxy refused the page or a redirect's next hop (a refused document loads
                # nothing else), or could not reach it: say so rather than Chromium's generic error.
                if len(self.guard.refused) > refused_before:
                    raise StepRefused(f"{where}: {self._last_refusal()}") from err
                raise BrowserFailure(f"{where}: {self._unreachable(step.url, unreachable_before) or message}") \
                    from err
            raise StepFailed(f"{where}: {message}") from err
        except (PermanentDeliveryError, BrowserFailure) as err:
            raise type(err)(f"{where}: {err}") from err
        except TaskSecretError as err:
            raise SecretRefused(f"{where}: {err}") from None

    async def _navigate(self, _index: int, step: Any) -> None:
        if (reason := await self.guard.refusal(step.url)) is not None:
            raise StepRefused(f"{step.url} {reason}")
        refused_before = len(self.guard.refused)
        response = await self.page.goto(step.url, wait_until=step.wait_until, timeout=step.timeout_ms)
        if response is None:  # the same document (a fragment): nothing was fetched
            return
        self.status = response.status
        if response.status == 403 and len(self.guard.refused) > refused_before \
                and REFUSED_HEADER.lower() in await response.all_headers():
            raise StepRefused(self._last_refusal())  # the proxy refused a redirect's next hop
        if response.status >= 400:
            message = f"{response.url} answered {response.status} {response.status_text}".rstrip()
            if response.status >= 500 or response.status in RETRYABLE_STATUSES:
                raise BrowserFailure(message)
            raise StepFailed(message)

    def _unreachable(self, url: str, since: int) -> str | None:
        """Why the proxy could not reach ``url`` during this step (Chromium's own requests aside)."""
        parts = urlsplit(url)
        ours = {url, f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"}
        return next((u["reason"] for u in reversed(self.guard.unreachable[since:]) if u["url"] in ours), None)

    def _last_refusal(self) -> str:
        last = self.guard.refused[-1]
        return f"{last['url']} {last['reason']}"

    async def _click(self, _index: int, step: Any) -> None:
        await self.page.click(step.selector, timeout=step.timeout_ms)

    async def _type(self, index: int, step: Any) -> None:
        if step.secret is None:
            await self.page.fill(step.selector, step.text, timeout=step.timeout_ms)
            return
        # A secret goes only into a document of a host it is bound to, whatever redirects led there: the element
        # is found first, its frame's host checked, and the value filled into that element (a handle that a
        # navigation meanwhile would detach, so the value cannot land in the next page).
        element = await self.page.wait_for_selector(step.selector, state="attached", timeout=step.timeout_ms)
        frame = await element.owner_frame() if element is not None else None
        if element is None or frame is None:
            raise StepFailed(f"{step.selector!r} matched no element to type into")
        text = self.ctx.task_secrets.resolve(self.ctx.tenant_id, step.secret, urlsplit(frame.url).hostname)
        self.typed_secrets.append(text)
        self.secret_fields.append((index, element))
        await element.fill(text, timeout=step.timeout_ms)

    async def _holding_secret(self) -> int | None:
        """The step whose secret is still in a field of the page (none once a navigation or the page's
        script removed the element), or None."""
        for index, element in self.secret_fields:
            with suppress(PlaywrightError):  # a handle whose document is gone
                if await element.evaluate("e => e.isConnected"):
                    return index
        return None

    async def _wait(self, _index: int, step: Any) -> None:
        if step.selector is not None:
            await self.page.wait_for_selector(step.selector, state="visible", timeout=step.timeout_ms)
        else:
            await self.page.wait_for_timeout(step.ms)

    async def _extract(self, index: int, step: Any) -> None:
        await self.page.wait_for_selector(step.selector, state="attached", timeout=step.timeout_ms)
        if step.all:
            value: Any = await self.page.eval_on_selector_all(step.selector, _READ_ALL, [step.attribute, MAX_ELEMENTS])
        else:
            value = await self.page.eval_on_selector(step.selector, _READ_ONE, step.attribute)
        size = artifacts.data_size(value)
        if size > MAX_DATA_BYTES:
            raise StepFailed(f"extracted {size} bytes, over the {MAX_DATA_BYTES}-byte limit of one value")
        if sum(s.size for s in self.stored if s.kind == artifacts.DATA) + size > MAX_TOTAL_DATA_BYTES:
            raise StepFailed(f"the extracted values exceed {MAX_TOTAL_DATA_BYTES} bytes in all")
        # A page may echo a secret typed earlier (a confirmation showing the address just entered).
        value = redaction.redact_tree(value)
        self.extracted[step.name] = value
        await self._store(index, step.name, artifacts.DATA, "application/json", data=value)

    async def _screenshot(self, index: int, step: Any) -> None:
        if (typed := await self._holding_secret()) is not None:
            raise StepFailed(f"the secret typed at step {typed} is still in the page, and a screenshot would show "
                             f"it: take screenshots before typing a secret or after a navigation leaves its page")
        image = await self.page.screenshot(full_page=step.full_page, type="png", timeout=step.timeout_ms)
        if len(image) > MAX_SCREENSHOT_BYTES:
            raise StepFailed(f"the screenshot is {len(image)} bytes, over the {MAX_SCREENSHOT_BYTES}-byte limit")
        if sum(s.size for s in self.stored if s.kind == artifacts.SCREENSHOT) + len(image) > MAX_SCREENSHOTS_BYTES:
            raise StepFailed(f"the screenshots exceed {MAX_SCREENSHOTS_BYTES} bytes in all")
        await self._store(index, step.name, artifacts.SCREENSHOT, "image/png", content=image)

    async def _store(self, index: int, name: str, kind: str, content_type: str, **body: Any) -> None:
        self.stored.append(await artifacts.put(self.ctx.engine, task_id=self.ctx.task_id, tenant_id=self.ctx.tenant_id,
                                               step_index=index, name=name, kind=kind, content_type=content_type,
                                               **body))

    async def failure_screenshot(self, index: int) -> None:
        """What the page showed when a step failed, as the artifact ``failure``; best effort."""
        if self.lost():
            return
        with suppress(Exception):
            if await self._holding_secret() is not None:
                return
            image = await self.page.screenshot(type="png", timeout=5000)
            if len(image) <= MAX_SCREENSHOT_BYTES:
                await self._store(index, "failure", artifacts.SCREENSHOT, "image/png", content=image)


def _heartbeat(index: int, step: Any) -> None:
    if activity.in_activity():
        activity.heartbeat({"step": index, "action": step.action})


async def run_steps(payload: BrowserPayload, ctx: RunContext, guard: RequestGuard,
                    timeout_seconds: float) -> dict[str, Any]:
    """Run every step; the result, or StepFailed / StepRefused (permanent) / BrowserFailure (retried)."""
    await artifacts.clear(ctx.engine, ctx.task_id)
    async with GuardedProxy(guard) as proxy, async_playwright() as p:
        try:
            # Playwright sends loopback through the proxy too (it adds <-loopback> to the bypass rules).
            browser = await p.chromium.launch(executable_path=str(ctx.chromium), args=CHROMIUM_ARGS,
                                              proxy={"server": proxy.url}, timeout=LAUNCH_TIMEOUT_MS)
        except PlaywrightError as err:
            raise BrowserFailure(f"cannot start Chromium ({ctx.chromium}): {err.message.splitlines()[0]}") from err
        try:
            context = await browser.new_context(
                service_workers="block", accept_downloads=False,
                viewport={"width": payload.viewport_width, "height": payload.viewport_height})
            await guard.install(context)
            page = await context.new_page()
            run = _Run(page, browser, guard, ctx)
            page.on("crash", lambda _page: setattr(run, "crashed", True))
            index = 0
            try:
                async with asyncio.timeout(timeout_seconds):
                    for index, step in enumerate(payload.steps):
                        _heartbeat(index, step)
                        await run.step(index, step)
            except TimeoutError as err:
                raise StepFailed(f"step {index} ({describe(payload.steps[index])}): the run's timeout of "
                                 f"{timeout_seconds:g} s ran out") from err
            except StepFailed:
                await run.failure_screenshot(index)
                raise
            # A form sent by GET puts what was typed into the URL; a page may show it in its title.
            return {"status": run.status, "url": redaction.redact(page.url),
                    "title": redaction.redact(await page.title()),
                    "steps": len(payload.steps), "extracted": run.extracted,
                    "artifacts": [s.summary() for s in run.stored], "refused_requests": guard.refused[:20]}
        finally:
            with suppress(Exception):
                await browser.close()
