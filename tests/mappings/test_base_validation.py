"""FHIR R4 base validation: what DESIGN.md calls unreadable is refused, naming the element only."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapter import personas as p
from mappings.base_validation import preload, validate_resource
from mappings.fhir_tables import build_tables, elements, is_resource_type

SECRET = "Quimbly"  # a made-up name that must never appear in a report


def issues(resource: Any) -> list[str]:
    return [str(i) for i in validate_resource(resource)]


def test_every_persona_is_valid() -> None:
    for resource in p.ada_packet():
        assert issues(resource) == [], resource["id"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"birthDate": 19840712}, "Patient.birthDate: Input should be a valid string"),
        ({"birthDate": "1984-13-01"}, "Patient.birthDate: not a valid date"),
        ({"birthDate": "1983-02-29"}, "Patient.birthDate: not a valid date"),  # not a leap year
        ({"birthDate": "12/07/1984"}, "Patient.birthDate: not a valid date"),
        ({"name": {"family": SECRET}}, "Patient.name: Input should be a valid list"),
        (
            {"name": [{"family": [SECRET]}]},
            "Patient.name[0].family: Input should be a valid string",
        ),
        ({"gender": "unknown-ish"}, "Patient.gender: code not allowed here"),
        ({"active": "true"}, "Patient.active: Input should be a valid boolean"),
        (
            {"telecom": [{"system": "phone", "value": 5550142}]},
            "Patient.telecom[0].value: Input should be a valid string",
        ),
        ({"id": "has spaces"}, "Patient.id: not a valid id"),
        ({"nickname": SECRET}, "Patient.nickname: unknown element"),
        (
            {"deceasedBoolean": False, "deceasedDateTime": "2020-01-01"},
            "Patient: only one of deceased[x] may be present",
        ),
        (
            {"multipleBirthInteger": True},
            "Patient.multipleBirthInteger: Input should be a valid integer",
        ),
        (
            {"meta": {"lastUpdated": "2025-01-02T08:00:00"}},  # an instant needs its offset
            "Patient.meta.lastUpdated: not a valid instant",
        ),
    ],
)
def test_wrong_data_types_are_named_by_element(change: dict[str, Any], expected: str) -> None:
    patient = {**p.ada_quill(), **change}
    found = issues(patient)
    assert len(found) == 1
    assert found[0].startswith(expected), found
    assert SECRET not in found[0]
    assert "5550142" not in found[0]


def test_an_unknown_element_name_that_is_not_name_shaped_is_not_echoed() -> None:
    found = issues({**p.ada_quill(), f"{SECRET} Smith, born 1984": 1})
    assert found == ["Patient.(element): unknown element"]


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ("status", "ServiceRequest: required element status is missing"),
        ("intent", "ServiceRequest: required element intent is missing"),
        ("subject", "ServiceRequest.subject: required element is missing"),
    ],
)
def test_missing_required_elements(drop: str, expected: str) -> None:
    referral = p.ada_referral()
    del referral[drop]
    assert issues(referral) == [expected]


def test_a_required_primitive_may_be_carried_by_its_extension_alone() -> None:
    referral = p.ada_referral()
    del referral["status"]
    referral["_status"] = {
        "extension": [{"url": "http://example.org/reason", "valueString": "withheld"}]
    }
    assert issues(referral) == []


def test_primitive_extensions_and_nulls_in_primitive_lists_are_valid_json_form() -> None:
    patient = p.ada_quill()
    patient["name"] = [
        {
            "family": "Quill",
            "given": ["Ada", None],
            "_given": [None, {"extension": [{"url": "http://x", "valueCode": "IN"}]}],
        }
    ]
    assert issues(patient) == []


def test_nested_datatypes_are_checked_too() -> None:
    referral = p.ada_referral()
    referral["code"] = {"coding": {"system": "http://snomed.info/sct"}}
    assert issues(referral) == ["ServiceRequest.code.coding: Input should be a valid list"]
    referral["code"] = {"coding": [{"system": "has space"}]}
    assert issues(referral) == ["ServiceRequest.code.coding[0].system: not a valid uri"]
    referral["code"] = {"coding": [{"code": "x"}], "extension": [{"valueString": "no url"}]}
    assert issues(referral) == ["ServiceRequest.code.extension[0]: required element url is missing"]


def test_contained_resources_are_validated_as_their_own_type() -> None:
    referral = p.ada_referral(
        contained=[{"resourceType": "Patient", "id": "x", "birthDate": "not a date"}]
    )
    assert issues(referral) == ["ServiceRequest.contained[0]: Patient.birthDate: not a valid date"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "(resource): not a JSON object"),
        ("Patient", "(resource): not a JSON object"),
        ({"id": "x"}, "(resource): no resourceType"),
        ({"resourceType": ""}, "(resource): no resourceType"),
        ({"resourceType": 7}, "(resource): no resourceType"),
        ({"resourceType": SECRET}, "resourceType: unknown resource type"),
        ({"resourceType": "CodeableConcept"}, "resourceType: unknown resource type"),
        ({"resourceType": "MedicinalProduct"}, "resourceType: unknown resource type"),  # not R4B
    ],
)
def test_what_is_no_resource_at_all(value: Any, expected: str) -> None:
    assert issues(value) == [expected]


def test_codes_are_checked_only_for_fully_listed_bindings() -> None:
    assert issues(p.ada_referral(status="pending")) == [
        "ServiceRequest.status: code not allowed here (expected 'draft', 'active', 'on-hold', "
        "'revoked', 'completed', 'entered-in-error' or 'unknown')"
    ]
    # Task.status is listed by the models as four codes and "+": not enforceable.
    task = {"resourceType": "Task", "status": "in-progress", "intent": "order"}
    assert issues(task) == []


def test_shared_and_single_validators_agree() -> None:
    bad = p.ada_referral(priority="soon", subject="Patient/ada-quill")
    single = issues(copy.deepcopy(bad))
    preload(["ServiceRequest", "Patient", "Coverage"])
    assert issues(bad) == single
    assert sorted(single) == [
        "ServiceRequest.priority: code not allowed here (expected 'routine', 'urgent', 'asap' "
        "or 'stat')",
        "ServiceRequest.subject: Input should be a valid dictionary",
    ]


def test_validation_does_not_change_the_resource() -> None:
    referral = p.ada_referral()
    before = copy.deepcopy(referral)
    validate_resource(referral)
    assert referral == before


def test_the_shipped_element_tables_match_the_installed_models() -> None:
    """scripts/generate-fhir-tables writes the file; this fails until it is rerun."""
    from mappings.fhir_tables import _shipped

    assert build_tables() == _shipped()


def test_the_tables_agree_with_fhir_resources_on_a_sample() -> None:
    for name in ("ServiceRequest", "Coverage", "Communication", "Extension", "Timing"):
        model = get_fhir_model_class(name)
        aliases = {
            f.alias
            for f in model.model_fields.values()
            if (f.json_schema_extra or {}).get("element_property")
        }  # type: ignore[union-attr]
        assert {e.name for e in elements(name)} == aliases
    assert is_resource_type("ServiceRequest")
    assert not is_resource_type("Reference")
    assert not is_resource_type("DomainResource")
