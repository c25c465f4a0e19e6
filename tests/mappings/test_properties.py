"""Property-based tests (hypothesis): the model's invariants over many packets, and arbitrary
JSON never crashing the command."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter import personas as p
from adapter.cli import main
from fhir_profiles import terminology
from tests.conftest import evaluate

AS_OF = p.PERSONA_AS_OF
SEGMENTS = terminology().segments


def iso(days: float) -> str:
    return (AS_OF + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


days = st.floats(min_value=-120, max_value=30, allow_nan=False).map(lambda d: round(d, 3))


@st.composite
def referral(draw: st.DrawFn, n: int) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "id": f"ref-{n}",
        "status": draw(
            st.sampled_from(
                [
                    "draft",
                    "active",
                    "on-hold",
                    "revoked",
                    "completed",
                    "entered-in-error",
                    "unknown",
                ]
            )
        ),
        "priority": draw(st.sampled_from([None, "routine", "urgent", "asap", "stat"])),
        "authoredOn": draw(st.one_of(st.none(), days.map(iso))),
    }
    for element in ("code", "reasonCode", "requester", "supportingInfo"):
        if draw(st.booleans()):
            changes[element] = None
    if draw(st.booleans()):
        changes["occurrenceDateTime"] = iso(draw(days))
    requester = draw(
        st.sampled_from(
            [
                None,
                "PractitionerRole/role-ivy-chen",
                "PractitionerRole/role-omar-lind",
                "Practitioner/prac-omar-lind",
            ]
        )
    )
    if requester and changes.get("requester", "") is not None:
        changes["requester"] = {"reference": requester}
    return p.ada_referral(**changes)


@st.composite
def packet(draw: st.DrawFn) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = [
        p.riverbend_specialty_group(),
        p.northside_family_medicine(),
        p.dr_ivy_chen(),
        p.dr_ivy_chen_role(),
        p.dr_omar_lind(),
        p.dr_omar_lind_role(),
        p.synthetic_mutual_health(),
    ]
    if draw(st.booleans()):
        patient = p.ada_quill()
        for element in ("birthDate", "telecom", "name"):
            if draw(st.integers(0, 4)) == 0:
                del patient[element]
        resources.append(patient)
    coverage = draw(
        st.sampled_from(["none", "good", "selfpay", "no-id", "cancelled", "expired", "future"])
    )
    if coverage != "none":
        cov = p.ada_selfpay_coverage() if coverage == "selfpay" else p.ada_coverage()
        if coverage == "no-id":
            del cov["subscriberId"]
        elif coverage == "cancelled":
            cov["status"] = "cancelled"
        elif coverage == "expired":
            cov["period"] = {"end": iso(-1)}
        elif coverage == "future":
            cov["period"] = {"start": iso(1)}
        resources.append(cov)
    referrals = draw(st.lists(referral(0), min_size=1, max_size=5))
    for n, item in enumerate(referrals):
        item["id"] = f"ref-{n}"
    resources.extend(referrals)
    if draw(st.booleans()):
        resources.append(p.ada_record())
    for n in range(draw(st.integers(0, 3))):
        message = p.ada_message(
            iso(draw(days)),
            status=draw(st.sampled_from(["completed", "in-progress", "entered-in-error"])),
            linked=draw(st.booleans()),
        )
        message["id"] = f"msg-{n}"
        if "basedOn" in message:
            message["basedOn"] = [{"reference": f"ServiceRequest/ref-{draw(st.integers(0, 5))}"}]
        resources.append(message)
    for n in range(draw(st.integers(0, 2))):
        appointment = p.ada_appointment(
            draw(st.sampled_from(["booked", "cancelled", "fulfilled", "noshow"]))
        )
        appointment["id"] = f"appt-{n}"
        appointment["basedOn"] = [{"reference": f"ServiceRequest/ref-{draw(st.integers(0, 4))}"}]
        resources.append(appointment)
    return resources


@settings(max_examples=150, deadline=None)
@given(packet(), st.floats(min_value=-2, max_value=2, allow_nan=False))
def test_segment_invariants_hold_for_any_packet(
    resources: list[dict[str, Any]], shift: float
) -> None:
    found = evaluate(resources, as_of=AS_OF + timedelta(days=shift))
    assert len(found) == len([r for r in resources if r["resourceType"] == "ServiceRequest"])
    for e in found.values():
        assert e.state in ("open", "scheduled", "closed")
        if e.state != "open":
            assert e.segments == ()
            assert e.primary_segment is None
            assert e.next_action is None
            if e.state == "closed":
                assert e.missing == ()
            continue
        work = {"ready-to-schedule", "missing-detail"} & set(e.segments)
        assert len(work) == 1
        assert ("missing-detail" in e.segments) == bool(e.missing)
        assert e.primary_segment == e.segments[0]
        assert list(e.segments) == [s for s in SEGMENTS if s in e.segments]
        for segment in e.segments:
            assert any(r.segment == segment and r.because and r.expression for r in e.reasons)
        for item in e.missing:
            assert any(r.item == item.item for r in e.reasons)
        assert e.next_action is not None
        assert e.next_action.segment == e.primary_segment
        if e.age_days is not None:
            band = terminology().band_for(e.age_days)
            assert e.age_days >= 0
            assert e.aging_band == band.code


# --- arbitrary JSON through the command ---------------------------------------------------

ELEMENT_NAMES = sorted(
    {
        "resourceType",
        "id",
        "meta",
        "status",
        "intent",
        "subject",
        "requester",
        "priority",
        "code",
        "coding",
        "system",
        "text",
        "reasonCode",
        "authoredOn",
        "occurrenceDateTime",
        "occurrencePeriod",
        "end",
        "start",
        "insurance",
        "supportingInfo",
        "reference",
        "identifier",
        "value",
        "name",
        "family",
        "given",
        "birthDate",
        "telecom",
        "beneficiary",
        "period",
        "subscriberId",
        "type",
        "sender",
        "sent",
        "basedOn",
        "about",
        "context",
        "related",
        "contained",
        "entry",
        "resource",
        "fullUrl",
        "extension",
        "url",
        "valueString",
        "_status",
        "organization",
        "author",
        "authored",
        "category",
        "lastUpdated",
    }
)
RESOURCE_TYPES = [
    "ServiceRequest",
    "Patient",
    "Coverage",
    "Communication",
    "Appointment",
    "DocumentReference",
    "PractitionerRole",
    "Organization",
    "Bundle",
    "QuestionnaireResponse",
    "Observation",
    "NotAType",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "2025-01-10",
            "2025-01-10T09:30:00Z",
            "Patient/ada-quill",
            "urn:uuid:x",
            "#p",
            "active",
            "completed",
            "phone",
            "urgent",
            "ServiceRequest/ref-0",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(ELEMENT_NAMES), st.text(max_size=6)), inner, max_size=6
        ),
    ),
    max_leaves=25,
)
resources = st.one_of(
    json_values,
    st.builds(
        lambda rt, body: {**body, "resourceType": rt},
        st.sampled_from(RESOURCE_TYPES),
        st.dictionaries(st.sampled_from(ELEMENT_NAMES), json_values, max_size=8),
    ),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(resources, min_size=1, max_size=6))
def test_arbitrary_json_never_crashes_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: list[Any]
) -> None:
    ndjson = tmp_path / "input.ndjson"
    ndjson.write_bytes(b"\n".join(orjson.dumps(v) for v in values) + b"\n")
    assert main(["segment", "--input", str(ndjson), "--as-of", "2025-01-15"]) == 0
    out, err = capsys.readouterr()
    assert "internal error" not in err
    assert "Traceback" not in err
    for line in out.splitlines():
        assert set(orjson.loads(line)) >= {"referral", "state", "segments", "reasons"}
    document = tmp_path / "input.json"
    document.write_bytes(
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": v} for v in values],
            }
        )
    )
    assert main(["segment", "--input", str(document), "--as-of", "2025-01-15"]) == 0
    whole = tmp_path / "whole.json"
    whole.write_bytes(orjson.dumps(values[0]))
    assert main(["segment", "--input", str(whole), "--as-of", "2025-01-15"]) in (0, 2)
    _, err = capsys.readouterr()
    assert "internal error" not in err
    assert "Traceback" not in err
