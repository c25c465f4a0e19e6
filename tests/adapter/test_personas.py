"""Named personas: valid FHIR, stable ids, fresh dicts, and the same cast the generator uses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapter import personas as p
from adapter import synth

JSON = dict[str, Any]
SENT = "2025-01-14T16:20:00Z"

PERSONAS: dict[str, Callable[[], JSON]] = {
    "Patient/ada-quill": p.ada_quill,
    "Organization/org-northside": p.northside_family_medicine,
    "Practitioner/prac-ivy-chen": p.dr_ivy_chen,
    "PractitionerRole/role-ivy-chen": p.dr_ivy_chen_role,
    "Practitioner/prac-omar-lind": p.dr_omar_lind,
    "PractitionerRole/role-omar-lind": p.dr_omar_lind_role,
    "Organization/org-riverbend": p.riverbend_specialty_group,
    "Practitioner/prac-coord-sam-park": p.coordinator_sam_park,
    "Organization/payer-synthetic-mutual": p.synthetic_mutual_health,
    "Coverage/cov-ada": p.ada_coverage,
    "Coverage/cov-ada-selfpay": p.ada_selfpay_coverage,
    "ServiceRequest/ref-ada-cardio": p.ada_referral,
    "DocumentReference/doc-ada-cardio": p.ada_record,
    "Communication/msg-ada-cardio": lambda: p.ada_message(SENT),
    "Communication/msg-riverbend-to-ada": lambda: p.practice_message_to_ada(SENT),
    "Appointment/appt-ada-cardio": lambda: p.ada_appointment("booked"),
    "QuestionnaireResponse/qr-ada-intake": p.ada_intake_form,
}


@pytest.mark.parametrize("key", sorted(PERSONAS))
def test_persona_has_its_documented_id_and_validates(key: str) -> None:
    resource = PERSONAS[key]()
    assert f"{resource['resourceType']}/{resource['id']}" == key
    model = get_fhir_model_class(resource["resourceType"])
    assert model.model_validate(resource).model_dump(mode="json", exclude_none=True) == resource


@pytest.mark.parametrize("key", sorted(PERSONAS))
def test_each_call_returns_a_fresh_dict(key: str) -> None:
    first = PERSONAS[key]()
    pristine = PERSONAS[key]()
    first["meta"]["lastUpdated"] = "1999-01-01T00:00:00Z"
    for value in first.values():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value[0].clear()
    assert PERSONAS[key]() == pristine


def test_ada_is_complete() -> None:
    ada = p.ada_quill()
    assert ada["name"][0]["family"] == "Quill"
    assert ada["name"][0]["given"] == ["Ada"]
    assert ada["birthDate"] == "1984-07-12"
    assert ada["telecom"] == [{"system": "phone", "value": "555-555-0142", "use": "mobile"}]


def test_ada_referral_is_a_complete_routine_cardiology_referral() -> None:
    sr = p.ada_referral()
    assert sr["status"] == "active"
    assert sr["intent"] == "order"
    assert sr["priority"] == "routine"
    assert sr["category"][0]["coding"][0]["code"] == "3457005"
    assert sr["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "183519002",
        "display": "Referral to cardiology service",
    }
    assert sr["code"]["text"]
    assert sr["reasonCode"][0]["coding"][0]["display"] == "Chest pain"
    assert sr["subject"] == {"reference": "Patient/ada-quill"}
    assert sr["requester"] == {"reference": "PractitionerRole/role-ivy-chen"}
    assert sr["supportingInfo"] == [{"reference": "DocumentReference/doc-ada-cardio"}]
    assert "occurrenceDateTime" not in sr
    assert "occurrencePeriod" not in sr
    age = p.PERSONA_AS_OF - datetime.fromisoformat(sr["authoredOn"])
    assert age.days == 5


def test_ada_referral_overrides_replace_or_drop_elements() -> None:
    sr = p.ada_referral(priority="urgent", requester=None, reasonCode=None)
    assert sr["priority"] == "urgent"
    assert "requester" not in sr
    assert "reasonCode" not in sr
    assert sr["code"]["coding"][0]["code"] == "183519002"
    assert p.ada_referral()["priority"] == "routine"


def test_roles_with_and_without_an_organization() -> None:
    assert p.dr_ivy_chen_role()["organization"] == {"reference": "Organization/org-northside"}
    assert p.dr_ivy_chen_role()["practitioner"] == {"reference": "Practitioner/prac-ivy-chen"}
    assert "organization" not in p.dr_omar_lind_role()
    assert p.northside_family_medicine()["identifier"][0]["system"] == (
        "http://hl7.org/fhir/sid/us-npi"
    )


def test_coverages_insured_and_self_pay() -> None:
    cov = p.ada_coverage()
    assert cov["status"] == "active"
    assert cov["subscriberId"]
    assert cov["beneficiary"] == {"reference": "Patient/ada-quill"}
    assert cov["period"] == {"start": "2024-01-01"}
    self_pay = p.ada_selfpay_coverage()
    assert self_pay["type"]["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/coverage-selfpay"
    )
    assert self_pay["type"]["coding"][0]["code"] == "pay"
    assert "subscriberId" not in self_pay
    assert "identifier" not in self_pay


def test_messages_from_ada_and_to_her() -> None:
    linked = p.ada_message(SENT)
    assert linked["sender"] == {"reference": "Patient/ada-quill"}
    assert linked["basedOn"] == [{"reference": "ServiceRequest/ref-ada-cardio"}]
    assert linked["sent"] == SENT
    assert linked["status"] == "completed"
    unlinked = p.ada_message(SENT, linked=False, status="entered-in-error")
    assert "basedOn" not in unlinked
    assert "about" not in unlinked
    assert unlinked["status"] == "entered-in-error"
    outgoing = p.practice_message_to_ada(SENT)
    assert outgoing["sender"] == {"reference": "Practitioner/prac-coord-sam-park"}
    assert outgoing["recipient"] == [{"reference": "Patient/ada-quill"}]


def test_record_appointment_and_form_point_at_the_referral() -> None:
    referral = {"reference": "ServiceRequest/ref-ada-cardio"}
    record = p.ada_record()
    assert record["status"] == "current"
    assert record["context"]["related"] == [referral]
    for status in ("booked", "fulfilled", "cancelled", "noshow"):
        appt = p.ada_appointment(status)
        assert appt["status"] == status
        assert appt["basedOn"] == [referral]
    form = p.ada_intake_form()
    assert form["basedOn"] == [referral]
    assert form["author"] == {"reference": "Patient/ada-quill"}
    assert form["status"] == "completed"


def test_ada_packet_is_self_contained() -> None:
    packet = p.ada_packet()
    ids = {f"{r['resourceType']}/{r['id']}" for r in packet}
    assert len(ids) == len(packet)
    referenced = {
        ref["reference"]
        for r in packet
        for ref in [
            r.get("subject"),
            r.get("requester"),
            r.get("beneficiary"),
            *r.get("payor", []),
            *r.get("supportingInfo", []),
            *r.get("performer", []),
            r.get("organization"),
            r.get("practitioner"),
            *r.get("context", {}).get("related", []),
        ]
        if ref
    }
    assert referenced <= ids


def test_the_generator_sends_referrals_from_the_persona_cast() -> None:
    month = synth.generate(300, 7, p.PERSONA_AS_OF)
    index = {f"{r['resourceType']}/{r['id']}": r for items in month.values() for r in items}
    updated = index["Organization/org-northside"]["meta"]["lastUpdated"]
    for key, build in [
        ("Organization/org-northside", p.northside_family_medicine),
        ("Practitioner/prac-ivy-chen", p.dr_ivy_chen),
        ("PractitionerRole/role-ivy-chen", p.dr_ivy_chen_role),
        ("Practitioner/prac-omar-lind", p.dr_omar_lind),
        ("Organization/org-riverbend", p.riverbend_specialty_group),
        ("Practitioner/prac-coord-sam-park", p.coordinator_sam_park),
        ("Organization/payer-synthetic-mutual", p.synthetic_mutual_health),
    ]:
        assert index[key] == build(updated), key
    requesters = {sr.get("requester", {}).get("reference") for sr in month["ServiceRequest"]}
    assert "PractitionerRole/role-ivy-chen" in requesters
    assert "Practitioner/prac-omar-lind" in requesters
