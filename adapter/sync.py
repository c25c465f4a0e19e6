"""`referral-adapter sync`: keep the store in step with an EHR's FHIR server, incrementally.

Every type the referral model reads is fetched by its own `_lastUpdated` cursor, so a change to
context (a new Coverage, a patient's message, a booked Appointment, a corrected Patient) is seen
even when the ServiceRequest did not change. Each page is stored in one transaction together with
its cursor, so a sync killed at any point resumes where its last stored page ended; the cursor
never moves past the instant the sync started, and each sync re-reads an overlap window before
its cursor, for clock skew and for commits that became visible late. Re-reading is harmless: the
store keeps the newest version of each resource. Resources the base definition refuses are
quarantined with their reason (element paths, no values) and the rest are stored.

After fetching, every referral is evaluated from what the store holds and saved; a change of
state or segments is appended to the segment history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapter import store
from adapter.fhir_client import FhirClient
from adapter.segmenting import index_resources
from mappings.base_validation import validate_resource
from mappings.fhirtime import parse_instant
from mappings.referral import Evaluator
from mappings.rules import PracticeRules

__all__ = ["SYNC_TYPES", "SyncSummary", "evaluate_store", "evaluate_stored", "run_sync"]

# The types the referral model reads, context before referrals.
SYNC_TYPES = (
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Coverage",
    "ServiceRequest",
    "DocumentReference",
    "QuestionnaireResponse",
    "Communication",
    "Appointment",
)
PAGE_SIZE = 200
# Re-read this much before the cursor: server clocks drift and a transaction that started before
# our last page may commit (and become searchable) after it.
OVERLAP = timedelta(minutes=5)

Progress = Callable[[str, int], None]


@dataclass(slots=True)
class SyncSummary:
    """What one sync did."""

    fetched: int = 0
    changed: int = 0
    quarantined: int = 0
    referrals: int = 0
    moved: int = 0
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"fetched {self.fetched}, changed {self.changed}, quarantined {self.quarantined}, "
            f"referrals {self.referrals} ({self.moved} moved), {self.seconds:.1f} s"
        )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _matches(page: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in page.get("entry") or ():
        mode = (entry.get("search") or {}).get("mode", "match")
        resource = entry.get("resource")
        if mode == "match" and isinstance(resource, dict):
            yield resource


def _sync_type(
    client: FhirClient,
    engine: Engine,
    resource_type: str,
    *,
    base_url: str,
    started: datetime,
    summary: SyncSummary,
    on_progress: Progress | None,
    overlap: timedelta,
) -> None:
    capabilities = client.capabilities()
    with Session(engine) as session:
        cursor = store.get_cursor(session, base_url, resource_type)
    params: list[tuple[str, str]] = [("_count", str(PAGE_SIZE))]
    # Sorted pages let the cursor advance page by page; unsorted, only when the type is done.
    sorted_pages = capabilities.supports_search(resource_type, "_sort")
    if sorted_pages:
        params.append(("_sort", "_lastUpdated"))
    else:
        summary.notes.append(f"{resource_type}: the server cannot sort by _lastUpdated")
    if cursor is not None:
        params.append(("_lastUpdated", f"ge{_instant(cursor - overlap)}"))
    newest: datetime | None = None
    for page in client.search(resource_type, params):
        with Session(engine) as session, session.begin():
            readable = []
            for resource in _matches(page):
                summary.fetched += 1
                summary.by_type[resource_type] = summary.by_type.get(resource_type, 0) + 1
                issues = validate_resource(resource)
                rid = resource.get("id") if isinstance(resource.get("id"), str) else None
                if issues or rid is None:
                    reason = "; ".join(str(i) for i in issues[:3]) or "no id"
                    store.quarantine(session, base_url, resource_type, rid, reason)
                    summary.quarantined += 1
                    continue
                readable.append(resource)
                updated = parse_instant((resource.get("meta") or {}).get("lastUpdated"))
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
            summary.changed += store.put_resources(session, readable, base_url)
            if sorted_pages and newest is not None:
                store.advance_cursor(session, base_url, resource_type, min(newest, started))
        if on_progress is not None:
            on_progress(resource_type, summary.fetched)
    if not sorted_pages and newest is not None:
        with Session(engine) as session, session.begin():
            store.advance_cursor(session, base_url, resource_type, min(newest, started))


def evaluate_stored(
    engine: Engine,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: Callable[[str, str], None],
) -> Evaluator:
    """An evaluator over the stored resources (validated by the sync before it stored them)."""
    with Session(engine) as session:
        stored = store.iter_resources(session, SYNC_TYPES)
        index, _ = index_resources(stored, on_problem, validated=True)
    return Evaluator(index, rules, as_of)


def evaluate_store(
    engine: Engine,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: Callable[[str, str], None],
) -> tuple[int, int]:
    """Evaluate every stored referral and save it; (referrals, how many changed state or
    segments)."""
    evaluator = evaluate_stored(engine, rules, as_of, on_problem)
    referrals = moved = 0
    with Session(engine) as session, session.begin():
        for evaluation in evaluator:
            referrals += 1
            if store.save_evaluation(session, evaluation, as_of):
                moved += 1
    return referrals, moved


def run_sync(
    client: FhirClient,
    engine: Engine,
    rules: PracticeRules,
    *,
    on_problem: Callable[[str, str], None],
    on_progress: Progress | None = None,
    as_of: datetime | None = None,
    overlap: timedelta = OVERLAP,
) -> SyncSummary:
    """Fetch what changed on the server since the last sync, store it, re-evaluate."""
    clock = time.perf_counter()
    started = datetime.now(UTC)
    base_url = client.base_url
    summary = SyncSummary()
    for resource_type in SYNC_TYPES:
        _sync_type(
            client,
            engine,
            resource_type,
            base_url=base_url,
            started=started,
            summary=summary,
            on_progress=on_progress,
            overlap=overlap,
        )
    summary.referrals, summary.moved = evaluate_store(engine, rules, as_of or started, on_problem)
    summary.seconds = time.perf_counter() - clock
    return summary
