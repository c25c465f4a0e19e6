"""The same-day review lane's window at its edges, in the practice's time zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapter.practice_rules import default_rules
from mappings.review import review_window
from mappings.rules import PracticeRules


def in_zone(zone: str) -> PracticeRules:
    rules = default_rules()
    hours = rules.business_hours.model_copy(update={"timezone": zone})
    return rules.model_copy(update={"business_hours": hours})


@pytest.mark.parametrize(
    ("now", "since", "last", "following"),
    [
        # Mid-morning: what the 09:00 review looked at (since 14:00 yesterday) and what came since.
        ("2026-12-04T10:30", "2026-12-03T14:00", "2026-12-04T09:00", "2026-12-04T14:00"),
        # At a review time exactly, that review is the latest.
        ("2026-12-04T09:00", "2026-12-03T14:00", "2026-12-04T09:00", "2026-12-04T14:00"),
        ("2026-12-04T08:59", "2026-12-03T09:00", "2026-12-03T14:00", "2026-12-04T09:00"),
        ("2026-12-04T15:00", "2026-12-04T09:00", "2026-12-04T14:00", "2026-12-05T09:00"),
        ("2026-12-04T00:10", "2026-12-03T09:00", "2026-12-03T14:00", "2026-12-04T09:00"),
    ],
)
def test_the_window_in_utc(now: str, since: str, last: str, following: str) -> None:
    window = review_window(datetime.fromisoformat(now).replace(tzinfo=UTC), default_rules())
    assert window.since == datetime.fromisoformat(since).replace(tzinfo=UTC)
    assert window.last_review == datetime.fromisoformat(last).replace(tzinfo=UTC)
    assert window.next_review == datetime.fromisoformat(following).replace(tzinfo=UTC)


def test_review_times_are_local_to_the_practice() -> None:
    # 09:00 in New York is 14:00 UTC in December.
    window = review_window(datetime(2026, 12, 4, 15, 0, tzinfo=UTC), in_zone("America/New_York"))
    assert window.last_review == datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    assert window.since == datetime(2026, 12, 3, 19, 0, tzinfo=UTC)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        review_window(datetime(2026, 12, 4, 10), default_rules())
