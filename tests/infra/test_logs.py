"""Structured logs: JSON lines that name the task, tenant, workflow, run and activity a record concerns, from
an activity (through the worker's interceptor), a workflow (Temporal's workflow.logger) and the API."""

import io
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from followthrough.infra import logs
from followthrough.infra.logs import ActivityLogContext, JsonFormatter, TextFormatter
from tests.conftest import running_stack
from tests.helpers import task_body, until_status

LOGGER = "followthrough.tests.logs"


@dataclass
class _Work:
    task_id: str
    tenant_id: str


@activity.defn(name="log-test-activity")
async def _logging_activity(work: _Work) -> str:
    logging.getLogger(LOGGER).info("working on it")  # a plain logger: the fields come from the context
    return "done"


@workflow.defn(name="LogTestWorkflow")
class _LoggingWorkflow:
    @workflow.run
    async def run(self, work: _Work) -> str:
        workflow.logger.info("starting", extra={"task_id": work.task_id, "tenant_id": work.tenant_id})
        return await workflow.execute_activity(_logging_activity, work, start_to_close_timeout=timedelta(seconds=10))


class _Capture:
    """Records of the given loggers formatted as JSON lines, parsed."""

    def __init__(self, *names: str) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.loggers = [logging.getLogger(n) for n in names]

    def __enter__(self) -> "_Capture":
        for logger in self.loggers:
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger in self.loggers:
            logger.removeHandler(self.handler)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


async def test_activity_and_workflow_records_name_their_task(dev_env):
    work = _Work(task_id=str(uuid.uuid4()), tenant_id="acme")
    queue = f"tq-{uuid.uuid4()}"
    workflow_id = f"log-test-{uuid.uuid4()}"
    with _Capture(LOGGER, "temporalio.workflow") as capture:
        async with Worker(dev_env.client, task_queue=queue, workflows=[_LoggingWorkflow],
                          activities=[_logging_activity], interceptors=[ActivityLogContext()],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await dev_env.client.start_workflow(_LoggingWorkflow.run, work, id=workflow_id, task_queue=queue)
            assert await handle.result() == "done"
    lines = capture.lines()
    from_activity = next(line for line in lines if line["message"] == "working on it")
    assert from_activity["task_id"] == work.task_id and from_activity["tenant_id"] == "acme"
    assert from_activity["workflow_id"] == workflow_id and from_activity["run_id"] == handle.result_run_id
    assert from_activity["activity"] == "log-test-activity"
    assert from_activity["level"] == "INFO" and from_activity["logger"] == LOGGER and from_activity["ts"]
    from_workflow = next(line for line in lines if line["message"].startswith("starting"))
    assert from_workflow["workflow_id"] == workflow_id and from_workflow["task_id"] == work.task_id
    assert from_workflow["run_id"] == handle.result_run_id and from_workflow["tenant_id"] == "acme"


async def test_api_logs_creation_and_decisions_with_task_and_tenant(dev_env, sqlite_engine, tmp_path: Path):
    with _Capture("followthrough.api") as capture:
        async with running_stack(dev_env, sqlite_engine, tmp_path) as stack:
            created = (await stack.http.post("/tasks", json=task_body(tenant_id="acme"))).json()
            await until_status(stack, created["id"], "awaiting_approval")
            assert (await stack.http.post(f"/tasks/{created['id']}/cancel", json={},
                                          headers={"X-Actor-Id": "alice"})).status_code == 200
    mine = [line for line in capture.lines() if line.get("task_id") == created["id"]]
    assert [line["message"].split(":")[0] for line in mine] == [f"task {created['id']} created", f"task {created['id']}"]
    assert all(line["tenant_id"] == "acme" and line["workflow_id"] == created["workflow_id"] for line in mine)
    assert "cancel by alice" in mine[1]["message"]


def test_text_format_and_exceptions():
    record = logging.LogRecord("followthrough.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    record.task_id, record.tenant_id = "t-1", "acme"
    assert TextFormatter().format(record).endswith("WARNING followthrough.x hello there [task_id=t-1 tenant_id=acme]")
    try:
        raise ValueError("broken")
    except ValueError:
        import sys
        failed = logging.LogRecord("followthrough.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(failed))
    assert line["message"] == "failed" and "ValueError: broken" in line["exc"] and "task_id" not in line


def test_configure_puts_one_handler_on_the_root_logger():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("json", "WARNING")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
        logs.configure("text", "INFO")
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        workflow.logger.workflow_info_on_message = True
        activity.logger.activity_info_on_message = True


async def test_access_log_never_holds_a_link_token_or_a_key_in_a_url(dev_env, sqlite_engine, tmp_path: Path):
    """uvicorn's access log, as `followthrough api` writes it: an approval link's token (the credential that
    decides) and a key sent in a query string are redacted from the logged path."""
    import asyncio

    import httpx
    import uvicorn

    from followthrough.api.main import create_app
    from tests.conftest import make_settings
    from tests.helpers import free_port

    settings = make_settings(sqlite_engine.url.render_as_string(hide_password=False), tmp_path)
    port = free_port()
    # The default log config, as a plain `uvicorn followthrough.api.main:app` would have it, with the access log on.
    server = uvicorn.Server(uvicorn.Config(create_app(settings, temporal=dev_env.client), host="127.0.0.1",
                                           port=port, log_level="info"))
    token = "eyJ0YXNrIjoiYWJjIn0.c2lnbmF0dXJlLXRoYXQtZGVjaWRlcw"
    with _Capture("uvicorn.access") as capture:
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:
                    await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await http.get(f"/api/v1/approval-links/{token}")
                await http.post(f"/api/v1/approval-links/{token}?x=1", data={"comment": "ok"})
                await http.get("/api/v1/tasks", params={"api_key": "ftk_abc_s3cr3t", "status": "pending"})
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=30)
    logged = "\n".join(line["message"] for line in capture.lines())
    assert "/api/v1/approval-links/[redacted]" in logged and "/api/v1/approval-links/[redacted]?x=1" in logged
    assert "api_key=[redacted]" in logged and "status=pending" in logged
    assert token not in logged and "s3cr3t" not in logged
