"""The referral model of DESIGN.md: state, missing details, segments, aging, source, next action.

Each rule reads like the workflow it implements and returns its reasons, so a coordinator (and a
test) can see why a referral landed where it did. Nothing here reads the clock: `as_of` is
passed in.

Every comparison with `as_of` also notes the instant at which its outcome would change (a
Coverage starting, a message leaving the patient-active window, a due time passing, the next
whole day of age). `evaluate_until` returns the earliest of them: the evaluation stays the same
for every later `as_of` before that instant (given the same facts), so a sync need not evaluate
a referral again until then unless its data changed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import TypeVar

from fhir_profiles import terminology
from mappings.business_hours import Calendar
from mappings.facts import CoverageFacts, MessageFacts, ReferralFacts
from mappings.fhirtime import format_day, whole_days
from mappings.index import ReferralIndex
from mappings.model import MissingDetail, NextAction, Reason, ReferralEvaluation
from mappings.rules import PracticeRules

__all__ = [
    "Evaluator",
    "authored_by_source",
    "evaluate_all",
    "is_listed",
    "is_member",
    "referral_source",
    "source_standing",
]

F = TypeVar("F")
_KEY = attrgetter("key")
CLOSED_STATUSES = frozenset({"completed", "revoked", "entered-in-error"})
BOOKED_APPOINTMENT = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
ACTIVE_MESSAGE = frozenset({"completed", "in-progress"})

TIME_SENSITIVE = "time-sensitive"
PATIENT_ACTIVE = "patient-active"
READY = "ready-to-schedule"
MISSING = "missing-detail"
HIGH_RELATIONSHIP = "high-relationship"


def _name(key: str) -> str:
    """A key as a person reads it in a detail: `Coverage/c1` -> `Coverage c1`."""
    head, sep, tail = key.partition("/")
    return f"{head} {tail}" if sep and head[:1].isupper() and "/" not in tail else key


def in_key_order(items: Iterable[F]) -> list[F]:
    """Context in key order: what an evaluation says must not depend on the order in which the
    server or the files listed it. Groups are mostly of one, so they are sorted where read."""
    found = list(items)
    if len(found) > 1:
        found.sort(key=_KEY)
    return found


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True, slots=True)
class _Missing:
    detail: MissingDetail
    reasons: tuple[Reason, ...]


class Evaluator:
    """Evaluates the referrals of one index under one set of rules at one instant."""

    def __init__(
        self,
        index: ReferralIndex,
        rules: PracticeRules,
        as_of: datetime,
        *,
        source_dates: Mapping[str, list[datetime]] | None = None,
    ) -> None:
        """`source_dates`: by source, the sorted authoredOn of all its referrals, when the
        index holds only some of them (the store evaluates in chunks of patients); by default
        the index's referrals are all there are."""
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        self.index = index
        self.rules = rules
        self.as_of = as_of
        self.terms = terminology()
        self._referrals = [r for r in index.referrals.values() if rules.is_referral(r.categories)]
        self._sources = {r.key: self._resolve_source(r) for r in self._referrals}
        self._source_dates = (
            source_dates if source_dates is not None else self._authored_by_source()
        )
        self._listed_sources = frozenset(rules.high_relationship.sources)
        self._calendar = Calendar.from_rules(rules.business_hours)
        self._high: dict[str, tuple[list[Reason], datetime | None]] = {}  # the same by source
        self._until: datetime | None = None  # the earliest change noted in this evaluation

    @property
    def referrals(self) -> list[ReferralFacts]:
        """The ServiceRequests the practice counts as referrals, in input order."""
        return self._referrals

    def __iter__(self) -> Iterator[ReferralEvaluation]:
        return (self.evaluate(referral) for referral in self._referrals)

    def _changes_at(self, moment: datetime | None) -> None:
        """Note an instant at which a comparison with `as_of` made in this evaluation would
        come out otherwise (instants before `as_of` change nothing any more)."""
        if moment is None or moment < self.as_of:
            return
        if self._until is None or moment < self._until:
            self._until = moment

    # --- state -----------------------------------------------------------------------------

    def state(self, referral: ReferralFacts) -> tuple[str, Reason | None]:
        """open, scheduled or closed; with the reason, unless open (the default state)."""
        if referral.status in CLOSED_STATUSES:
            return "closed", Reason(
                state="closed",
                because=f"the ServiceRequest status is {referral.status}",
                expression="ServiceRequest.status",
            )
        for appointment in in_key_order(self.index.appointments_by_referral.get(referral.key, ())):
            if appointment.status in BOOKED_APPOINTMENT:
                return "scheduled", Reason(
                    state="scheduled",
                    because=f"{_name(appointment.key)} based on the referral is "
                    f"{appointment.status}",
                    expression="Appointment.where(basedOn.references(%referral)).status",
                )
        return "open", None

    # --- missing details -----------------------------------------------------------------------

    def _item(
        self, code: str, detail: str, why: list[tuple[str, str]], segment: str | None
    ) -> _Missing:
        """A missing item with its reasons, each (because, FHIRPath expression)."""
        request_from = self.terms.missing_item(code).request_from
        reasons = tuple(
            Reason(segment=segment, item=code, because=because, expression=expression)
            for because, expression in why
        )
        return _Missing(MissingDetail(item=code, detail=detail, request_from=request_from), reasons)

    def missing(self, referral: ReferralFacts, segment: str | None) -> list[_Missing]:
        """The missing details of a referral, in the CodeSystem's order, each with reasons."""
        found = []
        for check in (self._demographics, self._insurance, self._records, self._clarification):
            result = check(referral, segment)
            if result is not None:
                found.append(result)
        return found

    def _demographics(self, referral: ReferralFacts, segment: str | None) -> _Missing | None:
        subject = self.index.resolve(referral.subject)
        patient = self.index.patients.get(subject) if subject else None
        if patient is None:
            if subject is None:
                because = "the referral names no subject patient"
            else:
                because = f"the subject {_name(subject)} is not in the input"
            return self._item(
                "demographics", because, [(because, "ServiceRequest.subject.resolve()")], segment
            )
        gaps: list[tuple[str, str]] = []
        if not patient.has_name:
            gaps.append(
                (
                    "no name with a family or given part",
                    "Patient.name.where(family.exists() or given.exists())",
                )
            )
        if not patient.has_birth_date:
            gaps.append(("no birth date", "Patient.birthDate"))
        if not patient.has_phone:
            gaps.append(
                (
                    "no phone or SMS number",
                    "Patient.telecom.where((system = 'phone' or system = 'sms') "
                    "and value.exists())",
                )
            )
        if not gaps:
            return None
        who = _name(patient.key)
        detail = f"{who} has " + _join([g for g, _ in gaps])
        return self._item("demographics", detail, [(f"{who} has {g}", e) for g, e in gaps], segment)

    def _coverage_problem(self, coverage: CoverageFacts) -> str | None:
        """Why a Coverage does not count as in force at as_of, or None if it does."""
        if coverage.status != "active":
            status = coverage.status or "without a status"
            return f"{_name(coverage.key)} is {status}"
        if coverage.start is not None:
            self._changes_at(coverage.start)
        if coverage.end is not None:
            self._changes_at(coverage.end)
        if coverage.start is not None and coverage.start > self.as_of:
            return f"{_name(coverage.key)} starts {format_day(coverage.start)}"
        if coverage.end is not None and coverage.end < self.as_of:
            return f"{_name(coverage.key)} ended {format_day(coverage.end)}"
        return None

    def _insurance(self, referral: ReferralFacts, segment: str | None) -> _Missing | None:
        subject = self.index.resolve(referral.subject)
        candidates: dict[str, CoverageFacts] = {}
        for coverage in self.index.coverages_by_patient.get(subject or "", ()):
            candidates[coverage.key] = coverage
        for ref in referral.insurance:
            key = self.index.resolve(ref)
            if key in self.index.coverages:
                candidates[key] = self.index.coverages[key]
        in_force, problems = [], []
        for coverage in in_key_order(candidates.values()):
            problem = self._coverage_problem(coverage)
            if problem is None:
                in_force.append(coverage)
            else:
                problems.append(problem)
        if not in_force:
            who = _name(subject) if subject else "the patient"
            detail = f"no active Coverage in force on {format_day(self.as_of)} for {who}"
            # The detail names the day.
            midnight = self.as_of.replace(hour=0, minute=0, second=0, microsecond=0)
            self._changes_at(midnight + timedelta(days=1))
            if problems:
                detail += f" ({'; '.join(problems)})"
            expression = (
                "Coverage.where(status = 'active' and (beneficiary.references("
                "%referral.subject) or %referral.insurance.references($this)) and "
                "(period.empty() or period.contains(%as_of)))"
            )
            return self._item("insurance", detail, [(detail, expression)], segment)
        if any(c.self_pay or c.has_member_id for c in in_force):
            return None
        names = _join([_name(c.key) for c in in_force])
        detail = f"{names} {'has' if len(in_force) == 1 else 'have'} no member id"
        because = f"{detail} and {'is not' if len(in_force) == 1 else 'none is'} self-pay"
        expression = (
            "Coverage.subscriberId | Coverage.identifier | Coverage.type.coding.where("
            "system = 'http://terminology.hl7.org/CodeSystem/coverage-selfpay' and code = 'pay')"
        )
        return self._item("insurance", detail, [(because, expression)], segment)

    def _records(self, referral: ReferralFacts, segment: str | None) -> _Missing | None:
        if referral.has_supporting_info:
            return None
        if any(r.status == "current" for r in self.index.records_by_referral.get(referral.key, ())):
            return None
        if any(rule.matches(referral.codes) for rule in self.rules.records.waived_service_codes):
            return None
        detail = (
            "the referral has no supporting information and no current DocumentReference "
            "relates to it"
        )
        expression = (
            "ServiceRequest.supportingInfo | DocumentReference.where(status = 'current' and "
            "context.related.references(%referral))"
        )
        return self._item("records", detail, [(detail, expression)], segment)

    def _clarification(self, referral: ReferralFacts, segment: str | None) -> _Missing | None:
        gaps: list[tuple[str, str]] = []
        if not referral.has_code:
            gaps.append(("no service code", "ServiceRequest.code"))
        if not referral.has_reason:
            gaps.append(("no reason", "ServiceRequest.reasonCode | ServiceRequest.reasonReference"))
        if referral.requester is None:
            gaps.append(("no requester", "ServiceRequest.requester"))
        if not gaps:
            return None
        detail = "the referral has " + _join([g for g, _ in gaps])
        why = [(f"the referral has {g}", e) for g, e in gaps]
        return self._item("clarification", detail, why, segment)

    # --- segments ------------------------------------------------------------------------------

    def _time_sensitive(self, referral: ReferralFacts) -> list[Reason]:
        rules = self.rules.time_sensitive
        reasons = []
        if referral.priority in rules.priorities:
            reasons.append(
                Reason(
                    segment=TIME_SENSITIVE,
                    because=f"the priority is {referral.priority}",
                    expression="ServiceRequest.priority",
                )
            )
        horizon = self.as_of + timedelta(days=rules.occurrence_within_days)
        if referral.occurrence is not None:
            self._changes_at(referral.occurrence - timedelta(days=rules.occurrence_within_days))
        if referral.occurrence is not None and referral.occurrence <= horizon:
            reasons.append(
                Reason(
                    segment=TIME_SENSITIVE,
                    because=f"the requested date {format_day(referral.occurrence)} is within "
                    f"{rules.occurrence_within_days} days",
                    expression=referral.occurrence_path or "ServiceRequest.occurrence",
                )
            )
        for code_rule in rules.service_codes:
            if code_rule.matches(referral.codes):
                reasons.append(
                    Reason(
                        segment=TIME_SENSITIVE,
                        because=f"the service code {code_rule.code} is on the practice's "
                        "time-sensitive list",
                        expression="ServiceRequest.code.coding",
                    )
                )
                break
        return reasons

    def _patient_active(self, referral: ReferralFacts) -> tuple[list[Reason], datetime | None]:
        """Reasons, and the time of the latest qualifying patient signal."""
        subject = self.index.resolve(referral.subject)
        if subject is None:
            return [], None
        start = self.as_of - timedelta(days=self.rules.patient_active.window_days)
        reasons, latest = [], None
        for message in in_key_order(self.index.messages_by_sender.get(subject, ())):
            if not self._message_counts(message, referral, start):
                continue
            assert message.sent is not None
            latest = message.sent if latest is None else max(latest, message.sent)
            targets = [self.index.resolve(r) for r in message.refers_to]
            about = "about this referral" if referral.key in targets else "about no referral"
            reasons.append(
                Reason(
                    segment=PATIENT_ACTIVE,
                    because=f"{_name(subject)} sent {_name(message.key)} on "
                    f"{format_day(message.sent)}, {about}",
                    expression=message.sent_path or "Communication.sent",
                )
            )
        for form in in_key_order(self.index.forms_by_referral.get(referral.key, ())):
            if form.authored is not None:
                self._in_window(form.authored)
            if (
                form.status == "completed"
                and subject in [self.index.resolve(a) for a in form.authors]
                and form.authored is not None
                and start <= form.authored <= self.as_of
            ):
                latest = form.authored if latest is None else max(latest, form.authored)
                reasons.append(
                    Reason(
                        segment=PATIENT_ACTIVE,
                        because=f"{_name(subject)} completed {_name(form.key)} on "
                        f"{format_day(form.authored)}",
                        expression="QuestionnaireResponse.authored",
                    )
                )
        return reasons, latest

    def _message_counts(
        self, message: MessageFacts, referral: ReferralFacts, start: datetime
    ) -> bool:
        if message.status not in ACTIVE_MESSAGE or message.sent is None:
            return False
        self._in_window(message.sent)
        if not start <= message.sent <= self.as_of:
            return False
        targets = [self.index.resolve(r) for r in message.refers_to]
        if referral.key in targets:
            return True
        # A message about no referral at all counts for each of the patient's open referrals.
        return not any(self.index.is_referral_key(t) for t in targets)

    def _in_window(self, moment: datetime) -> None:
        """A patient signal enters the patient-active window when it happens and leaves it
        `window_days` later."""
        self._changes_at(moment)
        self._changes_at(moment + timedelta(days=self.rules.patient_active.window_days))

    def source(self, referral: ReferralFacts) -> str | None:
        """The requester's Organization; a Practitioner, or a role without one, stands for
        itself."""
        if referral.key in self._sources:  # worked out once, for the high-relationship counts
            return self._sources[referral.key]
        return self._resolve_source(referral)

    def _resolve_source(self, referral: ReferralFacts) -> str | None:
        return referral_source(self.index, referral)

    def _authored_by_source(self) -> dict[str, list[datetime]]:
        return authored_by_source(
            (self.source(referral), referral.authored) for referral in self._referrals
        )

    def _high_relationship(self, source: str | None) -> list[Reason]:
        if source is None:
            return []
        if source not in self._high:
            self._high[source] = self._source_reasons(source)
        reasons, until = self._high[source]
        self._changes_at(until)
        return reasons

    def _source_reasons(self, source: str) -> tuple[list[Reason], datetime | None]:
        """The source's reasons, and when they next change (`source_standing`)."""
        rules = self.rules.high_relationship
        if is_listed(self.index, source, self._listed_sources):
            listed = Reason(
                segment=HIGH_RELATIONSHIP,
                because=f"{_name(source)} is on the practice's high-relationship list",
                expression="ServiceRequest.requester",
            )
            return [listed], None
        dates = self._source_dates.get(source, [])
        member, until = source_standing(dates, self.as_of, rules.window_days, rules.min_referrals)
        if member:
            return [
                Reason(
                    segment=HIGH_RELATIONSHIP,
                    because=f"{_name(source)} sent {rules.min_referrals} or more referrals in "
                    f"the {rules.window_days} days up to the evaluation date",
                    expression="ServiceRequest.requester",
                )
            ], until
        return [], until

    # --- the whole evaluation ---------------------------------------------------------------

    def evaluate(self, referral: ReferralFacts) -> ReferralEvaluation:
        return self.evaluate_until(referral)[0]

    def evaluate_until(self, referral: ReferralFacts) -> tuple[ReferralEvaluation, datetime | None]:
        """The evaluation, and the instant before which it stays the same for any later
        `as_of` (None: it never changes with time alone)."""
        self._until = None
        evaluation = self._evaluate(referral)
        return evaluation, self._until

    def _evaluate(self, referral: ReferralFacts) -> ReferralEvaluation:
        state, state_reason = self.state(referral)
        source = self.source(referral)
        started = referral.authored or referral.last_updated
        age = max(0, whole_days(started, self.as_of)) if started else None
        if started is not None and age is not None:
            self._changes_at(started + timedelta(days=age + 1))  # a day older
        band = self.terms.band_for(age).code if age is not None else None
        patient = self.index.resolve(referral.subject)
        if state_reason is not None:  # scheduled or closed
            missing = self.missing(referral, None) if state == "scheduled" else []
            return ReferralEvaluation(
                referral=referral.key,
                patient=patient,
                state=state,
                segments=(),
                primary_segment=None,
                missing=tuple(m.detail for m in missing),
                age_days=age,
                aging_band=band,
                source=source,
                next_action=None,
                reasons=(state_reason, *(r for m in missing for r in m.reasons)),
                arrived=started,
            )
        missing = self.missing(referral, MISSING)
        found: dict[str, list[Reason]] = {TIME_SENSITIVE: self._time_sensitive(referral)}
        active, signal = self._patient_active(referral)
        found[PATIENT_ACTIVE] = active
        if missing:
            found[MISSING] = [r for m in missing for r in m.reasons]
        else:
            found[READY] = [
                Reason(
                    segment=READY,
                    because="demographics, insurance, records and clarification are all present",
                    expression="ServiceRequest.subject.resolve() | ServiceRequest.supportingInfo | "
                    "ServiceRequest.code | ServiceRequest.requester",
                )
            ]
        found[HIGH_RELATIONSHIP] = self._high_relationship(source)
        segments = tuple(s for s in self.terms.segments if found.get(s))
        primary = segments[0]
        reasons = tuple(r for s in segments for r in found[s])
        details = tuple(m.detail for m in missing)
        start = signal if primary == PATIENT_ACTIVE and signal else started
        return ReferralEvaluation(
            referral=referral.key,
            patient=patient,
            state=state,
            segments=segments,
            primary_segment=primary,
            missing=details,
            age_days=age,
            aging_band=band,
            source=source,
            next_action=self._next_action(primary, details, start),
            reasons=reasons,
            arrived=started,
        )

    def _next_action(
        self, segment: str, missing: tuple[MissingDetail, ...], start: datetime | None
    ) -> NextAction:
        standard = self.rules.segments[segment]
        steps = [standard.next_action]
        for item in missing:
            whom = "the patient" if item.request_from == "patient" else "the referring office"
            steps.append(f"Ask {whom} for {item.item}: {item.detail}")
        due = self._calendar.add(start, standard.follow_up_business_hours) if start else None
        self._changes_at(due)
        return NextAction(
            segment=segment,
            action=standard.next_action,
            steps=tuple(steps),
            owner_role=standard.owner_role,
            backup_owner_role=standard.backup_owner_role,
            documentation_rule=standard.documentation_rule,
            follow_up_business_hours=standard.follow_up_business_hours,
            due=due,
            overdue=due is not None and due < self.as_of,
        )


def referral_source(index: ReferralIndex, referral: ReferralFacts) -> str | None:
    """The referral's source: the requester's Organization; a Practitioner, or a role without
    one, stands for itself (the index needs the parties and aliases only)."""
    requester = index.resolve(referral.requester)
    if requester is None:
        return None
    party = index.parties.get(requester)
    if party is not None and party.organization is not None:
        return index.resolve(party.organization)
    return requester


def is_listed(index: ReferralIndex, source: str, listed: frozenset[str]) -> bool:
    """Whether the practice lists the source, by reference or by one of its identifiers
    (system|value)."""
    party = index.parties.get(source)
    identifiers = party.identifiers if party else ()
    return bool({source, *(i.removeprefix("identifier:") for i in identifiers)} & listed)


def source_standing(
    dates: list[datetime], as_of: datetime, window_days: int, min_referrals: int
) -> tuple[bool, datetime | None]:
    """Whether a source with referrals authored on the sorted `dates` is high-relationship by
    its count at `as_of` (at least `min_referrals` in the `window_days` days up to it), and the
    first instant at which that may stop being so (None: never, by time alone).

    Only the standing counts, not the count itself: a busy source's referrals keep their
    evaluation while referrals arrive from it and age out of its window, and are evaluated
    again when it crosses the threshold. As time passes, a referral authored later than
    `as_of` enters the window on its date and each leaves it `window_days` after its date
    (taken at that instant, a microsecond early, which only makes the answer earlier)."""
    window = timedelta(days=window_days)
    first, end = _in_window(dates, as_of, window)
    count = end - first
    member = count >= min_referrals
    # The instants at which the count moves come from two sorted runs, walked together in
    # time order and only up to the first flip: the dates still to come enter on their date
    # (dates[end:]), and each date in or after the window leaves `window` after it. (Called
    # for each source on each page a first sync evaluates: no dict of every instant, no sort.)
    entering, leaving, n = end, first, len(dates)
    while entering < n or leaving < n:
        if leaving == n or (entering < n and dates[entering] <= dates[leaving] + window):
            instant = dates[entering]
        else:
            instant = dates[leaving] + window
        came = 0
        while entering < n and dates[entering] == instant:
            came += 1
            entering += 1
        went = 0
        while leaving < n and dates[leaving] + window == instant:
            went += 1
            leaving += 1
        # At the instant the new ones count and, an instant later, the old ones no longer do:
        # either may cross the threshold.
        if (count + came >= min_referrals) != member:
            return member, instant
        count += came - went
        if (count >= min_referrals) != member:
            return member, instant
    return member, None


def is_member(dates: list[datetime], as_of: datetime, window_days: int, min_referrals: int) -> bool:
    """`source_standing`'s first half alone: whether the source is high-relationship at
    `as_of` by its count (two bisections of the sorted dates)."""
    first, end = _in_window(dates, as_of, timedelta(days=window_days))
    return end - first >= min_referrals


def _in_window(dates: list[datetime], as_of: datetime, window: timedelta) -> tuple[int, int]:
    """The slice of the sorted dates in the window up to `as_of`."""
    return bisect.bisect_left(dates, as_of - window), bisect.bisect_right(dates, as_of)


def authored_by_source(
    pairs: Iterable[tuple[str | None, datetime | None]],
) -> dict[str, list[datetime]]:
    """(source, authoredOn) of each referral -> by source, the sorted dates (for the
    high-relationship count)."""
    dates: defaultdict[str, list[datetime]] = defaultdict(list)
    for source, authored in pairs:
        if source is not None and authored is not None:
            dates[source].append(authored)
    for values in dates.values():
        values.sort()
    return dict(dates)


def evaluate_all(
    index: ReferralIndex, rules: PracticeRules, as_of: datetime
) -> list[ReferralEvaluation]:
    """Evaluate every referral of a built index."""
    return list(Evaluator(index, rules, as_of))
