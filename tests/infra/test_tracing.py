"""Tracing (followthrough/infra/tracing.py): one trace from POST /tasks through the workflow, its activities and the
outbound call, with the API and the worker built as production builds them (create_app connecting its own
client, run_worker) against the dev server; spans go to an in-memory exporter through the module's seam."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from followthrough.activities.transports.email import TRANSPORT as EMAIL
from followthrough.api.main import create_app
from followthrough.infra import tracing
from followthrough.domain.activity_names import DRAFT, SEND
from followthrough.config.settings import Settings
from tests.conftest import TEST_CODEC_ENV, TEST_CONVERTER, make_settings
from tests.helpers import free_port
from tests.activities.test_email_transport import _ctx as smtp_ctx
from tests.activities.test_email_transport import _draft as email_draft
from tests.activities.test_email_transport import _settings as smtp_settings
from tests.activities.test_email_transport import start_smtp
from tests.receivers import Received, Receiver
from followthrough.worker import SANDBOX, run_worker
from followthrough.workflows.all import ALL_WORKFLOWS

@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # exported as each span ends
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)


@asynccontextmanager
async def production_stack(settings: Settings) -> AsyncIterator[str]:
    """run_worker and create_app's own Temporal client (connect(), so tracing's interceptor when it is on) and
    engine, the API under uvicorn on 127.0.0.1; yields the API's base URL."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not serving.done() and not worker.done(), "the API or the worker stopped at start"
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.should_exit = True
        stop.set()
        await asyncio.wait_for(asyncio.gather(serving, worker), timeout=30)


async def send_one_task(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                        **overrides: object) -> tuple[dict, Received]:
    """An autonomous http_request task to a receiver on 127.0.0.1, POSTed to a production-built stack and run to
    its end; what POST /tasks answered and what the receiver got."""
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path,
                             temporal_address=dev_env.client.service_client.config.target_host,
                             temporal_namespace=dev_env.client.namespace, **overrides)
    with Receiver() as receiver:
        async with production_stack(settings) as api, httpx.AsyncClient(base_url=api) as http:
            response = await http.post("/tasks", json={
                "type": "http_request", "tenant_id": f"t-{uuid.uuid4().hex[:10]}", "mode": "autonomous",
                "subject_ref_id": uuid.uuid4().hex,
                "payload": {"method": "POST", "url": f"{receiver.url}/notes", "json": {"text": "traced"}}})
            assert response.status_code == 201, response.text
            created = response.json()
            # The dev server's own client (no tracing): waiting adds no span.
            await dev_env.client.get_workflow_handle(created["workflow_id"]).result()
        [received] = receiver.requests
    return created, received


# A task through the dev server, a real worker and API and a receiver: the only way to see the trace cross
# every process boundary it crosses in production.
async def test_one_trace_runs_from_post_tasks_through_the_workflow_to_the_receiver(
        dev_env, sqlite_engine, tmp_path, spans):
    created, received = await send_one_task(dev_env, sqlite_engine, tmp_path, tracing="otlp")

    finished = spans.get_finished_spans()
    [post] = [s for s in finished if s.kind == SpanKind.SERVER and s.name == "POST /api/v1/tasks"]
    trace_id = post.context.trace_id
    ours = {s.context.span_id for s in finished if s.context.trace_id == trace_id}
    # The mirror's group commit writes for many tasks in one transaction: a trace of its own, linked from the
    # recording activities of this one. Every other span is in the request's trace.
    groups = {s.context.trace_id for s in finished if s.name == "mirror group write" and s.parent is None
              and s.links and all(link.context.span_id in ours for link in s.links)}
    assert groups
    assert [(s.name, s.context.trace_id) for s in finished if s.context.trace_id not in groups | {trace_id}] == []

    def one(name: str) -> ReadableSpan:
        [span] = [s for s in finished if s.name == name]
        return span

    start, run = one("StartWorkflow:TaskWorkflow"), one("RunWorkflow:TaskWorkflow")
    assert start.attributes["temporalWorkflowID"] == created["workflow_id"]
    assert post in _ancestors(start, finished)
    assert _parent(run, finished) is start
    for activity in (DRAFT, SEND):
        scheduled, ran = one(f"StartActivity:{activity}"), one(f"RunActivity:{activity}")
        # The SDK's interceptor starts a run's activities under the workflow's start, beside its RunWorkflow.
        assert _parent(scheduled, finished) is start and _parent(ran, finished) is scheduled
    [outbound] = [s for s in finished if s.kind == SpanKind.CLIENT
                  and str(s.attributes.get("url.full", s.attributes.get("http.url", ""))).endswith("/notes")]
    assert _parent(outbound, finished) is one(f"RunActivity:{SEND}")
    # The mirror's SQL is in the trace too: the API's insert of the task, under the request.
    assert any(s.attributes.get("db.system") == "sqlite" and post in _ancestors(s, finished) for s in finished)

    # The receiver can continue the trace: the outbound span is its parent.
    version, traced, parent, _flags = received.headers["traceparent"].split("-")
    assert (version, int(traced, 16), int(parent, 16)) == ("00", trace_id, outbound.context.span_id)

    # The run's history (trace context in its headers) replays with tracing off and on alike.
    history = await dev_env.client.get_workflow_handle(created["workflow_id"]).fetch_history()
    for interceptors in ([], [TracingInterceptor()]):
        await Replayer(workflows=ALL_WORKFLOWS, data_converter=TEST_CONVERTER, interceptors=interceptors,
                       workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX)).replay_workflow(history)


async def test_with_tracing_off_nothing_is_traced_or_sent(dev_env, sqlite_engine, tmp_path, spans):
    # The default, even with a tracer provider at hand in the process.
    _created, received = await send_one_task(dev_env, sqlite_engine, tmp_path)
    assert spans.get_finished_spans() == ()
    assert "traceparent" not in received.headers


def test_the_interceptor_and_the_instrumentation_are_there_only_with_tracing_on(tmp_path, spans):
    off, on = Settings(data_dir=tmp_path), Settings(data_dir=tmp_path, tracing="OTLP")
    assert off.tracing == "off" and on.tracing == "otlp"
    assert tracing.interceptors(off) == []
    assert [type(i) for i in tracing.interceptors(on)] == [TracingInterceptor]
    assert not getattr(create_app(off), "_is_instrumented_by_opentelemetry", False)
    assert create_app(on)._is_instrumented_by_opentelemetry


async def test_an_smtp_send_is_a_client_span_under_the_caller(sqlite_engine, spans):
    controller, server = start_smtp()
    try:
        settings = smtp_settings(server, tracing="otlp")
        with tracing.configure(settings).get_tracer("test").start_as_current_span("RunActivity:send_task") as caller:
            result = await EMAIL.deliver(email_draft("a@example.com"), smtp_ctx(sqlite_engine, settings))
    finally:
        controller.stop()
    assert result["status"] == "sent" and len(server.inbox.messages) == 1
    [smtp] = [s for s in spans.get_finished_spans() if s.name == "smtp send"]
    assert (smtp.kind, smtp.parent.span_id) == (SpanKind.CLIENT, caller.get_span_context().span_id)
    assert dict(smtp.attributes) == {"server.address": "127.0.0.1", "server.port": server.port}


# The production exporter, in processes of their own: the SDK's OTLP/HTTP exporter reads the standard variables.
EXPORTING = """
from followthrough.infra import tracing
from followthrough.config.settings import Settings

settings = Settings()  # FOLLOWTHROUGH_TRACING from the environment
tracing.configure(settings, "followthrough-worker")
with tracing.client_span(settings, "smtp send", **{"server.port": 2525}):
    pass
"""  # and at exit the provider flushes what it holds


def test_spans_go_to_the_otlp_endpoint_the_environment_names_under_the_service_name(tmp_path):
    with Receiver() as collector:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        base = clean | {"FOLLOWTHROUGH_TRACING": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        runs = [subprocess.Popen([sys.executable, "-c", EXPORTING], env=env, cwd=tmp_path, stderr=subprocess.PIPE,
                                 text=True) for env in (base, base | {"OTEL_SERVICE_NAME": "billing-worker"})]
        for run in runs:
            _out, stderr = run.communicate(timeout=60)
            assert run.returncode == 0, stderr
        exported = list(collector.requests)
    assert {(r.method, r.path, r.headers["content-type"]) for r in exported} == {
        ("POST", "/v1/traces", "application/x-protobuf")}
    services = []
    for request in exported:
        message = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in message.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
            services.append((attributes["service.name"], names))
    assert sorted(services) == [("billing-worker", ["smtp send"]), ("followthrough-worker", ["smtp send"])]


def test_tracing_on_without_its_extra_stops_the_api_the_worker_and_a_command_at_start(tmp_path):
    # The extra is installed here (the test extra holds it). FastAPI brings the OpenTelemetry API alone, not the
    # SDK: an opentelemetry.sdk that cannot be imported, first on the path, stands for a deployment without it.
    shadow = tmp_path / "shadow" / "opentelemetry" / "sdk"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'opentelemetry.sdk'\", "
                                        "name='opentelemetry.sdk')\n")
    env = os.environ | TEST_CODEC_ENV | {"PYTHONPATH": str(tmp_path / "shadow"), "FOLLOWTHROUGH_TRACING": "otlp",
                                         "FOLLOWTHROUGH_DATA_DIR": str(tmp_path)}
    # The commands as an operator runs them, each its own process (both at once: it is their start that counts).
    started = {command: subprocess.Popen([sys.executable, "-m", "followthrough.cli", command], env=env,
                                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for command in ("worker", "api", "reconcile")}
    for command, process in started.items():
        try:
            _out, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        assert (process.returncode, stderr.strip().splitlines()) == (2, [
            f"followthrough {command}: FOLLOWTHROUGH_TRACING=otlp needs the 'tracing' extra, not installed here "
            "(No module named 'opentelemetry.sdk'): pip install 'followthrough[tracing]', "
            "or set FOLLOWTHROUGH_TRACING=off (docs/observability.md, \"Tracing\")"])


def _parent(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def _ancestors(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    found = []
    while (span := _parent(span, spans)) is not None:
        found.append(span)
    return found
