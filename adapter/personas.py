"""The synthetic cast: one builder per resource type, the fixed offices, and named personas.

Every synthetic resource in the project is made by the builders here: ``adapter.synth`` uses
them for a month of referrals, and tests use the personas (Ada Quill, her referral from
Dr Ivy Chen at Northside Family Medicine, Dr Omar Lind working alone ...). Each function
returns a fresh dict, so a test may modify what it gets. Names, phones (555-555-01xx) and NPIs
(starting with 99, which no real NPI does) are synthetic.

Persona ids (stable; tests may rely on them):
    Patient/ada-quill                 complete demographics
    Organization/org-northside        busy referring office (NPI)
    Practitioner/prac-ivy-chen        works at Northside
    PractitionerRole/role-ivy-chen    Ivy Chen at Northside (role -> organization)
    Practitioner/prac-omar-lind       works alone
    PractitionerRole/role-omar-lind   Omar Lind's role without an organization
    Organization/org-riverbend        the receiving practice
    Practitioner/prac-coord-sam-park  the practice's referral coordinator
    Organization/payer-synthetic-mutual  Ada's insurer
    Coverage/cov-ada                  active, with member id
    Coverage/cov-ada-selfpay          active self-pay, no member id
    ServiceRequest/ref-ada-cardio     complete routine cardiology referral, authored 2025-01-10
    DocumentReference/doc-ada-cardio  current referral letter, context.related -> the referral
    Communication/msg-ada-cardio      Ada asks about her referral
    Communication/msg-riverbend-to-ada  the coordinator writes to Ada (sender not the patient)
    Appointment/appt-ada-cardio       for the referral, 2025-01-20 15:00Z
    QuestionnaireResponse/qr-ada-intake  Ada's intake form for the referral

At ``PERSONA_AS_OF`` (2025-01-15T12:00Z) ``ada_packet()`` is one open referral, 5 days old,
with nothing missing: ready-to-schedule and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]

BASE = "https://fhir.referral-adapter.org"
SCT = "http://snomed.info/sct"
NPI = "http://hl7.org/fhir/sid/us-npi"
MRN = f"{BASE}/sid/synthetic-mrn"
MEMBER_ID = f"{BASE}/sid/synthetic-member-id"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
REFERRAL_NUMBER = f"{BASE}/sid/synthetic-referral-number"
INTAKE_FORM = f"{BASE}/Questionnaire/referral-intake"
PRACTICE = "Organization/org-riverbend"
# Personas are fixed in time: evaluate them at PERSONA_AS_OF (Ada's referral is then 5 days old).
PERSONA_UPDATED = "2025-01-02T08:00:00Z"
PERSONA_AUTHORED = "2025-01-10T09:30:00Z"
PERSONA_AS_OF = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)

# (code, display, text) of the practice's services; SNOMED CT "Referral to ... service".
SERVICES: tuple[tuple[str, str, str], ...] = (
    ("183519002", "Referral to cardiology service", "Cardiology consult"),
    ("183523005", "Referral to gastroenterology service", "Gastroenterology consult"),
    ("183545006", "Referral to orthopedic service", "Orthopedics consult"),
    ("306118006", "Referral to endocrinology service", "Endocrinology consult"),
    ("183524004", "Referral to psychiatry service", "Psychiatry consult"),
)
# SNOMED CT reasons, indexed like SERVICES.
REASONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("29857009", "Chest pain"), ("80313002", "Palpitations"), ("49436004", "Atrial fibrillation")),
    (("21522001", "Abdominal pain"), ("235595009", "Gastroesophageal reflux disease")),
    (("239873007", "Osteoarthritis of knee"), ("161891005", "Backache")),
    (("44054006", "Diabetes mellitus type 2"), ("40930008", "Hypothyroidism")),
    (("35489007", "Depressive disorder"), ("197480006", "Anxiety disorder")),
)


@dataclass(frozen=True)
class Office:
    """A busy referring office; ``doctors`` are (practitioner key, given, family)."""

    key: str
    name: str
    npi: str
    doctors: tuple[tuple[str, str, str], ...]


OFFICES: tuple[Office, ...] = (
    Office(
        "northside",
        "Northside Family Medicine",
        "9910000001",
        (("ivy-chen", "Ivy", "Chen"), ("marco-bellweather", "Marco", "Bellweather")),
    ),
    Office(
        "lakeview",
        "Lakeview Internal Medicine",
        "9910000002",
        (
            ("hana-sorrel", "Hana", "Sorrel"),
            ("felix-duarte", "Felix", "Duarte"),
            ("grace-oyelaran", "Grace", "Oyelaran"),
        ),
    ),
    Office("harbor", "Harbor Pediatrics", "9910000003", (("nell-whitcombe", "Nell", "Whitcombe"),)),
    Office(
        "cedarhill",
        "Cedar Hill Women's Health",
        "9910000004",
        (("priya-castellan", "Priya", "Castellan"), ("ruth-ambersley", "Ruth", "Ambersley")),
    ),
    Office(
        "summit",
        "Summit Primary Care",
        "9910000005",
        (
            ("tomas-brightwater", "Tomas", "Brightwater"),
            ("lena-okafor", "Lena", "Okafor"),
            ("june-halloway", "June", "Halloway"),
        ),
    ),
)
PAYERS: tuple[tuple[str, str], ...] = (
    ("payer-synthetic-mutual", "Synthetic Mutual Health Plan"),
    ("payer-example-care", "Example Care Alliance"),
    ("payer-placeholder", "Placeholder Health Cooperative"),
)


def phone(n: int) -> str:
    """A fictional phone number (555-555-0100 to 555-555-0199)."""
    return f"555-555-01{n % 100:02d}"


def iso(epoch: int) -> str:
    """An instant as FHIR dateTime in UTC with a Z offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def reference(target: str) -> JSON:
    """A Reference to ``Type/id``."""
    return {"reference": target}


def concept(system: str, code: str, display: str, text: str | None = None) -> JSON:
    """A CodeableConcept with one coding."""
    concept: JSON = {"coding": [{"system": system, "code": code, "display": display}]}
    if text is not None:
        concept["text"] = text
    return concept


# --- builders: each returns a fresh dict, so callers (and tests) may modify it --------------


def organization(
    oid: str, name: str, *, updated: str, npi: str | None, payer: bool = False
) -> JSON:
    """An Organization: a provider office (with NPI) or a payer."""
    kind = ("pay", "Payer") if payer else ("prov", "Healthcare Provider")
    org: JSON = {"resourceType": "Organization", "id": oid, "meta": {"lastUpdated": updated}}
    if npi is not None:
        org["identifier"] = [{"system": NPI, "value": npi}]
    org["active"] = True
    org["type"] = [concept("http://terminology.hl7.org/CodeSystem/organization-type", *kind)]
    org["name"] = name
    org["telecom"] = [{"system": "phone", "value": phone(int(npi or "0")), "use": "work"}]
    return org


def practitioner(pid: str, given: str, family: str, *, npi: str, updated: str) -> JSON:
    """A Practitioner with an NPI."""
    return {
        "resourceType": "Practitioner",
        "id": pid,
        "meta": {"lastUpdated": updated},
        "identifier": [{"system": NPI, "value": npi}],
        "active": True,
        "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
    }


def practitioner_role(rid: str, practitioner_id: str, org_id: str | None, *, updated: str) -> JSON:
    """A PractitionerRole; ``org_id`` None gives a role that belongs to no organization."""
    role: JSON = {
        "resourceType": "PractitionerRole",
        "id": rid,
        "meta": {"lastUpdated": updated},
        "active": True,
        "practitioner": reference(f"Practitioner/{practitioner_id}"),
    }
    if org_id is not None:
        role["organization"] = reference(f"Organization/{org_id}")
    role["code"] = [
        concept("http://terminology.hl7.org/CodeSystem/practitioner-role", "doctor", "Doctor")
    ]
    return role


def patient(
    pid: str,
    given: str,
    family: str,
    *,
    birth_date: str,
    gender: str,
    phone_number: str,
    mrn: str,
    updated: str,
) -> JSON:
    """A Patient with complete demographics (name, birthDate, mobile phone)."""
    return {
        "resourceType": "Patient",
        "id": pid,
        "meta": {"lastUpdated": updated},
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": phone_number, "use": "mobile"}],
        "gender": gender,
        "birthDate": birth_date,
        "address": [{"line": ["1 Example Lane"], "city": "Sampleton", "postalCode": "00000"}],
    }


def coverage(
    cid: str,
    patient_id: str,
    *,
    payor: str,
    member_id: str | None,
    updated: str,
    status: str = "active",
    start: str | None = None,
    end: str | None = None,
    self_pay: bool = False,
) -> JSON:
    """A Coverage whose beneficiary and subscriber is the patient; self-pay has the patient pay."""
    cov: JSON = {
        "resourceType": "Coverage",
        "id": cid,
        "meta": {"lastUpdated": updated},
        "status": status,
    }
    if self_pay:
        cov["type"] = concept(
            "http://terminology.hl7.org/CodeSystem/coverage-selfpay", "pay", "PAY"
        )
    else:
        cov["type"] = concept(
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "HIP",
            "health insurance plan policy",
        )
    if member_id is not None:
        cov["subscriberId"] = member_id
    cov["beneficiary"] = reference(f"Patient/{patient_id}")
    cov["relationship"] = concept(
        "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self"
    )
    if start is not None or end is not None:
        cov["period"] = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    cov["payor"] = [reference(payor)]
    return cov


def service_request(
    sid: str,
    patient_id: str,
    *,
    requester: str | None,
    service: int,
    reason: int | None,
    authored: str,
    updated: str,
    status: str = "active",
    priority: str | None = "routine",
    supporting_info: Sequence[str] = (),
    insurance: Sequence[str] = (),
) -> JSON:
    """A referral order: ``service`` indexes SERVICES, ``reason`` that service's REASONS."""
    code, display, text = SERVICES[service]
    sr: JSON = {
        "resourceType": "ServiceRequest",
        "id": sid,
        "meta": {"lastUpdated": updated},
        "identifier": [{"system": REFERRAL_NUMBER, "value": sid.upper()}],
        "status": status,
        "intent": "order",
        "category": [concept(SCT, "3457005", "Patient referral")],
    }
    if priority is not None:
        sr["priority"] = priority
    sr["code"] = concept(SCT, code, display, text)
    sr["subject"] = reference(f"Patient/{patient_id}")
    sr["authoredOn"] = authored
    if requester is not None:
        sr["requester"] = reference(requester)
    sr["performer"] = [reference(PRACTICE)]
    if reason is not None:
        sr["reasonCode"] = [concept(SCT, *REASONS[service][reason], REASONS[service][reason][1])]
    if insurance:
        sr["insurance"] = [reference(r) for r in insurance]
    if supporting_info:
        sr["supportingInfo"] = [reference(r) for r in supporting_info]
    return sr


def document_reference(
    did: str,
    patient_id: str,
    *,
    referral_id: str | None,
    author: str | None,
    created: str,
    updated: str,
    status: str = "current",
) -> JSON:
    """A referral letter; ``referral_id`` fills context.related."""
    doc: JSON = {
        "resourceType": "DocumentReference",
        "id": did,
        "meta": {"lastUpdated": updated},
        "status": status,
        "type": concept("http://loinc.org", "57133-1", "Referral note"),
        "subject": reference(f"Patient/{patient_id}"),
        "date": created,
    }
    if author is not None:
        doc["author"] = [reference(author)]
    doc["content"] = [
        {
            "attachment": {
                "contentType": "application/pdf",
                "title": "Referral letter",
                "creation": created,
            }
        }
    ]
    if referral_id is not None:
        doc["context"] = {"related": [reference(f"ServiceRequest/{referral_id}")]}
    return doc


def communication(
    mid: str,
    patient_id: str,
    *,
    sender: str,
    recipient: str,
    sent: str,
    updated: str,
    text: str,
    status: str = "completed",
    based_on: str | None = None,
    about: str | None = None,
    medium: str = "PHONE",
) -> JSON:
    """A message between the practice and a patient; based_on/about name a ServiceRequest id."""
    msg: JSON = {"resourceType": "Communication", "id": mid, "meta": {"lastUpdated": updated}}
    if based_on is not None:
        msg["basedOn"] = [reference(f"ServiceRequest/{based_on}")]
    msg["status"] = status
    msg["medium"] = [
        concept(
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
            medium,
            "telephone" if medium == "PHONE" else "online written",
        )
    ]
    msg["subject"] = reference(f"Patient/{patient_id}")
    if about is not None:
        msg["about"] = [reference(f"ServiceRequest/{about}")]
    msg["sent"] = sent
    msg["recipient"] = [reference(recipient)]
    msg["sender"] = reference(sender)
    msg["payload"] = [{"contentString": text}]
    return msg


def appointment(
    aid: str,
    patient_id: str,
    referral_id: str,
    *,
    status: str,
    start: int,
    updated: str,
    minutes: int = 40,
) -> JSON:
    """An Appointment based on a referral, for the patient, starting at epoch ``start``."""
    return {
        "resourceType": "Appointment",
        "id": aid,
        "meta": {"lastUpdated": updated},
        "status": status,
        "description": "New patient consult",
        "start": iso(start),
        "end": iso(start + minutes * 60),
        "basedOn": [reference(f"ServiceRequest/{referral_id}")],
        "participant": [{"actor": reference(f"Patient/{patient_id}"), "status": "accepted"}],
    }


def questionnaire_response(
    qid: str,
    patient_id: str,
    referral_id: str,
    *,
    authored: str,
    updated: str,
    status: str = "completed",
) -> JSON:
    """The practice's intake form, filled in by the patient for a referral."""
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "meta": {"lastUpdated": updated},
        "basedOn": [reference(f"ServiceRequest/{referral_id}")],
        "questionnaire": INTAKE_FORM,
        "status": status,
        "subject": reference(f"Patient/{patient_id}"),
        "authored": authored,
        "author": reference(f"Patient/{patient_id}"),
        "item": [
            {
                "linkId": "best-time",
                "text": "Best time to reach you",
                "answer": [{"valueString": "Weekday mornings"}],
            }
        ],
    }


# --- the fixed cast: the receiving practice, its payers and the busy referring offices -------


def office_organization(office: Office, updated: str) -> JSON:
    """A busy office's Organization, ``Organization/org-<key>``."""
    return organization(f"org-{office.key}", office.name, npi=office.npi, updated=updated)


def office_practitioner(office: Office, n: int, updated: str) -> JSON:
    """The office's n-th doctor (from 0), ``Practitioner/prac-<doctor key>``."""
    key, given, family = office.doctors[n]
    npi = f"992{office.npi[-4:]}{n + 1:03d}"
    return practitioner(f"prac-{key}", given, family, npi=npi, updated=updated)


def office_role(office: Office, n: int, updated: str) -> JSON:
    """The n-th doctor's role at the office, ``PractitionerRole/role-<doctor key>``."""
    key = office.doctors[n][0]
    return practitioner_role(f"role-{key}", f"prac-{key}", f"org-{office.key}", updated=updated)


def office_resources(office: Office, updated: str) -> list[JSON]:
    """A busy office: its Organization, then each doctor's Practitioner and PractitionerRole."""
    out = [office_organization(office, updated)]
    for n in range(len(office.doctors)):
        out += [office_practitioner(office, n, updated), office_role(office, n, updated)]
    return out


def riverbend_specialty_group(updated: str = PERSONA_UPDATED) -> JSON:
    """The practice that receives the referrals."""
    return organization(
        "org-riverbend", "Riverbend Specialty Group", npi="9910009999", updated=updated
    )


def coordinator_sam_park(updated: str = PERSONA_UPDATED) -> JSON:
    """The practice's referral coordinator, who calls and writes to patients."""
    return practitioner("prac-coord-sam-park", "Sam", "Park", npi="9929999001", updated=updated)


def synthetic_mutual_health(updated: str = PERSONA_UPDATED) -> JSON:
    """Ada's insurer (a payer Organization)."""
    return organization(PAYERS[0][0], PAYERS[0][1], npi=None, payer=True, updated=updated)


def practice_resources(updated: str) -> list[JSON]:
    """The receiving practice, its coordinators and the payers."""
    out = [
        riverbend_specialty_group(updated),
        coordinator_sam_park(updated),
        practitioner("prac-coord-lee-vance", "Lee", "Vance", npi="9929999002", updated=updated),
    ]
    out += [organization(pid, name, npi=None, payer=True, updated=updated) for pid, name in PAYERS]
    return out


# --- named personas --------------------------------------------------------------------------

NORTHSIDE = OFFICES[0]
ADA = "ada-quill"
ADA_REFERRAL = "ref-ada-cardio"


def northside_family_medicine(updated: str = PERSONA_UPDATED) -> JSON:
    """Organization/org-northside: the busiest referring office."""
    return office_organization(NORTHSIDE, updated)


def dr_ivy_chen(updated: str = PERSONA_UPDATED) -> JSON:
    """Practitioner/prac-ivy-chen."""
    return office_practitioner(NORTHSIDE, 0, updated)


def dr_ivy_chen_role(updated: str = PERSONA_UPDATED) -> JSON:
    """PractitionerRole/role-ivy-chen, whose organization is Northside."""
    return office_role(NORTHSIDE, 0, updated)


def dr_omar_lind(updated: str = PERSONA_UPDATED) -> JSON:
    """Practitioner/prac-omar-lind, who works alone."""
    return practitioner("prac-omar-lind", "Omar", "Lind", npi="9940000001", updated=updated)


def dr_omar_lind_role(updated: str = PERSONA_UPDATED) -> JSON:
    """PractitionerRole/role-omar-lind: a role with no organization."""
    return practitioner_role("role-omar-lind", "prac-omar-lind", None, updated=updated)


def ada_quill() -> JSON:
    """Patient/ada-quill with complete demographics."""
    return patient(
        ADA,
        "Ada",
        "Quill",
        birth_date="1984-07-12",
        gender="female",
        phone_number=phone(42),
        mrn="SYN-ADA",
        updated=PERSONA_UPDATED,
    )


def ada_coverage() -> JSON:
    """Coverage/cov-ada: active since 2024-01-01, with a member id."""
    return coverage(
        "cov-ada",
        ADA,
        payor=f"Organization/{PAYERS[0][0]}",
        member_id="SYN-M-ADA01",
        start="2024-01-01",
        updated=PERSONA_UPDATED,
    )


def ada_selfpay_coverage() -> JSON:
    """Coverage/cov-ada-selfpay: Ada pays herself; no member id, and that is fine."""
    return coverage(
        "cov-ada-selfpay",
        ADA,
        payor=f"Patient/{ADA}",
        member_id=None,
        self_pay=True,
        updated=PERSONA_UPDATED,
    )


def ada_referral(**overrides: Any) -> JSON:
    """ServiceRequest/ref-ada-cardio; each override replaces a top-level element, None drops it."""
    sr = service_request(
        ADA_REFERRAL,
        ADA,
        requester="PractitionerRole/role-ivy-chen",
        service=0,
        reason=0,
        authored=PERSONA_AUTHORED,
        updated=PERSONA_AUTHORED,
        supporting_info=["DocumentReference/doc-ada-cardio"],
    )
    for key, value in overrides.items():
        if value is None:
            sr.pop(key, None)
        else:
            sr[key] = value
    return sr


def ada_record() -> JSON:
    """DocumentReference/doc-ada-cardio: current, context.related -> Ada's referral."""
    return document_reference(
        "doc-ada-cardio",
        ADA,
        referral_id=ADA_REFERRAL,
        author="PractitionerRole/role-ivy-chen",
        created=PERSONA_AUTHORED,
        updated=PERSONA_AUTHORED,
    )


def ada_message(sent: str, *, status: str = "completed", linked: bool = True) -> JSON:
    """Communication/msg-ada-cardio from Ada; ``linked`` False drops basedOn (about no referral)."""
    return communication(
        "msg-ada-cardio",
        ADA,
        sender=f"Patient/{ADA}",
        recipient=PRACTICE,
        sent=sent,
        updated=sent,
        text="Calling to ask when I can be seen.",
        status=status,
        based_on=ADA_REFERRAL if linked else None,
    )


def practice_message_to_ada(sent: str) -> JSON:
    """Communication/msg-riverbend-to-ada: the coordinator writes to Ada about her referral."""
    return communication(
        "msg-riverbend-to-ada",
        ADA,
        sender="Practitioner/prac-coord-sam-park",
        recipient=f"Patient/{ADA}",
        sent=sent,
        updated=sent,
        text="Left a voicemail with scheduling instructions.",
        based_on=ADA_REFERRAL,
    )


def ada_appointment(status: str = "booked") -> JSON:
    """Appointment/appt-ada-cardio for Ada's referral, 2025-01-20 15:00-15:40Z."""
    start = int(datetime(2025, 1, 20, 15, 0, tzinfo=UTC).timestamp())
    return appointment(
        "appt-ada-cardio", ADA, ADA_REFERRAL, status=status, start=start, updated=PERSONA_AUTHORED
    )


def ada_intake_form(authored: str = "2025-01-12T18:05:00Z", status: str = "completed") -> JSON:
    """QuestionnaireResponse/qr-ada-intake: Ada's intake form for her referral."""
    return questionnaire_response(
        "qr-ada-intake", ADA, ADA_REFERRAL, authored=authored, updated=authored, status=status
    )


def ada_packet() -> list[JSON]:
    """Ada's complete referral with everything it references: ready to schedule."""
    return [
        riverbend_specialty_group(),
        northside_family_medicine(),
        dr_ivy_chen(),
        dr_ivy_chen_role(),
        synthetic_mutual_health(),
        ada_quill(),
        ada_coverage(),
        ada_referral(),
        ada_record(),
    ]
