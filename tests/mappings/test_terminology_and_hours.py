"""The project's CodeSystems as the one source of codes, and business-hour arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.valueset import ValueSet

from adapter.practice_rules import default_rules
from fhir_profiles import CANONICAL_BASE, terminology
from fhir_profiles.terminology import load_terminology
from mappings.business_hours import add_business_hours
from mappings.rules import BusinessHours

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def test_every_codesystem_and_valueset_is_valid_fhir_on_one_canonical_base() -> None:
    files = sorted(PROFILES.glob("*.json"))
    systems = [f for f in files if f.name.startswith("CodeSystem-")]
    value_sets = [f for f in files if f.name.startswith("ValueSet-")]
    assert len(systems) == 10
    # Each CodeSystem has its whole ValueSet; one more ValueSet picks the Task statuses we write.
    assert {f.name.removeprefix("CodeSystem-") for f in systems} | {"task-status.json"} == {
        f.name.removeprefix("ValueSet-") for f in value_sets
    }
    for path in systems:
        cs = CodeSystem.model_validate(json.loads(path.read_text()))
        assert cs.url == f"{CANONICAL_BASE}/CodeSystem/{cs.id}"
        assert cs.count == len(cs.concept or [])
    for path in value_sets:
        vs = ValueSet.model_validate(json.loads(path.read_text()))
        assert vs.url == f"{CANONICAL_BASE}/ValueSet/{vs.id}"
        assert vs.compose is not None
        expected = (
            "http://hl7.org/fhir/task-status"
            if vs.id == "task-status"
            else f"{CANONICAL_BASE}/CodeSystem/{vs.id}"
        )
        assert vs.compose.include[0].system == expected


def test_the_codes_are_the_ones_design_md_names() -> None:
    terms = terminology()
    assert terms.segments == (
        "time-sensitive",
        "patient-active",
        "ready-to-schedule",
        "missing-detail",
        "high-relationship",
    )
    assert [(i.code, i.request_from) for i in terms.missing_items] == [
        ("demographics", "referring-office"),
        ("insurance", "patient"),
        ("records", "referring-office"),
        ("clarification", "referring-office"),
    ]
    assert [(b.code, b.min_days, b.max_days) for b in terms.aging_bands] == [
        ("0-2", 0, 2),
        ("3-5", 3, 5),
        ("6-10", 6, 10),
        ("11+", 11, None),
    ]
    assert terms.states == ("open", "scheduled", "closed")
    assert set(default_rules().segments) == set(terms.segments)


def copy_profiles(tmp_path: Path) -> Path:
    for path in PROFILES.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    return tmp_path


def test_precedence_and_band_limits_are_read_from_the_files(tmp_path: Path) -> None:
    folder = copy_profiles(tmp_path)
    segments = json.loads((folder / "CodeSystem-referral-segment.json").read_text())
    for concept in segments["concept"]:  # swap the first two in precedence
        prop = concept["property"][0]
        if prop["valueInteger"] in (1, 2):
            prop["valueInteger"] = 3 - prop["valueInteger"]
    (folder / "CodeSystem-referral-segment.json").write_text(json.dumps(segments))
    bands = json.loads((folder / "CodeSystem-aging-band.json").read_text())
    bands["concept"][0]["property"][1]["valueInteger"] = 3  # 0-2 now reaches 3 days
    bands["concept"][1]["property"][0]["valueInteger"] = 4
    (folder / "CodeSystem-aging-band.json").write_text(json.dumps(bands))
    terms = load_terminology(folder)
    assert terms.segments[:2] == ("patient-active", "time-sensitive")
    assert terms.band_for(3).code == "0-2"


def test_a_codesystem_off_the_canonical_base_is_refused(tmp_path: Path) -> None:
    folder = copy_profiles(tmp_path)
    states = json.loads((folder / "CodeSystem-referral-state.json").read_text())
    states["url"] = "http://example.org/CodeSystem/referral-state"
    (folder / "CodeSystem-referral-state.json").write_text(json.dumps(states))
    with pytest.raises(ValueError, match="canonical base"):
        load_terminology(folder)


CALENDAR = BusinessHours(
    timezone="UTC", days=("mon", "tue", "wed", "thu", "fri"), start="08:00", end="17:00"
)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        (datetime(2025, 1, 15, 9, 0), 4, datetime(2025, 1, 15, 13, 0)),  # Wednesday
        (datetime(2025, 1, 15, 13, 0), 4, datetime(2025, 1, 15, 17, 0)),  # ends at closing
        (datetime(2025, 1, 15, 14, 0), 4, datetime(2025, 1, 16, 9, 0)),  # spills to Thursday
        (datetime(2025, 1, 15, 6, 0), 1, datetime(2025, 1, 15, 9, 0)),  # before opening
        (datetime(2025, 1, 15, 20, 0), 1, datetime(2025, 1, 16, 9, 0)),  # after closing
        (datetime(2025, 1, 17, 16, 0), 2, datetime(2025, 1, 20, 9, 0)),  # Friday -> Monday
        (datetime(2025, 1, 18, 10, 0), 1, datetime(2025, 1, 20, 9, 0)),  # Saturday
        (datetime(2025, 1, 15, 9, 0), 18, datetime(2025, 1, 17, 9, 0)),  # two whole days
    ],
)
def test_business_hours_skip_nights_and_weekends(
    start: datetime, hours: int, due: datetime
) -> None:
    assert add_business_hours(start.replace(tzinfo=UTC), hours, CALENDAR) == due.replace(tzinfo=UTC)


def test_business_hours_follow_the_practice_time_zone_across_dst() -> None:
    new_york = BusinessHours(
        timezone="America/New_York",
        days=("mon", "tue", "wed", "thu", "fri"),
        start="09:00",
        end="17:00",
    )  # type: ignore[arg-type]
    # Friday 2025-03-07 16:00 EST (21:00Z) + 2 h: 1 h Friday, then Monday 2025-03-10 after the
    # switch to EDT: 10:00 EDT = 14:00Z.
    due = add_business_hours(datetime(2025, 3, 7, 21, 0, tzinfo=UTC), 2, new_york)
    assert due == datetime(2025, 3, 10, 14, 0, tzinfo=UTC)
