"""`segment` over the shared corpus of public FHIR R4 examples written by others.

Every file must be read without failing: exit 0, bad resources reported and skipped, every line
the documented contract with its invariants. A few facts, checked by reading the files, are
pinned: which referrals each folder holds and what the model makes of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.cli import main
from fhir_profiles import terminology
from tests.conftest import CONTRACT_KEYS, REALWORLD

JSON = dict[str, Any]
AS_OF = "2026-12-03"
PROG = "referral-adapter: "
FILES = sorted(REALWORLD.rglob("*.json")) if REALWORLD.is_dir() else []
IDS = [f.relative_to(REALWORLD).as_posix() for f in FILES]


def segment(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, list[JSON], str]:
    code = main(["segment", "--input", str(path), "--as-of", AS_OF])
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


def referrals(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, JSON]:
    code, found, err = segment(capsys, path)
    assert code == 0, err
    return {e["referral"]: e for e in found}


def items(evaluation: JSON) -> list[str]:
    return [m["item"] for m in evaluation["missing"]]


def check_contract(evaluation: JSON) -> None:
    """The documented shape and invariants of one output line."""
    terms = terminology()
    assert list(evaluation) == CONTRACT_KEYS
    state, segments = evaluation["state"], evaluation["segments"]
    assert state in terms.states
    assert segments == sorted(segments, key=terms.segments.index)
    assert len(set(segments)) == len(segments)
    missing = items(evaluation)
    assert missing == sorted(missing, key=[i.code for i in terms.missing_items].index)
    for detail in evaluation["missing"]:
        assert detail["detail"]
        expected_source = next(
            i.request_from for i in terms.missing_items if i.code == detail["item"]
        )
        assert detail["request_from"] == expected_source
    if state == "open":
        assert sum(s in ("ready-to-schedule", "missing-detail") for s in segments) == 1
        assert ("missing-detail" in segments) == bool(missing)
        assert evaluation["primary_segment"] == segments[0]
        assert evaluation["next_action"]["segment"] == segments[0]
    else:
        assert segments == []
        assert evaluation["primary_segment"] is None
        assert evaluation["next_action"] is None
    if state == "closed":
        assert missing == []
    age, band = evaluation["age_days"], evaluation["aging_band"]
    if age is None:
        assert band is None
    else:
        [expected_band] = [b.code for b in terms.aging_bands if b.contains(age)]
        assert band == expected_band
    for reason in evaluation["reasons"]:
        assert reason["because"]
        assert reason["expression"]
    explained = {r.get("segment") for r in evaluation["reasons"]}
    assert set(segments) <= explained
    assert set(missing) <= {r.get("item") for r in evaluation["reasons"]}


def test_the_corpus_is_there(realworld: Path) -> None:
    assert len(FILES) == 206
    assert {f.relative_to(realworld).parts[0] for f in FILES} == {
        "bars",
        "cdex",
        "fhir-r4-core",
        "gravity",
        "jp-ereferral",
        "medplum",
        "synthea",
        "us-core",
    }


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_file_is_read_without_failing(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, found, err = segment(capsys, path)
    assert code == 0, err
    assert "Traceback" not in err
    assert "internal error" not in err
    for report in err.splitlines():
        assert report.startswith(PROG), report
    for evaluation in found:
        check_contract(evaluation)


def test_how_many_files_hold_a_referral(capsys: pytest.CaptureFixture[str]) -> None:
    with_lines = []
    for path in FILES:
        code, found, _ = segment(capsys, path)
        assert code == 0
        if found:
            with_lines.append(path.relative_to(REALWORLD).as_posix())
    # 20 ServiceRequest files in fhir-r4-core, 7 in us-core, 3 in gravity, and the 3 BaRS
    # referral messages. The QuestionnaireResponse whose contained order is a ServiceRequest
    # gives no line: a contained resource is part of its container, not a referral.
    assert len(with_lines) == 33
    assert "fhir-r4-core/questionnaireresponse-example.json" not in with_lines
    assert sum(p.startswith("fhir-r4-core/") for p in with_lines) == 20
    assert sum(p.startswith("us-core/") for p in with_lines) == 7
    assert sum(p.startswith("gravity/") for p in with_lines) == 3
    assert sum(p.startswith("bars/process_message/") for p in with_lines) == 3


US_CORE = {
    # referral: (segments, missing items) at 2026-12-03, each file read alone
    "ServiceRequest/servicerequest-dnr-example1": (
        ["missing-detail"],
        ["demographics", "insurance", "records"],
    ),
    "ServiceRequest/bmp": (["missing-detail"], ["demographics", "insurance", "records"]),
    "ServiceRequest/cbc": (["missing-detail"], ["demographics", "insurance", "records"]),
    # occurrenceDateTime 2024-10-13: long before as_of + 14 days
    "ServiceRequest/chest-xray": (
        ["time-sensitive", "missing-detail"],
        ["demographics", "insurance", "records"],
    ),
    "ServiceRequest/ekg": (["missing-detail"], ["demographics", "insurance", "records"]),
    # no reasonCode or reasonReference
    "ServiceRequest/foodpantry-referral": (
        ["time-sensitive", "missing-detail"],
        ["demographics", "insurance", "records", "clarification"],
    ),
    "ServiceRequest/rehab": (
        ["time-sensitive", "missing-detail"],
        ["demographics", "insurance", "records"],
    ),
}


def test_us_core_service_requests_one_file_at_a_time(
    capsys: pytest.CaptureFixture[str], realworld: Path
) -> None:
    found: dict[str, JSON] = {}
    for path in sorted((realworld / "us-core").glob("servicerequest-*.json")):
        found.update(referrals(capsys, path))
    assert {k: (e["segments"], items(e)) for k, e in found.items()} == US_CORE
    assert {e["state"] for e in found.values()} == {"open"}
    assert {e["patient"] for e in found.values()} == {"Patient/example"}
    assert {e["source"] for e in found.values()} == {"Practitioner/practitioner-1"}
    # authoredOn 2024-10-13T10:59:38-08:00 is 18:59:38Z: 780 whole days before 2026-12-03.
    assert (found["ServiceRequest/bmp"]["age_days"], found["ServiceRequest/bmp"]["aging_band"]) == (
        780,
        "11+",
    )
    # authoredOn 2025-08-26; its occurrencePeriod has a start only, which is no requested date
    # (DESIGN.md reads occurrencePeriod.end), so it is not time-sensitive (see US_CORE).
    assert found["ServiceRequest/servicerequest-dnr-example1"]["age_days"] == 464


def test_us_core_as_one_directory_finds_the_patient_and_the_coverage(
    capsys: pytest.CaptureFixture[str], realworld: Path
) -> None:
    # patient-example.json (name, birthDate, phone) and coverage-example.json (active since
    # 2020, subscriberId) complete the referrals once the folder is read together.
    found = referrals(capsys, realworld / "us-core")
    assert set(found) == set(US_CORE)
    for key, evaluation in found.items():
        expected = (
            ["records", "clarification"] if key.endswith("foodpantry-referral") else ["records"]
        )
        assert items(evaluation) == expected, key
        assert evaluation["patient"] == "Patient/example"
        assert evaluation["segments"] == US_CORE[key][0]


FHIR_R4_CORE_STATES = {
    "ServiceRequest/ambulation": "closed",
    "ServiceRequest/appendectomy-narrative": "closed",
    "ServiceRequest/colon-biopsy": "closed",
    "ServiceRequest/colonoscopy": "closed",
    "ServiceRequest/di": "open",
    "ServiceRequest/education": "closed",
    "ServiceRequest/ft4": "open",
    "ServiceRequest/example-implant": "closed",
    "ServiceRequest/lipid": "open",
    "ServiceRequest/myringotomy": "open",
    "ServiceRequest/ob": "closed",
    "ServiceRequest/example-pgx": "open",
    "ServiceRequest/physical-therapy": "closed",
    "ServiceRequest/subrequest": "open",
    "ServiceRequest/vent": "closed",
    "ServiceRequest/example": "closed",
    "ServiceRequest/physiotherapy": "closed",
    "ServiceRequest/do-not-turn": "open",
    "ServiceRequest/benchpress": "open",
    "ServiceRequest/og-example1": "open",
}


def test_fhir_r4_core_service_requests_one_file_at_a_time(
    capsys: pytest.CaptureFixture[str], realworld: Path
) -> None:
    found: dict[str, JSON] = {}
    for path in sorted((realworld / "fhir-r4-core").glob("servicerequest*.json")):
        one = referrals(capsys, path)
        assert len(one) == 1, path
        found.update(one)
    assert {k: e["state"] for k, e in found.items()} == FHIR_R4_CORE_STATES
    # priority stat
    assert found["ServiceRequest/do-not-turn"]["primary_segment"] == "time-sensitive"
    # occurrenceTiming is no requested date, and there is no priority: not time-sensitive
    assert found["ServiceRequest/benchpress"]["segments"] == ["missing-detail"]
    # no requester, no reason
    assert "clarification" in items(found["ServiceRequest/benchpress"])
    assert found["ServiceRequest/benchpress"]["source"] is None
    # supportingInfo points at a contained Observation: records are there
    assert items(found["ServiceRequest/lipid"]) == ["demographics", "insurance"]
    # subject by absolute URL, reduced to Type/id
    assert found["ServiceRequest/myringotomy"]["patient"] == "Patient/77662"
    assert found["ServiceRequest/myringotomy"]["source"] == "Practitioner/77272"
    # subject with a display only: no patient key
    assert found["ServiceRequest/appendectomy-narrative"]["patient"] is None


def test_fhir_r4_core_as_one_directory_schedules_myringotomy(
    capsys: pytest.CaptureFixture[str], realworld: Path
) -> None:
    # appointment-example.json is booked and basedOn ServiceRequest/myringotomy.
    found = referrals(capsys, realworld / "fhir-r4-core")
    myringotomy = found["ServiceRequest/myringotomy"]
    assert myringotomy["state"] == "scheduled"
    assert myringotomy["segments"] == []
    assert items(myringotomy) == ["demographics", "insurance", "records"]
    # Patient/example is in the folder, complete: lipid now lacks only insurance.
    assert items(found["ServiceRequest/lipid"]) == ["insurance"]
    assert {k: e["state"] for k, e in found.items() if k.startswith("ServiceRequest/")} == {
        **FHIR_R4_CORE_STATES,
        "ServiceRequest/myringotomy": "scheduled",
    }


def test_gravity_service_requests(capsys: pytest.CaptureFixture[str], realworld: Path) -> None:
    found = referrals(capsys, realworld / "gravity")
    assert {k: e["state"] for k, e in found.items()} == {
        "ServiceRequest/SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample": "open",
        "ServiceRequest/SDOHCC-ServiceRequestSubreferralGardenProgramExample": "closed",
        "ServiceRequest/SDOHCC-ServiceRequestSubreferralSummerFoodProgramExample": "closed",
    }
    assert {e["patient"] for e in found.values()} == {"Patient/pat-53234"}


def test_a_bars_message_resolves_its_patient_through_urn_uuid_full_urls(
    capsys: pytest.CaptureFixture[str], realworld: Path
) -> None:
    # The referral's subject is urn:uuid:9589fb37-...; the entry with that fullUrl is
    # Patient/091529f5-..., which has a name, a birth date and a phone number.
    path = realworld / "bars/process_message/response/ValidationRequest (HTTP Response) .json"
    [(key, evaluation)] = referrals(capsys, path).items()
    assert key == "ServiceRequest/71d2b38e-b81c-4894-a522-6a65265b1d58"
    assert evaluation["patient"] == "Patient/091529f5-345d-4cc7-ac95-678e79f446cc"
    assert evaluation["source"] == "Practitioner/2b2f4bda-2243-4f28-95c7-ae4dbc80977e"
    assert "demographics" not in items(evaluation)
    assert evaluation["state"] == "open"


def test_a_bars_message_without_ids_names_entries_by_full_url(
    capsys: pytest.CaptureFixture[str], realworld: Path
) -> None:
    path = realworld / "bars/process_message/request/ValidationRequest (POST) .json"
    [(key, evaluation)] = referrals(capsys, path).items()
    assert key == "urn:uuid:236bb75d-90ef-461f-b71e-fde7f899802c"
    assert evaluation["patient"] == "urn:uuid:9589fb37-87a2-48d8-968f-b371429208a8"
    # The patient entry was found: it has a name and birth date, only the phone is missing.
    assert evaluation["missing"][0] == {
        "item": "demographics",
        "detail": "urn:uuid:9589fb37-87a2-48d8-968f-b371429208a8 has no phone or SMS number",
        "request_from": "referring-office",
    }
    # meta.lastUpdated 2021-11-26T15:00Z stands in for the missing authoredOn.
    assert evaluation["age_days"] == 1832


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (
            "bars/service_request/PATCH-body.json",
            "ServiceRequest/71d2b38e-b81c-4894-a522-6a65265b1d58 at {path}: "
            "ServiceRequest.status: code not allowed here",
        ),
        (
            "bars/service_request/PUT-body.json",
            "ServiceRequest/71d2b38e-b81c-4894-a522-6a65265b1d58 at {path}: "
            "ServiceRequest.basedOn: Input should be a valid list",
        ),
        (
            "bars/appointment/PATCH-body.json",
            "Appointment/91607239-b002-470a-8709-6b25bd50fdd1 at {path}: Appointment.participant: "
            "required element is missing",
        ),
        (
            "medplum/medplum-task-demo/example-practitioner-role.json",
            "PractitionerRole at {path} entry[0]: PractitionerRole.practitioner: "
            "Input should be a valid dictionary",
        ),
    ],
)
def test_known_invalid_resources_are_reported_with_the_element(
    capsys: pytest.CaptureFixture[str], realworld: Path, relative: str, expected: str
) -> None:
    path = realworld / relative
    code, found, err = segment(capsys, path)
    assert code == 0
    assert found == []
    reports = err.splitlines()
    assert reports[0].startswith(PROG + expected.format(path=path)), reports
    assert reports[0].endswith("; skipped")
    assert reports[-1] == f"{PROG}1 unreadable resource skipped"
