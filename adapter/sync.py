"""`referral-adapter sync`: keep the store in step with an EHR's FHIR server, incrementally.

An EHR holds far more Patients, Appointments and Communications than it has referrals, so the
sync never reads whole types. It reads what the referral model needs, starting from the
referrals:

1. **Referrals.** `ServiceRequest` by its `_lastUpdated` cursor, sorted, with `_include` of the
   subject, requester and insurance and `_revinclude` of the resources that point at a referral
   (Communication, Appointment, DocumentReference, QuestionnaireResponse, Task; `TIES`). For
   each page it then asks for the patients' Coverages and the messages they sent, each in one
   query per page (`beneficiary=` / `sender=` with the page's patients). What the server's
   CapabilityStatement does not offer is fetched by separate queries instead: `Type?based-on=`
   for a missing `_revinclude`, `Type?_id=` for a reference no `_include` brought (including the
   organization and practitioner of a PractitionerRole).
2. **Changes to context.** A new Coverage, a patient's message, a booked Appointment or a
   corrected Patient must move a referral whose ServiceRequest did not change. Each context type
   has its own cursor; from the second sync on, the type's history since its cursor
   (`Type/_history?_since=`) is read, or its search by `_lastUpdated` where the server offers no
   history. Only what ties to a stored referral or patient is kept (the same ties as in 1).
3. **Deletions.** History entries that delete a stored resource leave a tombstone in the store;
   a referral whose ServiceRequest is gone leaves the store with a history row. Entered-in-error
   resources are read like any other and the referral model ignores them.

Each page is stored in one transaction together with its cursor, so a sync killed at any point
resumes where its last stored page ended. Cursors never move past the instant the sync started,
and each sync re-reads an overlap window before them, for clock skew and for commits that became
visible late; re-reading is harmless because the store keeps the newest version of each resource.
Resources the base definition refuses are quarantined with their reason (element paths, no
values) and the rest are stored.

Afterwards the stored referrals that may have moved are evaluated at `as_of` and saved
(`evaluate_store`: those whose data changed, the open referrals of a source whose standing
moved, and those whose instant of change has come as time moved); a change of state or segments
is appended to the segment history. A store never evaluated is evaluated page by page instead,
each page once it is stored, while the fetching thread fetches the next ones
(`PageEvaluation`); what could not be settled on its page is evaluated at the end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from queue import Empty, Queue
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapter import store
from adapter.fhir_client import FhirClient
from adapter.planning import PlanSummary
from adapter.segmenting import bulk_allocation, index_resources
from adapter.store_evaluation import PageEvaluation, evaluate_store
from mappings.base_validation import validate_resource
from mappings.fhirtime import parse_instant
from mappings.references import references_at
from mappings.referral import Evaluator
from mappings.rules import PracticeRules

__all__ = [
    "CONTEXT_TYPES",
    "SYNC_TYPES",
    "TIES",
    "SyncSummary",
    "Tie",
    "evaluate_store",
    "evaluate_stored",
    "run_sync",
]

JSON = dict[str, Any]
T = TypeVar("T")
Event = dict[str, Any]
OnEvent = Callable[[Event], None]

# The types the referral model reads.
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
    # Not read by the referral model: the follow-up Tasks, kept so that the store shows what
    # the EHR's side did with them (someone completing or re-assigning one).
    "Task",
)
CONTEXT_TYPES = tuple(t for t in SYNC_TYPES if t != "ServiceRequest")
# Matches per page. The referral query's includes come on top of these (about five resources
# per referral with synth data), and HAPI loads at most 1,000 included resources per page by
# default (JpaStorageSettings.maximumIncludesToLoadPerPage), so 100 keeps well inside it.
PAGE_SIZE = 100
# References per `_id=` / `based-on=` / `sender=` query: about 2 KB of URL, which every server
# and proxy we know of accepts.
BATCH = 100
# Re-read this much before the cursor: server clocks drift and a transaction that started before
# our last page may commit (and become searchable) after it.
OVERLAP = timedelta(minutes=5)
# Referral pages fetched ahead of the one being stored and evaluated: the server keeps working
# while a page's evaluation takes longer than the next fetch.
AHEAD = 4
# Reads of one search when its pages shift under concurrent writes (see `_Run._whole`).
READS = 3

INCLUDES = ("ServiceRequest:subject", "ServiceRequest:requester", "ServiceRequest:insurance")


@dataclass(frozen=True, slots=True)
class Tie:
    """A context resource that matters because one of its references points at a referral or
    at a referral's patient: the element, its search parameter, and the type pointed at."""

    type: str
    element: str
    param: str
    target: str


TIES = (
    Tie("Coverage", "beneficiary", "beneficiary", "Patient"),
    Tie("Communication", "sender", "sender", "Patient"),
    Tie("Communication", "basedOn", "based-on", "ServiceRequest"),
    Tie("Appointment", "basedOn", "based-on", "ServiceRequest"),
    Tie("QuestionnaireResponse", "basedOn", "based-on", "ServiceRequest"),
    Tie("DocumentReference", "context.related", "related", "ServiceRequest"),
    Tie("Task", "focus", "focus", "ServiceRequest"),
)
# References the model follows from a resource to its context: fetched when no include brought
# them.
WANTED = {
    "ServiceRequest": ("subject", "requester", "insurance"),
    "PractitionerRole": ("organization", "practitioner"),
}


@dataclass(slots=True)
class SyncSummary:
    """What one sync did."""

    fetched: int = 0
    changed: int = 0
    quarantined: int = 0
    deleted: int = 0
    requests: int = 0
    referrals: int = 0
    moved: int = 0
    removed: int = 0
    planned_tasks: int = 0  # Task writes queued in the outbox
    planned_messages: int = 0  # status updates queued
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        removed = f", {self.removed} removed" if self.removed else ""
        return (
            f"fetched {self.fetched}, changed {self.changed}, deleted {self.deleted}, "
            f"quarantined {self.quarantined}, referrals {self.referrals} "
            f"({self.moved} moved{removed}), write-back queued {self.planned_tasks} Task and "
            f"{self.planned_messages} status updates, {self.requests} requests, "
            f"{self.seconds:.1f} s"
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _key(resource: JSON) -> str | None:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return None


def _entries(page: JSON) -> Iterator[tuple[str, JSON]]:
    """(search mode, resource) of a searchset page: matches and includes of the types the
    model reads (not the server's OperationOutcome entries, mode "outcome")."""
    for entry in page.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") in SYNC_TYPES:
            mode = (entry.get("search") or {}).get("mode", "match")
            if mode != "outcome":
                yield mode, resource


def _updated(resource: JSON) -> datetime | None:
    meta = resource.get("meta")
    return parse_instant(meta.get("lastUpdated")) if isinstance(meta, dict) else None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _deletion(entry: JSON) -> tuple[str, str, str | None, datetime | None] | None:
    """(type, id, versionId, when) of a history entry that deletes, else None."""
    request = entry.get("request")
    if not isinstance(request, dict) or request.get("method") != "DELETE":
        return None
    response = entry.get("response")
    if not isinstance(response, dict):
        response = {}
    where = request.get("url") if isinstance(request.get("url"), str) else entry.get("fullUrl")
    if not isinstance(where, str):
        return None
    parts = where.split("?", 1)[0].rstrip("/").split("/")
    version = None
    if "_history" in parts:
        at = parts.index("_history")
        version = parts[at + 1] if at + 1 < len(parts) else None
        parts = parts[:at]
    if len(parts) < 2:
        return None
    etag = response.get("etag") if isinstance(response.get("etag"), str) else None
    if version is None and etag:
        version = etag.removeprefix("W/").strip('"') or None
    when = parse_instant(response.get("lastModified"))
    return parts[-2], parts[-1], version, when


class _Run:
    """One sync: the client, the store, its start, and what it has asked for so far."""

    def __init__(
        self,
        client: FhirClient,
        engine: Engine,
        *,
        started: datetime,
        overlap: timedelta,
        page_size: int,
        summary: SyncSummary,
        on_event: OnEvent | None,
        pages: PageEvaluation | None = None,
    ) -> None:
        self.client = client
        self.pages = pages
        self.engine = engine
        self.base_url = client.base_url
        self.started = started
        self.overlap = overlap
        self.page_size = page_size
        self.summary = summary
        self.on_event = on_event
        self.capabilities = client.capabilities()
        self.asked: set[str] = set()  # keys already asked for by `_id` (dangling ones once)
        self._known: set[str] | None = None

    # -- fetching ------------------------------------------------------------------------------

    def _pages(self, pages: Iterable[JSON]) -> Iterator[JSON]:
        for page in pages:
            self.summary.requests += 1
            yield page

    def _search(self, resource_type: str, params: list[tuple[str, str]]) -> Iterator[JSON]:
        return self._pages(self.client.search(resource_type, params))

    def _whole(self, resource_type: str, params: list[tuple[str, str]]) -> Iterator[JSON]:
        """The search's pages, read again (up to READS times in all) when fewer distinct
        matches came than the server's `total`. A server that pages by offset without a
        snapshot (sekmet does) shifts the later pages when a resource is written between two
        page reads, and the match that slid back over the page boundary would be missed for
        good: its `_lastUpdated` is behind the cursor the other pages moved."""
        for _ in range(READS):
            seen: set[str] = set()
            total = None
            for page in self._search(resource_type, params):
                if total is None and isinstance(page.get("total"), int):
                    total = page["total"]
                seen.update(k for mode, r in _entries(page) if mode == "match" and (k := _key(r)))
                yield page
            if total is None or len(seen) >= total:
                return
            self.summary.note(
                f"{resource_type}: the server's pages shifted under a concurrent write "
                f"({len(seen)} of {total} matches came); read again"
            )
        self.summary.note(
            f"{resource_type}: pages still shifting after {READS} reads; some changes may "
            "only be seen when they change again"
        )

    def _by_reference(self, tie: Tie, targets: Sequence[str]) -> list[JSON]:
        """The resources of `tie.type` whose `tie.param` points at any of `targets`."""
        if not targets:
            return []
        if not self.capabilities.supports_search(tie.type, tie.param):
            self.summary.note(
                f"{tie.type}: the server offers no search by {tie.param}, so {tie.type} "
                f"resources tied to a referral by {tie.element} are not fetched"
            )
            return []
        found: list[JSON] = []
        for start in range(0, len(targets), BATCH):
            batch = ",".join(targets[start : start + BATCH])
            params = [(tie.param, batch), ("_count", str(self.page_size))]
            for page in self._search(tie.type, params):
                found.extend(r for mode, r in _entries(page) if mode == "match")
        return found

    def _resolve(self, resources: list[JSON]) -> list[JSON]:
        """Fetch by `_id` the context the given resources refer to that neither the pages nor
        the store hold (twice over: a fetched PractitionerRole brings its organization)."""
        have = {key for key in map(_key, resources) if key}
        added: list[JSON] = []
        newest = resources
        for _ in range(2):
            wanted = {
                key
                for resource in newest
                for path in WANTED.get(resource.get("resourceType", ""), ())
                for key in references_at(resource, path)
                if key.split("/", 1)[0] in CONTEXT_TYPES
            }
            wanted -= have | self.asked
            if wanted:
                with Session(self.engine) as session:
                    wanted -= store.existing_keys(session, wanted)
            if not wanted:
                break
            self.asked |= wanted
            newest = []
            by_type: dict[str, list[str]] = {}
            for key in sorted(wanted):
                rtype, rid = key.split("/", 1)
                by_type.setdefault(rtype, []).append(rid)
            for rtype, ids in by_type.items():
                for start in range(0, len(ids), BATCH):
                    params = [("_id", ",".join(ids[start : start + BATCH]))]
                    for page in self._search(rtype, params):
                        newest.extend(r for mode, r in _entries(page) if mode == "match")
            have |= {key for key in map(_key, newest) if key}
            added.extend(newest)
        return added

    # -- storing -------------------------------------------------------------------------------

    def _store(
        self,
        resources: list[JSON],
        *,
        cursor: tuple[str, datetime | None] | None = None,
        deletions: Sequence[tuple[str, str, str | None, datetime | None]] = (),
        first_cursors: tuple[Sequence[str], datetime] | None = None,
    ) -> None:
        """One transaction: the readable resources, the tombstones and the cursor (and, with
        the first page of referrals, the first cursors of the context types)."""
        summary = self.summary
        with Session(self.engine) as session, session.begin():
            readable = []
            for resource in resources:
                rtype = resource.get("resourceType")
                rtype = rtype if isinstance(rtype, str) else "?"
                summary.fetched += 1
                summary.by_type[rtype] = summary.by_type.get(rtype, 0) + 1
                issues = validate_resource(resource)
                rid = resource.get("id") if isinstance(resource.get("id"), str) else None
                if issues or rid is None:
                    reason = "; ".join(str(i) for i in issues[:3]) or "no id"
                    store.quarantine(session, self.base_url, rtype, rid, reason)
                    summary.quarantined += 1
                    continue
                readable.append(resource)
            # What a page-by-page evaluation needs to know of the write; nothing otherwise.
            touched: set[str] | None = set() if self.pages is not None else None
            written: set[tuple[str, str]] | None = set() if self.pages is not None else None
            summary.changed += store.put_resources(
                session, readable, self.base_url, touched=touched, written=written
            )
            if deletions:
                summary.deleted += store.mark_deleted(
                    session, deletions, self.base_url, touched=touched
                )
            if self._known is not None:  # kept in step instead of read again
                self._known.update(k for k in map(_key, readable) if k)
                self._known.difference_update(f"{d[0]}/{d[1]}" for d in deletions)
            if first_cursors is not None:
                for resource_type in first_cursors[0]:
                    store.advance_cursor(session, self.base_url, resource_type, first_cursors[1])
            if cursor is not None and cursor[1] is not None:
                store.advance_cursor(
                    session, self.base_url, cursor[0], min(cursor[1], self.started)
                )
        if self.pages is not None and touched is not None and written is not None:  # stored
            gone = (f"{d[0]}/{d[1]}" for d in deletions)
            self.pages.stored(readable, written, gone, touched)

    def _emit(self, step: str, resource_type: str, page: JSON, matches: int, count: int) -> None:
        if self.on_event is None:
            return
        total = page.get("total")
        self.on_event(
            {
                "event": "page",
                "step": step,
                "type": resource_type,
                "matches": matches,
                "resources": count,
                "total": total if isinstance(total, int) else None,
                "fetched": self.summary.fetched,
                "changed": self.summary.changed,
                "deleted": self.summary.deleted,
                "quarantined": self.summary.quarantined,
            }
        )

    # -- 1. referrals --------------------------------------------------------------------------

    def referrals(self, cursor: datetime | None, fresh: Sequence[str]) -> None:
        """Referrals changed since the cursor, with their context. `fresh`: the context types
        never synced; their changes are read from the first page's instant on (the server's
        clock, from Bundle.meta.lastUpdated, or ours if earlier or not given)."""
        capabilities = self.capabilities
        params = [("_count", str(self.page_size)), ("_sort", "_lastUpdated")]
        if cursor is not None:
            params.append(("_lastUpdated", f"ge{_instant(cursor - self.overlap)}"))
        for include in INCLUDES:
            if capabilities.supports_include("ServiceRequest", include):
                params.append(("_include", include))
        separate: list[Tie] = []
        for tie in TIES:
            if tie.target != "ServiceRequest":
                continue
            revinclude = f"{tie.type}:{tie.param}"
            if capabilities.supports_revinclude("ServiceRequest", revinclude):
                params.append(("_revinclude", revinclude))
            else:
                separate.append(tie)
                self.summary.note(
                    f"ServiceRequest: _revinclude={revinclude} is not offered; fetched by "
                    "separate queries"
                )
        pages = _ahead(self._referral_pages(params, separate), depth=AHEAD)
        for page, matches, resources in pages:
            newest = None
            for resource in matches:
                newest = _later(newest, _updated(resource))
            first = None
            if fresh:
                meta = page.get("meta")
                now = parse_instant(meta.get("lastUpdated")) if isinstance(meta, dict) else None
                first = (fresh, min(now or self.started, self.started))
                fresh = ()
            self._store(resources, cursor=("ServiceRequest", newest), first_cursors=first)
            self._emit("referrals", "ServiceRequest", page, len(matches), len(resources))

    def _referral_pages(
        self, params: list[tuple[str, str]], separate: Sequence[Tie]
    ) -> Iterator[tuple[JSON, list[JSON], list[JSON]]]:
        """Each page of the referral query with everything its referrals need: (the page, its
        matches, all its resources). Runs on the fetching thread (see `_ahead`)."""
        by_patient = [tie for tie in TIES if tie.target == "Patient"]
        for page in self._whole("ServiceRequest", params):
            matches: list[JSON] = []
            resources: list[JSON] = []
            for mode, resource in _entries(page):
                resources.append(resource)
                if mode == "match" and resource.get("resourceType") == "ServiceRequest":
                    matches.append(resource)
            referrals = sorted({k for k in map(_key, matches) if k})
            patients = sorted(
                {
                    k
                    for r in matches
                    for k in references_at(r, "subject")
                    if k.startswith("Patient/")
                }
            )
            for tie in separate:
                resources.extend(self._by_reference(tie, referrals))
            for tie in by_patient:
                resources.extend(self._by_reference(tie, patients))
            resources.extend(self._resolve(resources))
            yield page, matches, resources

    # -- 2. changes to context, 3. deletions ---------------------------------------------------

    def known(self) -> set[str]:
        """Keys of every stored resource: read once, then kept in step by `_store`."""
        if self._known is None:
            with Session(self.engine) as session:
                self._known = store.stored_keys(session, SYNC_TYPES)
        return self._known

    def _tied(self, resource: JSON) -> bool:
        """Whether a changed context resource matters: stored already, or tied to a stored
        referral or patient as `TIES` says."""
        known = self.known()
        key = _key(resource)
        if key in known:
            return True
        rtype = resource.get("resourceType")
        return any(
            target in known and target.startswith(f"{tie.target}/")
            for tie in TIES
            if tie.type == rtype
            for target in references_at(resource, tie.element)
        )

    def deletions(self, resource_type: str, cursor: datetime) -> None:
        """Tombstones for the type's stored resources deleted since the cursor (history)."""
        if not self.capabilities.supports_interaction(resource_type, "history-type"):
            self.summary.note(
                f"{resource_type}: the server offers no history, so deletions are not seen"
            )
            return
        params = [("_since", _instant(cursor - self.overlap)), ("_count", str(self.page_size))]
        decided: set[str] = set()  # newest first: a deletion older than a re-creation is past
        for page in self._pages(self.client.history(resource_type, params)):
            gone = []
            for entry in _history_entries(page):
                deletion = _deletion(entry)
                resource = entry.get("resource")
                key = (
                    f"{deletion[0]}/{deletion[1]}"
                    if deletion is not None
                    else _key(resource)
                    if isinstance(resource, dict)
                    else None
                )
                if key is None or key in decided:
                    continue
                decided.add(key)
                if deletion is not None and key in self.known():
                    gone.append(deletion)
            if gone:
                self._store([], deletions=gone)
            self._emit("deletions", resource_type, page, len(page.get("entry") or ()), len(gone))

    def changes(self, resource_type: str, cursor: datetime) -> None:
        """The type's changes since the cursor: its history where offered (changes and
        deletions in one read), else its search by `_lastUpdated` (no deletions)."""
        since = _instant(cursor - self.overlap)
        if self.capabilities.supports_interaction(resource_type, "history-type"):
            # History comes newest first: the cursor moves once the whole history is stored,
            # and only each resource's first entry counts. Its older versions (or what it was
            # before its deletion) must not be stored: an old version may tie to a referral
            # that the current one no longer does.
            newest = None
            decided: set[str] = set()
            params = [("_since", since), ("_count", str(self.page_size))]
            for page in self._pages(self.client.history(resource_type, params)):
                kept: list[JSON] = []
                gone = []
                for entry in _history_entries(page):
                    deletion = _deletion(entry)
                    if deletion is not None:
                        newest = _later(newest, deletion[3])
                        key = f"{deletion[0]}/{deletion[1]}"
                        if key not in decided and key in self.known():
                            gone.append(deletion)
                        decided.add(key)
                        continue
                    resource = entry.get("resource")
                    if not isinstance(resource, dict) or resource.get("resourceType") != (
                        resource_type
                    ):
                        continue
                    newest = _later(newest, _updated(resource))
                    key = _key(resource) or ""
                    if key not in decided and self._tied(resource):
                        kept.append(resource)
                    decided.add(key)
                kept.extend(self._resolve(kept))
                self._store(kept, deletions=gone)
                self._emit(
                    "changes",
                    resource_type,
                    page,
                    len(page.get("entry") or ()),
                    len(kept) + len(gone),
                )
            if newest is not None:
                self._store([], cursor=(resource_type, newest))
            return
        self.summary.note(
            f"{resource_type}: the server offers no history, so deletions are not seen"
        )
        params = [
            ("_count", str(self.page_size)),
            ("_sort", "_lastUpdated"),
            ("_lastUpdated", f"ge{since}"),
        ]
        for page in self._whole(resource_type, params):
            matches = [r for mode, r in _entries(page) if mode == "match"]
            kept = [r for r in matches if self._tied(r)]
            kept.extend(self._resolve(kept))
            newest = None
            for resource in matches:
                newest = _later(newest, _updated(resource))
            self._store(kept, cursor=(resource_type, newest))
            self._emit("changes", resource_type, page, len(matches), len(kept))


def _ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The items, produced by a thread of their own up to `depth` ahead of the consumer: the
    next pages are fetched (the server working, this process waiting on the network) while
    this one is validated and stored. The producer's error is raised here, in order."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                queue.put(("item", item))
                if stop.is_set():
                    return
            queue.put(("end", None))
        except BaseException as error:  # handed to the consumer
            queue.put(("error", error))

    thread = threading.Thread(target=produce, name="sync-fetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # let a producer blocked on a full queue see `stop`
            with contextlib.suppress(Empty):
                queue.get(timeout=0.1)


def _history_entries(page: JSON) -> Iterator[JSON]:
    for entry in page.get("entry") or ():
        if isinstance(entry, dict):
            yield entry


def evaluate_stored(
    engine: Engine,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: Callable[[str, str], None],
) -> Evaluator:
    """An evaluator over the stored resources (validated by the sync before it stored them)."""
    with Session(engine) as session, bulk_allocation():
        stored = store.iter_resources(session, SYNC_TYPES)
        index, _ = index_resources(stored, on_problem, validated=True)
    return Evaluator(index, rules, as_of)


def run_sync(
    client: FhirClient,
    engine: Engine,
    rules: PracticeRules,
    *,
    on_problem: Callable[[str, str], None],
    on_event: OnEvent | None = None,
    as_of: datetime | None = None,
    overlap: timedelta = OVERLAP,
    page_size: int = PAGE_SIZE,
) -> SyncSummary:
    """Fetch what changed on the server since the last sync, store it, re-evaluate."""
    clock = time.perf_counter()
    started = datetime.now(UTC)
    summary = SyncSummary()
    base_url = client.base_url
    with Session(engine) as session:
        cursors = {t: store.get_cursor(session, base_url, t) for t in SYNC_TYPES}
        first = store.evaluation_mark(session) is None
    # A context type's first sync is the referral query's includes: its changes are read from
    # the first page on, also when this sync is killed and the next one resumes it.
    fresh = [t for t in CONTEXT_TYPES if cursors[t] is None]
    plan = PlanSummary()
    evaluate_at = as_of or started
    # A store never evaluated is evaluated page by page, while the next pages are fetched.
    pages = PageEvaluation(engine, rules, evaluate_at, on_problem, plan) if first else None
    run = _Run(
        client,
        engine,
        started=started,
        overlap=overlap,
        page_size=page_size,
        summary=summary,
        on_event=on_event,
        pages=pages,
    )
    referral_cursor = cursors["ServiceRequest"]
    if referral_cursor is not None:
        run.deletions("ServiceRequest", referral_cursor)
    run.referrals(referral_cursor, fresh)
    for resource_type in CONTEXT_TYPES:
        cursor = cursors[resource_type]
        if cursor is not None:
            run.changes(resource_type, cursor)
    summary.referrals, summary.moved, summary.removed = (
        pages.finish()
        if pages is not None
        else evaluate_store(engine, rules, evaluate_at, on_problem, plan)
    )
    summary.planned_tasks, summary.planned_messages = plan.tasks, plan.messages
    summary.seconds = time.perf_counter() - clock
    if on_event is not None:
        on_event(
            {
                "event": "evaluated",
                "referrals": summary.referrals,
                "moved": summary.moved,
                "removed": summary.removed,
                "planned_tasks": summary.planned_tasks,
                "planned_messages": summary.planned_messages,
            }
        )
    return summary
