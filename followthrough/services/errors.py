"""What an operation refuses with, whoever called it: the API answers each with its HTTP status
(followthrough/api/errors.py), an activity with a tool result or an activity failure.

``message`` is the sentence the caller is told; ``extra`` holds fields that go with it (the id of the
task a duplicate matched, say).
"""

import dataclasses
import datetime
import decimal
import enum
import re
import uuid
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel


class ServiceError(Exception):
    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(ServiceError):
    """No such resource."""


class Forbidden(ServiceError):
    """The caller may not take this decision on this resource."""


class Conflict(ServiceError):
    """A transition the resource cannot take, or a duplicate."""


class Invalid(ServiceError):
    """The input is wrong. ``errors``: where and why, each a dict of type, loc, msg and input (pydantic's
    shape); None when the input is wrong as a whole and ``message`` says how."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.errors = errors


class Unavailable(ServiceError):
    """A part the operation needs cannot serve it now; worth retrying (after ``retry_after`` seconds, when
    known)."""

    def __init__(self, message: str, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class TooManyRequests(ServiceError):
    """Over a limit that frees up with time: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


def located(errors: list[dict[str, Any]]) -> Invalid:
    """Invalid input at these places."""
    return Invalid("; ".join(str(e.get("msg")) for e in errors), errors)


def invalid(loc: tuple[Any, ...], message: str, kind: str = "value_error") -> Invalid:
    """Invalid input at one place in the request body."""
    return located([{"type": kind, "loc": ("body", *loc), "msg": message, "input": None}])


_BY_TYPE: dict[type, Any] = {
    bytes: lambda o: o.decode(),
    datetime.date: lambda o: o.isoformat(),
    datetime.datetime: lambda o: o.isoformat(),
    datetime.time: lambda o: o.isoformat(),
    datetime.timedelta: lambda o: o.total_seconds(),
    decimal.Decimal: lambda o: int(o) if o.as_tuple().exponent >= 0 else float(o),  # type: ignore[operator]
    frozenset: list,
    set: list,
    re.Pattern: lambda o: o.pattern,
    uuid.UUID: str,
}


def jsonable(value: Any) -> Any:
    """``value`` (located errors, mostly) as JSON-ready data, the way the API encodes an error's detail:
    tuples as lists, exceptions in an error's ctx as {} (they have no fields)."""
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json", by_alias=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (str, int, float, type(None))):
        return value
    if isinstance(value, dict):
        return {jsonable(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, set, frozenset, tuple)):
        return [jsonable(v) for v in value]
    for kind in type(value).__mro__[:-1]:
        if kind in _BY_TYPE:
            return _BY_TYPE[kind](value)
    try:
        data = dict(value)
    except Exception:  # noqa: BLE001 - not a mapping: its attributes, as FastAPI's encoder takes them
        data = vars(value)
    return jsonable(data)
