"""An agent task outlives its worker: the worker process is killed (SIGKILL) mid-loop, after two model
turns and a tool call and while a risky call waits for approval; another worker takes over, and the loop
goes on at the same turn. The scripted model and the tool's receiver each see every call exactly once."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from followthrough.api.main import create_app
from tests.conftest import TEST_CODEC_ENV, make_settings
from tests.helpers import eventually
from tests.llm_server import FakeLlm
from tests.receivers import Receiver
from tests.workflows.test_run_texts import summaries


def _start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "followthrough.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_killed_worker_resumes_the_agent_loop_at_the_same_turn(dev_env, engine, tmp_path: Path):
    with FakeLlm() as llm, Receiver() as receiver:
        settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path,
                                 llm_base_url=llm.url, llm_model="fake-gpt-1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
            "FOLLOWTHROUGH_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "FOLLOWTHROUGH_TASK_QUEUE": settings.task_queue,
            "FOLLOWTHROUGH_DATABASE_URL": settings.database_url,
            "FOLLOWTHROUGH_LLM_BASE_URL": llm.url, "FOLLOWTHROUGH_LLM_MODEL": "fake-gpt-1",
            "FOLLOWTHROUGH_OUTBOUND_ALLOW": json.dumps(settings.outbound_allow),  # the receiver is on 127.0.0.1
        } | TEST_CODEC_ENV
        llm.call_tools(("http_request", {"url": f"{receiver.url}/orders/7"}))
        llm.call_tools(("http_request", {"method": "POST", "url": f"{receiver.url}/orders/7/notes",
                                         "json": {"text": "shipped"}}))
        llm.answer("Order 7 has shipped; noted.")
        app = create_app(settings, temporal=dev_env.client)
        worker = _start_worker(env)
        try:
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as http:
                created = await http.post("/tasks", json={"type": "agent", "tenant_id": "crash", "payload": {
                    "prompt": "Has order 7 shipped? Note it.", "allowed_tools": ["http_request"]}})
                assert created.status_code == 201, created.text
                task_id, workflow_id = created.json()["id"], created.json()["workflow_id"]

                async def task() -> dict:
                    return (await http.get(f"/tasks/{task_id}")).json()

                await eventually(task, lambda t: t["status"] == "awaiting_approval", timeout=60)
                assert (len(llm.requests), [r.method for r in receiver.requests]) == (2, ["GET"])
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                worker = _start_worker(env)
                # The new worker replays the loop to the open approval and takes the decision. Until it has
                # (the killed worker's last workflow task may not have been recorded), the task refuses it as not
                # yet waiting, and the approver asks again.
                async def approve() -> httpx.Response:
                    return await http.post(f"/tasks/{task_id}/approve", json={}, headers={"X-Actor-Id": "ops"})

                approved = await eventually(approve, lambda r: r.status_code != 409
                                            or "not awaiting_approval" not in r.text, timeout=60)
                assert approved.status_code == 200, approved.text
                done = await eventually(task, lambda t: t["status"] == "completed", timeout=60)
                events = (await http.get(f"/tasks/{task_id}/events", params={"limit": 200})).json()["items"]
        finally:
            worker.kill()
            worker.wait()

        result = done["result"]
        assert (result["ended_by"], result["answer"], result["turns"], result["tool_calls"]) == (
            "answer", "Order 7 has shipped; noted.", 3, 2)
        # Each model turn and each tool call happened once: none repeated after the crash.
        assert len(llm.requests) == 3
        assert [(r.method, r.path) for r in receiver.requests] == [("GET", "/orders/7"), ("POST", "/orders/7/notes")]
        # The third turn saw the whole transcript, the answers of the calls before the crash included.
        third = llm.messages(2)
        assert [m["role"] for m in third] == ["user", "assistant", "tool", "assistant", "tool"]
        assert json.loads(third[2]["content"])["status"] == 200 and json.loads(third[4]["content"])["status"] == 200
        assert [e["data"]["turn"] for e in events if e["type"] == "TASK_AGENT_TURN"] == [1, 2, 3]
        handle = dev_env.client.get_workflow_handle(workflow_id)
        ran = [s for s in await summaries(dev_env, handle) if s.startswith(("LLM turn", "tool "))]
        assert ran == ["LLM turn 1 of 10", f"tool http_request GET {receiver.url}/orders/7", "LLM turn 2 of 10",
                       f"tool http_request POST {receiver.url}/orders/7/notes", "LLM turn 3 of 10"]
