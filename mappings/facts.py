"""The facts the referral model needs, read once from each validated resource.

A practice's history is hundreds of thousands of resources; keeping each as parsed JSON would
cost gigabytes. Each resource is reduced, as it is read, to a small record of the elements the
rules look at, with references already reduced to keys (see `references`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mappings.fhirtime import parse_instant
from mappings.references import identifier_keys, reference_key

__all__ = [
    "AppointmentFacts",
    "CoverageFacts",
    "Facts",
    "FormFacts",
    "MessageFacts",
    "PartyFacts",
    "PatientFacts",
    "RecordFacts",
    "ReferralFacts",
    "extract",
]

Coding = tuple[str | None, str | None]  # (system, code)
SELF_PAY_SYSTEM = "http://terminology.hl7.org/CodeSystem/coverage-selfpay"


@dataclass(frozen=True, slots=True)
class ReferralFacts:
    """A ServiceRequest, as far as follow-up is concerned."""

    key: str
    status: str | None
    subject: str | None
    requester: str | None
    priority: str | None
    has_code: bool
    codes: tuple[Coding, ...]
    categories: tuple[Coding, ...]
    has_reason: bool
    insurance: tuple[str, ...]
    has_supporting_info: bool
    occurrence: datetime | None
    occurrence_path: str | None
    authored: datetime | None
    last_updated: datetime | None
    number: str | None = None  # the first identifier's value: how people name the referral


@dataclass(frozen=True, slots=True)
class PatientFacts:
    key: str
    has_name: bool
    has_birth_date: bool
    has_phone: bool
    identifiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CoverageFacts:
    key: str
    status: str | None
    beneficiary: str | None
    start: datetime | None
    end: datetime | None
    self_pay: bool
    has_member_id: bool


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """A Communication: who sent it, when, and which requests it is about."""

    key: str
    status: str | None
    sender: str | None
    refers_to: tuple[str, ...]  # basedOn and about
    sent: datetime | None
    sent_path: str | None


@dataclass(frozen=True, slots=True)
class FormFacts:
    """A QuestionnaireResponse."""

    key: str
    status: str | None
    based_on: tuple[str, ...]
    authors: tuple[str, ...]  # author and source
    authored: datetime | None


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """A DocumentReference."""

    key: str
    status: str | None
    related: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppointmentFacts:
    key: str
    status: str | None
    based_on: tuple[str, ...]
    start: datetime | None = None


@dataclass(frozen=True, slots=True)
class PartyFacts:
    """An Organization, Practitioner or PractitionerRole (organization set for a role)."""

    key: str
    resource_type: str
    organization: str | None
    identifiers: tuple[str, ...]


Facts = (
    ReferralFacts
    | PatientFacts
    | CoverageFacts
    | MessageFacts
    | FormFacts
    | RecordFacts
    | AppointmentFacts
    | PartyFacts
)
JSON = dict[str, Any]


def _refs(values: object, container: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    keys = (reference_key(v, container) for v in values)
    return tuple(k for k in keys if k)


def _codings(concept: object) -> tuple[Coding, ...]:
    if not isinstance(concept, dict):
        return ()
    return tuple((c.get("system"), c.get("code")) for c in concept.get("coding") or ())


def _last_updated(resource: JSON) -> datetime | None:
    meta = resource.get("meta")
    return parse_instant(meta.get("lastUpdated")) if isinstance(meta, dict) else None


def _referral(r: JSON, key: str, ctx: str) -> ReferralFacts:
    code = r.get("code")
    has_code = isinstance(code, dict) and bool(code.get("coding") or code.get("text"))
    occurrence, occurrence_path = None, None
    if "occurrenceDateTime" in r:
        occurrence = parse_instant(r["occurrenceDateTime"])
        occurrence_path = "ServiceRequest.occurrenceDateTime"
    elif isinstance(r.get("occurrencePeriod"), dict) and "end" in r["occurrencePeriod"]:
        occurrence = parse_instant(r["occurrencePeriod"]["end"])
        occurrence_path = "ServiceRequest.occurrencePeriod.end"
    categories: tuple[Coding, ...] = ()
    for concept in r.get("category") or ():
        categories += _codings(concept)
    return ReferralFacts(
        key=key,
        status=r.get("status"),
        subject=reference_key(r.get("subject"), ctx),
        requester=reference_key(r.get("requester"), ctx),
        priority=r.get("priority"),
        has_code=has_code,
        codes=_codings(code),
        categories=categories,
        has_reason=bool(r.get("reasonCode") or r.get("reasonReference")),
        insurance=_refs(r.get("insurance"), ctx),
        has_supporting_info=bool(r.get("supportingInfo")),
        occurrence=occurrence,
        occurrence_path=occurrence_path,
        authored=parse_instant(r.get("authoredOn")),
        last_updated=_last_updated(r),
        number=_first_identifier(r),
    )


def _first_identifier(r: JSON) -> str | None:
    for identifier in r.get("identifier") or ():
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def _patient(r: JSON, key: str, ctx: str) -> PatientFacts:
    names = r.get("name") or ()
    return PatientFacts(
        key=key,
        has_name=any(n.get("family") or n.get("given") for n in names),
        has_birth_date=bool(r.get("birthDate")),
        has_phone=any(
            t.get("system") in ("phone", "sms") and bool(t.get("value"))
            for t in r.get("telecom") or ()
        ),
        identifiers=tuple(identifier_keys(r)),
    )


def _coverage(r: JSON, key: str, ctx: str) -> CoverageFacts:
    period: JSON = r.get("period") or {}
    self_pay = any(
        system == SELF_PAY_SYSTEM and code == "pay" for system, code in _codings(r.get("type"))
    )
    has_identifier = any(isinstance(i, dict) and i.get("value") for i in r.get("identifier") or ())
    return CoverageFacts(
        key=key,
        status=r.get("status"),
        beneficiary=reference_key(r.get("beneficiary"), ctx),
        start=parse_instant(period.get("start")),
        end=parse_instant(period.get("end")),
        self_pay=self_pay,
        has_member_id=bool(r.get("subscriberId")) or has_identifier,
    )


def _message(r: JSON, key: str, ctx: str) -> MessageFacts:
    sent, path = None, None
    for element in ("sent", "received"):
        sent = parse_instant(r.get(element))
        if sent is not None:
            path = f"Communication.{element}"
            break
    else:
        sent = _last_updated(r)
        path = "Communication.meta.lastUpdated" if sent else None
    return MessageFacts(
        key=key,
        status=r.get("status"),
        sender=reference_key(r.get("sender"), ctx),
        refers_to=_refs(r.get("basedOn"), ctx) + _refs(r.get("about"), ctx),
        sent=sent,
        sent_path=path,
    )


def _form(r: JSON, key: str, ctx: str) -> FormFacts:
    authors = tuple(k for k in (reference_key(r.get(e), ctx) for e in ("author", "source")) if k)
    return FormFacts(
        key=key,
        status=r.get("status"),
        based_on=_refs(r.get("basedOn"), ctx),
        authors=authors,
        authored=parse_instant(r.get("authored")) or _last_updated(r),
    )


def _record(r: JSON, key: str, ctx: str) -> RecordFacts:
    context: JSON = r.get("context") or {}
    return RecordFacts(key=key, status=r.get("status"), related=_refs(context.get("related"), ctx))


def _appointment(r: JSON, key: str, ctx: str) -> AppointmentFacts:
    return AppointmentFacts(
        key=key,
        status=r.get("status"),
        based_on=_refs(r.get("basedOn"), ctx),
        start=parse_instant(r.get("start")),
    )


def _party(r: JSON, key: str, ctx: str) -> PartyFacts:
    organization = None
    if r["resourceType"] == "PractitionerRole":
        organization = reference_key(r.get("organization"), ctx)
    return PartyFacts(
        key=key,
        resource_type=r["resourceType"],
        organization=organization,
        identifiers=tuple(identifier_keys(r)),
    )


_EXTRACTORS: dict[str, Callable[[JSON, str, str], Facts]] = {
    "ServiceRequest": _referral,
    "Patient": _patient,
    "Coverage": _coverage,
    "Communication": _message,
    "QuestionnaireResponse": _form,
    "DocumentReference": _record,
    "Appointment": _appointment,
    "Organization": _party,
    "Practitioner": _party,
    "PractitionerRole": _party,
}

RELEVANT_TYPES = frozenset(_EXTRACTORS)


# A contained resource has no life outside its container: it only lets the container's references
# resolve. So contained parties, patients and coverages are read; a contained ServiceRequest is
# not a referral of its own, nor is a contained message or appointment.
CONTEXT_TYPES = frozenset(
    {"Patient", "Coverage", "Organization", "Practitioner", "PractitionerRole"}
)


def extract(resource: JSON, key: str) -> list[Facts]:
    """Facts of a validated resource and of the context it contains (keys `key#id`)."""
    extractor = _EXTRACTORS.get(resource["resourceType"])
    found = [extractor(resource, key, key)] if extractor is not None else []
    for contained in resource.get("contained") or ():
        contained_type = contained.get("resourceType")
        contained_id = contained.get("id")
        if contained_type in CONTEXT_TYPES and isinstance(contained_id, str):
            found.append(_EXTRACTORS[contained_type](contained, f"{key}#{contained_id}", key))
    return found


# Facts cross process boundaries as plain tuples: pickling them is several times cheaper than
# pickling dataclass instances.
_KINDS: tuple[type, ...] = (
    ReferralFacts,
    PatientFacts,
    CoverageFacts,
    MessageFacts,
    FormFacts,
    RecordFacts,
    AppointmentFacts,
    PartyFacts,
)
_KIND_INDEX = {kind: number for number, kind in enumerate(_KINDS)}


def to_row(facts: Facts) -> tuple[Any, ...]:
    """Facts as a tuple: its kind's number, then its fields in order."""
    return (_KIND_INDEX[type(facts)], *(getattr(facts, f) for f in facts.__slots__))


def from_row(row: tuple[Any, ...]) -> Facts:
    """The facts a `to_row` tuple stands for."""
    kind: Any = _KINDS[row[0]]
    made: Facts = kind(*row[1:])
    return made
