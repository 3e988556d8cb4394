"""The services encode located errors (a batch item's, an agent's subtask's) exactly as the API encodes a
422's detail with FastAPI's encoder, so the same mistake reads the same wherever it is reported."""

import datetime
import decimal
import enum
import uuid
from pathlib import PurePosixPath

import pytest
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError

from followthrough.services.errors import jsonable
from followthrough.services.requests import TaskCreate


class Colour(enum.Enum):
    RED = "red"


def _errors(body: dict) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        TaskCreate.model_validate(body)
    return caught.value.errors(include_url=False)


@pytest.mark.parametrize("body", [
    {"type": ""},
    {"type": "x", "tenant_id": "no spaces"},
    {"type": "x", "approval": {"approvers": ["a"], "required": 2}},  # a ValueError in ctx
    {"type": "x", "sla": {"escalate_after_seconds": 5}},
    {"type": "x", "due_at": "2999-01-01T00:00:00Z", "priority": 3, "unknown": [1, 2]},
    {"type": "x", "payload": {"a": "\x00"}},
])
def test_validation_errors_encode_as_fastapi_does(body: dict) -> None:
    errors = _errors(body)
    assert jsonable(errors) == jsonable_encoder(errors)


def test_other_values_encode_as_fastapi_does() -> None:
    value = {"loc": ("body", "payload", 0), "input": {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "day": datetime.date(2026, 1, 2),
        "span": datetime.timedelta(seconds=90), "whole": decimal.Decimal("3"), "part": decimal.Decimal("2.5"),
        "colour": Colour.RED, "id": uuid.UUID(int=7), "tags": {"a"}, "path": PurePosixPath("/x"), "raw": b"ab",
        "error": ValueError("no"), "flag": True, "none": None, "ratio": 0.5}}
    assert jsonable(value) == jsonable_encoder(value)
