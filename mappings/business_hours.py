"""Follow-up standards are counted in business hours; this adds them to an instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mappings.rules import BusinessHours

__all__ = ["add_business_hours"]


def add_business_hours(start: datetime, hours: int, calendar: BusinessHours) -> datetime:
    """The instant `hours` business hours after `start` (aware), in UTC.

    Time before opening counts from opening; time after closing or on a closed day counts from
    the next opening.
    """
    zone = calendar.zone
    weekdays = calendar.weekdays
    local = start.astimezone(zone)
    remaining = timedelta(hours=hours)
    # A calendar always has at least one open day, so each pass of at most 7 days makes progress.
    while True:
        opening = datetime.combine(local.date(), calendar.start, zone)
        closing = datetime.combine(local.date(), calendar.end, zone)
        if local.weekday() in weekdays and local < closing:
            begin = max(local, opening)
            available = closing - begin
            if remaining <= available:
                return (begin + remaining).astimezone(UTC)
            remaining -= available
        next_day = local.date() + timedelta(days=1)
        local = datetime.combine(next_day, calendar.start, zone)
