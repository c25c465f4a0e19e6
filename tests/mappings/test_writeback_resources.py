"""The resources the adapter writes back, built from the personas' evaluations (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapter import personas as p
from adapter.practice_rules import default_rules
from mappings.messages import MessageFacts, check_template, render, xhtml
from mappings.rules import PracticeRules
from mappings.writeback import (
    COMMUNICATION_SYSTEM,
    NOTE_ID,
    TASK_PROFILE,
    TASK_SYSTEM,
    ContactAttempt,
    FollowUpNote,
    Owner,
    ReferralDetails,
    contact_attempt_communication,
    follow_up_task,
    identifier_query,
    identifier_token,
    managed_part,
    merge_task,
    office_message,
    patient_message,
    status_communication,
    status_events,
    task_digest,
)
from tests.conftest import only

NOW = datetime(2025, 1, 15, 12, 30, tzinfo=UTC)
REFERRAL = "ServiceRequest/ref-ada-cardio"
ADA = ReferralDetails(
    key=REFERRAL,
    request_status="active",
    requester="PractitionerRole/role-ivy-chen",
    number="R-2025-0110",
    received="2025-01-10",
    patient_name="Ada Quill",
    birth_date="1984-07-12",
)


def listed(rules: PracticeRules, source: str = "Organization/org-northside") -> PracticeRules:
    """The rules with Northside on the high-relationship list."""
    high = rules.high_relationship.model_copy(update={"sources": (source,)})
    return rules.model_copy(update={"high_relationship": high})


def loop(rules: PracticeRules, **audiences: str) -> PracticeRules:
    return rules.model_copy(update={"status_loop": rules.status_loop.model_copy(update=audiences)})


def ready() -> dict[str, Any]:
    return only(p.ada_packet()).to_json()


def missing_insurance_and_records() -> dict[str, Any]:
    packet = [
        r for r in p.ada_packet() if r["resourceType"] not in ("Coverage", "DocumentReference")
    ]
    packet = [
        p.ada_referral(supportingInfo=None) if r["resourceType"] == "ServiceRequest" else r
        for r in packet
    ]
    return only(packet).to_json()


def test_the_task_of_a_ready_referral() -> None:
    evaluation = ready()
    task = follow_up_task(evaluation, ADA, default_rules(), authored_on=NOW)
    assert task is not None
    assert task["meta"]["profile"] == [TASK_PROFILE]
    assert task["identifier"] == [{"system": TASK_SYSTEM, "value": REFERRAL}]
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == (
        "in-progress",
        "ready-to-schedule",
    )
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert task["focus"] == {"reference": REFERRAL}
    assert task["for"] == {"reference": "Patient/ada-quill"}
    assert task["requester"] == {"reference": "PractitionerRole/role-ivy-chen"}
    assert task["intent"] == "order"
    # The follow-up standard's due time, the owner role and the practice as default owner.
    assert task["restriction"]["period"]["end"] == evaluation["next_action"]["due"]
    assert task["performerType"] == [{"text": "scheduler"}]
    assert task["extension"][0]["valueString"] == "referral-coordinator"
    assert task["owner"] == {"display": "Referral coordination team"}
    assert "input" not in task


def test_a_missing_detail_referral_is_on_hold_with_one_input_per_item() -> None:
    evaluation = missing_insurance_and_records()
    task = follow_up_task(evaluation, ADA, default_rules(), authored_on=NOW)
    assert task is not None
    assert task["status"] == "on-hold"
    assert task["businessStatus"]["coding"][0]["code"] == "awaiting-information"
    inputs = [(i["type"]["coding"][0]["code"], i["valueString"]) for i in task["input"]]
    assert inputs == [(m["item"], m["detail"]) for m in evaluation["missing"]]
    assert [code for code, _ in inputs] == ["insurance", "records"]


def test_an_assigned_owner_and_the_note_for_the_next_person() -> None:
    note = FollowUpNote(
        NOW,
        Owner("Practitioner/prac-coord-sam-park", "Sam Park"),
        contacted="Ada, by phone",
        requested="a photo of her insurance card",
        response="she will send it tonight",
        still_missing=("insurance",),
        next_attempt_due=datetime(2025, 1, 16, 15, tzinfo=UTC),
    )
    owner = Owner("Practitioner/prac-coord-sam-park", None)
    task = follow_up_task(
        missing_insurance_and_records(),
        ADA,
        default_rules(),
        authored_on=NOW,
        owner=owner,
        note=note,
    )
    assert task is not None
    assert task["owner"] == {"reference": "Practitioner/prac-coord-sam-park"}
    [annotation] = task["note"]
    assert annotation["id"] == NOTE_ID
    assert annotation["authorReference"]["reference"] == "Practitioner/prac-coord-sam-park"
    parts = {
        e["url"]: next(v for k, v in e.items() if k.startswith("value"))
        for e in annotation["extension"][0]["extension"]
    }
    assert parts == {
        "contacted": "Ada, by phone",
        "requested": "a photo of her insurance card",
        "response": "she will send it tonight",
        "still-missing": "insurance",
        "next-attempt-due": "2025-01-16T15:00:00Z",
    }
    assert "Still missing: insurance" in annotation["text"]


def test_closed_referrals_end_their_task() -> None:
    revoked = only([*p.ada_packet()[:-2], p.ada_referral(status="revoked"), p.ada_record()])
    details = ReferralDetails(REFERRAL, "revoked", None, "R-1")
    task = follow_up_task(revoked.to_json(), details, default_rules(), authored_on=NOW)
    assert task is not None
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == ("cancelled", "revoked")
    assert "restriction" not in task
    assert "performerType" not in task


def test_no_task_without_a_patient_to_be_for() -> None:
    evaluation = dict(ready(), patient=None)
    assert follow_up_task(evaluation, ADA, default_rules(), authored_on=NOW) is None


def test_merge_keeps_what_others_wrote_and_replaces_our_part() -> None:
    ours = follow_up_task(ready(), ADA, default_rules(), authored_on=NOW)
    assert ours is not None
    theirs = {
        **ours,
        "id": "42",
        "meta": {"versionId": "3", "profile": ["http://example.org/their-profile"]},
        "status": "on-hold",
        "priority": "urgent",  # someone raised the priority
        "note": [{"text": "Patient prefers mornings"}, {"id": NOTE_ID, "text": "old note"}],
        "extension": [{"url": "http://example.org/their-extension", "valueBoolean": True}],
        "identifier": [{"system": "http://ehr.example/task", "value": "T-9"}],
        "authoredOn": "2025-01-10T10:00:00Z",
    }
    merged = merge_task(theirs, ours)
    assert merged["id"] == "42"
    assert merged["priority"] == "urgent"
    assert merged["status"] == "in-progress"
    assert merged["authoredOn"] == "2025-01-10T10:00:00Z"  # set once, by whoever created it
    assert {"text": "Patient prefers mornings"} in merged["note"]
    assert all(n.get("id") != NOTE_ID for n in merged.get("note", []))  # our old note went
    assert {"url": "http://example.org/their-extension", "valueBoolean": True} in merged[
        "extension"
    ]
    assert merged["meta"]["profile"] == [TASK_PROFILE, "http://example.org/their-profile"]
    assert {"system": "http://ehr.example/task", "value": "T-9"} in merged["identifier"]
    assert managed_part(merged) == managed_part(ours)


def test_the_digest_is_about_what_we_decide_not_when_we_wrote_it() -> None:
    first = follow_up_task(ready(), ADA, default_rules(), authored_on=NOW)
    later = follow_up_task(
        ready(), ADA, default_rules(), authored_on=datetime(2025, 2, 1, tzinfo=UTC)
    )
    assert first is not None
    assert later is not None
    assert task_digest(first) == task_digest(later)
    moved = follow_up_task(missing_insurance_and_records(), ADA, default_rules(), authored_on=NOW)
    assert moved is not None
    assert task_digest(moved) != task_digest(first)


# --- the status loop ---------------------------------------------------------------------------


def events(evaluation: dict[str, Any], rules: PracticeRules, **memory: bool) -> list[str]:
    found = status_events(
        evaluation,
        ADA,
        rules,
        high_relationship=memory.get("high", "high-relationship" in evaluation["segments"]),
        was_missing=memory.get("was_missing", False),
    )
    return [e.identifier(REFERRAL) for e in found]


def test_receipt_is_confirmed_to_high_relationship_sources_only_by_default() -> None:
    assert events(ready(), default_rules()) == []
    high = only(p.ada_packet(), rules=listed(default_rules())).to_json()
    assert "high-relationship" in high["segments"]
    assert events(high, default_rules()) == [f"{REFERRAL}:receipt-confirmed"]
    # A practice can confirm receipt to every office.
    assert events(ready(), loop(default_rules(), receipt_confirmed="all")) == [
        f"{REFERRAL}:receipt-confirmed"
    ]


def test_an_information_request_names_exactly_what_the_office_must_supply() -> None:
    evaluation = missing_insurance_and_records()
    [event] = status_events(
        evaluation, ADA, default_rules(), high_relationship=False, was_missing=False
    )
    # Insurance comes from the patient: not asked of the office.
    assert event.identifier(REFERRAL) == f"{REFERRAL}:information-requested:records"
    assert event.missing == (f"records: {evaluation['missing'][1]['detail']}",)
    message = status_communication(evaluation, ADA, event, default_rules(), sent=NOW)
    text = message["payload"][0]["contentString"]
    assert "records: the referral has no supporting information" in text
    assert "insurance" not in text.lower()
    # What identifies the referral, and nothing clinical.
    assert "R-2025-0110" in text
    assert "Ada Quill" in text
    assert "1984-07-12" in text
    assert "cardio" not in text.lower()
    assert "chest" not in text.lower()
    assert message["recipient"] == [{"reference": "Organization/org-northside"}]
    assert message["basedOn"] == [{"reference": REFERRAL}]
    assert message["topic"]["coding"][0]["code"] == "information-requested"
    assert message["identifier"][0] == {
        "system": COMMUNICATION_SYSTEM,
        "value": f"{REFERRAL}:information-requested:records",
    }


def test_details_complete_only_after_something_was_missing() -> None:
    rules = loop(default_rules(), details_complete="all")
    assert events(ready(), rules) == []
    assert events(ready(), rules, was_missing=True) == [f"{REFERRAL}:details-complete"]


def test_scheduled_once_per_appointment_and_closed_for_remembered_high_relationship() -> None:
    booked = only([*p.ada_packet(), p.ada_appointment()]).to_json()
    assert booked["state"] == "scheduled"
    details = ReferralDetails(
        key=REFERRAL,
        request_status="active",
        requester=None,
        number="R-1",
        appointment="Appointment/appt-ada-cardio",
        appointment_start="2025-01-20T15:00:00Z",
    )
    found = status_events(
        booked, details, default_rules(), high_relationship=False, was_missing=False
    )
    assert [e.identifier(REFERRAL) for e in found] == [f"{REFERRAL}:scheduled:appt-ada-cardio"]
    message = status_communication(booked, details, found[0], default_rules(), sent=NOW)
    assert "2025-01-20 15:00:00 UTC" in message["payload"][0]["contentString"]
    closed = only(
        [*p.ada_packet()[:-2], p.ada_referral(status="completed"), p.ada_record()]
    ).to_json()
    assert events(closed, default_rules(), high=False) == []
    assert events(closed, default_rules(), high=True) == [f"{REFERRAL}:closed"]


def test_a_source_that_cannot_receive_gets_nothing() -> None:
    evaluation = dict(missing_insurance_and_records(), source=None)
    assert events(evaluation, loop(default_rules(), receipt_confirmed="all")) == []


def test_nothing_is_sent_where_the_rules_say_none() -> None:
    rules = loop(default_rules(), information_requested="none")
    assert events(missing_insurance_and_records(), rules) == []


# --- contact attempts, identifiers, texts --------------------------------------------------------


def test_a_contact_attempt_that_missed_the_patient_is_not_done_with_its_reason() -> None:
    attempt = ContactAttempt(
        "a-1", REFERRAL, "Patient/ada-quill", NOW, "phone", "no-answer", Owner(None, "Sam Park")
    )
    message = contact_attempt_communication(attempt)
    assert message["status"] == "not-done"
    assert message["statusReason"]["coding"][0]["code"] == "no-answer"
    assert message["medium"][0]["coding"][0]["code"] == "phone"
    assert message["sender"] == {"display": "Sam Park"}
    assert message["recipient"] == [{"reference": "Patient/ada-quill"}]
    reached = contact_attempt_communication(
        ContactAttempt(
            "a-2",
            REFERRAL,
            "Patient/ada-quill",
            NOW,
            "sms",
            "reached",
            Owner("Practitioner/prac-coord-sam-park", None),
        )
    )
    assert reached["status"] == "completed"
    assert "statusReason" not in reached
    assert reached["extension"][0]["valueCode"] == "reached"


def test_identifier_queries_escape_search_syntax() -> None:
    assert identifier_query("urn:s", "ServiceRequest/1:x") == "identifier=urn:s|ServiceRequest/1:x"
    assert identifier_token("urn:s", "a,b|c$d") == "urn:s|a\\,b\\|c\\$d"
    # A query string: `+` would be read as a space, `\\` and `,` are encoded too.
    assert identifier_query("urn:s", "x:records+clarification") == (
        "identifier=urn:s|x:records%2Bclarification"
    )
    assert identifier_query("urn:s", "a,b") == "identifier=urn:s|a%5C%2Cb"


def test_texts_are_plain_where_plain_and_escaped_where_xhtml() -> None:
    hostile = ReferralDetails(
        REFERRAL, "active", None, "R-1", "2025-01-10", "<img src=x onerror=alert(1)>\n& Co", "1984"
    )
    evaluation = missing_insurance_and_records()
    [event] = status_events(
        evaluation, hostile, default_rules(), high_relationship=False, was_missing=False
    )
    message = status_communication(evaluation, hostile, event, default_rules(), sent=NOW)
    text = message["payload"][0]["contentString"]
    assert "<img src=x onerror=alert(1)> & Co" in text  # plain text, on one line
    div = message["text"]["div"]
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; Co" in div
    assert "<img" not in div
    assert xhtml("a < b") == '<div xmlns="http://www.w3.org/1999/xhtml"><p>a &lt; b</p></div>'


def test_patient_and_office_versions_for_the_referral_as_it_stands() -> None:
    rules = default_rules()
    text = patient_message(missing_insurance_and_records(), ADA, rules)
    assert "insurance" in text
    assert "records" in text
    assert rules.messages.how_to_provide["insurance"] in text
    assert "ready to help you book" in patient_message(ready(), ADA, rules)
    assert "received referral R-2025-0110" in office_message(ready(), ADA, rules)


def test_templates_cannot_reach_into_objects() -> None:
    facts = MessageFacts(practice="P", practice_phone="1", referral="R")
    assert render("$practice: $$5", facts) == "P: $5"
    with pytest.raises(ValueError, match="unknown placeholder"):
        check_template("{referral.__class__} $nope")
    with pytest.raises(ValueError, match="starts no placeholder"):
        check_template("costs $ 5")
