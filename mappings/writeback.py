"""The resources the adapter writes back, built from a referral's evaluation: pure functions.

- the **referral follow-up Task** (profile referral-follow-up-task): one per referral, found by
  its identifier (system `TASK_SYSTEM`, value the referral's key), updated as the referral moves;
- **referral status Communications** to the referring office (referral-status-communication):
  one per status event, found by an identifier naming the referral and the event;
- **contact attempt Communications** (contact-attempt-communication): one per attempt to reach
  the patient.

Every resource carries an identifier of ours so that a conditional create (`If-None-Exist`)
finds it again: writing twice, or after a crash, never makes a second one. `merge_task` lays
our part of a Task over the server's copy and keeps what others wrote (their notes, their
extensions, fields we do not manage), so an update never overwrites someone else's change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from fhir_profiles import CANONICAL_BASE, terminology
from mappings.messages import MessageFacts, render, xhtml
from mappings.rules import PracticeRules
from mappings.task_states import task_state

__all__ = [
    "COMMUNICATION_SYSTEM",
    "CONTACT_PROFILE",
    "NOTE_ID",
    "REVIEW_ID",
    "STATUS_PROFILE",
    "TASK_PROFILE",
    "TASK_SYSTEM",
    "ContactAttempt",
    "FollowUpNote",
    "Owner",
    "ReferralDetails",
    "StatusEvent",
    "contact_attempt_communication",
    "contact_text",
    "follow_up_task",
    "identifier_query",
    "identifier_token",
    "managed_part",
    "merge_task",
    "message_facts",
    "office_items",
    "office_message",
    "patient_message",
    "patient_message_kind",
    "status_communication",
    "status_events",
    "task_digest",
]

JSON = dict[str, Any]

TASK_SYSTEM = f"{CANONICAL_BASE}/identifier/follow-up-task"
COMMUNICATION_SYSTEM = f"{CANONICAL_BASE}/identifier/communication"
TASK_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/referral-follow-up-task"
STATUS_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/referral-status-communication"
CONTACT_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/contact-attempt-communication"
BACKUP_ROLE_URL = f"{CANONICAL_BASE}/StructureDefinition/backup-owner-role"
NOTE_URL = f"{CANONICAL_BASE}/StructureDefinition/next-person-note"
OUTCOME_URL = f"{CANONICAL_BASE}/StructureDefinition/contact-outcome"
NOTE_ID = "next-person-note"  # Annotation.id of our note: the notes of a Task we replace
REVIEW_ID = "same-day-review"  # Annotation.id of the review mark
OUR_NOTES = (NOTE_ID, REVIEW_ID)
TASK_CODE = {
    "coding": [
        {
            "system": "http://hl7.org/fhir/CodeSystem/task-code",
            "code": "fulfill",
            "display": "Fulfill the focal request",
        }
    ]
}
# Who may receive a status update: what Communication.recipient allows of a referral's source.
RECIPIENT_TYPES = ("Organization/", "Practitioner/", "PractitionerRole/")
# What the Task's fields say of a referral that the adapter decides: replaced on every update.
# Everything else on the server's copy (authoredOn once set, other notes and extensions, fields
# someone else added) is kept.
MANAGED = (
    "status",
    "businessStatus",
    "intent",
    "code",
    "description",
    "focus",
    "for",
    "requester",
    "performerType",
    "owner",
    "restriction",
    "input",
)
CLOSED_OUTCOMES = {
    "completed": "completed",
    "revoked": "revoked",
    "entered-in-error": "entered in error",
}


def _instant(moment: datetime) -> str:
    text = moment.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ReferralDetails:
    """What the written resources say of one referral, besides its evaluation."""

    key: str  # ServiceRequest/id
    request_status: str | None
    requester: str | None  # the ServiceRequest's requester reference, Type/id
    number: str  # how people name the referral: its identifier value, else its id
    received: str | None = None  # YYYY-MM-DD
    patient_name: str | None = None
    birth_date: str | None = None
    appointment: str | None = None  # Appointment/id of the booked appointment
    appointment_start: str | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """Whoever the referral is assigned to (by reference, a display, or both)."""

    reference: str | None
    display: str | None

    def to_json(self) -> JSON:
        out: JSON = {}
        if self.reference:
            out["reference"] = self.reference
        if self.display:
            out["display"] = self.display
        return out


@dataclass(frozen=True, slots=True)
class FollowUpNote:
    """The note for the next person: who was contacted, what was requested, what they said,
    what is still missing, and when the next attempt is due."""

    written_at: datetime
    author: Owner
    contacted: str | None = None
    requested: str | None = None
    response: str | None = None
    still_missing: tuple[str, ...] = ()
    next_attempt_due: datetime | None = None

    def text(self) -> str:
        parts = []
        if self.contacted:
            parts.append(f"Contacted: {self.contacted}.")
        if self.requested:
            parts.append(f"Requested: {self.requested}.")
        if self.response:
            parts.append(f"They said: {self.response}.")
        if self.still_missing:
            parts.append(f"Still missing: {', '.join(self.still_missing)}.")
        if self.next_attempt_due:
            parts.append(f"Next attempt due {_instant(self.next_attempt_due)}.")
        return " ".join(parts) or "No details recorded."

    def to_annotation(self) -> JSON:
        parts: list[JSON] = []
        for name, value in (
            ("contacted", self.contacted),
            ("requested", self.requested),
            ("response", self.response),
        ):
            if value:
                parts.append({"url": name, "valueString": value})
        parts.extend({"url": "still-missing", "valueCode": item} for item in self.still_missing)
        if self.next_attempt_due:
            parts.append(
                {"url": "next-attempt-due", "valueDateTime": _instant(self.next_attempt_due)}
            )
        annotation: JSON = {"id": NOTE_ID}
        if parts:
            annotation["extension"] = [{"url": NOTE_URL, "extension": parts}]
        if self.author.reference:
            annotation["authorReference"] = self.author.to_json()
        elif self.author.display:
            annotation["authorString"] = self.author.display
        annotation["time"] = _instant(self.written_at)
        annotation["text"] = self.text()
        return annotation


@dataclass(frozen=True, slots=True)
class ContactAttempt:
    """One attempt to reach the patient about a referral."""

    id: str
    referral: str
    patient: str
    at: datetime
    channel: str
    outcome: str
    by: Owner
    note: str | None = None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A status update the office should get: the event, and what makes it one of a kind."""

    event: str
    discriminator: str | None = None
    missing: tuple[str, ...] = field(default=())  # the items an information request names

    def identifier(self, referral: str) -> str:
        parts = [referral, self.event] + ([self.discriminator] if self.discriminator else [])
        return ":".join(parts)


def identifier_token(system: str, value: str) -> str:
    """The `system|value` token of an identifier search, with `\\`, `,`, `|` and `$` in the
    value escaped as FHIR search requires (for a search parameter that the HTTP client will
    URL-encode)."""
    escaped = value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|")
    escaped = escaped.replace("$", "\\$")
    return f"{system}|{escaped}"


def identifier_query(system: str, value: str) -> str:
    """The `identifier=system|value` query of a conditional create (`If-None-Exist`, a batch
    entry's `ifNoneExist`): the token URL-encoded, since servers decode it as a query string
    (an unencoded `+` would arrive as a space)."""
    return "identifier=" + quote(identifier_token(system, value), safe="/:|")


def _practice(rules: PracticeRules) -> JSON:
    practice = rules.writeback.practice
    return Owner(practice.reference, practice.display).to_json()


# --- the follow-up Task ------------------------------------------------------------------------


def follow_up_task(
    evaluation: Mapping[str, Any],
    facts: ReferralDetails,
    rules: PracticeRules,
    *,
    authored_on: datetime,
    owner: Owner | None = None,
    note: FollowUpNote | None = None,
    review: tuple[datetime, str | None] | None = None,
) -> JSON | None:
    """The follow-up Task for a referral as it stands; None when it has no patient to be for.
    `review`: when (and by whom) it was last marked reviewed in the same-day review lane."""
    patient = evaluation.get("patient")
    if not isinstance(patient, str) or not patient.startswith("Patient/"):
        return None
    terms = terminology()
    status, business = task_state(
        evaluation["state"], evaluation.get("primary_segment"), facts.request_status
    )
    action = evaluation.get("next_action") or None
    business_display = terms.display("task-business-status", business)
    summary = f"Referral {facts.number}: {business_display.lower()}"
    task: JSON = {
        "resourceType": "Task",
        "meta": {"profile": [TASK_PROFILE]},
    }
    if action:
        task["extension"] = [{"url": BACKUP_ROLE_URL, "valueString": action["backup_owner_role"]}]
    task.update(
        {
            "identifier": [{"system": TASK_SYSTEM, "value": facts.key}],
            "status": status,
            "businessStatus": {
                "coding": [terms.coding("task-business-status", business)],
                "text": business_display,
            },
            "intent": "order",
            "code": TASK_CODE,
            "description": f"Follow up referral {facts.number}",
            "focus": {"reference": facts.key},
            "for": {"reference": patient},
            "authoredOn": _instant(authored_on),
            "lastModified": _instant(authored_on),
        }
    )
    if facts.requester:
        task["requester"] = {"reference": facts.requester}
    if action:
        task["performerType"] = [{"text": action["owner_role"]}]
    task["owner"] = owner.to_json() if owner else _practice(rules)
    if action and action.get("due"):
        task["restriction"] = {"period": {"end": action["due"]}}
        summary += f"; due {action['due']}"
    notes = [note.to_annotation()] if note is not None else []
    if review is not None:
        reviewed_at, reviewer = review
        mark: JSON = {"id": REVIEW_ID}
        if reviewer:
            mark["authorString"] = reviewer
        mark["time"] = _instant(reviewed_at)
        mark["text"] = "Reviewed in the same-day review lane: segment and next step confirmed."
        notes.append(mark)
    if notes:
        task["note"] = notes
    inputs = [
        {
            "type": {"coding": [terms.coding("missing-detail", item["item"])]},
            "valueString": item["detail"],
        }
        for item in evaluation.get("missing") or ()
    ]
    if inputs:
        task["input"] = inputs
        summary += f"; missing {', '.join(item['item'] for item in evaluation['missing'])}"
    task["text"] = {"status": "generated", "div": xhtml(summary + ".")}
    return task


def _ours(items: Iterable[Any], key: str, values: Iterable[str]) -> list[Any]:
    wanted = set(values)
    return [i for i in items if isinstance(i, dict) and i.get(key) in wanted]


def _theirs(items: Iterable[Any], key: str, values: Iterable[str]) -> list[Any]:
    wanted = set(values)
    return [i for i in items if not (isinstance(i, dict) and i.get(key) in wanted)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def managed_part(task: Mapping[str, Any]) -> JSON:
    """The part of a Task the adapter decides, to tell whether the server's copy already says
    what we want (narrative and lastModified left out: they follow from the rest)."""
    part = {key: task.get(key) for key in MANAGED}
    part["extension"] = _ours(_list(task.get("extension")), "url", [BACKUP_ROLE_URL])
    part["note"] = _ours(_list(task.get("note")), "id", OUR_NOTES)
    part["identifier"] = _ours(_list(task.get("identifier")), "system", [TASK_SYSTEM])
    return part


def task_digest(task: Mapping[str, Any]) -> str:
    """A short fingerprint of what the adapter decides in a Task."""
    text = orjson.dumps(managed_part(task), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]


def merge_task(current: Mapping[str, Any], desired: Mapping[str, Any]) -> JSON:
    """The server's Task with our part laid over it: what someone else wrote is kept."""
    merged: JSON = dict(current)
    for key in MANAGED:
        if key in desired:
            merged[key] = desired[key]
        else:
            merged.pop(key, None)
    merged["text"] = desired["text"]
    merged["lastModified"] = desired["lastModified"]
    merged.setdefault("authoredOn", desired["authoredOn"])
    meta = dict(current.get("meta") or {})
    profiles = [p for p in _list(meta.get("profile")) if p != TASK_PROFILE]
    meta["profile"] = [TASK_PROFILE, *profiles]
    merged["meta"] = meta
    extensions = _theirs(_list(current.get("extension")), "url", [BACKUP_ROLE_URL])
    extensions += _list(desired.get("extension"))
    _set_list(merged, "extension", extensions)
    notes = _theirs(_list(current.get("note")), "id", OUR_NOTES) + _list(desired.get("note"))
    _set_list(merged, "note", notes)
    identifiers = _theirs(_list(current.get("identifier")), "system", [TASK_SYSTEM])
    merged["identifier"] = _list(desired.get("identifier")) + identifiers
    return merged


def _set_list(resource: JSON, key: str, items: list[Any]) -> None:
    if items:
        resource[key] = items
    else:
        resource.pop(key, None)


# --- status updates to the referring office ---------------------------------------------------


def office_items(evaluation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The missing items the referring office must supply."""
    return [
        item
        for item in evaluation.get("missing") or ()
        if item.get("request_from") == "referring-office"
    ]


def _recipient(evaluation: Mapping[str, Any]) -> str | None:
    source = evaluation.get("source")
    if isinstance(source, str) and source.startswith(RECIPIENT_TYPES):
        return source
    return None


def status_events(
    evaluation: Mapping[str, Any],
    facts: ReferralDetails,
    rules: PracticeRules,
    *,
    high_relationship: bool,
    was_missing: bool,
) -> list[StatusEvent]:
    """The status updates the practice rules send for a referral as it stands now.

    Each is one of a kind by its identifier, so planning it again sends nothing new: receipt
    once, an information request once per set of items asked for, details-complete once after
    something was missing, scheduled once per appointment, closed once. `high_relationship`
    and `was_missing` are what is remembered of the referral (a scheduled or closed referral
    has no segments any more).
    """
    if _recipient(evaluation) is None:
        return []
    loop = rules.status_loop
    state = evaluation["state"]

    def wanted(event: str) -> bool:
        audience = loop.audience(event)
        return audience == "all" or (audience == "high-relationship" and high_relationship)

    events: list[StatusEvent] = []
    if state in ("open", "scheduled") and wanted("receipt-confirmed"):
        events.append(StatusEvent("receipt-confirmed"))
    if state == "open":
        items = office_items(evaluation)
        if items and wanted("information-requested"):
            codes = tuple(item["item"] for item in items)
            details = tuple(f"{item['item']}: {item['detail']}" for item in items)
            events.append(StatusEvent("information-requested", "+".join(codes), details))
        if not evaluation.get("missing") and was_missing and wanted("details-complete"):
            events.append(StatusEvent("details-complete"))
    if state == "scheduled" and facts.appointment and wanted("scheduled"):
        events.append(StatusEvent("scheduled", facts.appointment.partition("/")[2]))
    if state == "closed" and wanted("closed"):
        events.append(StatusEvent("closed"))
    return events


def message_facts(
    facts: ReferralDetails,
    rules: PracticeRules,
    *,
    missing: tuple[str, ...] = (),
    how_to_provide: tuple[str, ...] = (),
    contact: str | None = None,
) -> MessageFacts:
    messages = rules.messages
    start = facts.appointment_start
    return MessageFacts(
        practice=rules.writeback.practice.display,
        practice_phone=messages.practice_phone,
        referral=facts.number,
        received=facts.received,
        patient=facts.patient_name,
        birth_date=facts.birth_date,
        missing=missing,
        how_to_provide=how_to_provide,
        update_window=messages.update_window,
        appointment=start.replace("T", " ").replace("Z", " UTC") if start else None,
        outcome=CLOSED_OUTCOMES.get(facts.request_status or ""),
        contact=contact,
    )


def status_communication(
    evaluation: Mapping[str, Any],
    facts: ReferralDetails,
    event: StatusEvent,
    rules: PracticeRules,
    *,
    sent: datetime,
    contact: str | None = None,
) -> JSON:
    """The status update for one event, to the referral's source."""
    recipient = _recipient(evaluation)
    if recipient is None:
        raise ValueError("the referral's source cannot receive a Communication")
    terms = terminology()
    text = render(
        rules.messages.office[event.event],
        message_facts(facts, rules, missing=event.missing, contact=contact),
    )
    communication: JSON = {
        "resourceType": "Communication",
        "meta": {"profile": [STATUS_PROFILE]},
        "text": {"status": "generated", "div": xhtml(text)},
        "identifier": [{"system": COMMUNICATION_SYSTEM, "value": event.identifier(facts.key)}],
        "basedOn": [{"reference": facts.key}],
        "status": "completed",
        "category": [{"coding": [terms.coding("communication-category", "referral-status")]}],
    }
    if isinstance(evaluation.get("patient"), str):
        communication["subject"] = {"reference": evaluation["patient"]}
    communication.update(
        {
            "topic": {"coding": [terms.coding("referral-status-event", event.event)]},
            "sent": _instant(sent),
            "recipient": [{"reference": recipient}],
            "sender": _practice(rules),
            "payload": [{"contentString": text}],
        }
    )
    return communication


def patient_message_kind(evaluation: Mapping[str, Any]) -> str:
    """Which patient template fits the referral: by state, and for an open one by what it
    needs (missing items first, then review for time-sensitive ones, else ready)."""
    state = evaluation["state"]
    if state in ("scheduled", "closed"):
        return str(state)
    if evaluation.get("missing"):
        return "missing-detail"
    if evaluation.get("primary_segment") == "time-sensitive":
        return "in-review"
    return "ready-to-schedule"


def patient_message(
    evaluation: Mapping[str, Any], facts: ReferralDetails, rules: PracticeRules
) -> str:
    """The approved text for the patient, facts filled in (plain text)."""
    terms = terminology()
    kind = patient_message_kind(evaluation)
    missing = tuple(
        terms.missing_item(item["item"]).display.lower() for item in evaluation.get("missing") or ()
    )
    how = tuple(
        rules.messages.how_to_provide[item["item"]] for item in evaluation.get("missing") or ()
    )
    return render(
        rules.messages.patient[kind],
        message_facts(facts, rules, missing=missing, how_to_provide=how),
    )


def office_message(
    evaluation: Mapping[str, Any], facts: ReferralDetails, rules: PracticeRules
) -> str:
    """The approved text for the referring office about the referral as it stands."""
    state = evaluation["state"]
    items = office_items(evaluation)
    if state == "closed":
        event = StatusEvent("closed")
    elif state == "scheduled":
        event = StatusEvent("scheduled")
    elif items:
        event = StatusEvent(
            "information-requested",
            missing=tuple(f"{item['item']}: {item['detail']}" for item in items),
        )
    else:
        event = StatusEvent("receipt-confirmed")
    return render(
        rules.messages.office[event.event], message_facts(facts, rules, missing=event.missing)
    )


# --- contact attempts ------------------------------------------------------------------------


def contact_text(attempt: ContactAttempt) -> str:
    """How the attempt went, in words without PHI: channel, outcome and day."""
    terms = terminology()
    channel = terms.display("contact-channel", attempt.channel)
    outcome = terms.display("contact-outcome", attempt.outcome).lower()
    return f"{channel} on {attempt.at.date().isoformat()}: {outcome}"


def contact_attempt_communication(attempt: ContactAttempt) -> JSON:
    """The Communication recording one attempt to reach the patient."""
    terms = terminology()
    reached = attempt.outcome in terms.reached_outcomes
    text = contact_text(attempt)
    communication: JSON = {
        "resourceType": "Communication",
        "meta": {"profile": [CONTACT_PROFILE]},
        "text": {"status": "generated", "div": xhtml(text)},
        "extension": [{"url": OUTCOME_URL, "valueCode": attempt.outcome}],
        "identifier": [
            {
                "system": COMMUNICATION_SYSTEM,
                "value": f"{attempt.referral}:contact-attempt:{attempt.id}",
            }
        ],
        "basedOn": [{"reference": attempt.referral}],
        "status": "completed" if reached else "not-done",
    }
    if not reached:
        communication["statusReason"] = {
            "coding": [terms.coding("contact-outcome", attempt.outcome)]
        }
    communication.update(
        {
            "category": [{"coding": [terms.coding("communication-category", "contact-attempt")]}],
            "medium": [{"coding": [terms.coding("contact-channel", attempt.channel)]}],
            "subject": {"reference": attempt.patient},
            "sent": _instant(attempt.at),
            "recipient": [{"reference": attempt.patient}],
            "sender": attempt.by.to_json(),
            "payload": [{"contentString": text}],
        }
    )
    if attempt.note:
        communication["note"] = [{"text": attempt.note}]
    return communication
