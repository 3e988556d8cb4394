"""An Idempotency-Key used again once its window has passed creates a new task with the new request."""

from datetime import datetime, timedelta

import pytest

from followthrough.services import idempotency
from tests.conftest import Stack
from tests.helpers import task_body, until_status


def _clock_ahead(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """The idempotency module's clock, moved on: its records (and subject claims) age without waiting."""
    class Later(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + by

    monkeypatch.setattr(idempotency, "datetime", Later)


async def test_a_key_reused_after_its_window_creates_a_new_task_with_the_new_body(stack: Stack,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    window = timedelta(seconds=stack.settings.idempotency_window_seconds)
    headers = {"Idempotency-Key": f"reused-{stack.tenant}"}
    old_body = task_body(tenant_id=stack.tenant, mode="suggest", title="The first request")
    first = await stack.http.post("/tasks", json=old_body, headers=headers)
    assert first.status_code == 201, first.text

    _clock_ahead(monkeypatch, window + timedelta(minutes=1))
    new_body = old_body | {"title": "The second request"}
    second = await stack.http.post("/tasks", json=new_body, headers=headers)
    assert second.status_code == 201, second.text
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["workflow_id"] != first.json()["workflow_id"]
    # Inside the new window the key replays the second answer, as any key does.
    again = await stack.http.post("/tasks", json=new_body, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == second.json()["id"]

    # Each task has its own row and its own run, each with the body it was created with.
    old = await until_status(stack, first.json()["id"], "completed")
    new = await until_status(stack, second.json()["id"], "completed")
    assert (old["title"], new["title"]) == ("The first request", "The second request")
    assert [r["status"] for r in old["runs"]] == ["completed"] == [r["status"] for r in new["runs"]]
    assert old["runs"][0]["workflow_run_id"] != new["runs"][0]["workflow_run_id"]

    # The same body once more after the second window: a third task, not the second replayed.
    _clock_ahead(monkeypatch, 2 * window + timedelta(minutes=2))
    third = await stack.http.post("/tasks", json=new_body, headers=headers)
    assert third.status_code == 201, third.text
    assert "Idempotent-Replayed" not in third.headers
    assert third.json()["id"] not in (first.json()["id"], second.json()["id"])
    listed = (await stack.http.get(f"/tasks?tenant_id={stack.tenant}")).json()
    assert listed["total"] == 3
