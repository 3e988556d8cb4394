"""How a cadence step's wait is written in a payload, checked strictly, and turned into the workflow's
``StepWait`` (followthrough/domain/waits.py)."""

from datetime import timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough.domain.cron import check_timezone
from followthrough.domain.waits import DAYS, BusinessHours, StepWait

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# A wait longer than this is a mistake, not a cadence.
MAX_WAIT = timedelta(days=366)


class BusinessHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Berlin.")
    days: list[Day] = Field(default_factory=lambda: list(DAYS[:5]), min_length=1, max_length=7,
                            description="Open days; default mon … fri.")
    start: str = Field("09:00", pattern=_HHMM, description="Opens at (HH:MM, local time).")
    end: str = Field("17:00", pattern=_HHMM, description="Closes at (HH:MM, local time), after start.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        check_timezone(value)
        return value

    @model_validator(mode="after")
    def _opens_before_it_closes(self) -> "BusinessHoursIn":
        if self.start >= self.end:
            raise ValueError(f"business hours must start before they end ({self.start} is not before {self.end})")
        self.days = sorted(set(self.days), key=DAYS.index)
        return self


class WaitIn(BaseModel):
    """Wait ``for`` a duration (ISO 8601 like ``P3D``, ``PT4H``, or seconds) or ``until`` a moment, and/or
    on until ``business_hours`` are open."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    for_: timedelta | None = Field(None, alias="for", description="A duration: ISO 8601 (P3D, PT4H30M) or "
                                                                   "seconds.")
    until: AwareDatetime | None = Field(None, description="A moment with its time zone.")
    business_hours: BusinessHoursIn | None = Field(None, description="Push the end into the next open window.")

    @model_validator(mode="after")
    def _one_end(self) -> "WaitIn":
        if self.for_ is not None and self.until is not None:
            raise ValueError("give `for` or `until`, not both")
        if self.for_ is None and self.until is None and self.business_hours is None:
            raise ValueError("give `for`, `until` or `business_hours`")
        if self.for_ is not None and not timedelta(seconds=1) <= self.for_ <= MAX_WAIT:
            raise ValueError(f"`for` must be between 1 second and {MAX_WAIT.days} days")
        return self

    def as_step_wait(self) -> StepWait:
        hours = self.business_hours
        return StepWait(seconds=self.for_.total_seconds() if self.for_ is not None else None, until=self.until,
                        business_hours=BusinessHours(timezone=hours.timezone, days=list(hours.days),
                                                     start=hours.start, end=hours.end) if hours else None)
