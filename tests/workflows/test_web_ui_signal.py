"""Approving from the Temporal Web UI: its "Send a Signal" dialog, driven in headless Chromium,
sends the `approve` signal with a JSON body, and the task records that decision like any other.

A dev server of its own, with the Web UI on a free port (the suite's shared one runs without it),
set like `followthrough dev` sets it: the UI reads and writes payloads through the API's codec endpoint
(the workflow's signal list and the signal's body are encrypted payloads).
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.domain import search_attributes
from followthrough.infra.binaries import find_binary
from tests.api.test_inbox_browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import TEST_CONVERTER, Stack, served_api
from tests.helpers import eventually, free_port, task_body, until_status


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield free_port(), free_port()


@pytest_asyncio.fixture
async def env_with_ui(ports: tuple[int, int]) -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    ui_port, api_port = ports
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"), ui=True, ui_port=ui_port, data_converter=TEST_CONVERTER,
        search_attributes=search_attributes.ALL,
        dev_server_extra_args=["--ui-codec-endpoint", f"http://127.0.0.1:{api_port}/codec"])
    yield env, ui_port
    await env.shutdown()


@asynccontextmanager
async def stack_with_ui(env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path, ui_port: int,
                        api_port: int) -> AsyncIterator[Stack]:
    async with served_api(env, engine, tmp_path, port=api_port,
                          temporal_ui_url=f"http://127.0.0.1:{ui_port}") as (url, settings), \
            httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=10) as http:
        yield Stack(settings, env.client, engine, http)


async def test_the_web_ui_signal_dialog_approves_a_task(env_with_ui, ports, sqlite_engine: AsyncEngine,
                                                        tmp_path: Path):
    env, ui_port = env_with_ui
    async with stack_with_ui(env, sqlite_engine, tmp_path, ui_port, ports[1]) as stack:
        created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant,
                                                                 approval={"approvers": ["alice"]}))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        task = await until_status(stack, task_id, "awaiting_approval")

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                await page.goto(task["links"]["temporal_ui"])
                await page.get_by_role("button", name="More Actions").first.click(timeout=30_000)
                await page.get_by_role("menuitem", name="Send a Signal").first.click()
                dialog = page.get_by_role("dialog").filter(has_text="Send a Signal").first
                # The UI lists the workflow's signals (from its metadata query, answered by the worker).
                await dialog.locator("[data-testid=signal-select-button]").click()
                await page.get_by_role("option", name="approve", exact=True).click()
                await dialog.locator(".cm-content").click()
                await page.keyboard.press("Control+A")
                await page.keyboard.type('{"actor_id": "alice", "comment": "approved in the Web UI"}')
                await dialog.locator("[data-testid=confirm-modal-button]").click()

                done = await until_status(stack, task_id, "completed", timeout=30)
            finally:
                await browser.close()

        assert done["result"]["sent"] is True
        approval = await eventually(lambda: stack.http.get(f"/tasks/{task_id}/approval"),
                                    lambda r: r.status_code == 200 and r.json()["status"] == "approved")
        assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval.json()["decisions"]] == [
            ("alice", "approve", "approved in the Web UI")]
