"""A cadence step's wait: when it ends, from the moment it begins.

A wait lasts a duration (``seconds``) or until a moment (``until``); with ``business_hours`` the moment it
would end is pushed into the next open window (a weekday listed, between start and end, in the window's time
zone). Plain arithmetic on the workflow's clock (``workflow.now()``): the workflow computes it and sleeps on a
durable timer to the result, so it needs no activity and replays to the same timer.
"""

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class BusinessHours:
    """Open on ``days`` (mon … sun) from ``start`` to ``end`` (HH:MM, start before end) in ``timezone``."""

    timezone: str
    days: list[str] = field(default_factory=lambda: list(DAYS[:5]))
    start: str = "09:00"
    end: str = "17:00"


@dataclass
class StepWait:
    """What a cadence step waits for before it starts: ``seconds`` after the wait begins, or ``until`` a moment
    (neither: at once), then, with ``business_hours``, on until the next open window."""

    seconds: float | None = None
    until: datetime | None = None
    business_hours: BusinessHours | None = None

    def as_data(self) -> dict:
        """As the cadence's events record it."""
        data: dict = {}
        if self.seconds is not None:
            data["seconds"] = self.seconds
        if self.until is not None:
            data["until"] = self.until.isoformat()
        if self.business_hours is not None:
            hours = self.business_hours
            data["business_hours"] = {"timezone": hours.timezone, "days": list(hours.days), "start": hours.start,
                                      "end": hours.end}
        return data


def wait_end(wait: StepWait, begins: datetime) -> datetime:
    """When a wait that begins at ``begins`` ends (never before it begins)."""
    if wait.seconds is not None:
        end = begins + timedelta(seconds=wait.seconds)
    elif wait.until is not None:
        end = max(wait.until, begins)
    else:
        end = begins
    if wait.business_hours is not None:
        end = next_open(end, wait.business_hours)
    return end.astimezone(timezone.utc)


def next_open(moment: datetime, hours: BusinessHours) -> datetime:
    """``moment`` itself if the window is open then, else the start of the next open window."""
    zone = ZoneInfo(hours.timezone)
    local = moment.astimezone(zone)
    start, end = time.fromisoformat(hours.start), time.fromisoformat(hours.end)
    open_days = {DAYS.index(day) for day in hours.days}
    if not open_days:
        raise ValueError("business hours need at least one open day")
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in open_days:
            continue
        # Wall-clock times on the day, compared as such (same zone); the result is converted to UTC.
        opens, closes = datetime.combine(day, start, tzinfo=zone), datetime.combine(day, end, tzinfo=zone)
        if offset == 0 and opens <= local < closes:
            return moment.astimezone(timezone.utc)
        if local < opens:
            return opens.astimezone(timezone.utc)
    raise AssertionError("an open day comes within a week")  # pragma: no cover
