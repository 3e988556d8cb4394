"""Checking a cron expression and a time zone before they are handed to a Temporal Schedule.

Accepted: the five standard fields (minute, hour, day of month, month, day of
week) with ``*``, ``?``, numbers, names (JAN-DEC, SUN-SAT), ranges ``a-b``,
steps ``*/n`` and ``a-b/n``, and lists ``a,b``; or one of the macros
``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``,
``@midnight``, ``@hourly``. Each problem is reported with the field it is in.
"""

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), start=1)}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
# name, lowest, highest, names
_FIELDS = [("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 7, _DAYS)]
_ITEM = re.compile(r"^(?P<range>\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


class InvalidCron(ValueError):
    pass


def check_cron(expression: str) -> str:
    """The expression, normalised to single spaces; InvalidCron says what is wrong."""
    text = " ".join(expression.split())
    if not text:
        raise InvalidCron("the cron expression is empty")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise InvalidCron(f"unknown macro {text!r}; use one of {', '.join(sorted(MACROS))}")
        return text.lower()
    parts = text.split(" ")
    if len(parts) != 5:
        raise InvalidCron(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                          f"this one has {len(parts)}")
    for part, (name, low, high, names) in zip(parts, _FIELDS):
        for item in part.split(","):
            _check_item(item, name, low, high, names)
    return text


def _check_item(item: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    match = _ITEM.match(item)
    if not match:
        raise InvalidCron(f"{name}: {item!r} is not a value, range, step or list")
    step = match.group("step")
    if step is not None and int(step) == 0:
        raise InvalidCron(f"{name}: a step must be at least 1")
    spec = match.group("range")
    if spec in ("*", "?"):
        if spec == "?" and name not in ("day of month", "day of week"):
            raise InvalidCron(f"{name}: '?' is only allowed in the day fields")
        return
    bounds = [_value(v, name, low, high, names) for v in spec.split("-")]
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise InvalidCron(f"{name}: range {spec!r} runs backwards")


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.isdigit():
        value = int(text)
    elif text.upper() in names:
        value = names[text.upper()]
    else:
        raise InvalidCron(f"{name}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    if not low <= value <= high:
        raise InvalidCron(f"{name}: {value} is outside {low}-{high}")
    return value


def check_timezone(name: str) -> str:
    """An IANA time zone name (Europe/Paris, America/New_York, UTC)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InvalidCron(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or UTC") from err
    return name
