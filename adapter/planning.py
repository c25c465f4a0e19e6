"""Planning the write-back: which Task and Communication writes a referral's evaluation (or a
staff action) calls for, recorded in the outbox in the caller's transaction.

- The follow-up Task: its content is built from the evaluation, the owner and the latest note;
  when that differs from the last Task planned for the referral (by digest), a new Task intent
  is queued under the next sequence number (`ServiceRequest/1:task:3`), which supersedes older
  ones not yet written.
- Status updates: the status loop of the practice rules (`mappings.writeback.status_events`),
  each under the identifier that makes it one of a kind; one already in the outbox is not built
  again.
- A referral first seen closed gets neither: there is nothing left to follow up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter import outbox, store
from adapter.outbox import Intent
from adapter.store_models import NoteRow, OwnerRow, ReviewRow
from mappings.index import ReferralIndex
from mappings.names import display_name
from mappings.references import reference_key
from mappings.rules import PracticeRules
from mappings.writeback import (
    FollowUpNote,
    Owner,
    ReferralDetails,
    follow_up_task,
    status_communication,
    status_events,
    task_digest,
)

__all__ = [
    "PlanSummary",
    "details_from_index",
    "details_from_store",
    "follow_up_note",
    "latest_notes",
    "owners",
    "person",
    "plan_evaluations",
    "reviews",
    "with_people",
]

JSON = dict[str, Any]
BOOKED = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
PARTY_TYPES = ("Organization/", "Practitioner/", "PractitionerRole/")


@dataclass(slots=True)
class PlanSummary:
    tasks: int = 0
    messages: int = 0
    skipped: int = 0  # referrals whose Task cannot be written (no patient to be for)


def _day(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment else None


def _instant(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def _literal(key: str | None) -> str | None:
    """A reference key the written resources can carry (Type/id of a party), else None."""
    if key and key.startswith(PARTY_TYPES) and key.count("/") == 1 and "#" not in key:
        return key
    return None


def details_from_index(index: ReferralIndex, keys: Iterable[str]) -> dict[str, ReferralDetails]:
    """What the written resources say of each referral, from the evaluation's index (names
    come later, from `with_people`, for the few that need a message)."""
    found: dict[str, ReferralDetails] = {}
    for key in keys:
        facts = index.referrals.get(key)
        if facts is None:
            continue
        booked = sorted(
            (a for a in index.appointments_by_referral.get(key, ()) if a.status in BOOKED),
            key=lambda a: a.key,
        )
        found[key] = ReferralDetails(
            key=key,
            request_status=facts.status,
            requester=_literal(index.resolve(facts.requester)),
            number=facts.number or key.partition("/")[2],
            received=_day(facts.authored),
            appointment=booked[0].key if booked else None,
            appointment_start=_instant(booked[0].start) if booked else None,
        )
    return found


def details_from_store(session: Session, keys: Iterable[str]) -> dict[str, ReferralDetails]:
    """`details_from_index` for referrals outside a sync: read from the stored resources."""
    wanted = [k for k in keys if k.startswith("ServiceRequest/")]
    bodies = store.bodies_by_id(session, "ServiceRequest", (k.partition("/")[2] for k in wanted))
    found: dict[str, ReferralDetails] = {}
    for key in wanted:
        body = bodies.get(key.partition("/")[2])
        if body is None:
            continue
        number = next(
            (
                i["value"]
                for i in body.get("identifier") or ()
                if isinstance(i, dict) and isinstance(i.get("value"), str) and i["value"]
            ),
            body.get("id") or key.partition("/")[2],
        )
        authored = body.get("authoredOn")
        found[key] = ReferralDetails(
            key=key,
            request_status=body.get("status"),
            requester=_literal(reference_key(body.get("requester"), key)),
            number=str(number),
            received=authored[:10] if isinstance(authored, str) else None,
        )
    return found


def person(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A Patient's name and birth date, as the status updates carry them."""
    birth = body.get("birthDate")
    return display_name(body), birth if isinstance(birth, str) else None


def with_people(
    session: Session,
    details: Mapping[str, ReferralDetails],
    patients: Mapping[str, str | None],
    known: Mapping[str, tuple[str | None, str | None]] | None = None,
) -> dict[str, ReferralDetails]:
    """The details with the patient's name and birth date (for messages), by referral key;
    `patients` maps each referral key to its patient key. `known`: (name, birth date) by
    patient key, for patients the caller has just read (the others are read from the store)."""
    known = known or {}
    ids = {
        patient.partition("/")[2]
        for patient in patients.values()
        if patient and patient.startswith("Patient/") and patient not in known
    }
    people = dict(known)
    for rid, body in store.bodies_by_id(session, "Patient", ids).items():
        people[f"Patient/{rid}"] = person(body)
    out: dict[str, ReferralDetails] = {}
    for key, found in details.items():
        patient = patients.get(key)
        named = people.get(patient) if patient else None
        if named is None:
            out[key] = found
            continue
        out[key] = ReferralDetails(
            key=found.key,
            request_status=found.request_status,
            requester=found.requester,
            number=found.number,
            received=found.received,
            patient_name=named[0],
            birth_date=named[1],
            appointment=found.appointment,
            appointment_start=found.appointment_start,
        )
    return out


def owners(session: Session, keys: Sequence[str]) -> dict[str, Owner]:
    """Who each referral is assigned to, where someone is."""
    found: dict[str, Owner] = {}
    for start in range(0, len(keys), 500):
        rows = session.execute(
            select(OwnerRow).where(OwnerRow.referral_key.in_(keys[start : start + 500]))
        ).scalars()
        for row in rows:
            found[row.referral_key] = Owner(row.owner_reference, row.owner_display)
    return found


def latest_notes(session: Session, keys: Sequence[str]) -> dict[str, FollowUpNote]:
    """The latest note for the next person of each referral that has one."""
    found: dict[str, FollowUpNote] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        newest = (
            select(func.max(NoteRow.id))
            .where(NoteRow.referral_key.in_(chunk))
            .group_by(NoteRow.referral_key)
        )
        for row in session.execute(select(NoteRow).where(NoteRow.id.in_(newest))).scalars():
            found[row.referral_key] = follow_up_note(row)
    return found


def follow_up_note(row: NoteRow) -> FollowUpNote:
    """A stored note for the next person, as the Task carries it (and the view shows it)."""
    return FollowUpNote(
        written_at=row.written_at,
        author=Owner(row.author_reference, row.author_display),
        contacted=row.contacted,
        requested=row.requested,
        response=row.response,
        still_missing=tuple(row.still_missing),
        next_attempt_due=row.next_attempt_due,
    )


def reviews(session: Session, keys: Sequence[str]) -> dict[str, tuple[datetime, str | None]]:
    """When each referral was last reviewed, and by whom."""
    found: dict[str, tuple[datetime, str | None]] = {}
    for start in range(0, len(keys), 500):
        rows = session.execute(
            select(ReviewRow).where(ReviewRow.referral_key.in_(keys[start : start + 500]))
        ).scalars()
        found.update((row.referral_key, (row.reviewed_at, row.reviewed_by)) for row in rows)
    return found


def plan_evaluations(
    session: Session,
    evaluations: Sequence[Mapping[str, Any]],
    details: Mapping[str, ReferralDetails],
    rules: PracticeRules,
    now: datetime,
    *,
    people: Mapping[str, tuple[str | None, str | None]] | None = None,
) -> PlanSummary:
    """Queue the Task and status-update writes these evaluations call for (in the caller's
    transaction, beside the evaluations themselves). `people`: as `with_people` takes them."""
    summary = PlanSummary()
    keys = [e["referral"] for e in evaluations if e["referral"] in details]
    if not keys:
        return summary
    states = outbox.writeback_states(session, keys)
    assigned = owners(session, keys)
    notes = latest_notes(session, keys)
    reviewed = reviews(session, keys)
    intents: list[Intent] = []
    remembered: list[dict[str, Any]] = []
    wanted_events: list[tuple[Mapping[str, Any], Any]] = []
    for evaluation in evaluations:
        key = evaluation["referral"]
        found = details.get(key)
        if found is None:
            continue
        state = states.get(key)
        if state is None and evaluation["state"] == "closed":
            continue  # first seen closed: nothing to follow up
        seq = state.task_seq if state else 0
        digest = state.task_digest if state else None
        task = follow_up_task(
            evaluation,
            found,
            rules,
            authored_on=now,
            owner=assigned.get(key),
            note=notes.get(key),
            review=reviewed.get(key),
        )
        if task is None:
            summary.skipped += 1
        elif (fingerprint := task_digest(task)) != digest:
            seq += 1
            digest = fingerprint
            intents.append(Intent(f"{key}:task:{seq}", key, "task", key, task))
        open_now = evaluation["state"] == "open"
        high = (
            "high-relationship" in evaluation.get("segments", ())
            if open_now
            else bool(state and state.high_relationship)
        )
        was_missing = bool(state and state.was_missing)
        for event in status_events(
            evaluation, found, rules, high_relationship=high, was_missing=was_missing
        ):
            wanted_events.append((evaluation, event))
        remembered.append(
            {
                "referral_key": key,
                "task_seq": seq,
                "task_digest": digest,
                "high_relationship": high,
                "was_missing": was_missing or (open_now and bool(evaluation.get("missing"))),
                "updated_at": now,
            }
        )
    summary.tasks = len(intents)
    # Status updates: only those not in the outbox yet are built (they need the patient's name).
    known = outbox.existing_keys(
        session, (event.identifier(e["referral"]) for e, event in wanted_events)
    )
    fresh = [
        (e, event) for e, event in wanted_events if event.identifier(e["referral"]) not in known
    ]
    if fresh:
        named = with_people(
            session,
            {e["referral"]: details[e["referral"]] for e, _ in fresh},
            {e["referral"]: e.get("patient") for e, _ in fresh},
            people,
        )
        for evaluation, event in fresh:
            key = evaluation["referral"]
            identifier = event.identifier(key)
            resource = status_communication(evaluation, named[key], event, rules, sent=now)
            intents.append(Intent(identifier, key, "status", identifier, resource))
            summary.messages += 1
    outbox.enqueue(session, intents, now)
    outbox.save_writeback_states(session, remembered)
    return summary
