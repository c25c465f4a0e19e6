"""The weekly referral review (issue 7): `synth` history through the real pipeline into the
store, the report's numbers against numbers this test computes itself from the generated data.

The expectation is worked out here, not by the report code: the test evaluates the history's
resources in memory at every day (the referral model, nothing of the store), derives the
changes day to day, and counts by the definitions in `adapter.report.DEFINITIONS` in plain
Python. The report computes the same in SQL from the store's segment history, on SQLite and
PostgreSQL (`db_url`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from adapter import store
from adapter.cli import main
from adapter.practice_rules import default_rules
from adapter.report import Period, Report, ReportSettings, compute_report, week_label
from adapter.report_render import CSV_COLUMNS, render_csv, render_html, render_json
from adapter.segmenting import index_resources
from adapter.synth_history import History, build_history, replay
from fhir_profiles import terminology
from mappings.business_hours import add_business_hours
from mappings.referral import Evaluator
from mappings.rules import PracticeRules
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, artifacts_folder

END = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday: 2026-W48 ends here
DAY = timedelta(days=1)
REFERRALS, SEED = 120, 11


@dataclass(frozen=True)
class Snap:
    state: str
    segments: tuple[str, ...]
    primary: str | None
    arrived: datetime | None
    source: str | None
    items: tuple[str, ...]


def _no_problems(where: str, what: str) -> None:
    raise AssertionError(f"unreadable synthetic resource {where}: {what}")


def _snapshots(
    history: History, rules_at: Callable[[datetime], PracticeRules]
) -> dict[datetime, dict[str, Snap]]:
    """Every referral as the model sees it at each day of the history (in memory)."""
    out: dict[datetime, dict[str, Snap]] = {}
    for day in history.days:
        index, _ = index_resources(history.known_at(day), _no_problems)
        out[day] = {
            e.referral: Snap(
                e.state,
                tuple(e.segments),
                e.primary_segment,
                e.arrived,
                e.source[:160] if e.source else None,
                tuple(m.item for m in e.missing),
            )
            for e in Evaluator(index, rules_at(day), day)
        }
    return out


class Expect:
    """The report's numbers, counted from daily snapshots by the written definitions."""

    def __init__(
        self,
        history: History,
        snaps: dict[datetime, dict[str, Snap]],
        period: Period,
        rules: PracticeRules,
        settings: ReportSettings,
    ) -> None:
        self.history, self.snaps, self.period = history, snaps, period
        self.rules, self.settings = rules, settings
        self.days = sorted(snaps)
        self.final = snaps[self.days[-1]]
        # Changes: (day, key, before, after) whenever state or segments differ.
        self.changes: list[tuple[datetime, str, Snap | None, Snap]] = []
        before: dict[str, Snap] = {}
        self.last_change: dict[datetime, dict[str, Snap]] = {}
        recorded: dict[str, Snap] = {}
        for day in self.days:
            for key, now in snaps[day].items():
                old = before.get(key)
                if old is None or (old.state, old.segments) != (now.state, now.segments):
                    self.changes.append((day, key, old, now))
                    recorded[key] = now
            before = snaps[day]
            self.last_change[day] = dict(recorded)

    def before(self, at: datetime) -> dict[str, Snap]:
        earlier = [d for d in self.days if d < at]
        return self.snaps[earlier[-1]] if earlier else {}

    def open_before(self, at: datetime) -> dict[str, Snap]:
        return {k: s for k, s in self.before(at).items() if s.state == "open"}

    def in_period(self) -> list[tuple[datetime, str, Snap | None, Snap]]:
        return [c for c in self.changes if self.period.start <= c[0] < self.period.end]

    def source(self, key: str) -> str:
        return self.final[key].source or "(none)"

    def age(self, snap: Snap, at: datetime) -> int:
        assert snap.arrived is not None
        return math.floor((at - snap.arrived) / DAY)

    def ever_in(self, segment: str) -> set[str]:
        keys = {k for k, s in self.open_before(self.period.start).items() if segment in s.segments}
        return keys | {k for _, k, _, now in self.in_period() if segment in now.segments}

    def numbers(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, set[str]]]:
        out: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, set[str]]] = {}
        counts: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = defaultdict(list)

        def count(metric: str, key: str, **by: str) -> None:
            counts[(metric, tuple(by.items()))].append(key)

        start, end = self.period.start, self.period.end
        for metric, at in (("inventory_start", start), ("inventory_end", end)):
            for key, snap in self.open_before(at).items():
                for segment in snap.segments:
                    count(metric, key, segment=segment)
                    count(metric, key, segment=segment, source=self.source(key))
        for _, key, old, now in self.in_period():
            was = set(old.segments) if old and old.state == "open" else set()
            for segment in set(now.segments) - was:
                count("entered", key, segment=segment)
                count("entered", key, segment=segment, source=self.source(key))
            for segment in was - set(now.segments):
                count("left", key, segment=segment)
                count("left", key, segment=segment, source=self.source(key))
        received = [
            k for k, s in self.final.items() if s.arrived is not None and start <= s.arrived < end
        ]
        for key in received:
            count("received", key)
            count("received", key, source=self.source(key))
            count("funnel", key, stage="received")
            seen = [self.snaps[d][key] for d in self.days if d < end and key in self.snaps[d]]
            if any("ready-to-schedule" in s.segments for s in seen):
                count("funnel", key, stage="ready-to-schedule")
            if any(s.state == "scheduled" for s in seen):
                count("funnel", key, stage="scheduled")
        terms = terminology()
        for key, snap in self.open_before(end).items():
            band = terms.band_for(self.age(snap, end)).code
            for segment in snap.segments:
                count("aging", key, segment=segment, band=band)
        for back in range(self.settings.trend_weeks):
            at = end - back * 7 * DAY
            for key, snap in self.open_before(at).items():
                for segment in snap.segments:
                    count("trend_inventory", key, week=week_label(at), segment=segment)
        # Ready-to-schedule -> scheduled, and how long from the start of the ready spell.
        durations = []
        for day, key, old, now in self.in_period():
            if old and old.state == "open" and "ready-to-schedule" in old.segments:
                if now.state != "scheduled":
                    continue
                count("ready_scheduled", key)
                spell = [d for d in self.days if d < day]
                began = spell[-1]
                for d in reversed(spell):
                    snap = self.snaps[d].get(key)
                    if snap and snap.state == "open" and "ready-to-schedule" in snap.segments:
                        began = d
                    else:
                        break
                durations.append((day - began) / DAY)
        if durations:
            ordered = sorted(durations)
            keys = counts[("ready_scheduled", ())]
            out[("ready_days_median", ())] = (round(statistics.median(ordered), 2), set(keys))
            p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
            out[("ready_days_p90", ())] = (round(p90, 2), set(keys))
        else:
            out[("ready_scheduled", ())] = (0, set())
        # Stale missing-detail referrals and their items (as of their last recorded change).
        last_day = [d for d in self.days if d < end][-1]
        for key, snap in self.open_before(end).items():
            if "missing-detail" in snap.segments and self.age(snap, end) > 7:
                count("missing_stale", key)
                count("missing_stale", key, source=self.source(key))
                for item in self.last_change[last_day][key].items:
                    asked = terms.missing_item(item).request_from
                    count("missing_items", key, item=item, request_from=asked)
                    count("missing_items", key, source=self.source(key), item=item)
        # Patient-active referrals and their contact attempts up to the period's end.
        active = self.ever_in("patient-active")
        attempts = Counter(c.referral for c in self.history.contacts if c.at < end)
        out[("patient_active", ())] = (len(active), active)
        repeat = {k for k in active if attempts[k] > 1}
        out[("patient_active_repeat_contact", ())] = (len(repeat), repeat)
        total = sum(attempts[k] for k in active)
        out[("contact_attempts", ())] = (total, {k for k in active if attempts[k]})
        if active:
            out[("attempts_per_referral", ())] = (round(total / len(active), 2), active)
        # Offices asking for status about high-relationship referrals.
        high = self.ever_in("high-relationship")
        asked_keys = set()
        for moment, resource in self.history.arrivals:
            if resource["id"].endswith("-office") and start <= moment < end:
                key = resource["basedOn"][0]["reference"]
                if key in high:
                    asked_keys.add(key)
        out[("status_asked", ())] = (len(asked_keys), asked_keys)
        for key in asked_keys:
            count("status_asked", key, source=self.source(key))
        # Leakage.
        requests = {
            f"ServiceRequest/{r['id']}": r
            for r in self.history.known_at(self.days[-1])
            if r["resourceType"] == "ServiceRequest"
        }
        leaks: dict[str, set[str]] = defaultdict(set)
        for day, key, old, now in self.in_period():
            if now.state != "closed" or old is None or old.state == "closed":
                continue
            if requests[key]["status"] == "revoked":
                leaks["leak_revoked"].add(key)
            booked = any(
                k == key and s.state == "scheduled" for d, k, _, s in self.changes if d < day
            )
            if old.state == "open" and not booked:
                leaks["leak_closed_without_appointment"].add(key)
        for key, snap in self.open_before(end).items():
            if self.age(snap, end) > self.settings.open_limit_days:
                leaks["leak_open_past_limit"].add(key)
        for metric in ("leak_closed_without_appointment", "leak_revoked", "leak_open_past_limit"):
            out[(metric, ())] = (len(leaks[metric]), leaks[metric])
            by_source: dict[str, set[str]] = defaultdict(set)
            for key in leaks[metric]:
                by_source[self.source(key)].add(key)
            for source, keys in by_source.items():
                out[(metric, (("source", source),))] = (len(keys), keys)
        # Follow-up standard per entry into a primary segment.
        for day, key, old, now in self.in_period():
            if now.state != "open" or now.primary is None:
                continue
            if old is not None and old.state == "open" and old.primary == now.primary:
                continue
            standard = self.rules.segments[now.primary]
            due = add_business_hours(
                day, standard.follow_up_business_hours, self.rules.business_hours
            )
            acted = min(
                (c.at for c in self.history.contacts if c.referral == key and c.at >= day),
                default=None,
            )
            if acted is not None and acted <= due:
                outcome = "follow_up_met"
            elif due < end or (acted is not None and acted < end):
                outcome = "follow_up_missed"
            else:
                outcome = "follow_up_pending"
            count(outcome, key, segment=now.primary, owner_role=standard.owner_role)
        for (metric, by), keys in counts.items():
            events = ("inventory_start", "inventory_end", "entered", "left", "aging")
            if metric in events or metric.startswith(("follow_up_", "trend_", "ready_")):
                value: float = len(keys)
            else:
                value = len(set(keys))
            out[(metric, by)] = (value, set(keys))
        for metric in ("received", "missing_stale", "status_asked"):
            out.setdefault((metric, ()), (0, set()))
        for stage in ("received", "ready-to-schedule", "scheduled"):
            out.setdefault(("funnel", (("stage", stage),)), (0, set()))
        return out


def _actual(
    report: Report,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, set[str]]]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, set[str]]] = {}
    for number in report.numbers:
        key = (number.metric, tuple(sorted(number.by)))
        assert key not in found, key
        found[key] = (number.value, set(number.referrals))
    return found


def _normal(
    numbers: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, set[str]]],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, set[str]]]:
    return {(m, tuple(sorted(by))): v for (m, by), v in numbers.items()}


def _store_history(
    url: str, history: History, rules_at: Callable[[datetime], PracticeRules]
) -> Any:
    store.upgrade(url)
    engine = store.make_engine(url)
    for _ in replay(history, engine, rules_at, _no_problems):
        pass
    return engine


def _check(
    engine: Any,
    history: History,
    snaps: dict[datetime, dict[str, Snap]],
    period: Period,
    rules: PracticeRules,
) -> Report:
    settings = ReportSettings()
    with Session(engine) as session:
        report = compute_report(session, period, rules, settings)
    expected = _normal(Expect(history, snaps, period, rules, settings).numbers())
    actual = _actual(report)
    assert sorted(actual) == sorted(expected)
    for key in sorted(expected):
        assert actual[key] == expected[key], key
    # Inventory at the start plus entries minus exits is the inventory at the end.
    for segment in report.segments:
        assert report.value("inventory_start", segment=segment) + report.value(
            "entered", segment=segment
        ) - report.value("left", segment=segment) == report.value("inventory_end", segment=segment)
    return report


@pytest.fixture(scope="module")
def history() -> History:
    return build_history(REFERRALS, SEED, END, days=35)


@pytest.fixture(scope="module")
def snapshots(history: History) -> dict[datetime, dict[str, Snap]]:
    rules = default_rules()
    return _snapshots(history, lambda _: rules)


def test_report_matches_numbers_computed_from_the_generated_history(
    db_url: str,
    history: History,
    snapshots: dict[datetime, dict[str, Snap]],
    tmp_path: Path,
) -> None:
    rules = default_rules()
    engine = _store_history(db_url, history, lambda _: rules)
    try:
        w48 = _check(engine, history, snapshots, Period.week("2026-W48"), rules)
        _check(engine, history, snapshots, Period.week("2026-W47"), rules)
        _check(engine, history, snapshots, Period.between(END - 10 * DAY, END - 3 * DAY), rules)
    finally:
        engine.dispose()
    # The history exercises what the report counts (else an all-zero report would pass).
    for metric in ("entered", "left", "received", "missing_stale", "patient_active"):
        assert any(n.value for n in w48.numbers if n.metric == metric), metric
    assert w48.value("status_asked") > 0
    assert w48.value("contact_attempts") > 0
    # The command line gives the same numbers, each with its referral ids in the CSV.
    out = tmp_path / "w48.csv"
    assert main(["report", "--week", "2026-W48", "--db", db_url, "--format", "csv",
                 "--out", str(out)]) == 0  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == len(w48.numbers)
    for row, number in zip(rows, w48.numbers, strict=True):
        assert row["metric"] == number.metric
        ids = row["referrals"].split()
        assert ids == list(number.referrals)
        assert int(row["referral_count"]) == len(ids)
        assert all(i.startswith("ServiceRequest/") for i in ids)
        if number.metric not in ("ready_days_median", "ready_days_p90", "attempts_per_referral"):
            assert float(row["value"]) == number.value
    assert json.loads(render_json(w48))["numbers"][0]["referrals"] == list(w48.numbers[0].referrals)


def test_rules_change_mid_period(db_url: str, history: History) -> None:
    base = default_rules()
    # From Wednesday of 2026-W48 on, the practice counts a source as high-relationship from 2
    # referrals and looks back 7 days (not 14) for patient activity.
    changed = base.model_copy(
        update={
            "high_relationship": base.high_relationship.model_copy(update={"min_referrals": 2}),
            "patient_active": base.patient_active.model_copy(update={"window_days": 7}),
        }
    )
    switch = datetime(2026, 11, 25, tzinfo=UTC)

    def rules_at(day: datetime) -> PracticeRules:
        return changed if day >= switch else base

    snaps = _snapshots(history, rules_at)
    engine = _store_history(db_url, history, rules_at)
    try:
        report = _check(engine, history, snaps, Period.week("2026-W48"), changed)
    finally:
        engine.dispose()
    assert report.value("entered", segment="high-relationship") > 0


def test_empty_week_and_week_of_closed_referrals(db_url: str, tmp_path: Path) -> None:
    rules = default_rules()
    small = build_history(30, 5, END, days=35)
    # Every referral already closed when it arrives: revoked in every version.
    closed = History(
        small.days,
        tuple(
            (t, {**r, "status": "revoked"} if r["resourceType"] == "ServiceRequest" else r)
            for t, r in small.arrivals
        ),
        small.contacts,
    )
    engine = _store_history(db_url, closed, lambda _: rules)
    try:
        with Session(engine) as session:
            empty = compute_report(session, Period.week("2026-W40"), rules)
            only_closed = compute_report(session, Period.week("2026-W48"), rules)
    finally:
        engine.dispose()
    for report in (empty, only_closed):
        for metric in ("inventory_start", "inventory_end", "entered", "left", "aging"):
            assert not [n for n in report.numbers if n.metric == metric], metric
        # First seen closed: not leakage of this practice's follow-up.
        assert report.value("leak_closed_without_appointment") == 0
        assert report.value("leak_revoked") == 0
        assert report.value("patient_active") == 0
        assert "attempts_per_referral" not in {n.metric for n in report.numbers}
        assert "<svg" in render_html(report)
        assert render_csv(report).startswith("metric,")
        json.loads(render_json(report))
    assert empty.value("received") == 0
    assert only_closed.value("received") > 0
    assert only_closed.value("funnel", stage="received") == only_closed.value("received")
    assert only_closed.value("funnel", stage="scheduled") == 0


def test_report_command_refuses_bad_periods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--week", "2026-W60", "--db", "sqlite://"]) == 2
    assert "no such ISO week" in capsys.readouterr().err
    assert main(["report", "--db", "sqlite://"]) == 2
    assert "--week" in capsys.readouterr().err
    assert main(["report", "--from", "2026-11-30", "--to", "2026-11-23", "--db", "sqlite://"]) == 2
    assert "must end after" in capsys.readouterr().err


def test_html_report_renders_in_chromium_without_console_errors(
    history: History, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    rules = default_rules()
    engine = _store_history(f"sqlite:///{tmp_path / 'store.db'}", history, lambda _: rules)
    try:
        with Session(engine) as session:
            report = compute_report(session, Period.week("2026-W48"), rules)
    finally:
        engine.dispose()
    page_file = artifacts_folder() / "report-2026-W48.html"
    page_file.write_text(render_html(report), encoding="utf-8")
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            assert page.locator("h1").inner_text().endswith("2026-W48")
            assert page.locator("svg").count() >= 4
            # The heatmap has a cell per segment and band.
            cells = page.locator("svg").nth(0).locator("rect").count()
            assert cells == len(report.segments) * len(report.bands)
            shot = artifacts_folder() / "report-2026-W48.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith("file:")] == []  # self-contained
    assert shot.stat().st_size > 10_000
