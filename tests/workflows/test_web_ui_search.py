"""Finding tasks in the Temporal Web UI by their search attributes: the workflow list, filtered with the
query `TaskStatus="awaiting_approval"` typed into its search box, in headless Chromium, shows the task
waiting for approval and not the one that has completed; the waiting run shows its summary and details.

A dev server of its own with the Web UI on a free port and the attributes registered, set like
`followthrough dev` sets it (payloads, summaries and details decoded through the API's codec endpoint).
"""

import os
import re
from pathlib import Path

from playwright.async_api import async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.test_inbox_browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import task_body, until_status
from tests.workflows.test_web_ui_signal import env_with_ui, ports, stack_with_ui  # noqa: F401 - fixtures


def screenshots(tmp_path: Path) -> Path:
    """docs/images (the README's screenshots) when FOLLOWTHROUGH_UPDATE_SCREENSHOTS is set, else a throwaway folder."""
    if os.environ.get("FOLLOWTHROUGH_UPDATE_SCREENSHOTS"):
        return Path(__file__).resolve().parents[2] / "docs" / "images"
    return tmp_path




async def test_the_web_ui_finds_tasks_awaiting_approval(env_with_ui, ports, sqlite_engine: AsyncEngine,
                                                        tmp_path: Path):
    env, ui_port = env_with_ui
    async with stack_with_ui(env, sqlite_engine, tmp_path, ui_port, ports[1]) as stack:
        waiting = await stack.http.post("/tasks", json=task_body(
            tenant_id=stack.tenant, title="Follow up on overdue invoice INV-123", subject_ref_id="INV-123",
            priority="high", owner_type="ai", owner_id="action-ai",
            approval={"approvers": ["alice", "bob"], "required": 2}))
        done = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode="autonomous",
                                                              subject_ref_id="INV-777"))
        assert waiting.status_code == 201 and done.status_code == 201, (waiting.text, done.text)
        waiting_task = await until_status(stack, waiting.json()["id"], "awaiting_approval")
        await until_status(stack, done.json()["id"], "completed")
        waiting_id, done_id = waiting.json()["workflow_id"], done.json()["workflow_id"]

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                await page.goto(f"http://127.0.0.1:{ui_port}/namespaces/default/workflows")
                await expect(page.get_by_role("link", name=done_id)).to_be_visible(timeout=30_000)
                # The list's raw query box ("View raw query"), as a person would use it.
                await page.get_by_test_id("toggle-manual-query").click()
                search = page.get_by_test_id("workflow-manual-search-input")
                await search.fill('TaskStatus="awaiting_approval"')
                await search.press("Enter")
                await expect(page).to_have_url(re.compile(r"query=TaskStatus"), timeout=10_000)
                await expect(page.get_by_role("link", name=waiting_id)).to_be_visible(timeout=30_000)
                await expect(page.get_by_role("link", name=done_id)).to_have_count(0)

                await page.screenshot(path=str(screenshots(tmp_path) / "web-ui-search.png"))

                # The run itself: its title as summary, its API link in the details, what it waits for (and
                # from whom) as current details; the UI renders each (Markdown) in a frame of its own.
                await page.get_by_role("link", name=waiting_id).click()
                await page.get_by_role("tab", name="User Metadata").click()
                await expect(page.frame_locator("#user-metadata-summary").get_by_text(waiting_task["title"])) \
                    .to_be_visible(timeout=30_000)
                await expect(page.frame_locator("#user-metadata-details").get_by_role("link", name="Task in the API")) \
                    .to_be_visible()
                await expect(page.frame_locator("#user-metadata-current-details").get_by_text(
                    re.compile(r"Waiting for approval from alice, bob \(0 of 2 given\) until .* UTC"))).to_be_visible()
                await page.screenshot(path=str(screenshots(tmp_path) / "web-ui-task-run.png"))
                # The timeline names each step by what it does.
                await page.get_by_role("tab", name="Timeline").click()
                await expect(page.get_by_text("Draft invoice follow-up email").first).to_be_visible(timeout=30_000)
                await expect(page.get_by_text("Wait for approval (24h)").first).to_be_visible()
            finally:
                await browser.close()
