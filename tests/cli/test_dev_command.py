"""`followthrough dev` as a user runs it: one command, then the README's walkthrough
over real HTTP, then a clean stop on SIGTERM."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from followthrough.infra.binaries import find_binary
from tests.helpers import free_port, task_body


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_dev(folder: Path) -> Iterator[tuple[subprocess.Popen, dict[str, int]]]:
    """`followthrough dev` started in ``folder`` as a person starts it: no FOLLOWTHROUGH_* variable but the
    ports (free ones, so never the defaults), its output in ``folder``/dev.log; stopped at the end if still up."""
    ports = {"FOLLOWTHROUGH_DEV_TEMPORAL_PORT": free_port(), "FOLLOWTHROUGH_DEV_UI_PORT": free_port(),
             "FOLLOWTHROUGH_API_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        k: str(v) for k, v in ports.items()}
    env.pop("DATABASE_URL", None)
    log = open(folder / "dev.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "followthrough.cli", "dev"], cwd=folder, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, ports
    finally:
        if proc.poll() is None:  # SIGTERM first: dev then stops its children, which SIGKILL would orphan
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture
def dev_process(tmp_path: Path):
    with running_dev(tmp_path) as (proc, ports):
        yield proc, ports, tmp_path


def test_dev_runs_the_walkthrough_and_stops_cleanly(dev_process):
    proc, ports, folder = dev_process
    api = f"http://127.0.0.1:{ports['FOLLOWTHROUGH_API_PORT']}/api/v1"
    with httpx.Client(base_url=api, timeout=10) as http:
        _wait(lambda: http.get("/healthz").status_code == 200, 90, "the API to become healthy")
        created = http.post("/tasks", json=task_body(mode="review")).json()
        task_id = created["id"]
        _wait(lambda: http.get(f"/tasks/{task_id}").json()["status"] == "awaiting_approval", 30, "approval wait")
        assert http.post(f"/tasks/{task_id}/approve", json={"comment": "ok"}).status_code == 200
        _wait(lambda: http.get(f"/tasks/{task_id}").json()["status"] == "completed", 30, "completion")
        events = http.get(f"/tasks/{task_id}/events").json()["items"]
        assert events[-1]["type"] == "TASK_EXECUTION_COMPLETED"
        ui = created["links"]["temporal_ui"]
        assert ui.startswith(f"http://127.0.0.1:{ports['FOLLOWTHROUGH_DEV_UI_PORT']}/namespaces/default/workflows/")
        assert httpx.get(ui, timeout=10).status_code == 200

        # Payloads are encrypted with a key generated in the data folder; the Web UI decodes them
        # through the API's codec endpoint, which answers the UI's origin.
        ui_origin = f"http://127.0.0.1:{ports['FOLLOWTHROUGH_DEV_UI_PORT']}"
        codec_settings = httpx.get(f"{ui_origin}/api/v1/settings", timeout=10).json()["Codec"]
        assert codec_settings["Endpoint"] == f"http://127.0.0.1:{ports['FOLLOWTHROUGH_API_PORT']}/codec"
        preflight = httpx.options(f"{codec_settings['Endpoint']}/decode", timeout=10, headers={
            "Origin": ui_origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == ui_origin
        history = subprocess.run([find_binary("temporal"), "workflow", "show", "--output", "json", "--workflow-id",
                                  created["workflow_id"], "--address",
                                  f"127.0.0.1:{ports['FOLLOWTHROUGH_DEV_TEMPORAL_PORT']}"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        started = json.loads(history)["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
        assert base64.b64decode(started["metadata"]["encoding"]) == b"binary/encrypted"
        decoded = httpx.post(f"{codec_settings['Endpoint']}/decode", json={"payloads": [started]}, timeout=10,
                             headers={"Origin": ui_origin, "X-Namespace": "default"})
        assert decoded.status_code == 200
        assert json.loads(base64.b64decode(decoded.json()["payloads"][0]["data"]))["task_id"] == task_id

    assert (folder / ".followthrough" / "temporal.db").exists()
    assert (folder / ".followthrough" / "mirror.db").exists()
    assert (folder / ".followthrough" / "codec.key").stat().st_mode & 0o777 == 0o600
    # The banner names the inbox and the operator page, which answer there.
    inbox = f"http://127.0.0.1:{ports['FOLLOWTHROUGH_API_PORT']}/ui"
    assert f"Inbox        {inbox}\n" in (folder / "dev.log").read_text()
    assert httpx.get(inbox, timeout=10).status_code == 200
    # And the operator page beside it.
    assert f"Operator     {inbox}/tasks\n" in (folder / "dev.log").read_text()
    assert httpx.get(f"{inbox}/tasks", timeout=10).status_code == 200
    # What commands beside it read (tests/cli/test_cli_beside_dev.py) is there while it runs, and goes with it.
    assert (folder / ".followthrough" / "dev.json").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    log = (folder / "dev.log").read_text()
    assert "followthrough stopped" in log
    assert not (folder / ".followthrough" / "dev.json").exists()
    for port in ports.values():  # every child has let go of its port
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, port
