"""`followthrough approve/reject/show` as a person runs them: a separate process talking to the
API over real HTTP, with a worker behind it on the dev server, on every configured database."""

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.cli import api_client
from followthrough.config.settings import Settings
from tests.conftest import served_api
from tests.helpers import free_port, get_task, task_body, until_status

REPO = Path(__file__).resolve().parents[2]



@dataclass
class Cli:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient

    async def create(self) -> str:
        response = await self.http.post("/tasks", json=task_body(mode="review"))
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def task(self, task_id: str) -> dict:
        return await get_task(self, task_id)

    async def until(self, task_id: str, status: str) -> dict:
        return await until_status(self, task_id, status)

    async def events(self, task_id: str) -> list[dict]:
        return (await self.http.get(f"/tasks/{task_id}/events")).json()["items"]

    async def waiting(self) -> str:
        task_id = await self.create()
        await self.until(task_id, "awaiting_approval")
        return task_id


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any FOLLOWTHROUGH_ setting, nor one that colours output into a pipe."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("FOLLOWTHROUGH_") and k not in ("FORCE_COLOR", "PY_COLORS")} | (env or {})


async def cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> Cli:
    """Run the command line in its own process, without blocking the loop the API serves on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "followthrough.cli", *args, cwd=REPO, env=cli_env(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    return Cli(proc.returncode, out.decode(), err.decode())


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    """The API under uvicorn on a free port, with a worker on the same settings."""
    async with served_api(dev_env, engine, tmp_path) as (url, settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield Api(url, http)


async def test_approve_completes_the_task_as_the_named_actor(api: Api):
    task_id = await api.waiting()
    done = await cli("approve", task_id, "--api", api.url, "--as", "alice", "--comment", "ok")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == f"approved {task_id}: in_progress (sending)"

    await api.until(task_id, "completed")
    approved = next(e for e in await api.events(task_id) if e["type"] == "TASK_APPROVED")
    assert approved["actor_id"] == "alice"
    assert approved["data"]["comment"] == "ok"


async def test_reject_with_a_reason(api: Api):
    task_id = await api.waiting()
    done = await cli("reject", task_id, "--api", api.url, "--as", "bob", "--reason", "wrong customer")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"rejected {task_id}: rejected")

    await api.until(task_id, "rejected")
    rejected = next(e for e in await api.events(task_id) if e["type"] == "TASK_REJECTED")
    assert (rejected["actor_id"], rejected["data"]["reason"]) == ("bob", "wrong customer")


async def test_approving_twice_exits_1_with_the_reason(api: Api):
    task_id = await api.waiting()
    assert (await cli("approve", task_id, "--api", api.url)).returncode == 0
    await api.until(task_id, "completed")

    again = await cli("approve", task_id, "--api", api.url)
    assert again.returncode == 1
    assert again.stdout == ""
    assert "task is already completed" in again.stderr


async def test_an_unknown_task_is_not_found(api: Api):
    for command in (["approve", "no-such-task"], ["reject", "no-such-task", "--reason", "x"],
                    ["show", "no-such-task"]):
        done = await cli(*command, "--api", api.url)
        assert done.returncode == 1, command
        assert "not found" in done.stderr and "no-such-task" in done.stderr


async def test_invalid_input_names_the_field(api: Api):
    task_id = await api.waiting()
    done = await cli("reject", task_id, "--api", api.url, "--reason", "   ")  # blank once stripped
    assert done.returncode == 1
    assert "reason:" in done.stderr
    assert (await api.task(task_id))["status"] == "awaiting_approval"


async def test_a_dead_api_exits_2_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["approve", "some-id"], ["reject", "some-id", "--reason", "x"], ["show", "some-id"]):
        done = await cli(*command, "--api", url)
        assert done.returncode == 2, command
        assert url in done.stderr and "cannot reach" in done.stderr


async def test_show_prints_json_and_a_readable_summary(api: Api):
    task_id = await api.waiting()
    raw = await cli("show", task_id, "--json", "--api", api.url)
    assert raw.returncode == 0, raw.stderr
    task = json.loads(raw.stdout)
    assert (task["id"], task["status"], task["stage"]) == (task_id, "awaiting_approval", "awaiting_approval")

    readable = await cli("show", task_id, "--api", api.url)
    assert readable.returncode == 0, readable.stderr
    assert "awaiting_approval" in readable.stdout
    assert task["draft"]["subject"] in readable.stdout
    assert "TASK_APPROVAL_REQUESTED" in readable.stdout


async def test_edited_draft_and_defaults_from_the_environment(api: Api, tmp_path: Path):
    task_id = await api.waiting()
    body_file = tmp_path / "body.txt"
    body_file.write_text("Dear ACME,\nplease pay.\n", encoding="utf-8")
    done = await cli("approve", task_id, "--subject", "Please pay INV-123", "--body-file", str(body_file),
                     env={"FOLLOWTHROUGH_API_URL": api.url, "FOLLOWTHROUGH_ACTOR": "carol"})
    assert done.returncode == 0, done.stderr

    task = await api.until(task_id, "completed")
    assert task["draft"]["subject"] == "Please pay INV-123"
    assert task["draft"]["body"].startswith("Dear ACME,\nplease pay.")
    approved = next(e for e in await api.events(task_id) if e["type"] == "TASK_APPROVED")
    assert approved["actor_id"] == "carol"


def test_where_and_who_default_sensibly(monkeypatch):
    monkeypatch.delenv("FOLLOWTHROUGH_API_URL", raising=False)
    monkeypatch.delenv("FOLLOWTHROUGH_ACTOR", raising=False)
    settings = Settings(api_host="0.0.0.0", api_port=8123)
    assert api_client.api_url(None, settings) == "http://127.0.0.1:8123"
    assert api_client.api_url("http://h:1/api/v1/", settings) == "http://h:1"
    monkeypatch.setenv("FOLLOWTHROUGH_API_URL", "http://env:2")
    assert api_client.api_url(None, settings) == "http://env:2"
    assert api_client.api_url("http://flag:3", settings) == "http://flag:3"

    monkeypatch.setattr(api_client.getpass, "getuser", lambda: "login")
    assert api_client.actor_id(None) == "login"
    monkeypatch.setenv("FOLLOWTHROUGH_ACTOR", "env-actor")
    assert api_client.actor_id(None) == "env-actor"
    assert api_client.actor_id("flag-actor") == "flag-actor"
