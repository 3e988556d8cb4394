"""Determinism guard: every saved history must replay on today's workflow code.

A change that alters the commands a workflow issues for an existing history
fails here; guard such changes with ``workflow.patched`` (see docs/development.md, "Changing workflow code safely").
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from followthrough.infra.codec import EncryptionCodec, data_converter
from tests.conftest import TEST_CODEC_KEY
from tests.workflows.unpatched_change import UnpatchedChange
from followthrough.worker import SANDBOX
from followthrough.workflows.all import ALL_WORKFLOWS

# The histories were recorded in clear, before payloads were encrypted: a worker in the migration window
# (FOLLOWTHROUGH_CODEC_ACCEPT_PLAINTEXT) reads them; one with the default refuses them.
REPLAY_CONVERTER = data_converter(EncryptionCodec([TEST_CODEC_KEY], accept_plaintext=True))
# One folder per released behaviour: every one must keep replaying.
HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json"))


def _history(path: Path) -> WorkflowHistory:
    # The id each run had when it was recorded (make_histories names them so): subtask ids derive from it.
    return WorkflowHistory.from_json(f"history-{path.stem}", path.read_text())


def test_histories_are_present():
    assert len(HISTORIES) >= 8 + 11 + 13 + 17 + 22 + 22 + 25 + 1 + 8 + 3 + 3 + 40  # v1 … v12


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_saved_history_replays(path: Path):
    await Replayer(workflows=ALL_WORKFLOWS, data_converter=REPLAY_CONVERTER,
                   workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX)).replay_workflow(_history(path))


async def test_saved_histories_replay_with_tracing_on():
    # The tracing interceptor (FOLLOWTHROUGH_TRACING=otlp) adds headers only: the commands stay the same. One
    # replayer for every history keeps this quick.
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=REPLAY_CONVERTER, interceptors=[TracingInterceptor()],
                        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX))

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for path in HISTORIES:
            yield _history(path)

    async with replayer.workflow_replay_iterator(histories()) as replayed:
        results = [(result.history.workflow_id, result.replay_failure) async for result in replayed]
    assert len(results) == len(HISTORIES) and [(id_, repr(error)) for id_, error in results if error] == []


@pytest.mark.parametrize("name", ["autonomous_completed", "review_approved_with_edit"])
async def test_an_unpatched_change_fails_replay(name: str):
    history = _history(Path(__file__).parent / "histories" / "v1" / f"{name}.json")
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[UnpatchedChange]).replay_workflow(history)
