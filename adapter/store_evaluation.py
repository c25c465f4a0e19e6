"""Evaluating the stored referrals: the ones that may have moved, a chunk of patients at a time.

A practice's store grows with every referral it ever received, so the evaluation does not
hold the store in memory. It reads, once:
- the parties (Organization, Practitioner, PractitionerRole: the practice's directory) and the
  identifiers of patients and parties (a reference by identifier resolves to the one resource
  carrying it);
- for every referral, a few fields: its subject, insurance and source, and when it was authored
  (the high-relationship count of a source covers all its referrals).
It then evaluates the referrals in chunks of `CHUNK`, in key order: each chunk's
ServiceRequests and everything tied to them or to their patients (the store's `resource_tie`
rows: Patient, Coverage, Communication, DocumentReference, QuestionnaireResponse, Appointment)
are read and indexed, evaluated and saved, and let go before the next.

Which referrals may have moved (`_may_have_moved`): those whose data changed since the last
evaluation (the store notes what each stored change touches, before and after it; a party new
to the store touches the referrals naming it, a changed party everything), the open
referrals of a source whose standing moved (it became or stopped being high-relationship:
`source_standing`), and those whose instant of change (`Evaluator.evaluate_until`) has come.
Everything is evaluated the first time, under other rules, after a change to a party, and at an
instant earlier than the last evaluation's (which saves nothing over later evaluations, and
leaves the noted changes for the next). A sync's first evaluation of a store is made page by
page instead, while the sync fetches (`PageEvaluation`), and ends with an `evaluate_store` of
the referrals it could not settle.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from adapter import store
from adapter.planning import PlanSummary, details_from_index, person, plan_evaluations
from adapter.segmenting import bulk_allocation
from adapter.store_models import Referral, ResourceTie
from mappings.facts import Facts, PartyFacts, PatientFacts, ReferralFacts, extract
from mappings.index import ReferralIndex
from mappings.referral import (
    Evaluator,
    authored_by_source,
    is_listed,
    is_member,
    referral_source,
)
from mappings.rules import PracticeRules

__all__ = ["CHUNK", "FOREVER", "PageEvaluation", "evaluate_store", "rules_digest"]

JSON = dict[str, Any]
T = TypeVar("T")
CHUNK = 1000  # referrals evaluated (and held) at a time
SAVE_CHUNK = 500
IN_BATCH = 500  # keys per IN (...) list
PARTY_TYPES = ("Organization", "Practitioner", "PractitionerRole")
# What a `PageEvaluation` reads of a stored page (the rest it reads back from the store).
_PAGE_TYPES = frozenset({*PARTY_TYPES, "Patient", "ServiceRequest"})
# An evaluation that time alone never changes (no dates at all).
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)

OnProblem = Callable[[str, str], None]


def rules_digest(rules: PracticeRules) -> str:
    """A digest of the practice rules: evaluations made under other rules are all redone."""
    return hashlib.sha256(rules.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Brief:
    """What the whole-store pass keeps of one referral."""

    key: str
    refs: tuple[str, ...]  # subject and insurance, as written and resolved
    source: str | None
    # The requester and, for a role, its organization, as written and resolved: a party new to
    # the store moves the referrals that name it.
    parties: tuple[str, ...] = ()


def evaluate_store(
    engine: Engine,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: OnProblem,
    plan: PlanSummary | None = None,
    *,
    done: Collection[str] = (),
) -> tuple[int, int, int]:
    """Evaluate the stored referrals that may have moved and save them, with the write-back
    they call for queued in the outbox in the same transaction; (referrals, how many changed
    state or segments, how many left the store). `plan` collects how many writes were queued.
    `done`: referrals a `PageEvaluation` evaluated at `as_of` already, under these rules, with
    everything the store holds about them now; a first evaluation leaves them alone (unless
    their source's standing moved since)."""
    digest = rules_digest(rules)
    with Session(engine) as session:
        mark = store.evaluation_mark(session)
        seen = store.pending(session)
    offset = as_of.utcoffset()
    full = (
        mark is None
        or mark.rules_digest != digest
        or as_of < mark.as_of
        or mark.utc_offset_seconds != int(offset.total_seconds() if offset else 0)
        or any(target == store.EVERYTHING for target, _ in seen)
    )
    planned = plan if plan is not None else PlanSummary()
    moved = 0
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        with bulk_allocation():  # long-lived and acyclic: no collector passes over them
            directory = _Directory.read(session, on_problem)
            briefs = _briefs(session, directory, rules, on_problem)
        present = {b.key for b in briefs}
        dates = authored_by_source((b.source, authored) for b, authored in briefs.items())
        if full and not done:
            chosen = list(briefs)
        else:
            chosen = _may_have_moved(
                session,
                directory,
                briefs,
                dates,
                rules,
                targets=set() if full else {t for t, _ in seen},
                as_of=as_of,
                only=frozenset(done) if full else None,
            )
        del briefs
        chosen.sort(key=lambda b: b.key)  # the order of the store, and of the outbox entries
        for chunk in _chunks(iter(chosen), CHUNK):
            moved += _evaluate_chunk(
                session,
                directory,
                chunk,
                rules=rules,
                as_of=as_of,
                dates=dates,
                on_problem=on_problem,
                now=now,
                planned=planned,
            )[0]
        removed = store.remove_referrals(session, present, as_of)
        if mark is None or as_of >= mark.as_of:
            store.clear_pending(session, seen)
            store.set_evaluation_mark(session, as_of, digest)
    return len(present), moved, removed


def _evaluate_chunk(
    session: Session,
    directory: _Directory,
    chunk: list[_Brief],
    *,
    rules: PracticeRules,
    as_of: datetime,
    dates: dict[str, list[datetime]],
    on_problem: OnProblem,
    now: datetime,
    planned: PlanSummary,
    fresh: Mapping[tuple[str, str], JSON] | None = None,
    extracted: Mapping[tuple[str, str], list[Facts]] | None = None,
) -> tuple[int, ReferralIndex]:
    """Evaluate, save and plan the write-back of one chunk of referrals; how many moved, and
    the chunk's index (`fresh`, `extracted`: as `_chunk_index` takes them)."""
    moved = 0
    index, people = _chunk_index(
        session, directory, chunk, on_problem, fresh=fresh, extracted=extracted
    )
    evaluator = Evaluator(index, rules, as_of, source_dates=dates)
    found = (index.referrals.get(b.key) for b in chunk)
    timed = (evaluator.evaluate_until(r) for r in found if r is not None)
    for part in _chunks(timed, SAVE_CHUNK):
        evaluations = [e for e, _ in part]
        until = {e.referral: moment or FOREVER for e, moment in part}
        moved += store.save_evaluations(session, evaluations, as_of, until)
        lines = [e.to_json() for e in evaluations]
        details = details_from_index(index, (e.referral for e in evaluations))
        step = plan_evaluations(session, lines, details, rules, now, people=people)
        planned.tasks += step.tasks
        planned.messages += step.messages
        planned.skipped += step.skipped
    return moved, index


class PageEvaluation:
    """A store's first evaluation, made page by page while a sync fetches the next pages.

    A first sync stores every referral, and evaluating them all after the last page held the
    sync's end back by a third of its time. Instead, after each stored page the sync hands over
    the page's stored resources and what their changes touched (`store.put_resources`'s
    `touched`), and the referrals changed on that page are evaluated there and then (read back
    from the store, as `evaluate_store` reads them) when nothing still to come can move them:
    - their requester, and a requesting role's organization, are in the store (the source is
      known), and
    - the source is high-relationship already or on the practice's list, or there is none: at
      the fixed `as_of`, more referrals can only raise a source's standing, so a source that
      is not high-relationship yet may still become one, and its referrals wait (and are
      evaluated on the page where it becomes one).
    The referrals still waiting are evaluated at the end, by `evaluate_store` with `done`
    (which also checks each source's standing once more). A referral evaluated here that a later
    change touches (its patient corrected, a Coverage added, a changed party: as the pending
    notes would say, `store.evaluation_targets`) is no longer done, and is evaluated again at
    the end.

    Held in memory: the directory (parties and identifiers), each referral's source and
    authoredOn, and, for each referral evaluated here, the references it was read through.
    """

    def __init__(
        self,
        engine: Engine,
        rules: PracticeRules,
        as_of: datetime,
        on_problem: OnProblem,
        plan: PlanSummary,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.as_of = as_of
        self.on_problem = on_problem
        self.plan = plan
        self.now = datetime.now(UTC)
        self.moved = 0
        self.done: set[str] = set()  # evaluated here, and untouched since
        # By source not high-relationship (yet): its referrals whose source is known.
        self._waiting: dict[str, dict[str, _Brief]] = {}
        self._watch: dict[str, list[str]] = {}  # target -> referrals evaluated reading it
        self._authored: dict[str, tuple[str | None, datetime | None]] = {}
        self.dates: dict[str, list[datetime]] = {}  # by source, sorted (`authored_by_source`)
        self._listed = frozenset(rules.high_relationship.sources)
        with Session(engine) as session, bulk_allocation():  # a resumed sync's store
            self.directory = _Directory.read(session, on_problem)
            for brief, authored in _briefs(session, self.directory, rules, on_problem).items():
                self._date(brief.key, brief.source, authored)

    def _date(self, key: str, source: str | None, authored: datetime | None) -> None:
        """The referral's source and authoredOn, in place of what it had before."""
        before = self._authored.pop(key, (None, None))
        if before[0] is not None:
            self._waiting.get(before[0], {}).pop(key, None)
            if before[1] is not None:
                self.dates[before[0]].remove(before[1])
        if source is not None and authored is not None:
            bisect.insort(self.dates.setdefault(source, []), authored)
        self._authored[key] = (source, authored)

    def stored(
        self,
        resources: Iterable[JSON],
        written: set[tuple[str, str]],
        gone: Iterable[str],
        touched: set[str],
    ) -> None:
        """After a page was stored: its readable resources, which of them were written (new
        or newer than the stored copy), the keys it deleted, and what its changes touched."""
        self._forget({store.tie_key(t) for t in touched})
        gone = list(gone)
        fresh: dict[tuple[str, str], JSON] = {}
        twice: set[tuple[str, str]] = set()  # which copy was kept is the store's to say
        for body in resources:
            at = (str(body.get("resourceType")), str(body.get("id")))
            if at in written:
                if at in fresh and fresh[at] != body:
                    twice.add(at)
                fresh[at] = body
        if twice:
            with Session(self.engine) as session:
                fresh |= store.stored_bodies(session, twice)
        extracted = {
            at: list(_facts((body,), self.on_problem))
            for at, body in fresh.items()
            if at[0] in _PAGE_TYPES
        }
        facts = [f for found in extracted.values() for f in found]
        self.directory.update(facts, gone)
        for key in gone:
            if key in self._authored:
                self._date(key, None, None)
        page: list[tuple[_Brief, ReferralFacts]] = []
        for fact in facts:
            if not isinstance(fact, ReferralFacts) or "#" in fact.key:
                continue
            if not self.rules.is_referral(fact.categories):
                continue
            brief = _brief(self.directory, fact)
            self._date(fact.key, brief.source, fact.authored)
            page.append((brief, fact))
        chosen: list[_Brief] = []
        for brief, fact in page:
            if not self._source_known(fact):
                continue  # waits for the end
            if brief.source is None or self._standing(brief.source):
                chosen.append(brief)
            else:
                self._waiting.setdefault(brief.source, {})[brief.key] = brief
        for source in {b.source for b, _ in page if b.source in self._waiting}:
            if source is not None and self._standing(source):  # it has just become one
                chosen += self._waiting.pop(source).values()
        if not chosen:
            return
        ready = sorted(chosen, key=lambda b: b.key)
        with Session(self.engine) as session, session.begin():
            moved, index = _evaluate_chunk(
                session,
                self.directory,
                ready,
                rules=self.rules,
                as_of=self.as_of,
                dates=self.dates,
                on_problem=self.on_problem,
                now=self.now,
                planned=self.plan,
                fresh=fresh,
                extracted=extracted,
            )
        self.moved += moved
        for brief in ready:
            self.done.add(brief.key)
            subject = index.patients.get(index.resolve(brief.refs[0]) or "") if brief.refs else None
            read = {brief.key, *brief.refs, *(subject.identifiers if subject else ())}
            for target in read:
                self._watch.setdefault(store.tie_key(target), []).append(brief.key)

    def _forget(self, touched: set[str]) -> None:
        """The referrals evaluated here that a change touched are no longer done."""
        if store.EVERYTHING in touched:
            self.done.clear()
            self._watch.clear()
            return
        for target in touched:
            for key in self._watch.pop(target, ()):
                self.done.discard(key)

    def _source_known(self, facts: ReferralFacts) -> bool:
        """Whether the referral's requester, and a requesting role's organization, are stored
        (or it has none)."""
        if facts.requester is None:
            return True
        directory = self.directory
        party = directory.index.parties.get(directory.resolve(facts.requester) or "")
        if party is None:
            return False
        return party.organization is None or (
            directory.resolve(party.organization) in directory.index.parties
        )

    def _standing(self, source: str) -> bool:
        """Whether the source is high-relationship at `as_of` by what is stored so far (or
        listed)."""
        if is_listed(self.directory.index, source, self._listed):
            return True
        rules = self.rules.high_relationship
        dates = self.dates.get(source, [])
        return is_member(dates, self.as_of, rules.window_days, rules.min_referrals)

    def finish(self) -> tuple[int, int, int]:
        """The end of the sync: the rest of the evaluation (`evaluate_store`)."""
        # What only the pages needed goes before the end's own pass over the store.
        self._watch.clear()
        self._waiting.clear()
        self._authored.clear()
        self.dates.clear()
        referrals, moved, removed = evaluate_store(
            self.engine, self.rules, self.as_of, self.on_problem, self.plan, done=self.done
        )
        return referrals, moved + self.moved, removed


class _Directory:
    """The parties and the identifier aliases of the whole store (kept in step with the pages
    a sync stores, for `PageEvaluation`: `update`)."""

    def __init__(self, parties: Iterable[Facts], holders: Iterable[PatientFacts | PartyFacts]):
        self.parties: dict[str, Facts] = {f.key: f for f in parties}
        self._held: dict[str, tuple[str, ...]] = {}  # key -> identifiers it carries
        self._owners: dict[str, set[str]] = {}  # identifier -> keys carrying it
        self.aliases: dict[str, str] = {}  # identifier -> the one key carrying it
        self.index = ReferralIndex()
        for facts in self.parties.values():
            self.index.add(facts)
        for holder in holders:
            self._hold(holder.key, holder.identifiers)
        self.index.share_aliases(self.aliases)
        self.index.build(identify=False)

    @classmethod
    def read(cls, session: Session, on_problem: OnProblem) -> _Directory:
        parties = list(_facts(store.iter_resources(session, PARTY_TYPES), on_problem))

        def holders() -> Iterator[PatientFacts | PartyFacts]:
            yield from (f for f in parties if isinstance(f, PartyFacts))
            for facts in _facts(store.iter_resources(session, ["Patient"]), on_problem):
                if isinstance(facts, PatientFacts) and facts.identifiers:
                    yield facts

        return cls(parties, holders())

    def resolve(self, reference: str | None) -> str | None:
        return self.index.resolve(reference)

    def update(self, facts: Iterable[Facts], gone: Iterable[str] = ()) -> None:
        """Stored parties and patients (their newest version), and deleted keys."""
        for key in gone:
            if self.parties.pop(key, None) is not None:
                self.index.parties.pop(key, None)
            self._hold(key, ())
        for fact in facts:
            if isinstance(fact, PartyFacts):
                self.parties[fact.key] = fact
                self.index.add(fact)
            if isinstance(fact, PatientFacts | PartyFacts):
                self._hold(fact.key, fact.identifiers)

    def _hold(self, key: str, identifiers: tuple[str, ...]) -> None:
        """`key` now carries `identifiers` (and no others): a reference by identifier resolves
        to the one resource carrying it (`identifier_aliases`)."""
        before = self._held.pop(key, ())
        if identifiers:
            self._held[key] = identifiers
        for identifier in {*before, *identifiers}:
            owners = self._owners.setdefault(identifier, set())
            owners.discard(key)
            if identifier in identifiers:
                owners.add(key)
            if len(owners) == 1:
                self.aliases[identifier] = next(iter(owners))
            else:
                self.aliases.pop(identifier, None)
            if not owners:
                del self._owners[identifier]


def _facts(bodies: Iterable[JSON], on_problem: OnProblem) -> Iterator[Facts]:
    for body in bodies:
        key = f"{body.get('resourceType')}/{body.get('id')}"
        try:
            yield from extract(body, key)
        except Exception as error:
            on_problem(key, f"not evaluated: {type(error).__name__}")


def _briefs(
    session: Session, directory: _Directory, rules: PracticeRules, on_problem: OnProblem
) -> dict[_Brief, datetime | None]:
    """Every stored referral, briefly, with its authoredOn."""
    found: dict[_Brief, datetime | None] = {}
    for facts in _facts(store.iter_resources(session, ["ServiceRequest"]), on_problem):
        if not isinstance(facts, ReferralFacts) or "#" in facts.key:
            continue
        if not rules.is_referral(facts.categories):
            continue
        found[_brief(directory, facts)] = facts.authored
    return found


def _brief(directory: _Directory, facts: ReferralFacts) -> _Brief:
    written = tuple(r for r in (facts.subject, *facts.insurance) if r)
    resolved = tuple(k for k in map(directory.resolve, written) if k and k not in written)
    return _Brief(
        key=facts.key,
        refs=written + resolved,
        source=referral_source(directory.index, facts),
        parties=_requester_chain(directory, facts.requester),
    )


def _requester_chain(directory: _Directory, requester: str | None) -> tuple[str, ...]:
    """The requester as written and resolved, and a role's organization, the same."""
    chain: list[str] = []
    resolved = directory.resolve(requester)
    chain += (r for r in (requester, resolved) if r)
    party = directory.index.parties.get(resolved) if resolved else None
    if party is not None and party.organization is not None:
        chain += (r for r in (party.organization, directory.resolve(party.organization)) if r)
    return tuple(dict.fromkeys(chain))


def _may_have_moved(
    session: Session,
    directory: _Directory,
    briefs: Iterable[_Brief],
    dates: dict[str, list[datetime]],
    rules: PracticeRules,
    *,
    targets: set[str],
    as_of: datetime,
    only: frozenset[str] | None = None,
) -> list[_Brief]:
    """The referrals an incremental evaluation must evaluate again. `only`: the referrals whose
    stored evaluation counts (the others are evaluated whatever it says)."""
    touched = targets | {k for k in map(directory.resolve, targets) if k}
    stored = {
        row.key: row
        for row in session.execute(
            select(Referral.key, Referral.stable_until, Referral.state, Referral.high_relationship)
        )
    }
    # An open referral depends on its source only through the source's standing at `as_of`
    # (whether it is high-relationship): referrals arriving from a busy source, or ageing out
    # of its window, leave its other referrals alone until it crosses the threshold. (Their
    # instant of change need not be looked at: the standing is compared at every evaluation.)
    listed = frozenset(rules.high_relationship.sources)
    window, minimum = rules.high_relationship.window_days, rules.high_relationship.min_referrals
    standings: dict[str, bool] = {}

    def standing(source: str) -> bool:
        if source not in standings:
            standings[source] = is_listed(directory.index, source, listed) or is_member(
                dates.get(source, []), as_of, window, minimum
            )
        return standings[source]

    chosen = []
    for brief in briefs:
        row = stored.get(brief.key) if only is None or brief.key in only else None
        if (
            row is None
            or row.stable_until is None
            or row.stable_until <= as_of
            or brief.key in touched
            or any(store.tie_key(r) in touched for r in brief.refs)
            or any(store.tie_key(r) in touched for r in brief.parties)
        ) or (
            row.state == "open"
            and brief.source is not None
            and standing(brief.source) != row.high_relationship
        ):
            chosen.append(brief)
    return chosen


def _chunk_index(
    session: Session,
    directory: _Directory,
    chunk: list[_Brief],
    on_problem: OnProblem,
    *,
    fresh: Mapping[tuple[str, str], JSON] | None = None,
    extracted: Mapping[tuple[str, str], list[Facts]] | None = None,
) -> tuple[ReferralIndex, dict[str, tuple[str | None, str | None]]]:
    """The index of one chunk: its referrals, everything tied to them or to their patients,
    the parties, and the store's identifier aliases; and the name and birth date of each
    patient read (for the status updates). `fresh`: bodies just stored (the stored version, not
    read back), and `extracted` the facts of some of them."""
    fresh = fresh or {}
    extracted = extracted or {}
    facts_of: dict[tuple[str, str], list[Facts]] = {}  # each resource read, extracted once
    people: dict[str, tuple[str | None, str | None]] = {}
    asked: set[str] = set()
    wanted = {b.key for b in chunk} | {r for b in chunk for r in b.refs}
    for _ in range(2):  # then the identifiers of the patients found
        wanted -= asked
        if not wanted:
            break
        asked |= wanted
        tied = _tied(session, wanted) - set(facts_of)
        new = {key: fresh[key] for key in tied if key in fresh}
        new |= store.stored_bodies(session, tied - set(new))
        for key, body in new.items():
            known = extracted.get(key)
            facts_of[key] = known if known is not None else list(_facts((body,), on_problem))
            if key[0] == "Patient":
                people[f"Patient/{key[1]}"] = person(body)
        wanted = {
            identifier
            for key in new
            for facts in facts_of[key]
            if isinstance(facts, PatientFacts)
            for identifier in facts.identifiers
        }
    index = ReferralIndex()
    for facts in directory.parties.values():
        index.add(facts)
    for key in sorted(facts_of):  # the same index whatever order the rows came in
        for facts in facts_of[key]:
            index.add(facts)
    index.share_aliases(directory.aliases)
    return index.build(identify=False), people


def _tied(session: Session, targets: set[str]) -> set[tuple[str, str]]:
    """The stored resources tied to any of the targets."""
    found: set[tuple[str, str]] = set()
    ordered = sorted({store.tie_key(t) for t in targets})
    for start in range(0, len(ordered), IN_BATCH):
        rows = session.execute(
            select(ResourceTie.resource_type, ResourceTie.id)
            .where(ResourceTie.target.in_(ordered[start : start + IN_BATCH]))
            .distinct()
        )
        found.update((t, i) for t, i in rows)
    return found


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
