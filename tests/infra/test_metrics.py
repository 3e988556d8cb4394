"""Metrics: the API's requests at /metrics by route template, the task counters and approval wait counted once
by the mirror writer, and the worker's two endpoints (Temporal SDK metrics, task metrics) on their ports."""

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send
from temporalio.testing import WorkflowEnvironment

from followthrough.api.metrics import RequestMetrics, route_template
from followthrough.infra import metrics
from followthrough.domain.contracts import MirrorBatch, MirrorEvent, TaskChanges
from followthrough.db.mirror import record_batch
from tests.conftest import TEST_CODEC_ENV, make_settings, running_stack
from tests.helpers import free_port, task_body, task_input, until_status
from followthrough.worker import run_worker


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(registry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# ---- the API ------------------------------------------------------------------

async def test_api_metrics_count_requests_by_route_template(dev_env, sqlite_engine, tmp_path: Path):
    route = "/api/v1/tasks/{task_id}"
    before_ok = value(metrics.API, "followthrough_api_requests_total", method="GET", route=route, status="2xx")
    before_missing = value(metrics.API, "followthrough_api_requests_total", method="GET", route=route, status="4xx")
    async with running_stack(dev_env, sqlite_engine, tmp_path) as stack:
        created = (await stack.http.post("/tasks", json=task_body())).json()
        assert (await stack.http.get(f"/tasks/{created['id']}")).status_code == 200
        assert (await stack.http.get(f"/tasks/{created['id']}")).status_code == 200
        assert (await stack.http.get(f"/tasks/{uuid.uuid4()}")).status_code == 404
        assert (await stack.http.get("/no-such-thing")).status_code == 404
        answer = await stack.http.get("http://testserver/metrics")  # at the root, no key, no X-Actor-Id
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        schema = (await stack.http.get("http://testserver/openapi.json")).json()
        await stack.client.get_workflow_handle(created["workflow_id"]).terminate()
    scraped = samples(answer.text)
    ok = scraped[("followthrough_api_requests_total",
                  frozenset({"method": "GET", "route": route, "status": "2xx"}.items()))]
    missing = scraped[("followthrough_api_requests_total",
                       frozenset({"method": "GET", "route": route, "status": "4xx"}.items()))]
    assert ok - before_ok == 2 and missing - before_missing == 1
    assert scraped[("followthrough_api_requests_total",
                    frozenset({"method": "POST", "route": "/api/v1/tasks", "status": "2xx"}.items()))] >= 1
    assert any(name == "followthrough_api_requests_total" and dict(labels)["route"] == "<unmatched>"
               for name, labels in scraped)
    assert scraped[("followthrough_api_request_duration_seconds_count",
                    frozenset({"method": "GET", "route": route}.items()))] >= 3
    assert not any(created["id"] in v for _, labels in scraped for _, v in labels)  # no ids in labels
    assert "/metrics" not in schema["paths"]
    assert "process_cpu_seconds_total" in answer.text


async def test_metrics_can_be_turned_off(dev_env, sqlite_engine, tmp_path: Path):
    async with running_stack(dev_env, sqlite_engine, tmp_path, metrics_enabled=False) as stack:
        assert (await stack.http.get("http://testserver/metrics")).status_code == 404


async def test_a_request_that_fails_without_an_answer_is_a_server_error():
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    before = value(metrics.API, "followthrough_api_request_errors_total", method="GET", route="<unmatched>")
    transport = httpx.ASGITransport(app=RequestMetrics(broken), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/anything")).status_code == 500
    assert value(metrics.API, "followthrough_api_request_errors_total", method="GET", route="<unmatched>") \
        == before + 1
    assert value(metrics.API, "followthrough_api_requests_total", method="GET", route="<unmatched>",
                 status="5xx") >= 1


# ---- task metrics ---------------------------------------------------------------

async def test_tasks_finished_and_approval_wait_are_counted_once(dev_env, engine, tmp_path: Path):
    port = free_port()
    stop = metrics.serve(f"127.0.0.1:{port}", metrics.TASKS)
    kind = "invoice_follow_up"
    labels = {"completed": {"type": kind, "status": "completed"}, "rejected": {"type": kind, "status": "rejected"}}
    finished_before = {k: value(metrics.TASKS, "followthrough_tasks_finished_total", **v) for k, v in labels.items()}
    waits_before = {o: value(metrics.TASKS, "followthrough_approval_wait_seconds_count", type=kind, outcome=o)
                    for o in ("approved", "rejected")}
    try:
        async with running_stack(dev_env, engine, tmp_path) as stack:
            approved = (await stack.http.post("/tasks", json=task_body())).json()["id"]
            rejected = (await stack.http.post("/tasks", json=task_body())).json()["id"]
            for task_id in (approved, rejected):
                await until_status(stack, task_id, "awaiting_approval")
            await asyncio.sleep(0.3)  # a wait the histogram can see
            assert (await stack.http.post(f"/tasks/{approved}/approve", json={},
                                          headers={"X-Actor-Id": "alice"})).status_code == 200
            assert (await stack.http.post(f"/tasks/{rejected}/reject", json={"reason": "no"},
                                          headers={"X-Actor-Id": "bob"})).status_code == 200
            await until_status(stack, approved, "completed")
            await until_status(stack, rejected, "rejected")
        async with httpx.AsyncClient() as http:
            scraped = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
    finally:
        stop()
    for outcome, key in (("completed", "completed"), ("rejected", "rejected")):
        now = scraped[("followthrough_tasks_finished_total", frozenset(labels[key].items()))]
        assert now - finished_before[key] == 1, outcome
    for outcome in ("approved", "rejected"):
        key = ("followthrough_approval_wait_seconds_count", frozenset({"type": kind, "outcome": outcome}.items()))
        assert scraped[key] - waits_before[outcome] == 1, outcome
        total = scraped[("followthrough_approval_wait_seconds_sum", key[1])]
        assert total >= 0.3
    assert "followthrough_api_requests_total" not in "".join(name for name, _ in scraped)  # a registry each


async def test_a_rewritten_batch_counts_nothing_again(engine):
    task = task_input(type="webhook")
    run = uuid.uuid4().hex
    requested = MirrorEvent(id=f"{run}:1", task_id=task.task_id, seq=1, type="TASK_APPROVAL_REQUESTED",
                            occurred_at=task.created_at, new_status="awaiting_approval",
                            changes=TaskChanges(status="awaiting_approval"))
    expired = MirrorEvent(id=f"{run}:2", task_id=task.task_id, seq=2, type="TASK_EXPIRED",
                          occurred_at=task.created_at + timedelta(hours=2), new_status="expired",
                          data={"approval_id": f"{run}:1"}, changes=TaskChanges(status="expired"))
    batch = MirrorBatch(task_id=task.task_id, task=task, workflow_id=f"task-{task.task_id}",
                        events=[requested, expired], tenant_id=task.tenant_id)
    finished = ("followthrough_tasks_finished_total", {"type": "webhook", "status": "expired"})
    waited = ("followthrough_approval_wait_seconds_sum", {"type": "webhook", "outcome": "expired"})
    before = [value(metrics.TASKS, name, **labels) for name, labels in (finished, waited)]
    for _ in range(3):
        await record_batch(engine, batch)
    after = [value(metrics.TASKS, name, **labels) for name, labels in (finished, waited)]
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 7200


# ---- the worker process's endpoints -----------------------------------------------

async def test_worker_serves_sdk_and_task_metrics(dev_env: WorkflowEnvironment, sqlite_engine, tmp_path: Path,
                                                  monkeypatch):
    for name, secret in TEST_CODEC_ENV.items():
        monkeypatch.setenv(name, secret)
    sdk_port, app_port = free_port(), free_port()
    settings = make_settings(sqlite_engine.url.render_as_string(), tmp_path,
                             temporal_address=dev_env.client.service_client.config.target_host,
                             worker_metrics_address=f"127.0.0.1:{sdk_port}",
                             worker_app_metrics_address=f"127.0.0.1:{app_port}")
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, stop))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            async def scrape(port: int) -> str:
                async with asyncio.timeout(20):
                    while True:
                        assert not running.done(), running
                        try:
                            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
                            if answer.status_code == 200 and answer.text.strip():
                                return answer.text
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.2)

            sdk = await scrape(sdk_port)
            while "temporal_" not in sdk:  # the first polls report within moments
                await asyncio.sleep(0.2)
                sdk = await scrape(sdk_port)
            app = await scrape(app_port)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=30)
    assert any(line.startswith("temporal_") for line in sdk.splitlines())
    assert "followthrough_tasks_finished" in app and "followthrough_approval_wait_seconds" in app
    async with httpx.AsyncClient() as http:  # the task metrics' server stopped with the worker
        try:
            await http.get(f"http://127.0.0.1:{app_port}/metrics", timeout=2)
            raise AssertionError("the task metrics endpoint still answers")
        except httpx.TransportError:
            pass


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


@pytest.mark.parametrize("template, path, params, label", [
    ("/tasks/{task_id}", "/api/v1/tasks/abc", {"task_id": "abc"}, "/api/v1/tasks/{task_id}"),
    ("/pause", "/api/v1/definitions/d1/schedule/pause", {"definition_id": "d1"},
     "/api/v1/definitions/{definition_id}/schedule/pause"),
    ("", "/api/v1/definitions/d1/schedule", {"definition_id": "d1"}, "/api/v1/definitions/{definition_id}/schedule"),
    ("/metrics", "/metrics", {}, "/metrics"),
    (None, "/api/v1/tasks/abc/nothing", {}, "<unmatched>"),
])
def test_route_labels_are_templates(template, path, params, label):
    scope = {"path": path, "path_params": params} | ({"route": _Route(template)} if template is not None else {})
    assert route_template(scope) == label
