"""Encrypted payloads end to end: a task whose payload carries a canary secret runs through the
API; the canary is nowhere in what the Temporal server holds (`temporal workflow show` and
`describe`, search attributes, the UI summary and details) nor in the mirror's non-payload
columns, and is back after decoding through the API's codec endpoint."""

import asyncio
import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.converter import default
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from followthrough.api.main import create_app
from followthrough.db import api_keys
from followthrough.infra.binaries import find_binary
from followthrough.infra.codec import ENCODING, KEY_ID, CodecKey, EncryptionCodec, data_converter
from followthrough.domain.contracts import ApprovalDecision
from followthrough.db.mirror import TASKS, insert_created
from followthrough.infra.temporal_client import converter_for
from tests.conftest import TEST_CODEC, Stack, make_settings, served_api
from tests.helpers import eventually, invoice_payload, task_body, task_input, task_row, until_status
from followthrough.worker import build_worker

UI = "http://127.0.0.1:8233"


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def _readable(text: str) -> str:
    """The output as text plus every base64 string in it decoded: a plain JSON payload shows in
    `temporal ... --output json` as base64, so looking for the canary in the raw text alone proves nothing."""
    decoded = []
    for value in _strings(json.loads(text)):
        try:
            decoded.append(base64.b64decode(value, validate=True).decode("utf-8", errors="replace"))
        except ValueError:
            continue
    return "\n".join([text, *decoded])


def _encrypted_payloads(node: Any) -> list[dict]:
    """Every payload in a history or description (JSON) that the codec encrypted."""
    found = []
    if isinstance(node, dict):
        metadata = node.get("metadata")
        if isinstance(metadata, dict) and metadata.get("encoding") == base64.b64encode(ENCODING).decode():
            found.append({"metadata": metadata, "data": node.get("data", "")})
        for value in node.values():
            found += _encrypted_payloads(value)
    elif isinstance(node, list):
        for value in node:
            found += _encrypted_payloads(value)
    return found


async def _temporal(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(find_binary("temporal"), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_canary_in_the_payload_never_reaches_temporal_in_clear(dev_env: WorkflowEnvironment,
                                                                        sqlite_engine: AsyncEngine, tmp_path: Path):
    canary = f"CANARY-{uuid.uuid4().hex}"
    address = dev_env.client.service_client.config.target_host
    async with served_api(dev_env, sqlite_engine, tmp_path) as (url, _settings), \
            httpx.AsyncClient(base_url=url, timeout=10) as http:
        created = await http.post("/api/v1/tasks", json=task_body(
            mode="autonomous", payload=invoice_payload(customer_name=f"Jane {canary}",
                                                       customer_email="jane@example.com")))
        assert created.status_code == 201, created.text
        task_id, workflow_id = created.json()["id"], created.json()["workflow_id"]
        done = await eventually(lambda: http.get(f"/api/v1/tasks/{task_id}"),
                                lambda r: r.json()["status"] == "completed", timeout=60)
        assert canary in json.dumps(done.json()["draft"])  # the API, which holds the key, reads it

        where = ["--workflow-id", workflow_id, "--address", address, "--output", "json"]
        history = await _temporal("workflow", "show", *where)
        description = await _temporal("workflow", "describe", *where)
        for output in (history, description):
            assert canary not in _readable(output)
        assert "Jane" not in _readable(history)
        described = json.loads(description)
        assert canary not in json.dumps(described.get("executionConfig", {}))
        assert canary not in json.dumps(described.get("workflowExtendedInfo", {}))
        assert _encrypted_payloads(described), "the UI summary and details are payloads, encrypted too"

        row = (await task_row(sqlite_engine, task_id)).model_dump(exclude={"payload", "draft", "result"})
        assert canary not in json.dumps(row, default=str)

        # Decoding through the endpoint, as the Web UI does, gives the canary back.
        encrypted = _encrypted_payloads(json.loads(history))
        assert encrypted
        decoded = await http.post("/codec/decode", json={"payloads": encrypted},
                                  headers={"X-Namespace": "default"})
        assert decoded.status_code == 200, decoded.text
        assert canary in _readable(decoded.text)
        assert not _encrypted_payloads(decoded.json())

        # The CLI decodes through the same endpoint when given it.
        shown = await _temporal("workflow", "show", *where, "--codec-endpoint", f"{url}/codec")
        assert canary in _readable(shown) and not _encrypted_payloads(json.loads(shown))


# ---- decisions through Temporal: unencrypted payloads are refused ----------------------------------

@asynccontextmanager
async def _stack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                 **overrides: object) -> AsyncIterator[Stack]:
    """API and worker, the worker connected as `followthrough worker` connects: its converter from the
    settings (codec keys, FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT)."""
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path, **overrides)
    worker_client = Client(dev_env.client.service_client, namespace=dev_env.client.namespace,
                           data_converter=converter_for(settings))
    app = create_app(settings, temporal=dev_env.client)
    async with build_worker(worker_client, settings, engine), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver/api/v1") as http:
        yield Stack(settings, dev_env.client, engine, http)


def _plain(dev_env: WorkflowEnvironment) -> Client:
    """A client without the codec key: Temporal's default (plain JSON) data converter."""
    return Client(dev_env.client.service_client, namespace=dev_env.client.namespace, data_converter=default())


async def _history(handle) -> list:
    return [event async for event in handle.fetch_history_events()]


def _handled_last_signal(events: list) -> bool:
    """A workflow task completed after the last signal arrived: the worker has seen it."""
    signaled = [i for i, e in enumerate(events) if e.HasField("workflow_execution_signaled_event_attributes")]
    return bool(signaled) and any(e.HasField("workflow_task_completed_event_attributes")
                                  for e in events[signaled[-1]:])


async def _awaiting_alice(stack: Stack) -> tuple[str, str]:
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant,
                                                             approval={"approvers": ["alice"]}))
    assert created.status_code == 201, created.text
    await until_status(stack, created.json()["id"], "awaiting_approval")
    return created.json()["id"], created.json()["workflow_id"]


@pytest.mark.parametrize("accept_plaintext", [False, True], ids=["refused", "migration-window"])
async def test_a_plain_json_decision_moves_a_task_only_in_the_migration_window(
        dev_env: WorkflowEnvironment, sqlite_engine: AsyncEngine, tmp_path: Path, accept_plaintext: bool):
    """A client without the codec key signals and updates `approve` naming the task's own approver."""
    plain = _plain(dev_env)
    decision = ApprovalDecision(actor_id="alice", comment="sent in plain JSON")
    async with _stack(dev_env, sqlite_engine, tmp_path, codec_accept_plaintext=accept_plaintext) as stack:
        by_signal, signal_workflow = await _awaiting_alice(stack)
        by_update, update_workflow = await _awaiting_alice(stack)

        await plain.get_workflow_handle(signal_workflow).signal("approve", decision)
        update = plain.get_workflow_handle(update_workflow).execute_update("approve", decision, result_type=RawValue)
        if accept_plaintext:
            await update
            for task_id in (by_signal, by_update):
                await until_status(stack, task_id, "completed", timeout=30)
            return

        with pytest.raises(WorkflowUpdateFailedError):
            await update  # rejected: nothing of it is written to the history
        signal_history = await eventually(lambda: _history(dev_env.client.get_workflow_handle(signal_workflow)),
                                          _handled_last_signal, timeout=20)
        # The signal was dropped, not retried: the workflow task completed and nothing failed.
        assert not any(e.HasField("workflow_task_failed_event_attributes") for e in signal_history)
        for task_id in (by_signal, by_update):
            task = (await stack.http.get(f"/tasks/{task_id}")).json()
            assert task["status"] == "awaiting_approval", task
            approval = (await stack.http.get(f"/tasks/{task_id}/approval")).json()
            assert approval["decisions"] == [], approval
        # The task is intact: the approver decides through the API as always.
        for task_id in (by_signal, by_update):
            approved = await stack.http.post(f"/tasks/{task_id}/approve", json={"actor_id": "alice"},
                                             headers={"X-Actor-Id": "alice"})
            assert approved.status_code == 200, approved.text
            await until_status(stack, task_id, "completed", timeout=30)


async def test_the_temporal_cli_decides_only_through_the_codec_endpoint(dev_env: WorkflowEnvironment,
                                                                       sqlite_engine: AsyncEngine, tmp_path: Path):
    """`temporal workflow signal` as docs/security.md shows it: without --codec-endpoint its JSON is refused; with
    the endpoint and a codec-role key it approves."""
    address = dev_env.client.service_client.config.target_host
    async with served_api(dev_env, sqlite_engine, tmp_path, anonymous_access=False) as (url, _settings), \
            httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=10) as http:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        _row, submitter = await api_keys.create(sqlite_engine, tenant_id=tenant, actor_id="sam", name="s",
                                                roles=["submitter"])
        _row, operator = await api_keys.create(sqlite_engine, tenant_id="ops", actor_id="olga", name="o",
                                               roles=["codec"])
        auth = {"Authorization": f"Bearer {submitter}"}
        created = await http.post("/tasks", json=task_body(approval={"approvers": ["alice"]}), headers=auth)
        assert created.status_code == 201, created.text
        task_id, workflow_id = created.json()["id"], created.json()["workflow_id"]
        await eventually(lambda: http.get(f"/tasks/{task_id}", headers=auth),
                         lambda r: r.json()["status"] == "awaiting_approval", timeout=20)
        signal = ["workflow", "signal", "--workflow-id", workflow_id, "--address", address, "--name", "approve",
                  "--input", '{"actor_id": "alice", "comment": "from the CLI"}']

        await _temporal(*signal)
        await eventually(lambda: _history(dev_env.client.get_workflow_handle(workflow_id)), _handled_last_signal,
                         timeout=20)
        assert (await http.get(f"/tasks/{task_id}", headers=auth)).json()["status"] == "awaiting_approval"

        await _temporal(*signal, "--codec-endpoint", f"{url}/codec", "--codec-auth", f"Bearer {operator}")
        done = await eventually(lambda: http.get(f"/tasks/{task_id}", headers=auth),
                                lambda r: r.json()["status"] == "completed", timeout=30)
        assert done.json()["result"]["sent"] is True


async def test_a_plain_json_workflow_start_is_refused(dev_env: WorkflowEnvironment, sqlite_engine: AsyncEngine,
                                                      tmp_path: Path):
    """A run started without the codec (a task forged past the API) fails at once, naming why; it does not
    retry its first workflow task for ever."""
    async with _stack(dev_env, sqlite_engine, tmp_path) as stack:
        task = task_input(mode="autonomous", tenant_id=stack.tenant)
        await _plain(dev_env).start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                             task_queue=stack.settings.task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await dev_env.client.get_workflow_handle(f"task-{task.task_id}").result()
    assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.type == "UnencryptedPayload"
    assert "FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT" in str(failed.value.cause)


async def test_retrying_a_task_whose_run_was_started_in_clear_is_a_409(dev_env: WorkflowEnvironment,
                                                                       sqlite_engine: AsyncEngine, tmp_path: Path):
    """A task that failed during the migration window, its run started in clear: a retry reads that run's
    input, which the API's converter refuses; the answer says so, it is not a 500."""
    async with _stack(dev_env, sqlite_engine, tmp_path, codec_accept_plaintext=True) as stack:
        task = task_input(mode="autonomous", tenant_id=stack.tenant, payload=invoice_payload(customer_email="x"))
        async with sqlite_engine.begin() as conn:  # the row the API wrote when it started the run
            await insert_created(conn, task, f"task-{task.task_id}")
            # Written before the mirror kept a run's input: only the run's history has it.
            await conn.execute(update(TASKS).where(TASKS.c.id == task.task_id).values(run_input=None))
        await _plain(dev_env).start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                             task_queue=stack.settings.task_queue)
        await until_status(stack, task.task_id, "failed", timeout=30)
        retried = await stack.http.post(f"/tasks/{task.task_id}/retry")
    assert retried.status_code == 409, retried.text
    assert "unencrypted" in retried.json()["detail"] and "create a new task" in retried.json()["detail"]


async def test_workflows_started_before_encryption_run_in_the_migration_window(
        dev_env: WorkflowEnvironment, sqlite_engine: AsyncEngine, tmp_path: Path):
    """With FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT, a run started by a client without the codec (plain payloads)
    is finished by a worker with it."""
    async with _stack(dev_env, sqlite_engine, tmp_path, codec_accept_plaintext=True) as stack:
        task = task_input(mode="autonomous", tenant_id=f"t-{uuid.uuid4().hex[:8]}")
        await _plain(dev_env).start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                             task_queue=stack.settings.task_queue)
        handle = dev_env.client.get_workflow_handle(f"task-{task.task_id}")
        result = await handle.result()
    assert result["status"] == "completed"
    events = await _history(handle)
    started = events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == b"json/plain"  # the input stayed as it was written
    completed = events[-1].workflow_execution_completed_event_attributes.result.payloads[0]
    assert completed.metadata["encoding"] == ENCODING  # what the worker wrote since is encrypted


# ---- the endpoint: authentication, CORS, rotation, bad input ------------------------------------

def _app(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path, codec: EncryptionCodec | None = None,
         **overrides: object):
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path, temporal_ui_url=UI,
                             **overrides)
    client = dev_env.client if codec is None else Client(
        dev_env.client.service_client, namespace=dev_env.client.namespace, data_converter=data_converter(codec))
    return create_app(settings, temporal=client)


async def _post(app, path: str, body: Any, **headers: str) -> httpx.Response:
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        return await http.post(path, json=body, headers=headers)


def _wire(payload) -> dict:
    return {"metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
            "data": base64.b64encode(payload.data).decode()}


async def test_rotation_through_the_endpoint(dev_env, sqlite_engine: AsyncEngine, tmp_path: Path):
    key_a, key_b = CodecKey("a", os.urandom(32)), CodecKey("b", os.urandom(32))
    [old] = await EncryptionCodec([key_a]).encode(default().payload_converter.to_payloads(["before rotation"]))
    app = _app(dev_env, sqlite_engine, tmp_path, EncryptionCodec([key_b, key_a]))
    decoded = await _post(app, "/codec/decode", {"payloads": [_wire(old)]})
    assert decoded.status_code == 200, decoded.text
    assert base64.b64decode(decoded.json()["payloads"][0]["data"]) == b'"before rotation"'
    encoded = await _post(app, "/codec/encode", decoded.json())
    assert encoded.status_code == 200
    [new] = encoded.json()["payloads"]
    assert base64.b64decode(new["metadata"][KEY_ID]) == b"b"

    only_a = _app(dev_env, sqlite_engine, tmp_path, EncryptionCodec([key_a]))
    refused = await _post(only_a, "/codec/decode", encoded.json())
    assert refused.status_code == 422
    assert "codec key 'b'" in refused.json()["detail"] and "not configured" in refused.json()["detail"]


async def test_malformed_bodies_are_422(dev_env, sqlite_engine: AsyncEngine, tmp_path: Path):
    app = _app(dev_env, sqlite_engine, tmp_path)
    for body in ({"payloads": [{"metadata": {"encoding": "not base64!"}, "data": ""}]},
                 {"payloads": [{"metadata": {}, "data": "%%%"}]}, {"payloads": "no"}, {}):
        answer = await _post(app, "/codec/decode", body)
        assert answer.status_code == 422, (body, answer.text)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        answer = await http.post("/codec/decode", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 422


async def test_only_a_key_with_the_codec_role_decrypts_or_encrypts(dev_env, sqlite_engine: AsyncEngine,
                                                                    tmp_path: Path):
    """The codec keys are global: reading through them is an operator's privilege, not any viewer's (nor a
    tenant admin's)."""
    app = _app(dev_env, sqlite_engine, tmp_path, anonymous_access=False)
    [sealed] = await TEST_CODEC.encode(default().payload_converter.to_payloads(["x"]))
    body = {"payloads": [_wire(sealed)]}
    assert (await _post(app, "/codec/decode", body)).status_code == 401
    assert (await _post(app, "/codec/encode", body)).status_code == 401
    for role in ("viewer", "submitter", "approver", "admin"):
        _row, token = await api_keys.create(sqlite_engine, tenant_id="codec", actor_id=f"{role}-user", name=role,
                                            roles=[role])
        for path in ("/codec/decode", "/codec/encode"):
            refused = await _post(app, path, body, Authorization=f"Bearer {token}")
            assert refused.status_code == 403, (role, path, refused.text)
            assert "codec role" in refused.json()["detail"]
    _row, token = await api_keys.create(sqlite_engine, tenant_id="ops", actor_id="olga", name="o", roles=["codec"])
    decoded = await _post(app, "/codec/decode", body, Authorization=f"Bearer {token}")
    assert decoded.status_code == 200 and decoded.json() == {"payloads": [_wire(
        default().payload_converter.to_payloads(["x"])[0])]}
    encoded = await _post(app, "/codec/encode", decoded.json(), Authorization=f"Bearer {token}")
    assert encoded.status_code == 200 and encoded.json()["payloads"][0]["metadata"]["encoding"] == \
        base64.b64encode(ENCODING).decode()


async def test_cors_answers_only_the_temporal_ui_origin(dev_env, sqlite_engine: AsyncEngine, tmp_path: Path):
    app = _app(dev_env, sqlite_engine, tmp_path)
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-namespace,authorization"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        allowed = await http.options("/codec/decode", headers=preflight | {"Origin": UI})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == UI
        assert allowed.headers["access-control-allow-credentials"] == "true"
        for header in ("content-type", "x-namespace", "authorization"):
            assert header in allowed.headers["access-control-allow-headers"]

        refused = await http.options("/codec/decode", headers=preflight | {"Origin": "http://evil.example"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers

        body = {"payloads": []}
        posted = await http.post("/codec/decode", json=body, headers={"Origin": UI, "X-Namespace": "default"})
        assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == UI
        other = await http.post("/codec/decode", json=body, headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # The rest of the API gets no CORS from this.
        health = await http.options("/api/v1/healthz", headers=preflight | {"Origin": UI})
        assert "access-control-allow-origin" not in health.headers
