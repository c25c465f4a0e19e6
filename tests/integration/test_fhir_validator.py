"""The offline validator: core R4 rules, profiles and our ValueSets loaded from disk."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.integration.java_tools import (
    FHIR_PROFILES,
    VALIDATE_SH,
    VALIDATOR_TESTDATA,
    Validator,
    require_java_toolchain,
)

SEGMENT_VALUESET = "https://fhir.referral-adapter.org/ValueSet/referral-segment"


def errors(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        issue for issue in result["outcome"]["issue"] if issue["severity"] in ("error", "fatal")
    ]


def test_valid_resource_is_accepted(fhir_validator: Validator) -> None:
    result = fhir_validator.validate_file(VALIDATOR_TESTDATA / "patient-valid.json")

    assert result["valid"] is True, result
    assert result["errors"] == 0
    assert result["outcome"]["resourceType"] == "OperationOutcome"


def test_profile_constraint_is_rejected_naming_the_element(fhir_validator: Validator) -> None:
    result = fhir_validator.validate_file(VALIDATOR_TESTDATA / "patient-no-birthdate.json")

    assert result["valid"] is False
    assert any("Patient.birthDate" in issue["diagnostics"] for issue in errors(result)), result


def test_code_outside_our_valueset_is_reported(fhir_validator: Validator) -> None:
    result = fhir_validator.validate_file(VALIDATOR_TESTDATA / "task-bad-segment.json")

    assert result["valid"] is False
    reported = [issue for issue in errors(result) if "Task.businessStatus" in issue["expression"]]
    assert reported, result
    assert any(SEGMENT_VALUESET in issue["diagnostics"] for issue in reported)
    assert any("not-a-segment" in issue["diagnostics"] for issue in reported)


def test_code_inside_our_valueset_is_accepted(fhir_validator: Validator) -> None:
    result = fhir_validator.validate_file(VALIDATOR_TESTDATA / "task-valid-segment.json")

    assert result["valid"] is True, result


def test_core_spec_violation_is_rejected_without_a_profile(fhir_validator: Validator) -> None:
    result = fhir_validator.validate({"resourceType": "Patient", "birthDate": "03/02/1980"})

    assert result["valid"] is False
    assert result["file"] is None
    assert any("Patient.birthDate" in issue["expression"] for issue in errors(result)), result


def test_unknown_external_code_system_is_a_warning_not_an_error(fhir_validator: Validator) -> None:
    """Offline there is no LOINC; the validator must not fail resources for using it."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/1"},
    }

    result = fhir_validator.validate(observation)

    assert result["valid"] is True, result
    assert result["warnings"] >= 1


def test_command_line_exit_status_and_one_line_per_file() -> None:
    require_java_toolchain()
    files = [
        VALIDATOR_TESTDATA / "patient-valid.json",
        VALIDATOR_TESTDATA / "task-bad-segment.json",
    ]
    ig_args = ["--ig", str(FHIR_PROFILES), "--ig", str(VALIDATOR_TESTDATA / "profiles")]

    mixed = subprocess.run(
        [str(VALIDATE_SH), *ig_args, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    usage = subprocess.run(
        [str(VALIDATE_SH), *ig_args], capture_output=True, text=True, timeout=600, check=False
    )

    assert mixed.returncode == 1, mixed.stderr
    lines = [json.loads(line) for line in mixed.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(path) for path in files]
    assert [line["valid"] for line in lines] == [True, False]
    assert usage.returncode == 2
    assert "usage:" in usage.stderr


def test_our_profiles_carry_the_snapshots_their_differentials_make() -> None:
    require_java_toolchain()
    profiles = sorted(FHIR_PROFILES.glob("StructureDefinition-*.json"))
    assert len(profiles) == 6
    checked = subprocess.run(
        [str(VALIDATE_SH), "snapshot", "--ig", str(FHIR_PROFILES), "--check", *map(str, profiles)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # Stale after an edit of a differential: run the same command without --check.
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("up to date: ") == len(profiles)


def test_our_profiles_reject_what_they_constrain(fhir_validator: Validator) -> None:
    task = {
        "resourceType": "Task",
        "meta": {
            "profile": [
                "https://fhir.referral-adapter.org/StructureDefinition/referral-follow-up-task"
            ]
        },
        "identifier": [{"system": "urn:someone-else", "value": "1"}],
        "status": "requested",
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": "ServiceRequest/1"},
        "for": {"reference": "Patient/1"},
        "authoredOn": "2026-12-03T10:00:00Z",
        "lastModified": "2026-12-03T10:00:00Z",
        "owner": {"display": "Team"},
    }
    found = " | ".join(issue["diagnostics"] for issue in errors(fhir_validator.validate(task)))
    assert "Task.businessStatus: minimum required = 1" in found
    assert "rfa-task-1" in found  # our identifier is missing
    assert "task-status" in found  # requested is not a status we write
