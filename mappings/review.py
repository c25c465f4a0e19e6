"""The same-day review lane's window: which arrivals still wait for their first look.

Someone reviews new referrals at set times (practice rules `review.times`, in the business-hours
time zone). At any moment the lane holds the open referrals not yet marked reviewed that
arrived since the review time before the latest one: what the latest review had to look at, and
what came in since. A referral nobody reviewed within two review times leaves the lane (it stays
in its segment's lane, marked not reviewed), so the lane stays a same-day list, not a backlog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mappings.rules import PracticeRules

__all__ = ["ReviewWindow", "review_window"]


@dataclass(frozen=True, slots=True)
class ReviewWindow:
    since: datetime  # arrivals from here on are in the lane
    last_review: datetime  # the latest review time at or before now
    next_review: datetime  # the next one after now


def review_window(now: datetime, rules: PracticeRules) -> ReviewWindow:
    """The window at `now` (aware); the times come out in UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = rules.business_hours.zone
    local = now.astimezone(zone)
    moments = sorted(
        datetime.combine(local.date() + timedelta(days=offset), at, tzinfo=zone)
        for offset in (-2, -1, 0, 1)
        for at in rules.review.times
    )
    past = [m for m in moments if m <= local]
    following = next(m for m in moments if m > local)
    return ReviewWindow(
        since=past[-2].astimezone(UTC),
        last_review=past[-1].astimezone(UTC),
        next_review=following.astimezone(UTC),
    )
