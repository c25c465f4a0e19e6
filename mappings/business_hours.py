"""Follow-up standards are counted in business hours; this adds them to an instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mappings.rules import BusinessHours

__all__ = ["Calendar", "add_business_hours"]


@dataclass(frozen=True, slots=True)
class Calendar:
    """The practice's business hours, ready for arithmetic (built once per evaluation)."""

    zone: ZoneInfo
    weekdays: frozenset[int]
    opens: time
    closes: time

    @classmethod
    def from_rules(cls, hours: BusinessHours) -> Calendar:
        return cls(hours.zone, hours.weekdays, hours.start, hours.end)

    def add(self, start: datetime, hours: int) -> datetime:
        """The instant `hours` business hours after `start` (aware), in UTC.

        Time before opening counts from opening; time after closing or on a closed day counts
        from the next opening. The walk is in local wall-clock time: clocks change at night,
        outside business hours, so a business day is always `closes - opens` long.
        """
        local = start.astimezone(self.zone).replace(tzinfo=None)
        remaining = timedelta(hours=hours)
        # A calendar has at least one open day, so each pass of at most 7 days makes progress.
        while True:
            day = local.date()
            opening = datetime.combine(day, self.opens)
            closing = datetime.combine(day, self.closes)
            if day.weekday() in self.weekdays and local < closing:
                begin = max(local, opening)
                available = closing - begin
                if remaining <= available:
                    return (begin + remaining).replace(tzinfo=self.zone).astimezone(UTC)
                remaining -= available
            local = datetime.combine(day + timedelta(days=1), self.opens)


def add_business_hours(start: datetime, hours: int, calendar: BusinessHours) -> datetime:
    """`hours` business hours after `start` under the practice's calendar, in UTC."""
    return Calendar.from_rules(calendar).add(start, hours)
