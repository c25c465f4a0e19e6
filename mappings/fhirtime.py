"""FHIR date and time values as timezone-aware datetimes.

DESIGN.md: a date without a time means midnight UTC, a time without an offset means UTC. Partial
dates (a year, a year and month) stand for their first instant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

__all__ = ["as_utc", "format_day", "parse_instant", "whole_days"]


def parse_instant(value: object) -> datetime | None:
    """The instant a FHIR date, dateTime or instant stands for; None when absent or unparseable."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            parsed = datetime(int(value), 1, 1)
        elif len(value) == 7:
            parsed = datetime(int(value[:4]), int(value[5:7]), 1)
        else:
            # Python cannot hold a leap second; FHIR allows ":60". Treat it as the last second.
            parsed = datetime.fromisoformat(
                value.replace(":60", ":59", 1) if ":60" in value else value
            )
    except ValueError:
        return None
    return as_utc(parsed)


def as_utc(moment: datetime) -> datetime:
    """A naive datetime read as UTC; an aware one converted to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def whole_days(start: datetime, end: datetime) -> int:
    """Whole days from start to end, rounded down."""
    return (end - start) // timedelta(days=1)


def format_day(moment: datetime | date) -> str:
    """A day as YYYY-MM-DD, for human details."""
    return moment.isoformat()[:10]  # strftime is several times slower, and this is per referral
