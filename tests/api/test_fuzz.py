"""Schemathesis against the API's own OpenAPI schema: every operation, with bounded, derandomised examples,
over real HTTP to a running stack (uvicorn, a worker on the dev server, a SQLite mirror of its own). No answer may be
a server error, and every answer must have a status code the schema declares and a body matching it.

The HTML inbox (/ui) is not in the schema, so it is not fuzzed here: its forms are covered by the inbox
tests; nor are the live streams (see STREAMS). Anonymous access, so no key is needed; the credentials headers are left out of generation, since a
random key is only ever a 401 and would hide every other path.
"""

import asyncio
import uuid
from pathlib import Path

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.api.main import create_app
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from tests.conftest import make_settings, served_api
from tests.helpers import add_task_secret, task_body

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
CREDENTIALS = {"authorization", "x-api-key"}


# The live streams never end on their own (the event stream) or not until their task does, and the fuzzer
# reads every answer to its end: they are left out here and covered by tests/api/test_streams.py.
STREAMS = {"/api/v1/events/stream", "/api/v1/tasks/{task_id}/stream"}


def api_schema(tmp_path: Path) -> schemathesis.BaseSchema:
    document = create_app(make_settings("sqlite+aiosqlite://", tmp_path)).openapi()
    document["paths"] = {path: item for path, item in document["paths"].items() if path not in STREAMS}
    for path in document["paths"].values():
        for operation in path.values():
            operation["parameters"] = [p for p in operation.get("parameters", [])
                                       if not (p["in"] == "header" and p["name"].lower() in CREDENTIALS)]
    return schemathesis.openapi.from_dict(document)


def fuzz(schema: schemathesis.BaseSchema, base_url: str, known: dict[str, str]) -> list[str]:
    """Run every operation in both generation modes, and once more with its path naming resources that
    exist (``known``: a task, a definition, a subscription), so the fuzzing reaches past the 404s."""
    failures: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p["name"] for p in operation.definition.raw.get("parameters", []) if p["in"] == "path"}
        rounds = [(mode, examples, None) for mode, examples in EXAMPLES.items()]
        if names and names <= known.keys():
            rounds.append((GenerationMode.POSITIVE, EXAMPLES[GenerationMode.POSITIVE],
                           {name: known[name] for name in names}))
        for mode, examples, pinned in rounds:
            @hypothesis_settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=base_url, session=session, timeout=30)
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, or only free-form strings)
                continue
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001 - all failures are reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                                f"{str(err).strip()[:1500]}")
    return failures


async def test_no_operation_answers_a_server_error_or_off_schema(dev_env: WorkflowEnvironment, tmp_path: Path):
    # A mirror of its own: the shared one holds other tests' tasks, whose workers are gone, and a fuzzed
    # bulk approval would wait on Temporal for them to answer.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}")
    await upgrade(engine)
    try:
        await fuzz_stack(dev_env, engine, tmp_path)
    finally:
        await engine.dispose()


async def fuzz_stack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> None:
    schema = api_schema(tmp_path)
    async with served_api(dev_env, engine, tmp_path) as (base_url, settings):
        add_task_secret(settings, "default", "s", "whsec-fuzz")  # the subscription's signing secret
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1") as http:
            task = await http.post("/tasks", json=task_body())
            definition = await http.post("/definitions", json={
                "name": f"fuzz-{uuid.uuid4().hex[:6]}", "type": "email", "cron": "0 9 * * *",
                "payload": {"to": ["a@b.example"], "subject": "Hello", "body": "Hi"}})
            subscription = await http.post("/subscriptions", json={"url": "http://hooks.example/x", "secret": "s"})
            assert {task.status_code, definition.status_code, subscription.status_code} == {201}, \
                (task.text, definition.text, subscription.text)
        known = {"task_id": task.json()["id"], "definition_id": definition.json()["id"],
                 "subscription_id": subscription.json()["id"]}
        failures = await asyncio.to_thread(fuzz, schema, base_url, known)
    assert not failures, "\n\n".join(failures)
