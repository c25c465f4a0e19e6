"""The referral model of DESIGN.md, rule by rule, at its boundaries, on the named personas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapter import personas as p
from adapter.practice_rules import default_rules
from mappings.model import ReferralEvaluation
from mappings.rules import merge_rules, parse_rules
from tests.conftest import evaluate, only

AS_OF = p.PERSONA_AS_OF  # 2025-01-15T12:00Z, a Wednesday
AUTHORED = datetime(2025, 1, 10, 9, 30, tzinfo=UTC)
REF = "ServiceRequest/ref-ada-cardio"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def packet(
    *,
    referral: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    extra: tuple[dict[str, Any], ...] = (),
) -> list[dict[str, Any]]:
    """Ada's complete packet, with her referral replaced, some resources dropped, more added."""
    resources = [r for r in p.ada_packet() if f"{r['resourceType']}/{r['id']}" not in drop]
    if referral is not None:
        resources = [r for r in resources if r["resourceType"] != "ServiceRequest"] + [referral]
    return resources + list(extra)


def rules_with(**override: Any) -> Any:
    data = merge_rules(default_rules().model_dump(mode="json"), override)
    return parse_rules(data, "test rules")


def items(evaluation: ReferralEvaluation) -> list[str]:
    return [m.item for m in evaluation.missing]


def test_the_complete_persona_packet_is_ready_to_schedule_and_nothing_else() -> None:
    e = only(packet())
    assert e.state == "open"
    assert e.segments == ("ready-to-schedule",)
    assert e.primary_segment == "ready-to-schedule"
    assert e.missing == ()
    assert e.patient == "Patient/ada-quill"
    assert e.source == "Organization/org-northside"
    assert (e.age_days, e.aging_band) == (5, "3-5")
    assert [r.segment for r in e.reasons if r.segment] == ["ready-to-schedule"]


# --- state ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("draft", "open"),
        ("active", "open"),
        ("on-hold", "open"),
        ("unknown", "open"),
        ("completed", "closed"),
        ("revoked", "closed"),
        ("entered-in-error", "closed"),
    ],
)
def test_state_follows_the_servicerequest_status(status: str, state: str) -> None:
    e = only(packet(referral=p.ada_referral(status=status)))
    assert e.state == state
    if state == "closed":
        assert e.segments == ()
        assert e.primary_segment is None
        assert e.next_action is None
        assert e.reasons[0].state == "closed"
        assert e.reasons[0].expression == "ServiceRequest.status"


@pytest.mark.parametrize(
    ("appointment_status", "state"),
    [
        ("booked", "scheduled"),
        ("arrived", "scheduled"),
        ("checked-in", "scheduled"),
        ("fulfilled", "scheduled"),
        ("proposed", "open"),
        ("pending", "open"),
        ("cancelled", "open"),
        ("noshow", "open"),
        ("entered-in-error", "open"),
        ("waitlist", "open"),
    ],
)
def test_a_booked_appointment_schedules_the_referral(appointment_status: str, state: str) -> None:
    e = only(packet(extra=(p.ada_appointment(appointment_status),)))
    assert e.state == state
    assert (e.segments == ()) == (state == "scheduled")


def test_closed_wins_over_a_booked_appointment() -> None:
    e = only(packet(referral=p.ada_referral(status="completed"), extra=(p.ada_appointment(),)))
    assert e.state == "closed"


def test_a_scheduled_referral_still_names_what_is_missing() -> None:
    e = only(packet(drop=("Coverage/cov-ada",), extra=(p.ada_appointment(),)))
    assert e.state == "scheduled"
    assert items(e) == ["insurance"]
    assert e.segments == ()
    assert e.next_action is None


# --- aging ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "days", "band"),
    [
        (timedelta(0), 0, "0-2"),
        (timedelta(days=3) - timedelta(seconds=1), 2, "0-2"),
        (timedelta(days=3), 3, "3-5"),
        (timedelta(days=6) - timedelta(seconds=1), 5, "3-5"),
        (timedelta(days=6), 6, "6-10"),
        (timedelta(days=11) - timedelta(seconds=1), 10, "6-10"),
        (timedelta(days=11), 11, "11+"),
        (timedelta(days=400), 400, "11+"),
    ],
)
def test_aging_in_whole_days_rounded_down_and_its_band(
    after: timedelta, days: int, band: str
) -> None:
    e = only(packet(), as_of=AUTHORED + after)
    assert (e.age_days, e.aging_band) == (days, band)


def test_age_falls_back_to_meta_last_updated_without_authored_on() -> None:
    referral = p.ada_referral(authoredOn=None, meta={"lastUpdated": "2025-01-01T12:00:00Z"})
    e = only(packet(referral=referral))
    assert (e.age_days, e.aging_band) == (14, "11+")


def test_a_date_without_time_is_midnight_utc() -> None:
    e = only(packet(referral=p.ada_referral(authoredOn="2025-01-12")), as_of=AS_OF)
    assert e.age_days == 3  # 2025-01-12T00:00Z to 2025-01-15T12:00Z


def test_a_time_with_an_offset_is_converted_to_utc() -> None:
    # 2025-01-12T23:00-05:00 is 2025-01-13T04:00Z: 2 days 8 hours before as_of.
    e = only(packet(referral=p.ada_referral(authoredOn="2025-01-12T23:00:00-05:00")))
    assert e.age_days == 2


def test_no_date_at_all_gives_no_age() -> None:
    e = only(packet(referral=p.ada_referral(authoredOn=None, meta=None)))
    assert (e.age_days, e.aging_band) == (None, None)


# --- missing details ------------------------------------------------------------------------


def test_missing_patient_is_a_demographics_request_to_the_referring_office() -> None:
    e = only(packet(drop=("Patient/ada-quill",)))
    demographics = e.missing[0]
    assert demographics.item == "demographics"
    assert demographics.request_from == "referring-office"
    assert demographics.detail == "the subject Patient ada-quill is not in the input"
    assert e.segments == ("missing-detail",)
    assert e.patient == "Patient/ada-quill"


@pytest.mark.parametrize(
    ("change", "detail", "expression"),
    [
        (
            {"name": [{"text": "A. Quill"}]},
            "Patient ada-quill has no name with a family or given part",
            "Patient.name.where(family.exists() or given.exists())",
        ),
        ({"birthDate": None}, "Patient ada-quill has no birth date", "Patient.birthDate"),
        (
            {"telecom": [{"system": "email", "value": "ada@example.org"}]},
            "Patient ada-quill has no phone or SMS number",
            "Patient.telecom.where((system = 'phone' or system = 'sms') and value.exists())",
        ),
        (
            {"telecom": [{"system": "phone", "use": "home"}]},
            "Patient ada-quill has no phone or SMS number",
            "Patient.telecom.where((system = 'phone' or system = 'sms') and value.exists())",
        ),
        (
            {"telecom": None},
            "Patient ada-quill has no phone or SMS number",
            "Patient.telecom.where((system = 'phone' or system = 'sms') and value.exists())",
        ),
    ],
)
def test_demographics_name_exactly_what_the_patient_lacks(
    change: dict[str, Any], detail: str, expression: str
) -> None:
    patient = p.ada_quill()
    for key, value in change.items():
        if value is None:
            patient.pop(key)
        else:
            patient[key] = value
    e = only(packet(drop=("Patient/ada-quill",), extra=(patient,)))
    assert [(m.item, m.detail, m.request_from) for m in e.missing] == [
        ("demographics", detail, "referring-office")
    ]
    assert [r.expression for r in e.reasons if r.item == "demographics"] == [expression]


def test_an_sms_number_is_enough() -> None:
    patient = p.ada_quill()
    patient["telecom"] = [{"system": "sms", "value": "555-555-0142"}]
    e = only(packet(drop=("Patient/ada-quill",), extra=(patient,)))
    assert e.missing == ()


def test_several_demographic_gaps_are_one_item_with_every_gap_named() -> None:
    patient = p.ada_quill()
    del patient["birthDate"], patient["telecom"]
    e = only(packet(drop=("Patient/ada-quill",), extra=(patient,)))
    assert e.missing[0].detail == "Patient ada-quill has no birth date and no phone or SMS number"
    assert len([r for r in e.reasons if r.item == "demographics"]) == 2


def _coverage(**change: Any) -> dict[str, Any]:
    coverage = p.ada_coverage()
    for key, value in change.items():
        if value is None:
            coverage.pop(key, None)
        else:
            coverage[key] = value
    return coverage


def insurance_detail(*coverages: dict[str, Any], as_of: datetime = AS_OF) -> str | None:
    e = only(packet(drop=("Coverage/cov-ada",), extra=coverages), as_of=as_of)
    found = [m for m in e.missing if m.item == "insurance"]
    assert all(m.request_from == "patient" for m in found)
    return found[0].detail if found else None


def test_no_coverage_is_missing_insurance_asked_of_the_patient() -> None:
    assert insurance_detail() == ("no active Coverage in force on 2025-01-15 for Patient ada-quill")


def test_an_active_coverage_with_a_member_id_is_enough() -> None:
    assert insurance_detail(_coverage()) is None


def test_a_coverage_without_member_id_is_named() -> None:
    assert insurance_detail(_coverage(subscriberId=None)) == "Coverage cov-ada has no member id"


def test_an_identifier_counts_as_member_id() -> None:
    coverage = _coverage(subscriberId=None, identifier=[{"system": "urn:x", "value": "M1"}])
    assert insurance_detail(coverage) is None


def test_self_pay_needs_no_member_id() -> None:
    assert insurance_detail(p.ada_selfpay_coverage()) is None


def test_a_cancelled_coverage_does_not_count() -> None:
    assert insurance_detail(_coverage(status="cancelled")) == (
        "no active Coverage in force on 2025-01-15 for Patient ada-quill "
        "(Coverage cov-ada is cancelled)"
    )


@pytest.mark.parametrize(
    ("period", "in_force"),
    [
        ({"start": "2024-01-01", "end": "2025-01-14"}, False),  # ended before as_of
        ({"end": "2025-01-15"}, False),  # 2025-01-15T00:00Z is before 12:00Z
        ({"end": "2025-01-15T12:00:00Z"}, True),  # ends exactly at as_of: still in force
        ({"end": "2025-01-15T11:59:59Z"}, False),
        ({"start": "2025-01-15T12:00:00Z"}, True),  # starts exactly at as_of
        ({"start": "2025-01-15T12:00:01Z"}, False),  # starts in the future
        ({"start": "2025-02-01"}, False),
        ({"start": "2024-01-01"}, True),
    ],
)
def test_coverage_period_must_contain_as_of(period: dict[str, str], in_force: bool) -> None:
    detail = insurance_detail(_coverage(period=period))
    assert (detail is None) == in_force, detail


def test_expired_and_future_coverage_are_explained() -> None:
    detail = insurance_detail(
        _coverage(period={"end": "2024-12-31"}),
        {**_coverage(period={"start": "2025-03-01"}), "id": "cov-ada-next"},
    )
    assert detail == (
        "no active Coverage in force on 2025-01-15 for Patient ada-quill "
        "(Coverage cov-ada ended 2024-12-31; Coverage cov-ada-next starts 2025-03-01)"
    )


def test_a_coverage_referenced_by_the_referral_counts_even_for_another_beneficiary() -> None:
    coverage = _coverage(beneficiary={"reference": "Patient/someone-else"})
    assert insurance_detail(coverage) is not None  # not Ada's, not referenced
    referral = p.ada_referral(insurance=[{"reference": "Coverage/cov-ada"}])
    e = only(packet(referral=referral, drop=("Coverage/cov-ada",), extra=(coverage,)))
    assert "insurance" not in items(e)


def test_one_good_coverage_among_bad_ones_is_enough() -> None:
    bad = {**_coverage(status="cancelled"), "id": "cov-old"}
    assert insurance_detail(bad, _coverage()) is None


def test_records_are_satisfied_by_supporting_info() -> None:
    e = only(packet(drop=("DocumentReference/doc-ada-cardio",)))
    assert "records" not in items(e)  # supportingInfo is present, even if not in the input


def test_records_are_satisfied_by_a_current_related_document() -> None:
    e = only(packet(referral=p.ada_referral(supportingInfo=None)))
    assert "records" not in items(e)


@pytest.mark.parametrize("status", ["superseded", "entered-in-error"])
def test_a_document_that_is_not_current_does_not_count(status: str) -> None:
    record = p.ada_record()
    record["status"] = status
    e = only(
        packet(
            referral=p.ada_referral(supportingInfo=None),
            drop=("DocumentReference/doc-ada-cardio",),
            extra=(record,),
        )
    )
    assert [(m.item, m.request_from) for m in e.missing] == [("records", "referring-office")]
    assert e.missing[0].detail == (
        "the referral has no supporting information and no current DocumentReference relates to it"
    )


def test_records_can_be_waived_for_a_service_code() -> None:
    referral = p.ada_referral(supportingInfo=None)
    resources = packet(referral=referral, drop=("DocumentReference/doc-ada-cardio",))
    assert items(only(resources)) == ["records"]
    rules = rules_with(
        records={
            "waived_service_codes": [{"system": "http://snomed.info/sct", "code": "183519002"}]
        }
    )
    assert items(only(resources, rules=rules)) == []
    other = rules_with(records={"waived_service_codes": [{"code": "183523005"}]})
    assert items(only(resources, rules=other)) == ["records"]


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"code": None}, "the referral has no service code"),
        ({"reasonCode": None}, "the referral has no reason"),
        ({"requester": None}, "the referral has no requester"),
        (
            {"code": None, "reasonCode": None, "requester": None},
            "the referral has no service code, no reason and no requester",
        ),
    ],
)
def test_clarification_names_what_the_referral_lacks(change: dict[str, Any], detail: str) -> None:
    e = only(packet(referral=p.ada_referral(**change)))
    clarification = [m for m in e.missing if m.item == "clarification"]
    assert [(m.detail, m.request_from) for m in clarification] == [(detail, "referring-office")]


def test_a_code_with_text_only_is_a_code() -> None:
    e = only(packet(referral=p.ada_referral(code={"text": "Cardiology consult"})))
    assert "clarification" not in items(e)


def test_a_reason_reference_is_a_reason() -> None:
    referral = p.ada_referral(reasonCode=None, reasonReference=[{"reference": "Condition/c1"}])
    assert "clarification" not in items(only(packet(referral=referral)))


def test_missing_items_come_in_codesystem_order_with_one_reason_each_at_least() -> None:
    referral = p.ada_referral(supportingInfo=None, requester=None)
    e = only(
        packet(
            referral=referral,
            drop=("Patient/ada-quill", "Coverage/cov-ada", "DocumentReference/doc-ada-cardio"),
        )
    )
    assert items(e) == ["demographics", "insurance", "records", "clarification"]
    assert [m.request_from for m in e.missing] == [
        "referring-office",
        "patient",
        "referring-office",
        "referring-office",
    ]
    for item in items(e):
        reasons = [r for r in e.reasons if r.item == item]
        assert reasons
        assert all(r.segment == "missing-detail" and r.expression for r in reasons)
    assert e.segments == ("missing-detail",)


# --- time-sensitive -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "sensitive"),
    [("routine", False), ("urgent", True), ("asap", True), ("stat", True), (None, False)],
)
def test_priority_makes_a_referral_time_sensitive(priority: str | None, sensitive: bool) -> None:
    e = only(packet(referral=p.ada_referral(priority=priority)))
    assert ("time-sensitive" in e.segments) == sensitive
    if sensitive:
        assert e.primary_segment == "time-sensitive"
        assert e.reasons[0].expression == "ServiceRequest.priority"


@pytest.mark.parametrize(
    ("occurrence", "sensitive"),
    [
        ({"occurrenceDateTime": iso(AS_OF + timedelta(days=14))}, True),
        ({"occurrenceDateTime": iso(AS_OF + timedelta(days=14, seconds=1))}, False),
        ({"occurrenceDateTime": iso(AS_OF - timedelta(days=3))}, True),  # already past
        ({"occurrenceDateTime": "2025-01-29"}, True),  # 2025-01-29T00:00Z <= as_of + 14 d
        ({"occurrenceDateTime": "2025-01-30"}, False),
        (
            {"occurrencePeriod": {"start": "2025-01-16", "end": iso(AS_OF + timedelta(days=14))}},
            True,
        ),
        (
            {
                "occurrencePeriod": {
                    "start": "2025-01-16",
                    "end": iso(AS_OF + timedelta(days=14, seconds=1)),
                }
            },
            False,
        ),
        ({"occurrencePeriod": {"start": "2025-01-16"}}, False),  # no end: no deadline
    ],
)
def test_a_requested_date_within_14_days_is_time_sensitive(
    occurrence: dict[str, Any], sensitive: bool
) -> None:
    e = only(packet(referral=p.ada_referral(**occurrence)))
    assert ("time-sensitive" in e.segments) == sensitive
    if sensitive:
        path = (
            "occurrenceDateTime" if "occurrenceDateTime" in occurrence else "occurrencePeriod.end"
        )
        assert [r.expression for r in e.reasons if r.segment == "time-sensitive"] == [
            f"ServiceRequest.{path}"
        ]


def test_time_sensitive_service_codes_come_from_the_rules() -> None:
    resources = packet()
    assert "time-sensitive" not in only(resources).segments
    rules = rules_with(
        time_sensitive={
            "service_codes": [{"system": "http://snomed.info/sct", "code": "183519002"}]
        }
    )
    assert only(resources, rules=rules).segments == ("time-sensitive", "ready-to-schedule")


def test_the_horizon_and_priorities_are_practice_rules() -> None:
    referral = p.ada_referral(occurrenceDateTime=iso(AS_OF + timedelta(days=20)))
    assert "time-sensitive" not in only(packet(referral=referral)).segments
    wider = rules_with(time_sensitive={"occurrence_within_days": 21})
    assert "time-sensitive" in only(packet(referral=referral), rules=wider).segments
    urgent = packet(referral=p.ada_referral(priority="urgent"))
    stat_only = rules_with(time_sensitive={"priorities": ["stat"]})
    assert "time-sensitive" not in only(urgent, rules=stat_only).segments


# --- patient-active -------------------------------------------------------------------------


def active(*extra: dict[str, Any], as_of: datetime = AS_OF) -> ReferralEvaluation:
    return only(packet(extra=extra), as_of=as_of)


@pytest.mark.parametrize(
    ("sent", "counts"),
    [
        (AS_OF - timedelta(days=14), True),  # the window's first instant
        (AS_OF - timedelta(days=14, seconds=1), False),
        (AS_OF - timedelta(days=1), True),
        (AS_OF, True),  # the window's last instant
        (AS_OF + timedelta(seconds=1), False),  # after as_of: not yet sent
    ],
)
def test_a_patient_message_within_14_days_makes_the_referral_patient_active(
    sent: datetime, counts: bool
) -> None:
    e = active(p.ada_message(iso(sent)))
    assert ("patient-active" in e.segments) == counts
    if counts:
        assert e.primary_segment == "patient-active"
        reason = next(r for r in e.reasons if r.segment == "patient-active")
        assert reason.expression == "Communication.sent"
        assert "msg-ada-cardio" in reason.because
        assert "about this referral" in reason.because


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        ("completed", True),
        ("in-progress", True),
        ("entered-in-error", False),
        ("preparation", False),
        ("not-done", False),
        ("stopped", False),
        ("on-hold", False),
    ],
)
def test_only_completed_or_in_progress_messages_count(status: str, counts: bool) -> None:
    e = active(p.ada_message(iso(AS_OF - timedelta(days=1)), status=status))
    assert ("patient-active" in e.segments) == counts


def test_a_message_from_the_practice_is_not_patient_activity() -> None:
    e = active(p.practice_message_to_ada(iso(AS_OF - timedelta(days=1))))
    assert "patient-active" not in e.segments


def test_a_message_about_no_referral_counts_for_every_open_referral_of_the_patient() -> None:
    second = p.ada_referral(id="ref-ada-gi", supportingInfo=None)
    closed = p.ada_referral(id="ref-ada-old", status="completed")
    found = evaluate(
        packet(extra=(second, closed, p.ada_message(iso(AS_OF - timedelta(days=2)), linked=False)))
    )
    assert "patient-active" in found[REF].segments
    assert "patient-active" in found["ServiceRequest/ref-ada-gi"].segments
    assert found["ServiceRequest/ref-ada-old"].segments == ()
    reason = next(r for r in found[REF].reasons if r.segment == "patient-active")
    assert "about no referral" in reason.because


def test_a_message_about_another_referral_does_not_count_for_this_one() -> None:
    second = p.ada_referral(id="ref-ada-gi")
    message = p.ada_message(iso(AS_OF - timedelta(days=2)))
    message["basedOn"] = [{"reference": "ServiceRequest/ref-ada-gi"}]
    found = evaluate(packet(extra=(second, message)))
    assert "patient-active" not in found[REF].segments
    assert "patient-active" in found["ServiceRequest/ref-ada-gi"].segments


def test_a_message_about_the_referral_through_about_counts() -> None:
    message = p.ada_message(iso(AS_OF - timedelta(days=2)), linked=False)
    message["about"] = [{"reference": REF}]
    other = p.ada_referral(id="ref-ada-gi")
    found = evaluate(packet(extra=(other, message)))
    assert "patient-active" in found[REF].segments
    assert "patient-active" not in found["ServiceRequest/ref-ada-gi"].segments


def test_message_time_falls_back_to_received_then_last_updated() -> None:
    message = p.ada_message(iso(AS_OF - timedelta(days=30)))
    del message["sent"]
    message["received"] = iso(AS_OF - timedelta(days=1))
    e = active(message)
    assert next(r for r in e.reasons if r.segment == "patient-active").expression == (
        "Communication.received"
    )
    del message["received"]
    message["meta"] = {"lastUpdated": iso(AS_OF - timedelta(days=1))}
    e = active(message)
    assert next(r for r in e.reasons if r.segment == "patient-active").expression == (
        "Communication.meta.lastUpdated"
    )
    message["meta"] = {"lastUpdated": iso(AS_OF - timedelta(days=15))}
    assert "patient-active" not in active(message).segments


def test_a_completed_intake_form_by_the_patient_counts() -> None:
    e = active(p.ada_intake_form(iso(AS_OF - timedelta(days=3))))
    assert e.primary_segment == "patient-active"
    assert (
        "patient-active"
        not in active(
            p.ada_intake_form(iso(AS_OF - timedelta(days=3)), status="in-progress")
        ).segments
    )
    assert (
        "patient-active" not in active(p.ada_intake_form(iso(AS_OF - timedelta(days=15)))).segments
    )
    form = p.ada_intake_form(iso(AS_OF - timedelta(days=3)))
    form["author"] = {"reference": "Practitioner/prac-coord-sam-park"}
    assert "patient-active" not in active(form).segments


def test_patient_active_due_time_counts_from_the_latest_message() -> None:
    sent = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)  # Wednesday 09:00 UTC
    e = active(p.ada_message(iso(sent)))
    assert e.next_action is not None
    assert e.next_action.segment == "patient-active"
    assert e.next_action.follow_up_business_hours == 4
    assert e.next_action.due == datetime(2025, 1, 15, 13, 0, tzinfo=UTC)
    assert e.next_action.overdue is False
    late = only(
        packet(extra=(p.ada_message(iso(sent)),)), as_of=datetime(2025, 1, 15, 13, 0, 1, tzinfo=UTC)
    )
    assert late.next_action is not None
    assert late.next_action.overdue is True


# --- high-relationship and the source -------------------------------------------------------


def northside_referrals(count: int, first: datetime) -> list[dict[str, Any]]:
    """`count` more referrals from Dr Chen's role at Northside, one a day back from `first`."""
    return [
        p.ada_referral(id=f"ref-extra-{n}", authoredOn=iso(first - timedelta(days=n)))
        for n in range(count)
    ]


@pytest.mark.parametrize(("others", "high"), [(1, False), (2, True), (5, True)])
def test_three_referrals_from_a_source_in_90_days_make_it_high_relationship(
    others: int, high: bool
) -> None:
    found = evaluate(packet(extra=tuple(northside_referrals(others, AS_OF - timedelta(days=1)))))
    assert len(found) == others + 1
    assert all(("high-relationship" in e.segments) == high for e in found.values())
    if high:
        reason = next(r for r in found[REF].reasons if r.segment == "high-relationship")
        # The standing, not the count: the reason (and the evaluation) stays the same while
        # more referrals arrive from the source.
        assert reason.because == (
            "Organization org-northside sent 3 or more referrals in "
            "the 90 days up to the evaluation date"
        )


def test_the_90_day_window_is_inclusive_at_its_start() -> None:
    on_edge = p.ada_referral(id="ref-edge", authoredOn=iso(AS_OF - timedelta(days=90)))
    just_out = p.ada_referral(id="ref-out", authoredOn=iso(AS_OF - timedelta(days=90, seconds=1)))
    recent = p.ada_referral(id="ref-recent", authoredOn=iso(AS_OF - timedelta(days=1)))
    assert "high-relationship" in evaluate(packet(extra=(on_edge, recent)))[REF].segments
    assert "high-relationship" not in evaluate(packet(extra=(just_out, recent)))[REF].segments


def test_referrals_authored_after_as_of_do_not_count() -> None:
    future = northside_referrals(2, AS_OF + timedelta(days=2))
    assert "high-relationship" not in evaluate(packet(extra=tuple(future)))[REF].segments


def test_closed_referrals_count_toward_the_source() -> None:
    closed = [{**r, "status": "revoked"} for r in northside_referrals(2, AS_OF)]
    assert "high-relationship" in evaluate(packet(extra=tuple(closed)))[REF].segments


def test_a_role_with_an_organization_resolves_to_it_across_practitioners() -> None:
    marco_role = p.practitioner_role(
        "role-marco", "prac-marco", "org-northside", updated=p.PERSONA_UPDATED
    )
    from_marco = [
        p.ada_referral(id=f"ref-m{n}", requester={"reference": "PractitionerRole/role-marco"})
        for n in range(2)
    ]
    found = evaluate(packet(extra=(marco_role, *from_marco)))
    assert {e.source for e in found.values()} == {"Organization/org-northside"}
    assert all("high-relationship" in e.segments for e in found.values())


def test_a_role_without_organization_stands_for_itself() -> None:
    referrals = [
        p.ada_referral(id=f"ref-o{n}", requester={"reference": "PractitionerRole/role-omar-lind"})
        for n in range(3)
    ]
    found = evaluate(
        packet(
            referral=referrals[0], extra=(p.dr_omar_lind(), p.dr_omar_lind_role(), *referrals[1:])
        )
    )
    assert {e.source for e in found.values()} == {"PractitionerRole/role-omar-lind"}
    assert all("high-relationship" in e.segments for e in found.values())


def test_a_role_absent_from_the_input_stands_for_itself() -> None:
    e = only(packet(drop=("PractitionerRole/role-ivy-chen",)))
    assert e.source == "PractitionerRole/role-ivy-chen"


@pytest.mark.parametrize(
    ("requester", "source"),
    [
        ("Practitioner/prac-omar-lind", "Practitioner/prac-omar-lind"),
        ("Organization/org-northside", "Organization/org-northside"),
        (
            "https://ehr.example.org/fhir/PractitionerRole/role-ivy-chen/_history/3",
            "Organization/org-northside",
        ),
    ],
)
def test_the_source_of_other_requesters(requester: str, source: str) -> None:
    referral = p.ada_referral(requester={"reference": requester})
    assert only(packet(referral=referral, extra=(p.dr_omar_lind(),))).source == source


def test_a_requester_by_identifier_resolves_to_the_organization() -> None:
    referral = p.ada_referral(
        requester={
            "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "9910000001"}
        }
    )
    assert only(packet(referral=referral)).source == "Organization/org-northside"


@pytest.mark.parametrize(
    "listed", ["Organization/org-northside", "http://hl7.org/fhir/sid/us-npi|9910000001"]
)
def test_the_practice_can_list_a_source_by_reference_or_identifier(listed: str) -> None:
    assert "high-relationship" not in only(packet()).segments
    rules = rules_with(high_relationship={"sources": [listed]})
    e = only(packet(), rules=rules)
    assert e.segments == ("ready-to-schedule", "high-relationship")
    assert "on the practice's high-relationship list" in e.reasons[-1].because


def test_window_and_count_are_practice_rules() -> None:
    extra = tuple(northside_referrals(1, AS_OF - timedelta(days=1)))
    assert "high-relationship" not in evaluate(packet(extra=extra))[REF].segments
    two = rules_with(high_relationship={"min_referrals": 2})
    assert "high-relationship" in evaluate(packet(extra=extra), rules=two)[REF].segments


# --- precedence, next action, category filter -----------------------------------------------


def test_segments_come_in_precedence_order_and_primary_is_the_first() -> None:
    referral = p.ada_referral(priority="urgent", supportingInfo=None)
    extra = (*northside_referrals(2, AS_OF), p.ada_message(iso(AS_OF - timedelta(days=1))))
    e = evaluate(
        packet(referral=referral, drop=("DocumentReference/doc-ada-cardio",), extra=extra)
    )[REF]
    assert e.segments == ("time-sensitive", "patient-active", "missing-detail", "high-relationship")
    assert e.primary_segment == "time-sensitive"
    assert [r.segment for r in e.reasons] == [
        "time-sensitive",
        "patient-active",
        "missing-detail",
        "high-relationship",
    ]


def test_next_action_carries_the_segment_standard_and_the_exact_requests() -> None:
    e = only(packet(drop=("Coverage/cov-ada",)))
    action = e.next_action
    assert action is not None
    assert action.segment == "missing-detail"
    assert action.owner_role == "referral-coordinator"
    assert action.backup_owner_role == "scheduler"
    assert action.documentation_rule.startswith("Record what was requested")
    assert action.follow_up_business_hours == 16
    assert action.steps == (
        "Request the exact missing item from the right source",
        "Ask the patient for insurance: no active Coverage in force on 2025-01-15 for "
        "Patient ada-quill",
    )
    # Authored Friday 2025-01-10 09:30Z; 16 business hours (08:00-17:00 Mon-Fri UTC):
    # 7.5 h on Friday, the weekend skipped, 8.5 h more from Monday 08:00.
    assert action.due == datetime(2025, 1, 13, 16, 30, tzinfo=UTC)
    assert action.overdue is True


def test_the_category_filter_restricts_which_servicerequests_are_referrals() -> None:
    lab = p.ada_referral(
        id="lab-order",
        category=[{"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}],
    )
    resources = packet(extra=(lab,))
    assert len(evaluate(resources)) == 2
    rules = rules_with(
        referrals={"categories": [{"system": "http://snomed.info/sct", "code": "3457005"}]}
    )
    assert list(evaluate(resources, rules=rules)) == [REF]


def test_every_open_referral_has_exactly_one_of_ready_or_missing() -> None:
    variants = [
        packet(),
        packet(drop=("Coverage/cov-ada",)),
        packet(referral=p.ada_referral(priority="stat")),
        packet(extra=(p.ada_message(iso(AS_OF)),)),
    ]
    for resources in variants:
        e = only(resources)
        assert len({"ready-to-schedule", "missing-detail"} & set(e.segments)) == 1
        assert ("missing-detail" in e.segments) == bool(e.missing)


def test_a_contained_patient_resolves_the_subject_and_a_contained_order_is_no_referral() -> None:
    patient = p.ada_quill()
    patient["id"] = "pat"
    referral = p.ada_referral(subject={"reference": "#pat"}, contained=[patient])
    e = only(packet(referral=referral, drop=("Patient/ada-quill",)))
    assert e.patient == f"{REF}#pat"
    assert "demographics" not in items(e)
    form = p.ada_intake_form(iso(AS_OF - timedelta(days=1)))
    form["contained"] = [{**p.ada_referral(), "id": "inner-order"}]
    assert list(evaluate([*packet(), form])) == [REF]


def test_the_evaluation_does_not_depend_on_the_order_of_the_input() -> None:
    old = {**_coverage(status="cancelled"), "id": "cov-old"}
    expired = {**_coverage(period={"end": "2024-12-31"}), "id": "cov-expired"}
    first = {**p.ada_message(iso(AS_OF - timedelta(days=2))), "id": "msg-1"}
    second = {**p.ada_message(iso(AS_OF - timedelta(days=1)), linked=False), "id": "msg-2"}
    resources = packet(drop=("Coverage/cov-ada",), extra=(old, expired, first, second))
    forward = only(resources)
    assert forward == only(list(reversed(resources)))
    assert "(Coverage cov-expired ended 2024-12-31; Coverage cov-old is cancelled)" in (
        forward.missing[0].detail
    )
