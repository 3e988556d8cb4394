"""`followthrough tasks …`, `types` and `status` as a person runs them: a separate process talking to the
API over real HTTP, with a worker behind it on the dev server, on every configured database."""

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.db import api_keys
from followthrough.domain.contracts import CancelRequest, DecisionAck, PauseRequest
from tests.conftest import make_settings, served_api, worker_for
from tests.helpers import eventually, free_port, get_task, invoice_payload, task_body, task_row, until_status
from tests.reliability.processes import kill, process_env, start
from tests.cli.test_cli_decisions import REPO, cli, cli_env


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient
    engine: AsyncEngine
    tenant: str

    async def task(self, task_id: str) -> dict:
        return await get_task(self, task_id)

    async def until(self, task_id: str, status: str) -> dict:
        return await until_status(self, task_id, status)

    async def run(self, *args: str, env: dict[str, str] | None = None):  # noqa: ANN201 - a Cli
        return await cli(*args, "--api", self.url, env=env)

    async def create(self, tmp_path: Path, *extra: str) -> str:
        payload = tmp_path / f"payload-{uuid.uuid4().hex[:6]}.json"
        payload.write_text(json.dumps(invoice_payload()), encoding="utf-8")
        made = await self.run("tasks", "create", "--type", "invoice_follow_up", "--payload", f"@{payload}",
                              "--title", "Follow up on INV-123", "--mode", "review", "--tenant", self.tenant,
                              "--subject-ref", f"INVOICE:INV-{uuid.uuid4().hex[:6]}", *extra)
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("created ") and made.stdout.strip().endswith(": pending"), made.stdout
        return made.stdout.split()[1].rstrip(":")


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    async with served_api(dev_env, engine, tmp_path) as (url, _settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield Api(url, http, engine, f"cli-{uuid.uuid4().hex[:8]}")


async def test_create_list_show_approve_and_events(api: Api, tmp_path: Path):
    task_id = await api.create(tmp_path)
    await api.until(task_id, "awaiting_approval")

    listed = await api.run("tasks", "list", "--tenant", api.tenant, "--status", "awaiting_approval")
    assert listed.returncode == 0, listed.stderr
    header, row, footer = listed.stdout.strip().splitlines()
    assert header.split() == ["ID", "STATUS", "STAGE", "TYPE", "MODE", "CREATED", "TITLE"]
    assert row.split()[:5] == [task_id, "awaiting_approval", "awaiting_approval", "invoice_follow_up", "review"]
    assert row.index("awaiting_approval") == header.index("STATUS")  # the columns line up
    assert footer == "(1-1 of 1)"
    raw = json.loads((await api.run("tasks", "list", "--tenant", api.tenant, "--json")).stdout)
    assert [t["id"] for t in raw["items"]] == [task_id] and raw["total"] == 1

    shown = await api.run("tasks", "show", task_id)
    assert shown.returncode == 0 and "awaiting_approval" in shown.stdout and "TASK_APPROVAL_REQUESTED" in shown.stdout
    assert json.loads((await api.run("tasks", "show", task_id, "--json")).stdout)["id"] == task_id

    approved = await api.run("tasks", "approve", task_id, "--as", "alice", "--comment", "fine")
    assert (approved.returncode, approved.stderr) == (0, "")
    assert approved.stdout.strip() == f"approved {task_id}: in_progress (sending)"
    await api.until(task_id, "completed")

    events = await api.run("tasks", "events", task_id)
    assert events.returncode == 0, events.stderr
    lines = events.stdout.strip().splitlines()
    assert lines[0].split() == ["WHEN", "EVENT", "STATUS", "ACTOR", "NOTE"]
    assert [line.split()[2] for line in lines[1:]][:2] == ["TASK_CREATED", "TASK_STATUS_CHANGED"]
    approval = next(line for line in lines if "TASK_APPROVED" in line)
    assert "awaiting_approval -> in_progress" in approval and "alice" in approval and "comment: fine" in approval
    raw_events = json.loads((await api.run("tasks", "events", task_id, "--json")).stdout)
    assert raw_events[-1]["type"] == "TASK_EXECUTION_COMPLETED"


async def test_status_counts_by_status_and_names_the_oldest_waiting_approval(api: Api, tmp_path: Path):
    waiting = await api.create(tmp_path)
    later = await api.create(tmp_path)
    await api.until(waiting, "awaiting_approval")
    await api.until(later, "awaiting_approval")
    cancelled = await api.run("tasks", "cancel", later, "--reason", "not needed", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"

    stats = json.loads((await api.run("status", "--tenant", api.tenant, "--json")).stdout)
    assert stats["total"] == 2
    assert {k: v for k, v in stats["counts"].items() if v} == {"awaiting_approval": 1, "cancelled": 1}
    assert stats["oldest_awaiting_approval"]["task_id"] == waiting

    readable = await api.run("status", "--tenant", api.tenant)
    assert readable.returncode == 0, readable.stderr
    rows = {line.split()[0]: line.split()[1] for line in readable.stdout.splitlines()[1:] if len(line.split()) == 2}
    assert rows["awaiting_approval"] == "1" and rows["cancelled"] == "1" and rows["total"] == "2"
    assert rows["completed"] == "0"
    assert f"oldest waiting approval: {waiting}" in readable.stdout

    empty = await api.run("status", "--tenant", f"{api.tenant}-none")
    assert "no task is waiting for approval" in empty.stdout


async def test_types_lists_the_task_types(api: Api):
    listed = await api.run("types")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["TYPE", "CHANNEL", "MODE", "DESCRIPTION"]
    assert any(line.startswith("invoice_follow_up ") for line in listed.stdout.splitlines())
    raw = json.loads((await api.run("types", "--json")).stdout)
    assert "invoice_follow_up" in {t["name"] for t in raw}


async def test_errors_exit_1_from_the_api_and_2_for_usage_or_no_api(api: Api, tmp_path: Path):
    unknown = await api.run("tasks", "show", "no-such-task")
    assert unknown.returncode == 1 and "not found" in unknown.stderr and unknown.stdout == ""
    bad_type = await api.run("tasks", "create", "--type", "no_such_type", "--payload", "{}")
    assert bad_type.returncode == 1 and "no_such_type" in bad_type.stderr
    task_id = await api.create(tmp_path)
    await api.until(task_id, "awaiting_approval")
    not_failed = await api.run("tasks", "retry", task_id)
    assert not_failed.returncode == 1 and not_failed.stderr.startswith("followthrough tasks: ")

    for usage in (["tasks", "create", "--type", "x", "--payload", "{not json"],
                  ["tasks", "create", "--type", "x", "--payload", "@/no/such/file"],
                  ["tasks", "create", "--type", "x", "--payload", "{}", "--subject-ref", "no-colon"],
                  ["tasks", "list", "--status", "nonsense"], ["tasks", "approve"]):
        done = await api.run(*usage)
        assert done.returncode == 2, (usage, done.stderr)

    dead = f"http://127.0.0.1:{free_port()}"
    for command in (["tasks", "list"], ["types"], ["status"]):
        done = await cli(*command, "--api", dead)
        assert done.returncode == 2 and "cannot reach" in done.stderr and dead in done.stderr


async def test_with_a_key_the_commands_see_its_tenant_only(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                           tmp_path: Path):
    async with served_api(dev_env, engine, tmp_path, anonymous_access=False) as (url, _settings):
        tenant = f"cli-key-{uuid.uuid4().hex[:8]}"
        _row, key = await api_keys.create(engine, tenant_id=tenant, actor_id="sam", name="sam",
                                          roles=["submitter", "approver"])
        env = {"FOLLOWTHROUGH_API_KEY": key}
        made = await cli("tasks", "create", "--type", "invoice_follow_up", "--payload",
                         json.dumps(invoice_payload()), "--mode", "review", "--api", url, env=env)
        assert made.returncode == 0, made.stderr
        task_id = made.stdout.split()[1].rstrip(":")

        listed = json.loads((await cli("tasks", "list", "--json", "--api", url, env=env)).stdout)
        assert [t["id"] for t in listed["items"]] == [task_id] and listed["items"][0]["tenant_id"] == tenant
        stats = json.loads((await cli("status", "--json", "--api", url, env=env)).stdout)
        assert stats["total"] == 1

        other = await cli("tasks", "list", "--tenant", "someone-else", "--api", url, env=env)
        assert other.returncode == 1 and "cannot list" in other.stderr
        anonymous = await cli("status", "--api", url)
        assert anonymous.returncode == 1 and "API key is required" in anonymous.stderr
        # A 401 says which variable carries the key and how to make one.
        assert "set FOLLOWTHROUGH_API_KEY" in anonymous.stderr and "followthrough keys create" in anonymous.stderr
        revoked = await cli("status", "--api", url, env={"FOLLOWTHROUGH_API_KEY": key + "x"})
        assert revoked.returncode == 1 and "not valid or has been revoked" in revoked.stderr
        assert "the key in FOLLOWTHROUGH_API_KEY was refused" in revoked.stderr
        assert "followthrough keys create" in revoked.stderr


# ---- --follow: the task's events from its event stream ---------------------------------

async def following(*args: str) -> asyncio.subprocess.Process:
    """`followthrough tasks show ... --follow` running in its own process, its output read as it comes."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "followthrough.cli", "tasks", "show", *args, "--follow", cwd=REPO, env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def read_until(process: asyncio.subprocess.Process, text: str, timeout: float = 30) -> list[str]:
    """The lines it prints, up to and including the first holding ``text``."""
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while not lines or text not in lines[-1]:
            line = await process.stdout.readline()
            assert line, f"ended before printing {text!r}: {lines}, {(await process.stderr.read()).decode()}"
            lines.append(line.decode().rstrip("\n"))
    return lines


def event_types(lines: list[str]) -> list[str]:
    """The event types of `show`'s event lines, in order."""
    return [line.split()[2] for line in lines if line.startswith("  ") and line.split()[2:3] and
            line.split()[2].startswith("TASK_")]


async def test_show_follow_prints_each_new_event_once_until_the_task_ends(api: Api, tmp_path: Path):
    task_id = await api.create(tmp_path)
    await api.until(task_id, "awaiting_approval")
    text, as_json = await following(task_id, "--api", api.url), await following(task_id, "--json", "--api", api.url)
    summary = await read_until(text, "TASK_APPROVAL_REQUESTED")  # the task and its events so far, at once
    assert summary[1].startswith("status:  awaiting_approval")
    first = json.loads((await as_json.stdout.readline()).decode())
    assert (first["id"], first["status"]) == (task_id, "awaiting_approval")

    approved = await api.http.post(f"/tasks/{task_id}/approve", json={"actor_id": "alice", "comment": "fine"})
    assert approved.status_code == 200, approved.text
    out, err = await asyncio.wait_for(text.communicate(), timeout=60)  # it ends by itself once the task has
    assert (text.returncode, err.decode()) == (0, "")
    followed = out.decode().splitlines()
    assert followed[-1] == "ended: completed"

    # Every event once, in order: the ones before it started in the summary, the rest as they came.
    recorded = (await api.http.get(f"/tasks/{task_id}/events")).json()["items"]
    assert event_types(summary + followed) == [e["type"] for e in recorded]
    assert "TASK_APPROVED" in event_types(followed) and "TASK_APPROVED" not in event_types(summary)
    assert next(line for line in followed if "TASK_APPROVED" in line).split()[-2:] == ["comment:", "fine"]

    # With --json, a line for the task, then one for each event after those it had then.
    out, err = await asyncio.wait_for(as_json.communicate(), timeout=60)
    assert as_json.returncode == 0, err.decode()
    streamed = [json.loads(line) for line in out.decode().splitlines()]
    ids = [e["id"] for e in recorded]
    assert [e["id"] for e in streamed] == ids[len(ids) - len(streamed):]
    assert streamed[-1]["type"] == "TASK_EXECUTION_COMPLETED" and "TASK_APPROVED" in {e["type"] for e in streamed}


async def test_show_follow_of_an_ended_task_ends_at_once_and_an_unknown_one_fails(api: Api, tmp_path: Path):
    task_id = await api.create(tmp_path)
    await api.until(task_id, "awaiting_approval")
    assert (await api.run("tasks", "cancel", task_id)).returncode == 0
    await api.until(task_id, "cancelled")
    done = await api.run("tasks", "show", task_id, "--follow")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ended: cancelled"
    assert event_types(done.stdout.splitlines()).count("TASK_CANCELLED") == 1

    unknown = await api.run("tasks", "show", "no-such-task", "--follow")
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    dead = await cli("tasks", "show", task_id, "--follow", "--api", f"http://127.0.0.1:{free_port()}")
    assert dead.returncode == 2 and "cannot reach" in dead.stderr


async def _serving(url: str, process) -> None:  # noqa: ANN001 - a Popen
    async def health() -> int | None:
        assert process.poll() is None, "the API exited"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{url}/api/v1/healthz", timeout=2)).status_code
        except httpx.HTTPError:
            return None
    await eventually(health, lambda status: status == 200, timeout=60)


async def test_show_follow_resumes_across_api_restarts_without_a_gap_or_a_repeat(dev_env: WorkflowEnvironment,
                                                                                engine: AsyncEngine, tmp_path: Path):
    # The API as the process an operator runs, killed while the stream is open and started again on its port,
    # twice. The first time the follower resumes after the last event it printed (Last-Event-ID); the second
    # time more happened meanwhile than the restarted API replays (FOLLOWTHROUGH_STREAM_RESUME_MAX_EVENTS=1),
    # so the stream says reset and the follower fetches what it missed. Either way every event once, in order.
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(settings, dev_env.client.service_client.config.target_host,
                      FOLLOWTHROUGH_API_HOST="127.0.0.1", FOLLOWTHROUGH_API_PORT=str(port))
    log = tmp_path / "api.log"
    async with worker_for(dev_env, settings, engine):
        api = start("api", env, log)
        try:
            await _serving(url, api)
            async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
                due = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
                created = await http.post("/tasks", json=task_body(due_at=due, tenant_id="follow"))
                assert created.status_code == 201, created.text
                task_id, workflow_id = created.json()["id"], created.json()["workflow_id"]
                stack = Api(url, http, engine, "follow")
                await stack.until(task_id, "scheduled")
                before = len((await http.get(f"/tasks/{task_id}/events")).json()["items"])

                follower = await following(task_id, "--events", "0", "--api", url)
                await read_until(follower, "status:  scheduled")
                assert (await http.post(f"/tasks/{task_id}/pause", json={"reason": "hold"})).status_code == 200
                printed = await read_until(follower, "TASK_PAUSED")

                kill(api)
                api = start("api", env, log)
                await _serving(url, api)
                assert (await http.post(f"/tasks/{task_id}/resume")).status_code == 200
                printed += await read_until(follower, "TASK_RESUMED")

                # Meanwhile, with the API away, two decisions straight through Temporal.
                kill(api)
                handle = dev_env.client.get_workflow_handle(workflow_id)
                await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
                await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)
                await eventually(lambda: task_row(engine, task_id), lambda row: row.status == "cancelled")
                api = start("api", env | {"FOLLOWTHROUGH_STREAM_RESUME_MAX_EVENTS": "1"}, log)
                await _serving(url, api)
                out, err = await asyncio.wait_for(follower.communicate(), timeout=60)
                assert follower.returncode == 0, err.decode() + log.read_text()[-2000:]
                printed += out.decode().splitlines()

                recorded = (await http.get(f"/tasks/{task_id}/events")).json()["items"]
                assert event_types(printed) == [e["type"] for e in recorded[before:]]
                assert event_types(printed).count("TASK_PAUSED") == 2 and printed[-1] == "ended: cancelled"
        finally:
            kill(api)
