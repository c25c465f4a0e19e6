"""What staff do with a referral: record a contact attempt, write the note for the next person,
assign an owner, mark it reviewed. Each action is stored, audited and queued for write-back in
one transaction (the caller's session); the SMART view and the command line both come here.

The audit trail names who did what to which referral (and whose referrals were seen) by
identifiers only: never a name, a note's text or any other PHI.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from adapter import outbox, store
from adapter.errors import ConfigError
from adapter.outbox import Intent
from adapter.planning import PlanSummary, details_from_store, plan_evaluations, with_people
from adapter.store_models import AuditEvent, ContactAttemptRow, NoteRow, OwnerRow, ReviewRow
from fhir_profiles import terminology
from mappings.rules import PracticeRules
from mappings.writeback import (
    ContactAttempt,
    Owner,
    StatusEvent,
    contact_attempt_communication,
    contact_text,
    status_communication,
)

__all__ = [
    "Actor",
    "assign_owner",
    "audit",
    "mark_reviewed",
    "record_contact",
    "write_note",
]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an id for the audit trail (a fhirUser reference, a user name), and how the
    written resources name them."""

    id: str
    reference: str | None = None
    display: str | None = None

    def owner(self) -> Owner:
        return Owner(self.reference, self.display or (None if self.reference else self.id))


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigError("times must carry a time zone")
    return moment.astimezone(UTC)


def audit(
    session: Session,
    actor: str,
    action: str,
    *,
    referral: str | None = None,
    patient: str | None = None,
    detail: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """One line of the audit trail (identifiers and codes only)."""
    session.add(
        AuditEvent(
            at=_aware(now or datetime.now(UTC)),
            actor=actor,
            action=action,
            referral_key=referral,
            patient_key=patient,
            detail=dict(detail or {}),
        )
    )


def _evaluation(session: Session, referral: str) -> dict[str, Any]:
    found = store.stored_evaluation(session, referral)
    if found is None:
        raise ConfigError(f"no referral {referral} in the store (run sync first)")
    return found


def _replan(
    session: Session, evaluation: dict[str, Any], rules: PracticeRules, now: datetime
) -> PlanSummary:
    """Queue the referral's Task again (its owner or note changed)."""
    details = details_from_store(session, [evaluation["referral"]])
    return plan_evaluations(session, [evaluation], details, rules, now)


def record_contact(
    session: Session,
    referral: str,
    *,
    channel: str,
    outcome: str,
    actor: Actor,
    rules: PracticeRules,
    at: datetime | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> ContactAttempt:
    """Store one attempt to reach the patient and queue its Communication (and the office's
    patient-contacted update, where the status loop sends one)."""
    terms = terminology()
    if channel not in terms.contact_channels:
        raise ConfigError(
            f"unknown channel {channel!r} (known: {', '.join(terms.contact_channels)})"
        )
    if outcome not in terms.contact_outcomes:
        raise ConfigError(
            f"unknown outcome {outcome!r} (known: {', '.join(terms.contact_outcomes)})"
        )
    now = _aware(now or datetime.now(UTC))
    evaluation = _evaluation(session, referral)
    patient = evaluation.get("patient")
    if not isinstance(patient, str) or not patient.startswith("Patient/"):
        raise ConfigError(f"{referral} names no patient to contact")
    attempt = ContactAttempt(
        id=str(uuid.uuid4()),
        referral=referral,
        patient=patient,
        at=_aware(at) if at else now,
        channel=channel,
        outcome=outcome,
        by=actor.owner(),
        note=note.strip() if note and note.strip() else None,
    )
    session.add(
        ContactAttemptRow(
            id=attempt.id,
            referral_key=referral,
            patient=patient,
            at=attempt.at,
            channel=channel,
            outcome=outcome,
            by_reference=actor.reference,
            by_display=actor.display,
            note=attempt.note,
            recorded_at=now,
        )
    )
    communication = contact_attempt_communication(attempt)
    identifier = communication["identifier"][0]["value"]
    intents = [Intent(identifier, referral, "contact", identifier, communication)]
    loop = rules.status_loop
    audience = loop.patient_contacted
    state = outbox.writeback_states(session, [referral]).get(referral)
    high = "high-relationship" in evaluation.get("segments", ()) or bool(
        state and state.high_relationship
    )
    wanted = audience == "all" or (audience == "high-relationship" and high)
    source = evaluation.get("source")
    if (
        outcome in loop.patient_contacted_outcomes
        and wanted
        and isinstance(source, str)
        and source.startswith(("Organization/", "Practitioner/", "PractitionerRole/"))
    ):
        details = with_people(
            session, details_from_store(session, [referral]), {referral: patient}
        ).get(referral)
        if details is not None:
            event = StatusEvent("patient-contacted", attempt.id)
            update = status_communication(
                evaluation, details, event, rules, sent=now, contact=contact_text(attempt)
            )
            key = event.identifier(referral)
            intents.append(Intent(key, referral, "status", key, update))
    outbox.enqueue(session, intents, now)
    audit(
        session,
        actor.id,
        "contact-attempt",
        referral=referral,
        patient=patient,
        detail={"attempt": attempt.id, "channel": channel, "outcome": outcome},
        now=now,
    )
    return attempt


def write_note(
    session: Session,
    referral: str,
    *,
    actor: Actor,
    rules: PracticeRules,
    contacted: str | None = None,
    requested: str | None = None,
    response: str | None = None,
    still_missing: Sequence[str] = (),
    next_attempt_due: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Store a note for the next person and queue the Task that carries it; the note's id."""
    known = [item.code for item in terminology().missing_items]
    for item in still_missing:
        if item not in known:
            raise ConfigError(f"unknown missing item {item!r} (known: {', '.join(known)})")
    parts = [p.strip() if p else None for p in (contacted, requested, response)]
    if not any(parts) and not still_missing and next_attempt_due is None:
        raise ConfigError(
            "an empty note: say who was contacted, what was requested or said, "
            "what is still missing, or when the next attempt is due"
        )
    now = _aware(now or datetime.now(UTC))
    evaluation = _evaluation(session, referral)
    row = NoteRow(
        referral_key=referral,
        written_at=now,
        author_reference=actor.reference,
        author_display=actor.display or (None if actor.reference else actor.id),
        contacted=parts[0] or None,
        requested=parts[1] or None,
        response=parts[2] or None,
        still_missing=list(dict.fromkeys(still_missing)),
        next_attempt_due=_aware(next_attempt_due) if next_attempt_due else None,
    )
    session.add(row)
    session.flush()
    _replan(session, evaluation, rules, now)
    audit(
        session,
        actor.id,
        "note",
        referral=referral,
        patient=evaluation.get("patient"),
        detail={"note": row.id},
        now=now,
    )
    return row.id


def assign_owner(
    session: Session,
    referral: str,
    *,
    owner: Owner,
    actor: Actor,
    rules: PracticeRules,
    now: datetime | None = None,
) -> None:
    """Make `owner` the referral's owner and queue the Task that names them."""
    if not owner.reference and not owner.display:
        raise ConfigError("an owner needs a reference (e.g. Practitioner/123) or a name")
    now = _aware(now or datetime.now(UTC))
    evaluation = _evaluation(session, referral)
    stmt = store.insert_for(session)(OwnerRow).values(
        referral_key=referral,
        owner_reference=owner.reference,
        owner_display=owner.display,
        assigned_at=now,
        assigned_by=actor.id,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["referral_key"],
        set_={
            k: stmt.excluded[k]
            for k in ("owner_reference", "owner_display", "assigned_at", "assigned_by")
        },
    )
    session.execute(stmt)
    _replan(session, evaluation, rules, now)
    audit(
        session,
        actor.id,
        "assign",
        referral=referral,
        patient=evaluation.get("patient"),
        detail={"owner": owner.reference or "by name"},
        now=now,
    )


def mark_reviewed(
    session: Session,
    referral: str,
    *,
    actor: Actor,
    rules: PracticeRules,
    now: datetime | None = None,
) -> None:
    """Record that the referral was looked at in the same-day review lane, and queue the Task
    that says so."""
    now = _aware(now or datetime.now(UTC))
    evaluation = _evaluation(session, referral)
    stmt = store.insert_for(session)(ReviewRow).values(
        referral_key=referral, reviewed_at=now, reviewed_by=actor.display or actor.id
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["referral_key"],
        set_={"reviewed_at": stmt.excluded.reviewed_at, "reviewed_by": stmt.excluded.reviewed_by},
    )
    session.execute(stmt)
    _replan(session, evaluation, rules, now)
    audit(
        session,
        actor.id,
        "review",
        referral=referral,
        patient=evaluation.get("patient"),
        detail={"segment": evaluation.get("primary_segment")},
        now=now,
    )
