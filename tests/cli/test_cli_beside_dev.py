"""Every command run from the folder of a running `followthrough dev`, each as its own process with no
FOLLOWTHROUGH_* variable, finds that stack through <data_dir>/dev.json: its Temporal address, API port and
codec mode, here all moved off their defaults so nothing works by accident of a default port.

One dev stack serves the whole module (about ten seconds to start); each command is a process of its own
(about a second each) because what is tested is a fresh process's settings."""

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from followthrough.domain import search_attributes
from tests.helpers import invoice_payload
from tests.cli.test_dev_command import running_dev


@dataclass
class Stack:
    folder: Path
    ports: dict[str, int]
    http: httpx.Client

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['FOLLOWTHROUGH_API_PORT']}"

    def task(self, task_id: str) -> dict:
        return self.http.get(f"/tasks/{task_id}").json()

    def until(self, task_id: str, status: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while (task := self.task(task_id))["status"] != status:
            assert time.monotonic() < deadline, f"{task_id} stayed {task['status']}, not {status}"
            time.sleep(0.2)
        return task


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("beside-dev")
    with running_dev(folder) as (proc, ports):
        api = f"http://127.0.0.1:{ports['FOLLOWTHROUGH_API_PORT']}"
        with httpx.Client(base_url=f"{api}/api/v1", timeout=10, headers={"X-Actor-Id": "tester"}) as http:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, (folder / "dev.log").read_text()
                try:
                    if http.get("/healthz").status_code == 200:  # dev wrote its file before starting the API
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "followthrough dev did not become healthy"
                time.sleep(0.2)
            yield Stack(folder, ports, http)
    assert proc.returncode == 0 and not (folder / ".followthrough" / "dev.json").exists()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """A command as a person runs it in a second terminal: same folder, none of dev's environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FOLLOWTHROUGH_", "TEMPORAL_")) and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "followthrough.cli", *args], cwd=stack.folder, env=env,
                          capture_output=True, text=True, timeout=60)


def ok(stack: Stack, *args: str) -> str:
    done = cli(stack, *args)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def test_the_file_names_the_stack_and_no_secret(stack: Stack):
    data = stack.folder / ".followthrough"
    described = json.loads((data / "dev.json").read_text())
    assert described["temporal_address"] == f"127.0.0.1:{stack.ports['FOLLOWTHROUGH_DEV_TEMPORAL_PORT']}"
    assert described["api_port"] == stack.ports["FOLLOWTHROUGH_API_PORT"]
    assert described["codec"] == "local-key" and "anonymous_access" not in described
    assert (data / "codec.key").read_text().strip() not in (data / "dev.json").read_text()
    assert (data / "dev.json").stat().st_mode & 0o777 == 0o600


def test_tasks_and_decisions(stack: Stack):
    made = ok(stack, "tasks", "create", "--type", "invoice_follow_up", "--payload", json.dumps(invoice_payload()),
              "--mode", "review", "--title", "Follow up beside dev", "--as", "alice")
    assert made.startswith("created ") and made.split()[2] == "pending", made
    approved_id = made.split()[1].rstrip(":")
    rejected_id = ok(stack, "tasks", "create", "--type", "invoice_follow_up", "--payload",
                     json.dumps(invoice_payload()), "--mode", "review").split()[1].rstrip(":")
    stack.until(approved_id, "awaiting_approval")
    stack.until(rejected_id, "awaiting_approval")

    listed = ok(stack, "tasks", "list", "--status", "awaiting_approval")
    assert approved_id in listed and rejected_id in listed
    shown = ok(stack, "tasks", "show", approved_id)
    assert "status:  awaiting_approval" in shown and "Follow up beside dev" in shown
    assert ok(stack, "show", rejected_id).startswith(rejected_id)

    assert ok(stack, "tasks", "approve", approved_id, "--as", "bob", "--comment", "fine").startswith(
        f"approved {approved_id}: in_progress")
    assert ok(stack, "reject", rejected_id, "--reason", "not ours").startswith(f"rejected {rejected_id}:")
    stack.until(approved_id, "completed")
    stack.until(rejected_id, "rejected")

    assert "invoice_follow_up" in ok(stack, "types")
    status = json.loads(ok(stack, "status", "--json"))
    assert status["total"] >= 2


def test_reconcile_reads_the_stacks_temporal_with_its_codec(stack: Stack):
    # After test_tasks_and_decisions: its runs are closed, so mirror and Temporal agree.
    report = ok(stack, "reconcile")
    assert "0 drift" in report and not report.startswith("0 workflows"), report


def test_temporal_setup_finds_the_attributes_dev_registered(stack: Stack):
    done = ok(stack, "temporal", "setup")
    assert f"at 127.0.0.1:{stack.ports['FOLLOWTHROUGH_DEV_TEMPORAL_PORT']}" in done
    added, _, present = done.strip().rpartition("; already registered ")
    assert added.endswith("added none") and set(present.split(", ")) == {key.name for key in search_attributes.ALL}


def test_keys_in_the_stacks_database(stack: Stack):
    user = f"kim-{uuid.uuid4().hex[:6]}"
    made = ok(stack, "keys", "create", "--tenant", "default", "--user", user, "--role", "submitter")
    token = made.splitlines()[1]
    assert user in made.splitlines()[0] and token.startswith("ftk_")
    assert user in ok(stack, "keys", "list")
    # The key is one the stack's API knows: it is the same database.
    answer = httpx.get(f"{stack.api}/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_definitions_and_schedules(stack: Stack):
    created = stack.http.post("/definitions", json={
        "tenant_id": "default", "name": "beside-dev", "type": "email", "mode": "review", "cron": "0 3 1 1 *",
        "variables": {"team": "sales"},
        "payload": {"to": ["{{ team }}@example.com"], "subject": "Digest", "body": "for {{ team }}"}})
    assert created.status_code == 201, created.text
    definition_id = created.json()["id"]
    assert definition_id in ok(stack, "definitions", "list")
    assert ok(stack, "schedules", "show", definition_id).startswith("schedule:  0 3 1 1 * (UTC), active")


def test_migrate_and_connectors(stack: Stack):
    assert cli(stack, "migrate").returncode == 0
    assert "crm.create_contact" in ok(stack, "connectors")
