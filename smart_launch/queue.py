"""The work queue, read from the store: lanes by primary segment, the same-day review lane,
filters and sorting, and one referral with everything a coordinator needs to act on it.

Each lane is one indexed query (state, primary segment, due time) for a page of referrals, and
one grouped count; the page's patients, owners, notes, contact attempts and reviews are read
for that page only, so the queue costs the same with 500 referrals or 50,000.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from adapter.planning import follow_up_note
from adapter.store_models import (
    ContactAttemptRow,
    NoteRow,
    OutboxEntry,
    OwnerRow,
    Referral,
    ReviewRow,
    StoredResource,
)
from fhir_profiles import terminology
from mappings.names import display_name
from mappings.review import ReviewWindow

__all__ = [
    "BANDS",
    "Filters",
    "Lane",
    "QueueCache",
    "QueueItem",
    "QueuePage",
    "ReferralView",
    "display_name",
    "lanes",
    "referral_view",
    "source_names",
]

REVIEW_LANE = "same-day-review"
HIGH_RELATIONSHIP = "high-relationship"
SORTS = ("due", "age", "arrived")
BANDS = tuple(band.code for band in terminology().aging_bands)


@dataclass(frozen=True)
class Filters:
    segment: str | None = None
    band: str | None = None
    source: str | None = None
    owner: str | None = None  # an owner's reference or name, or "unassigned"
    overdue: bool = False
    sort: str = "due"
    patient: str | None = None  # the launch's patient context: only their referrals

    def query(self) -> dict[str, str]:
        """The filters as query parameters (for links that keep them)."""
        out = {
            "segment": self.segment,
            "band": self.band,
            "source": self.source,
            "owner": self.owner,
            "overdue": "1" if self.overdue else None,
            "sort": self.sort if self.sort != "due" else None,
        }
        return {k: v for k, v in out.items() if v}


@dataclass
class QueueItem:
    key: str
    patient: str | None
    patient_name: str | None
    birth_date: str | None
    evaluation: dict[str, Any]
    owner: str | None = None
    attempts: int = 0
    last_attempt: str | None = None
    note: str | None = None
    reviewed: bool = False

    @property
    def referral_id(self) -> str:
        return self.key.partition("/")[2]

    @property
    def action(self) -> dict[str, Any]:
        found = self.evaluation.get("next_action")
        return found if isinstance(found, dict) else {}

    @property
    def overdue(self) -> bool:
        return bool(self.action.get("overdue"))


@dataclass
class Lane:
    code: str
    title: str
    total: int
    items: list[QueueItem] = field(default_factory=list)
    hint: str = ""


T = TypeVar("T")


@dataclass(frozen=True)
class QueuePage:
    """What the queue page shows that the cache keeps: its lanes, the source filter's choices,
    and the lanes rendered once as HTML (the same for everyone who asks with these filters: the
    cards carry nothing of the person looking), so a cached request renders only the page
    around them."""

    lanes: list[Lane]
    sources: list[tuple[str, str, int]]
    lanes_html: str

    @property
    def patients(self) -> list[str]:
        """The patients whose referrals the page shows (for the audit of who saw what)."""
        return sorted({i.patient for lane in self.lanes for i in lane.items if i.patient})


class QueueCache(Generic[T]):
    """The queue's lanes, kept for a few seconds per (filters, review window): coordinators
    opening the queue at the same time share one computation. When an entry is due, one
    request computes it afresh while the others are served the entry it replaces (no crowd of
    identical computations at the moment it expires); when there is no entry yet, the others
    wait for that one computation instead of each running it. Every action taken in the view
    clears the cache, so a person sees what they just did at once; changes from a sync show
    within about `seconds`. With `seconds` 0 nothing is kept."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Condition()
        self._entries: dict[Hashable, tuple[float, T]] = {}
        self._refreshing: set[Hashable] = set()
        self._generation = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if self.seconds <= 0:
            return compute()
        with self._lock:
            while True:
                now = time.monotonic()
                found = self._entries.get(key)
                if found is not None and (found[0] > now or key in self._refreshing):
                    return found[1]
                if key not in self._refreshing:
                    break
                # Nothing to serve yet and another request is computing it: wait for that
                # (then look again: it may have failed, or been overtaken by an action).
                self._lock.wait(timeout=60)
            self._refreshing.add(key)
            generation = self._generation
        try:
            value = compute()
        except BaseException:
            with self._lock:
                self._refreshing.discard(key)
                self._lock.notify_all()
            raise
        with self._lock:
            self._refreshing.discard(key)
            # Not kept if an action cleared the cache while this was computed.
            if generation == self._generation:
                if len(self._entries) > 256:
                    self._entries.clear()
                self._entries[key] = (now + self.seconds, value)
            self._lock.notify_all()
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1


def _conditions(filters: Filters, now: datetime) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = [Referral.state == "open"]
    if filters.patient:
        found.append(Referral.patient == filters.patient)
    if filters.band:
        found.append(Referral.aging_band == filters.band)
    if filters.source:
        found.append(Referral.source == filters.source)
    if filters.overdue:
        found.append(Referral.due_at < now)
    if filters.owner == "unassigned":
        found.append(~exists().where(OwnerRow.referral_key == Referral.key))
    elif filters.owner:
        found.append(
            exists().where(
                OwnerRow.referral_key == Referral.key,
                or_(
                    OwnerRow.owner_reference == filters.owner,
                    OwnerRow.owner_display == filters.owner,
                ),
            )
        )
    return found


def _order(sort: str) -> list[Any]:
    if sort == "age":
        return [Referral.age_days.desc().nulls_last(), Referral.key]
    if sort == "arrived":
        return [Referral.arrived_at.desc().nulls_last(), Referral.key]
    return [Referral.due_at.asc().nulls_last(), Referral.key]


def _not_reviewed() -> ColumnElement[bool]:
    return ~exists().where(ReviewRow.referral_key == Referral.key)


def lanes(
    session: Session,
    filters: Filters,
    now: datetime,
    window: ReviewWindow,
    page_size: int,
) -> list[Lane]:
    """The queue: the same-day review lane, then one lane per primary segment in precedence
    order (ready work before work that cannot move), each with its total and first page."""
    terms = terminology()
    conditions = _conditions(filters, now)
    totals = dict(
        session.execute(
            select(Referral.primary_segment, func.count())
            .where(and_(*conditions))
            .group_by(Referral.primary_segment)
        ).all()
    )
    review_conditions = [*conditions, Referral.arrived_at >= window.since, _not_reviewed()]
    review_total = session.execute(
        select(func.count()).select_from(Referral).where(and_(*review_conditions))
    ).scalar_one()
    out: list[Lane] = []
    wanted = [filters.segment] if filters.segment else [REVIEW_LANE, *terms.segments]
    rows: dict[str, list[Any]] = {}
    for code in wanted:
        if code == REVIEW_LANE:
            stmt = select(Referral).where(and_(*review_conditions))
            total = int(review_total)
        elif code == HIGH_RELATIONSHIP:
            # Never a primary segment: its lane holds every open referral in it, each also
            # shown in the lane of its primary segment.
            stmt = select(Referral).where(and_(*conditions), Referral.high_relationship.is_(True))
            total = int(
                session.execute(
                    select(func.count())
                    .select_from(Referral)
                    .where(and_(*conditions), Referral.high_relationship.is_(True))
                ).scalar_one()
            )
        elif code in terms.segments:
            stmt = select(Referral).where(and_(*conditions), Referral.primary_segment == code)
            total = int(totals.get(code, 0))
        else:
            continue
        if total:
            rows[code] = list(
                session.execute(stmt.order_by(*_order(filters.sort)).limit(page_size)).scalars()
            )
        else:
            rows[code] = []
        title = "Same-day review" if code == REVIEW_LANE else terms.segment_displays[code]
        lane = Lane(code=code, title=title, total=total)
        if code == REVIEW_LANE:
            lane.hint = "arrived since the review before the last one and not yet marked reviewed"
        elif code == HIGH_RELATIONSHIP:
            lane.hint = "from offices that send recurring volume; each is also in its own lane"
        out.append(lane)
    items = _items(session, [r for found in rows.values() for r in found])
    for lane in out:
        lane.items = [items[r.key] for r in rows[lane.code]]
    return out


def _items(session: Session, referrals: Sequence[Referral]) -> dict[str, QueueItem]:
    keys = sorted({r.key for r in referrals})
    if not keys:
        return {}
    patients = _patients(session, {r.patient for r in referrals if r.patient})
    owners = {
        row.referral_key: row.owner_display or row.owner_reference
        for row in session.execute(
            select(OwnerRow).where(OwnerRow.referral_key.in_(keys))
        ).scalars()
    }
    attempts: dict[str, tuple[int, Any]] = {
        key: (int(count), last)
        for key, count, last in session.execute(
            select(ContactAttemptRow.referral_key, func.count(), func.max(ContactAttemptRow.at))
            .where(ContactAttemptRow.referral_key.in_(keys))
            .group_by(ContactAttemptRow.referral_key)
        )
    }
    newest = (
        select(func.max(NoteRow.id))
        .where(NoteRow.referral_key.in_(keys))
        .group_by(NoteRow.referral_key)
    )
    notes = {
        row.referral_key: follow_up_note(row).text()
        for row in session.execute(select(NoteRow).where(NoteRow.id.in_(newest))).scalars()
    }
    reviewed = set(
        session.execute(
            select(ReviewRow.referral_key).where(ReviewRow.referral_key.in_(keys))
        ).scalars()
    )
    found: dict[str, QueueItem] = {}
    for referral in referrals:
        name, birth = patients.get(referral.patient or "", (None, None))
        count, last = attempts.get(referral.key, (0, None))
        found[referral.key] = QueueItem(
            key=referral.key,
            patient=referral.patient,
            patient_name=name,
            birth_date=birth,
            evaluation=referral.evaluation,
            owner=owners.get(referral.key),
            attempts=count,
            last_attempt=last.date().isoformat() if last else None,
            note=notes.get(referral.key),
            reviewed=referral.key in reviewed,
        )
    return found


def _patients(session: Session, keys: set[str]) -> dict[str, tuple[str | None, str | None]]:
    ids = sorted(k.partition("/")[2] for k in keys if k.startswith("Patient/"))
    found: dict[str, tuple[str | None, str | None]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(StoredResource.id, StoredResource.body).where(
                StoredResource.resource_type == "Patient",
                StoredResource.id.in_(ids[start : start + 500]),
                StoredResource.deleted.is_(False),
            )
        )
        for rid, body in rows:
            birth = body.get("birthDate")
            found[f"Patient/{rid}"] = (
                display_name(body),
                birth if isinstance(birth, str) else None,
            )
    return found


# The source filter offers the offices that send most: a practice hears from thousands of
# referring parties over the years, and a list of every one made the queue page mostly <option>s.
SOURCE_CHOICES = 60


def source_names(
    session: Session,
    patient: str | None = None,
    selected: str | None = None,
    limit: int = SOURCE_CHOICES,
) -> list[tuple[str, str, int]]:
    """The referring sources with most open referrals (and the selected one), as (key, name,
    open referrals), by name."""
    stmt = (
        select(Referral.source, func.count())
        .where(Referral.state == "open", Referral.source.is_not(None))
        .group_by(Referral.source)
        .order_by(func.count().desc(), Referral.source)
        .limit(limit)
    )
    if patient:
        stmt = stmt.where(Referral.patient == patient)
    counts = {str(k): int(n) for k, n in session.execute(stmt) if k}
    if selected and selected not in counts:
        counts[selected] = int(
            session.execute(
                select(func.count())
                .select_from(Referral)
                .where(Referral.state == "open", Referral.source == selected)
            ).scalar_one()
        )
    names: dict[str, str] = {}
    by_type: dict[str, list[str]] = {}
    for key in counts:
        rtype, _, rid = key.partition("/")
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in by_type.items():
        for rid, body in session.execute(
            select(StoredResource.id, StoredResource.body).where(
                StoredResource.resource_type == rtype, StoredResource.id.in_(ids)
            )
        ):
            shown = display_name(body)
            if shown:
                names[f"{rtype}/{rid}"] = shown
    return sorted(
        ((k, names.get(k, k), n) for k, n in counts.items()), key=lambda row: row[1].lower()
    )


@dataclass
class ReferralView:
    item: QueueItem
    state: str
    source_name: str | None
    attempts: list[ContactAttemptRow]
    notes: list[NoteRow]
    writes: list[OutboxEntry]
    reviewed_at: datetime | None
    reviewed_by: str | None


def referral_view(session: Session, key: str) -> ReferralView | None:
    referral = session.get(Referral, key)
    if referral is None:
        return None
    item = _items(session, [referral])[key]
    attempts = list(
        session.execute(
            select(ContactAttemptRow)
            .where(ContactAttemptRow.referral_key == key)
            .order_by(ContactAttemptRow.at.desc())
        ).scalars()
    )
    notes = list(
        session.execute(
            select(NoteRow).where(NoteRow.referral_key == key).order_by(NoteRow.id.desc()).limit(10)
        ).scalars()
    )
    writes = list(
        session.execute(
            select(OutboxEntry)
            .where(OutboxEntry.referral_key == key)
            .order_by(OutboxEntry.id.desc())
            .limit(20)
        ).scalars()
    )
    review = session.get(ReviewRow, key)
    source_name = None
    if referral.source and "/" in referral.source:
        rtype, _, rid = referral.source.partition("/")
        body = session.execute(
            select(StoredResource.body).where(
                StoredResource.resource_type == rtype, StoredResource.id == rid
            )
        ).scalar_one_or_none()
        source_name = display_name(body) if body else None
    return ReferralView(
        item=item,
        state=referral.state,
        source_name=source_name,
        attempts=attempts,
        notes=notes,
        writes=writes,
        reviewed_at=review.reviewed_at if review else None,
        reviewed_by=review.reviewed_by if review else None,
    )
