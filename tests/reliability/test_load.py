"""A burst of task creations sent all at once through the real API process to the real worker process on
the dev server, as bench/load.py sends its thousand: no answer is a 5xx, every one is a 201, every task
completes, and the mirror holds as many of the tenant's tasks as Temporal holds workflows.

CI runs BURST of them; bench/load.py runs 1,000 with the same check. Five hundred failed here once, inside the
full suite on a machine shared to a load average of 26: the session's dev server timed out 127 workflow starts
(the API answered those 500), so the burst is kept to what a busy two-core runner completes in about a minute."""

import asyncio
import uuid
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.load import LIMITS_OFF, client_for, run_load
from tests.conftest import make_settings
from tests.helpers import free_port
from tests.reliability.processes import kill, process_env, start

BURST = 300


async def _serving(url: str) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(60):
        while True:
            try:
                if (await http.get(f"{url}/healthz", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def test_a_burst_of_creations_all_complete(dev_env, mirror_engine: AsyncEngine, tmp_path: Path):
    settings = make_settings(mirror_engine.url.render_as_string(hide_password=False), tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1"
    env = process_env(settings, dev_env.client.service_client.config.target_host,
                      FOLLOWTHROUGH_API_HOST="127.0.0.1", FOLLOWTHROUGH_API_PORT=str(port), **LIMITS_OFF)
    api, worker = start("api", env, tmp_path / "api.log"), start("worker", env, tmp_path / "worker.log")
    try:
        await _serving(url)
        async with client_for(url, BURST) as http:
            report = await run_load(http, dev_env.client, f"load-{uuid.uuid4().hex[:8]}", BURST, timeout=240)
        assert report.failures() == [], "\n".join(report.lines())
        assert report.answers == {"201": BURST}
        assert report.mirror_completed == report.mirror_total == report.temporal_total == BURST
    finally:
        kill(api)
        kill(worker)
