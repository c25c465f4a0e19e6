"""Leakage metrics for the weekly referral review, computed in SQL over the store.

`compute_report(session, period, rules)` is a pure read: it returns a `Report` (a frozen
dataclass of `Number`s, each naming the referrals behind it) that `adapter.report_render`
turns into HTML, CSV or JSON and that the SMART view can show as it is.

Where a referral stood at an instant `t` comes from the segment history: a history row is
written whenever a referral's state or segments change, so its state just before `t` is the
`from_*` side of its first row at or after `t`, or, with no row since `t`, its current row in
`referral`. Every query therefore reads the history rows since the period's start (indexed by
`as_of`) and the referrals open now, never the whole history: the cost follows the activity
since the period, not the size of the store. A period is half-open, [start, end): inventory at
the start is what stood just before it, a change at `as_of == start` is in the period, and
inventory at the start plus entries minus exits is the inventory at the end.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    String,
    Subquery,
    and_,
    case,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    union,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from adapter.errors import ConfigError
from adapter.store_models import (
    ContactAttemptRow,
    NoteRow,
    Referral,
    SegmentChange,
    StoredResource,
)
from fhir_profiles import terminology
from mappings.business_hours import Calendar
from mappings.rules import PracticeRules

__all__ = [
    "DEFINITIONS",
    "Number",
    "Period",
    "Report",
    "ReportSettings",
    "compute_report",
    "week_label",
]

OPEN, SCHEDULED, CLOSED = "open", "scheduled", "closed"
READY, MISSING = "ready-to-schedule", "missing-detail"
PATIENT_ACTIVE, HIGH_RELATIONSHIP = "patient-active", "high-relationship"
NO_SOURCE = "(none)"  # a referral without a requester, or one that has left the store
UNDATED = "undated"  # no authoredOn and no meta.lastUpdated: no age
DAY = timedelta(days=1)

# What each metric counts; the HTML and JSON outputs carry these texts.
DEFINITIONS: dict[str, str] = {
    "inventory_start": "open referrals in the segment just before the period starts",
    "inventory_end": "open referrals in the segment just before the period ends",
    "entered": "entries into the segment during the period (a referral entering twice counts "
    "twice)",
    "left": "exits from the segment during the period (scheduled, closed, or moved on)",
    "received": "referrals that arrived (authoredOn, else first lastUpdated) in the period",
    "aging": "open referrals in the segment at the period's end, by age band at that instant",
    "trend_inventory": "open referrals in the segment at the end of each week",
    "funnel": "referrals received in the period: how many reached ready-to-schedule, and how "
    "many were scheduled, before the period's end",
    "ready_scheduled": "referrals that went from ready-to-schedule to scheduled in the period",
    "ready_days_median": "days from becoming ready-to-schedule to scheduled (median)",
    "ready_days_p90": "days from becoming ready-to-schedule to scheduled (90th percentile, "
    "nearest rank)",
    "missing_stale": "missing-detail referrals at the period's end older than the stale limit",
    "missing_items": "what the stale missing-detail referrals lack, and whom to ask",
    "patient_active": "referrals that were patient-active at some time in the period",
    "patient_active_repeat_contact": "of those, referrals with more than one contact attempt "
    "up to the period's end",
    "contact_attempts": "contact attempts up to the period's end for the patient-active referrals",
    "attempts_per_referral": "contact attempts per patient-active referral (mean)",
    "status_asked": "high-relationship referrals whose referring office sent a Communication "
    "about the referral in the period (it had to ask for status)",
    "leak_closed_without_appointment": "referrals closed in the period while open, never scheduled",
    "leak_revoked": "referrals closed in the period whose ServiceRequest is revoked",
    "leak_open_past_limit": "referrals open at the period's end older than the practice's limit",
    "follow_up_met": "entries into a primary segment in the period with a contact attempt or "
    "note within the segment's follow-up standard",
    "follow_up_missed": "entries whose standard came due before the period's end without one",
    "follow_up_pending": "entries whose standard is due after the period's end, nothing yet",
}


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval [start, end) of aware UTC instants, with a label."""

    start: datetime
    end: datetime
    label: str

    @classmethod
    def week(cls, text: str) -> Period:
        """An ISO week such as 2026-W48: Monday 00:00 UTC to the next Monday."""
        found = re.fullmatch(r"(\d{4})-?W(\d{2})", text.strip())
        if not found:
            raise ConfigError(f"--week {text!r}: not an ISO week such as 2026-W48")
        try:
            monday = date.fromisocalendar(int(found[1]), int(found[2]), 1)
        except ValueError:
            raise ConfigError(f"--week {text!r}: no such ISO week") from None
        start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
        return cls(start, start + 7 * DAY, f"{found[1]}-W{found[2]}")

    @classmethod
    def between(cls, start: datetime, end: datetime) -> Period:
        if start.tzinfo is None or end.tzinfo is None:
            raise ConfigError("a period needs timezone-aware instants")
        if end <= start:
            raise ConfigError("a period must end after it starts")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        return cls(start, end, f"{_instant(start)} to {_instant(end)}")


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def week_label(end: datetime) -> str:
    """The ISO week that ends at (or holds the instant just before) `end`."""
    year, week, _ = (end - timedelta(microseconds=1)).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """The report's own thresholds (the practice's segment standards come from the rules)."""

    stale_missing_days: int = 7  # "missing-detail referrals that aged past a week"
    open_limit_days: int = 30  # open longer than this is leakage
    trend_weeks: int = 8


@dataclass(frozen=True, slots=True)
class Number:
    """One number of the report, what it is broken down by, and the referrals behind it."""

    metric: str
    value: float
    referrals: tuple[str, ...] = ()
    by: tuple[tuple[str, str], ...] = ()

    def dim(self, name: str) -> str | None:
        return dict(self.by).get(name)

    def to_json(self) -> dict[str, Any]:
        value: float | int = int(self.value) if float(self.value).is_integer() else self.value
        return {
            "metric": self.metric,
            "by": dict(self.by),
            "value": value,
            "referrals": list(self.referrals),
        }


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    settings: ReportSettings
    numbers: tuple[Number, ...]
    segments: tuple[str, ...] = field(default_factory=lambda: terminology().segments)
    bands: tuple[str, ...] = field(
        default_factory=lambda: tuple(b.code for b in terminology().aging_bands)
    )

    def select(self, metric: str, **by: str) -> list[Number]:
        """The numbers of one metric broken down by exactly the given dimensions."""
        wanted = set(by.items())
        return [
            n
            for n in self.numbers
            if n.metric == metric and {k for k, _ in n.by} == set(by) and wanted <= set(n.by)
        ]

    def value(self, metric: str, **by: str) -> float:
        """One number's value (0 when the report has no such row: nothing to count)."""
        found = self.select(metric, **by)
        return found[0].value if found else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "period": {
                "label": self.period.label,
                "start": _instant(self.period.start),
                "end": _instant(self.period.end),
            },
            "settings": {
                "stale_missing_days": self.settings.stale_missing_days,
                "open_limit_days": self.settings.open_limit_days,
                "trend_weeks": self.settings.trend_weeks,
            },
            "definitions": DEFINITIONS,
            "numbers": [n.to_json() for n in self.numbers],
        }


# ---------------------------------------------------------------------------------------------
# SQL building blocks (SQLite and PostgreSQL)

H = SegmentChange.__table__.c
_EMPTY_JSONB: ColumnElement[Any] = literal_column("'[]'::jsonb")
R = Referral.__table__.c


class _Sql:
    """The few constructs whose spelling differs between SQLite and PostgreSQL."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pg = session.get_bind().dialect.name == "postgresql"

    def elements(self, array: ColumnElement[Any], name: str) -> Any:
        """The elements of a JSON array column as a table (column `value`), empty for a JSON
        null; joined ON true, the function sees the row (implicitly lateral in both)."""
        if self.pg:
            safe = case((func.jsonb_typeof(array) == "array", array), else_=_EMPTY_JSONB)
            return func.jsonb_array_elements_text(safe).table_valued("value").render_derived(name)
        safe = case((func.json_type(array) == "array", array), else_=literal("[]"))
        return func.json_each(safe).table_valued("value").alias(name)

    def objects(self, array: ColumnElement[Any], name: str) -> Any:
        """The elements of a JSON array of objects (column `value`, JSON)."""
        if self.pg:
            safe = case((func.jsonb_typeof(array) == "array", array), else_=_EMPTY_JSONB)
            return func.jsonb_array_elements(safe).table_valued("value").render_derived(name)
        safe = case((func.json_type(array) == "array", array), else_=literal("[]"))
        return func.json_each(safe).table_valued("value").alias(name)

    def member(self, obj: ColumnElement[Any], key: str) -> ColumnElement[str]:
        """A text member of a JSON object value produced by `objects`."""
        if self.pg:
            return obj.op("->>", return_type=String)(key)
        return func.json_extract(obj, f"$.{key}")

    def has(self, array: Any, code: ColumnElement[Any] | str) -> ColumnElement[bool]:
        """The JSON array of strings holds `code` (false for a JSON or SQL null)."""
        if self.pg:
            return func.coalesce(array.op("?", return_type=Boolean)(code), False)
        needle = literal(f'"{code}"') if isinstance(code, str) else '"' + code + '"'
        return func.coalesce(func.instr(array, needle), 0) > 0

    def grouped(
        self, rows: Subquery, metric: str, dims: Sequence[str], *, events: bool = True
    ) -> list[Number]:
        """Count the rows of `rows` (column `key` and the named dimensions) per dimension
        values, with the referral keys behind each count aggregated in the database. `events`
        counts rows; otherwise distinct referrals."""
        columns = [rows.c[d] for d in dims]
        count = func.count() if events else func.count(rows.c.key.distinct())
        stmt = select(*columns, count, func.aggregate_strings(rows.c.key, " ")).group_by(*columns)
        out = []
        for row in self.session.execute(stmt):
            values, n, keys = row[: len(dims)], row[len(dims)], row[len(dims) + 1]
            by = tuple((d, str(v)) for d, v in zip(dims, values, strict=True))
            out.append(Number(metric, int(n), _keys(keys), by))
        return sorted(out, key=lambda number: number.by)

    def total(self, rows: Subquery, metric: str, *, events: bool = True) -> Number:
        count = func.count() if events else func.count(rows.c.key.distinct())
        n, keys = self.session.execute(select(count, func.aggregate_strings(rows.c.key, " "))).one()
        return Number(metric, int(n or 0), _keys(keys))


def _keys(text: str | None) -> tuple[str, ...]:
    return tuple(sorted(set(text.split()))) if text else ()


def _source() -> ColumnElement[str]:
    return func.coalesce(R.source, NO_SOURCE)


def _request_id(key: ColumnElement[str]) -> ColumnElement[str]:
    """The ServiceRequest id of a referral key, so that the join uses the primary key."""
    return func.substr(key, len("ServiceRequest/") + 1)


def _snapshot(at: datetime) -> Subquery:
    """Open referrals just before `at`: columns key, segments."""
    ranked = (
        select(
            H.referral_key.label("key"),
            H.from_state.label("state"),
            H.from_segments.label("segments"),
            func.row_number()
            .over(partition_by=H.referral_key, order_by=(H.as_of, H.id))
            .label("n"),
        )
        .where(H.as_of >= at)
        .subquery()
    )
    changed = select(ranked.c.key, ranked.c.segments).where(ranked.c.n == 1, ranked.c.state == OPEN)
    unchanged = select(R.key, R.segments).where(
        R.state == OPEN,
        ~exists().where(H.referral_key == R.key, H.as_of >= at),
    )
    return union_all(changed, unchanged).subquery()


class _Builder:
    def __init__(
        self, session: Session, period: Period, rules: PracticeRules, settings: ReportSettings
    ) -> None:
        self.sql = _Sql(session)
        self.session = session
        self.period = period
        self.rules = rules
        self.settings = settings
        self.terms = terminology()
        self.numbers: list[Number] = []

    @property
    def in_period(self) -> ColumnElement[bool]:
        return and_(H.as_of >= self.period.start, H.as_of < self.period.end)

    def add(self, numbers: Iterable[Number]) -> None:
        self.numbers.extend(numbers)

    def by_segment(self, at: datetime, name: str = "seg") -> Subquery:
        """Open referrals just before `at`, one row per segment: key, segment, source,
        arrived_at."""
        snap = _snapshot(at)
        each = self.sql.elements(snap.c.segments, name)
        return (
            select(
                snap.c.key,
                each.c.value.label("segment"),
                _source().label("source"),
                R.arrived_at,
            )
            .select_from(snap.join(each, true()).outerjoin(Referral, R.key == snap.c.key))
            .subquery()
        )

    def band(self, arrived: ColumnElement[Any], at: datetime) -> ColumnElement[str]:
        bands = self.terms.aging_bands
        # Whole days rounded down: age <= max  <=>  arrived > at - (max + 1) days.
        whens: list[tuple[ColumnElement[bool], str]] = [(arrived.is_(None), UNDATED)]
        whens += [
            (arrived > at - (band.max_days + 1) * DAY, band.code)
            for band in bands
            if band.max_days is not None
        ]
        return case(*whens, else_=bands[-1].code)

    # --- movement ---------------------------------------------------------------------------

    def inventory(self) -> None:
        for metric, at in (
            ("inventory_start", self.period.start),
            ("inventory_end", self.period.end),
        ):
            rows = self.by_segment(at)
            self.add(self.sql.grouped(rows, metric, ["segment"]))
            self.add(self.sql.grouped(rows, metric, ["segment", "source"]))

    def movement(self) -> None:
        into = self.sql.elements(H.to_segments, "seg")
        entered = (
            select(
                H.referral_key.label("key"),
                into.c.value.label("segment"),
                _source().label("source"),
            )
            .select_from(
                SegmentChange.__table__.join(into, true()).outerjoin(
                    Referral, R.key == H.referral_key
                )
            )
            .where(
                self.in_period,
                or_(
                    H.from_state.is_distinct_from(OPEN),
                    ~self.sql.has(H.from_segments, into.c.value),
                ),
            )
            .subquery()
        )
        out = self.sql.elements(H.from_segments, "seg")
        left = (
            select(
                H.referral_key.label("key"), out.c.value.label("segment"), _source().label("source")
            )
            .select_from(
                SegmentChange.__table__.join(out, true()).outerjoin(
                    Referral, R.key == H.referral_key
                )
            )
            .where(
                self.in_period,
                H.from_state == OPEN,
                ~self.sql.has(H.to_segments, out.c.value),
            )
            .subquery()
        )
        for metric, rows in (("entered", entered), ("left", left)):
            self.add(self.sql.grouped(rows, metric, ["segment"]))
            self.add(self.sql.grouped(rows, metric, ["segment", "source"]))

    def received(self) -> None:
        start, end = self.period.start, self.period.end
        cohort = (
            select(R.key, _source().label("source"))
            # Every state listed, so that the (state, arrived_at) index serves the range.
            .where(R.state.in_(self.terms.states), R.arrived_at >= start, R.arrived_at < end)
            .subquery()
        )
        self.add([self.sql.total(cohort, "received")])
        self.add(self.sql.grouped(cohort, "received", ["source"]))
        later = aliased(SegmentChange)
        ready = exists().where(
            later.referral_key == cohort.c.key,
            later.as_of < end,
            self.sql.has(later.to_segments, READY),
        )
        booked = exists().where(
            later.referral_key == cohort.c.key, later.as_of < end, later.to_state == SCHEDULED
        )
        for stage, condition in (("received", true()), (READY, ready), (SCHEDULED, booked)):
            rows = select(cohort.c.key).where(condition).subquery()
            number = self.sql.total(rows, "funnel")
            self.add([Number("funnel", number.value, number.referrals, (("stage", stage),))])

    def aging(self) -> None:
        at = self.period.end
        snap = self.by_segment(at)
        rows = select(
            snap.c.key, snap.c.segment, self.band(snap.c.arrived_at, at).label("band")
        ).subquery()
        self.add(self.sql.grouped(rows, "aging", ["segment", "band"]))

    def trends(self) -> None:
        for weeks_back in range(self.settings.trend_weeks - 1, -1, -1):
            at = self.period.end - weeks_back * 7 * DAY
            rows = self.by_segment(at, "seg")
            for number in self.sql.grouped(rows, "trend_inventory", ["segment"]):
                by = (("week", week_label(at)), *number.by)
                self.add([Number(number.metric, number.value, number.referrals, by)])

    # --- the four questions of the seed --------------------------------------------------------

    def ready_to_appointment(self) -> None:
        spell = aliased(SegmentChange)
        began = (
            select(func.max(spell.as_of))
            .where(
                spell.referral_key == H.referral_key,
                spell.id < H.id,
                spell.as_of <= H.as_of,
                self.sql.has(spell.to_segments, READY),
                or_(
                    spell.from_state.is_distinct_from(OPEN),
                    ~self.sql.has(spell.from_segments, READY),
                ),
            )
            .scalar_subquery()
        )
        rows = self.session.execute(
            select(H.referral_key, H.as_of, began.label("began")).where(
                self.in_period,
                H.from_state == OPEN,
                H.to_state == SCHEDULED,
                self.sql.has(H.from_segments, READY),
            )
        ).all()
        keys = tuple(sorted({row.referral_key for row in rows}))
        self.add([Number("ready_scheduled", len(rows), keys)])
        days = sorted(
            (row.as_of - _aware(row.began)).total_seconds() / 86400
            for row in rows
            if row.began is not None
        )
        if days:
            self.add(
                [
                    Number("ready_days_median", round(statistics.median(days), 2), keys),
                    Number("ready_days_p90", round(days[math.ceil(0.9 * len(days)) - 1], 2), keys),
                ]
            )

    def missing(self) -> None:
        at = self.period.end
        snap = self.by_segment(at)
        limit = at - (self.settings.stale_missing_days + 1) * DAY  # age > N whole days
        stale = (
            select(snap.c.key, snap.c.source)
            .where(snap.c.segment == MISSING, snap.c.arrived_at <= limit)
            .subquery()
        )
        self.add([self.sql.total(stale, "missing_stale")])
        self.add(self.sql.grouped(stale, "missing_stale", ["source"]))
        # What was missing: the reasons of each stale referral's last change before `at`, read
        # by key (newest first on the (referral_key, id) index), never by scanning the history.
        last = aliased(SegmentChange)
        latest = (
            select(last.reasons)
            .where(last.referral_key == stale.c.key, last.as_of < at)
            .order_by(last.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        lasts = select(stale.c.key, stale.c.source, latest.label("reasons")).subquery()
        reason = self.sql.objects(lasts.c.reasons, "why")
        item = self.sql.member(reason.c.value, "item")
        items = (
            select(lasts.c.key, lasts.c.source, item.label("item"))
            .select_from(lasts.join(reason, true()))
            .where(item.is_not(None))
            .distinct()
            .subquery()
        )
        for number in self.sql.grouped(items, "missing_items", ["item"]):
            code = number.dim("item") or ""
            asked = self.terms.missing_item(code).request_from
            self.add(
                [
                    Number(
                        number.metric,
                        number.value,
                        number.referrals,
                        (*number.by, ("request_from", asked)),
                    )
                ]
            )
        self.add(self.sql.grouped(items, "missing_items", ["source", "item"]))

    def ever_in(self, segment: str) -> Subquery:
        """Referrals in `segment` at some time in the period: key."""
        snap = _snapshot(self.period.start)
        before = select(snap.c.key).where(self.sql.has(snap.c.segments, segment))
        during = select(H.referral_key.label("key")).where(
            self.in_period, self.sql.has(H.to_segments, segment)
        )
        return union(before, during).subquery()

    def patient_active(self) -> None:
        keys = self.ever_in(PATIENT_ACTIVE)
        contact = ContactAttemptRow.__table__.c
        attempts = (
            select(keys.c.key, func.count(contact.id).label("n"))
            .select_from(
                keys.outerjoin(
                    ContactAttemptRow.__table__,
                    and_(contact.referral_key == keys.c.key, contact.at < self.period.end),
                )
            )
            .group_by(keys.c.key)
            .subquery()
        )
        n, total, all_keys = self.session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(attempts.c.n), 0),
                func.aggregate_strings(attempts.c.key, " "),
            )
        ).one()
        n, total = int(n), int(total)
        self.add([Number("patient_active", n, _keys(all_keys))])
        repeat = select(attempts.c.key).where(attempts.c.n > 1).subquery()
        self.add([self.sql.total(repeat, "patient_active_repeat_contact")])
        contacted = _keys(
            self.session.execute(
                select(func.aggregate_strings(attempts.c.key, " ")).where(attempts.c.n > 0)
            ).scalar()
        )
        self.add([Number("contact_attempts", total, contacted)])
        if n:
            self.add([Number("attempts_per_referral", round(total / n, 2), _keys(all_keys))])

    def status_asked(self) -> None:
        keys = self.ever_in(HIGH_RELATIONSHIP)
        message = StoredResource.__table__.c
        in_period = and_(
            message.resource_type == "Communication",
            message.deleted.is_(False),
            message.last_updated >= self.period.start,
            message.last_updated < self.period.end,
        )
        sender = message.body[("sender", "reference")].as_string().label("sender")
        # The period's messages first (one pass over them), each with the referral it names.
        refs = union_all(
            select(
                message.body[("basedOn", 0, "reference")].as_string().label("ref"), sender
            ).where(in_period),
            select(message.body[("about", 0, "reference")].as_string().label("ref"), sender).where(
                in_period
            ),
        ).subquery()
        request = aliased(StoredResource)
        requester = request.body[("requester", "reference")].as_string()
        rows = (
            select(keys.c.key, _source().label("source"))
            .select_from(
                refs.join(keys, keys.c.key == refs.c.ref)
                .outerjoin(Referral, R.key == keys.c.key)
                .outerjoin(
                    request,
                    and_(
                        request.resource_type == "ServiceRequest",
                        request.id == _request_id(keys.c.key),
                    ),
                )
            )
            .where(or_(refs.c.sender == R.source, refs.c.sender == requester))
            .distinct()
            .subquery()
        )
        self.add([self.sql.total(rows, "status_asked")])
        self.add(self.sql.grouped(rows, "status_asked", ["source"]))

    def leakage(self) -> None:
        earlier = aliased(SegmentChange)
        request = aliased(StoredResource)
        closing = and_(self.in_period, H.to_state == CLOSED, H.from_state == OPEN)
        never_booked = ~exists().where(
            earlier.referral_key == H.referral_key,
            earlier.id < H.id,
            earlier.to_state == SCHEDULED,
        )
        base = SegmentChange.__table__.outerjoin(Referral, R.key == H.referral_key)
        unbooked = (
            select(H.referral_key.label("key"), _source().label("source"))
            .select_from(base)
            .where(closing, never_booked)
            .subquery()
        )
        revoked = (
            select(H.referral_key.label("key"), _source().label("source"))
            .select_from(
                base.join(
                    request,
                    and_(
                        request.resource_type == "ServiceRequest",
                        request.id == _request_id(H.referral_key),
                    ),
                )
            )
            .where(
                self.in_period,
                H.to_state == CLOSED,
                H.from_state.is_not(None),
                H.from_state != CLOSED,
                request.body["status"].as_string() == "revoked",
            )
            .subquery()
        )
        at = self.period.end
        snap = _snapshot(at)
        past = (
            select(snap.c.key, _source().label("source"))
            .select_from(snap.join(Referral, R.key == snap.c.key))
            .where(R.arrived_at <= at - (self.settings.open_limit_days + 1) * DAY)
            .subquery()
        )
        for metric, rows in (
            ("leak_closed_without_appointment", unbooked),
            ("leak_revoked", revoked),
            ("leak_open_past_limit", past),
        ):
            self.add([self.sql.total(rows, metric, events=False)])
            self.add(self.sql.grouped(rows, metric, ["source"], events=False))

    def follow_up(self) -> None:
        contact, note = ContactAttemptRow.__table__.c, NoteRow.__table__.c
        first_contact = (
            select(func.min(contact.at))
            .where(contact.referral_key == H.referral_key, contact.at >= H.as_of)
            .scalar_subquery()
        )
        first_note = (
            select(func.min(note.written_at))
            .where(note.referral_key == H.referral_key, note.written_at >= H.as_of)
            .scalar_subquery()
        )
        entries = self.session.execute(
            select(
                H.referral_key,
                H.to_primary,
                H.as_of,
                first_contact.label("contact"),
                first_note.label("note"),
            ).where(
                self.in_period,
                H.to_state == OPEN,
                H.to_primary.is_not(None),
                or_(
                    H.from_state.is_distinct_from(OPEN),
                    H.from_primary.is_distinct_from(H.to_primary),
                ),
            )
        ).all()
        calendar = Calendar.from_rules(self.rules.business_hours)
        groups: dict[tuple[str, str, str], list[str]] = {}
        for row in entries:
            standard = self.rules.segments[row.to_primary]
            due = calendar.add(row.as_of, standard.follow_up_business_hours)
            acted = min((_aware(t) for t in (row.contact, row.note) if t is not None), default=None)
            if acted is not None and acted <= due:
                outcome = "follow_up_met"
            elif due < self.period.end:
                outcome = "follow_up_missed"
            elif acted is None or acted >= self.period.end:
                outcome = "follow_up_pending"
            else:
                outcome = "follow_up_missed"
            key = (outcome, row.to_primary, standard.owner_role)
            groups.setdefault(key, []).append(row.referral_key)
        for (metric, segment, role), keys in sorted(groups.items()):
            by = (("segment", segment), ("owner_role", role))
            self.add([Number(metric, len(keys), tuple(sorted(set(keys))), by)])


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC from aggregates (the column type is lost in MIN/MAX).
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def compute_report(
    session: Session,
    period: Period,
    rules: PracticeRules,
    settings: ReportSettings | None = None,
) -> Report:
    """Every number of the weekly review for `period`, computed in the database."""
    settings = settings or ReportSettings()
    builder = _Builder(session, period, rules, settings)
    if builder.sql.pg:
        # PostgreSQL guesses 100 rows per JSON array (jsonb_array_elements), so these small
        # queries look costly enough to JIT-compile, which then takes longer than the query
        # itself (half a second per query at 200k referrals). Off for this transaction only.
        session.execute(text("SET LOCAL jit = off"))
    builder.inventory()
    builder.movement()
    builder.received()
    builder.aging()
    builder.trends()
    builder.ready_to_appointment()
    builder.missing()
    builder.patient_active()
    builder.status_asked()
    builder.leakage()
    builder.follow_up()
    return Report(period, settings, tuple(builder.numbers))
