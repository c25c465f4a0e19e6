"""`Evaluator.evaluate_until`: the instant before which an evaluation stays the same as time
moves. A sync re-evaluates a referral whose data did not change only once that instant has
passed, so an instant too late would leave a referral's age, band, due time or segments stale
in the queue; each property below compares with a fresh evaluation at the later time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter import personas as p
from adapter import synth
from adapter.practice_rules import default_rules
from adapter.segmenting import index_resources
from mappings.index import ReferralIndex
from mappings.referral import Evaluator, is_member, source_standing

AS_OF = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RULES = default_rules()


def nowhere(where: str, what: str) -> None:
    raise AssertionError((where, what))


@cache
def month(seed: int) -> ReferralIndex:
    """A synthetic month with every case the model knows (coverage starting and ending, patient
    messages and forms, requested dates, busy offices)."""
    data = synth.generate(120, seed, AS_OF)
    index, _ = index_resources((r for rows in data.values() for r in rows), nowhere)
    return index


minutes = st.integers(min_value=0, max_value=180).map(lambda m: timedelta(minutes=m))
hours = st.integers(min_value=0, max_value=72).map(lambda h: timedelta(hours=h))
days = st.integers(min_value=0, max_value=60).map(lambda d: timedelta(days=d))
steps = st.one_of(
    minutes, hours, days, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=90))
)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.sampled_from([3, 7]),
    start=st.integers(min_value=-40 * 24 * 60, max_value=150 * 24 * 60),
    step=steps,
)
def test_before_its_instant_an_evaluation_is_the_same_at_any_later_time(
    seed: int, start: int, step: timedelta
) -> None:
    index = month(seed)
    first = Evaluator(index, RULES, AS_OF + timedelta(minutes=start))
    later = Evaluator(index, RULES, first.as_of + step)
    evaluators = {later.as_of: later}
    for referral in first.referrals:
        evaluation, until = first.evaluate_until(referral)
        assert until is None or until >= first.as_of
        # At a random later time, and at the last moment before the instant (where any change
        # the instant missed would show).
        moments = [later.as_of, *([until - timedelta(microseconds=1)] if until else [])]
        for moment in moments:
            if moment < first.as_of or (until is not None and moment >= until):
                continue
            if moment not in evaluators:
                evaluators[moment] = Evaluator(index, RULES, moment)
            again = evaluators[moment].evaluate(referral)
            assert again.to_json() == evaluation.to_json(), (referral.key, moment)


def test_the_instant_is_not_the_evaluation_time_itself() -> None:
    # The instant is of use only if most referrals stay the same for a while: at the least
    # until they are a day older, and most of them for hours.
    evaluator = Evaluator(month(7), RULES, AS_OF)
    spans = []
    for referral in evaluator.referrals:
        _, until = evaluator.evaluate_until(referral)
        assert until is not None, "age moves every evaluation on by a day"
        assert until <= AS_OF + timedelta(days=1)
        spans.append(until - AS_OF)
    assert sum(span > timedelta(hours=1) for span in spans) > 0.8 * len(spans)


def test_evaluate_is_evaluate_until_without_the_instant() -> None:
    evaluator = Evaluator(month(3), RULES, AS_OF)
    for referral in evaluator.referrals:
        assert evaluator.evaluate(referral) == evaluator.evaluate_until(referral)[0]


def _ada(*coverage_period: dict[str, str]) -> ReferralIndex:
    """Ada's complete packet (personas) with her Coverage(s) given these periods."""
    resources = [r for r in p.ada_packet() if r["resourceType"] != "Coverage"]
    for n, period in enumerate(coverage_period):
        resources.append({**p.ada_coverage(), "id": f"cov-ada-{n}", "period": period})
    index, _ = index_resources(resources, nowhere)
    return index


@pytest.mark.parametrize(
    ("periods", "changes"),
    [
        # Not in force yet: it comes into force when it starts.
        ([{"start": "2025-01-15T15:00:00Z"}], datetime(2025, 1, 15, 15, 0, tzinfo=UTC)),
        # In force: it stops counting when it ends.
        ([{"end": "2025-01-15T17:30:00Z"}], datetime(2025, 1, 15, 17, 30, tzinfo=UTC)),
        # One ending and the next starting later: the first change is the end.
        (
            [{"end": "2025-01-15T13:00:00Z"}, {"start": "2025-01-15T14:00:00Z"}],
            datetime(2025, 1, 15, 13, 0, tzinfo=UTC),
        ),
    ],
)
def test_a_coverage_period_boundary_is_an_instant_of_change(
    periods: list[dict[str, str]], changes: datetime
) -> None:
    index = _ada(*periods)
    evaluator = Evaluator(index, RULES, p.PERSONA_AS_OF)  # 2025-01-15T12:00Z
    (referral,) = evaluator.referrals
    evaluation, until = evaluator.evaluate_until(referral)
    assert until is not None
    assert until <= changes
    after = Evaluator(index, RULES, changes + timedelta(seconds=1)).evaluate(referral)
    assert [m.item for m in after.missing] != [m.item for m in evaluation.missing]


def _member_at(dates: list[datetime], moment: datetime, window: timedelta, least: int) -> bool:
    return sum(1 for d in dates if moment - window <= d <= moment) >= least


@settings(max_examples=400, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=-60, max_value=60), max_size=30),
    window_days=st.integers(min_value=1, max_value=40),
    least=st.integers(min_value=1, max_value=6),
)
def test_a_sources_standing_lasts_until_the_first_instant_its_count_crosses(
    offsets: list[int], window_days: int, least: int
) -> None:
    """`source_standing` against counting by hand: the standing at `as_of`, and the first
    instant (a date entering, or a date's window end) at which the count, at that instant or
    just after it, is on the other side of the threshold. Whole days, so that dates often
    enter on the instant others leave."""
    dates = sorted(AS_OF + timedelta(days=o) for o in offsets)
    window = timedelta(days=window_days)
    member, until = source_standing(dates, AS_OF, window_days, least)
    assert member == _member_at(dates, AS_OF, window, least)
    assert member == is_member(dates, AS_OF, window_days, least)
    instants = sorted(
        {d for d in dates if d > AS_OF} | {d + window for d in dates if d + window >= AS_OF}
    )
    just_after = timedelta(microseconds=1)
    flips = [
        t
        for t in instants
        if _member_at(dates, t, window, least) != member
        or _member_at(dates, t + just_after, window, least) != member
    ]
    assert until == (flips[0] if flips else None)
