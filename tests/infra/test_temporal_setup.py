"""`followthrough temporal setup` against a dev server started without the search attributes (as an
existing cluster would be): it registers them, a second run finds them all, and a name registered with
another type is a clear error rather than a half-done setup."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from followthrough.domain import search_attributes
from followthrough.infra.binaries import find_binary
from tests.conftest import TEST_CODEC_ENV

NAMES = sorted(key.name for key in search_attributes.ALL)


@pytest_asyncio.fixture
async def bare_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=find_binary("temporal"),
                                                dev_server_extra_args=["--namespace", "clashing"])
    yield env
    await env.shutdown()


def setup(address: str, namespace: str = "default") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "followthrough.cli", "temporal", "setup", "--address", address,
                           "--namespace", namespace], capture_output=True, text=True, timeout=60,
                          env=os.environ | TEST_CODEC_ENV)


def test_setup_needs_the_codec_keys_as_the_worker_does():
    refused = subprocess.run([sys.executable, "-m", "followthrough.cli", "temporal", "setup", "--address",
                              "127.0.0.1:1"], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "FOLLOWTHROUGH_CODEC_KEYS"}
                             | {"FOLLOWTHROUGH_CODEC": "on"})
    assert refused.returncode == 2 and "FOLLOWTHROUGH_CODEC_KEYS" in refused.stderr


async def custom(env: WorkflowEnvironment, namespace: str = "default") -> dict[str, int]:
    listed = await env.client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return dict(listed.custom_attributes)


async def test_setup_registers_the_attributes_once(bare_env: WorkflowEnvironment):
    address = bare_env.client.service_client.config.target_host
    assert not set(NAMES) & set(await custom(bare_env))

    first = setup(address)
    assert first.returncode == 0, first.stderr
    assert f"added {', '.join(NAMES)}; already registered none" in first.stdout
    registered = await custom(bare_env)
    assert {name: registered.get(name) for name in NAMES} == {
        name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in NAMES}

    again = setup(address)
    assert again.returncode == 0, again.stderr
    assert "added none; already registered " in again.stdout
    assert sorted(again.stdout.strip().rsplit("already registered ", 1)[1].split(", ")) == NAMES


async def test_setup_refuses_an_attribute_of_another_type(bare_env: WorkflowEnvironment):
    await bare_env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace="clashing", search_attributes={"TaskType": IndexedValueType.INDEXED_VALUE_TYPE_INT}))
    refused = setup(bare_env.client.service_client.config.target_host, "clashing")
    assert refused.returncode == 1
    assert "search attribute TaskType is registered as Int, not Keyword" in refused.stderr


def test_setup_without_a_server_says_so():
    refused = setup("127.0.0.1:1")
    assert refused.returncode == 2
    assert refused.stderr.startswith("followthrough temporal setup: cannot reach Temporal at 127.0.0.1:1 "
                                     "(namespace default, TLS off): Connection refused;")


async def test_a_task_on_a_cluster_not_set_up_is_a_503_that_says_what_to_run(bare_env: WorkflowEnvironment,
                                                                             sqlite_engine, tmp_path):
    from tests.conftest import running_stack
    from tests.helpers import task_body

    async with running_stack(bare_env, sqlite_engine, tmp_path) as stack:
        refused = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
        assert refused.status_code == 503 and "followthrough temporal setup" in refused.json()["detail"]
        assert refused.headers["Retry-After"] == "30"
        listed = (await stack.http.get(f"/tasks?tenant_id={stack.tenant}")).json()
        assert listed["total"] == 0  # nothing half-made
