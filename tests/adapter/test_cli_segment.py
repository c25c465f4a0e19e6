"""`referral-adapter segment` end to end: the input forms, the output contract, options, bad input.

Most tests call `adapter.cli.main` in-process and read what it printed; one runs the installed
console script to prove the entry point works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter import personas as p
from adapter.cli import main
from fhir_profiles import terminology
from tests.conftest import CONTRACT_KEYS

JSON = dict[str, Any]
AS_OF = "2025-01-15T12:00:00Z"  # personas.PERSONA_AS_OF
PROG = "referral-adapter: "
# Distinctive made-up values put into wrong-typed fields; no report may repeat them.
SECRET_NAME = "Quimbly Zanzibarovich"
SECRET_WORD = "Zanzibarovich"


# --- helpers ----------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """`main` with these arguments: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def lines(out: str) -> list[JSON]:
    return [orjson.loads(line) for line in out.splitlines()]


def segment(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> list[JSON]:
    """The JSON lines of a successful `segment` run at AS_OF (unless extra says otherwise)."""
    args = ["segment", "--input", str(path)]
    if "--as-of" not in extra:
        args += ["--as-of", AS_OF]
    code, out, err = run(capsys, *args, *extra)
    assert code == 0, err
    assert "Traceback" not in err
    return lines(out)


def key(resource: JSON) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def write_json(path: Path, data: Any) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def write_ndjson(path: Path, resources: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def write_bulk(directory: Path, resources: list[JSON]) -> Path:
    """The Bulk Data layout `synth` writes: one `<Type>.ndjson` per resource type."""
    directory.mkdir()
    by_type: dict[str, list[JSON]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    for rtype, items in by_type.items():
        write_ndjson(directory / f"{rtype}.ndjson", items)
    return directory


def collection(resources: list[Any]) -> JSON:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def searchset(resources: list[JSON]) -> JSON:
    entries = [
        {
            "fullUrl": f"https://ehr.example.org/fhir/{key(r)}",
            "resource": r,
            "search": {"mode": "match" if r["resourceType"] == "ServiceRequest" else "include"},
        }
        for r in resources
    ]
    return {"resourceType": "Bundle", "type": "searchset", "total": 4, "entry": entries}


def urn_for(resource_key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, resource_key)}"


def with_urn_references(node: Any, urns: dict[str, str]) -> Any:
    """A copy of `node` whose literal references to the given keys are urn:uuid references."""
    if isinstance(node, dict):
        return {
            k: urns.get(v, v)
            if k == "reference" and isinstance(v, str)
            else with_urn_references(v, urns)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [with_urn_references(v, urns) for v in node]
    return node


def transaction(resources: list[JSON], *, keep_ids: bool = True) -> JSON:
    """A transaction Bundle: urn:uuid fullUrls, every reference between entries by urn:uuid."""
    urns = {key(r): urn_for(key(r)) for r in resources}
    entries = []
    for resource in resources:
        body = with_urn_references(resource, urns)
        if not keep_ids:
            del body["id"]
        entries.append(
            {
                "fullUrl": urns[key(resource)],
                "resource": body,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def practice_month() -> list[JSON]:
    """Ada's complete packet and three more referrals of hers, in every state:

    ref-ada-cardio  open, ready to schedule; Ada asked about it yesterday (patient-active)
    ref-ada-gastro  open, urgent, from Dr Omar Lind (a role without organization); no reason,
                    no records
    ref-ada-endo    scheduled (a booked appointment)
    ref-ada-ortho   closed (completed)
    Northside sent three of them within 90 days: high-relationship.
    """
    early = "2025-01-03T08:00:00Z"
    gastro = p.service_request(
        "ref-ada-gastro",
        p.ADA,
        requester="PractitionerRole/role-omar-lind",
        service=1,
        reason=None,
        authored=early,
        updated=early,
        priority="urgent",
    )
    endo = p.service_request(
        "ref-ada-endo",
        p.ADA,
        requester="PractitionerRole/role-ivy-chen",
        service=3,
        reason=0,
        authored="2025-01-13T08:00:00Z",
        updated="2025-01-13T08:00:00Z",
        supporting_info=["DocumentReference/doc-ada-cardio"],
    )
    ortho = p.service_request(
        "ref-ada-ortho",
        p.ADA,
        requester="PractitionerRole/role-ivy-chen",
        service=2,
        reason=0,
        authored=early,
        updated=early,
        status="completed",
    )
    booked = p.appointment(
        "appt-ada-endo",
        p.ADA,
        "ref-ada-endo",
        status="booked",
        start=int(datetime(2025, 1, 21, 9, 0, tzinfo=UTC).timestamp()),
        updated="2025-01-14T08:00:00Z",
    )
    return [
        *p.ada_packet(),
        p.dr_omar_lind(),
        p.dr_omar_lind_role(),
        gastro,
        endo,
        ortho,
        booked,
        p.ada_message("2025-01-14T10:00:00Z"),
    ]


def assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert err.startswith(PROG), err
    assert "Traceback" not in err


# --- the input forms --------------------------------------------------------------------------


def test_the_month_evaluates_as_documented(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    found = segment(capsys, write_json(tmp_path / "month.json", collection(practice_month())))
    summary = [(e["referral"], e["state"], e["segments"]) for e in found]
    assert summary == [
        (
            "ServiceRequest/ref-ada-cardio",
            "open",
            ["patient-active", "ready-to-schedule", "high-relationship"],
        ),
        ("ServiceRequest/ref-ada-gastro", "open", ["time-sensitive", "missing-detail"]),
        ("ServiceRequest/ref-ada-endo", "scheduled", []),
        ("ServiceRequest/ref-ada-ortho", "closed", []),
    ]
    gastro = found[1]
    assert [m["item"] for m in gastro["missing"]] == ["records", "clarification"]
    assert gastro["source"] == "PractitionerRole/role-omar-lind"
    assert found[0]["source"] == "Organization/org-northside"
    assert {e["patient"] for e in found} == {"Patient/ada-quill"}


@pytest.mark.parametrize("form", ["searchset", "transaction", "ndjson", "bulk-directory"])
def test_every_input_form_gives_the_same_evaluations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, form: str
) -> None:
    resources = practice_month()
    reference = segment(capsys, write_json(tmp_path / "collection.json", collection(resources)))
    assert len(reference) == 4
    if form == "searchset":
        path = write_json(tmp_path / "searchset.json", searchset(resources))
    elif form == "transaction":
        path = write_json(tmp_path / "transaction.json", transaction(resources))
    elif form == "ndjson":
        path = write_ndjson(tmp_path / "month.ndjson", resources)
    else:
        path = write_bulk(tmp_path / "export", resources)
    assert segment(capsys, path) == reference


def test_a_transaction_bundle_resolves_urn_uuid_references_between_entries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = transaction(p.ada_packet())
    referral = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert referral["subject"] == {"reference": urn_for("Patient/ada-quill")}
    [found] = segment(capsys, write_json(tmp_path / "tx.json", bundle))
    assert found["patient"] == "Patient/ada-quill"
    assert found["source"] == "Organization/org-northside"
    assert found["missing"] == []
    assert found["segments"] == ["ready-to-schedule"]


def test_transaction_entries_without_ids_are_known_by_their_full_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_json(tmp_path / "tx.json", transaction(p.ada_packet(), keep_ids=False))
    [found] = segment(capsys, path)
    assert found["referral"] == urn_for("ServiceRequest/ref-ada-cardio")
    assert found["patient"] == urn_for("Patient/ada-quill")
    assert found["source"] == urn_for("Organization/org-northside")
    assert found["missing"] == []
    assert found["segments"] == ["ready-to-schedule"]


def test_a_single_resource_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    [found] = segment(capsys, write_json(tmp_path / "referral.json", p.ada_referral()))
    assert found["referral"] == "ServiceRequest/ref-ada-cardio"
    assert found["patient"] == "Patient/ada-quill"
    assert found["state"] == "open"
    assert [m["item"] for m in found["missing"]] == ["demographics", "insurance"]
    assert found["missing"][0]["detail"] == "the subject Patient ada-quill is not in the input"


def test_a_bundle_nested_in_a_bundle_entry_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    packet = p.ada_packet()
    inner = collection(packet[5:])  # the patient, coverage, referral and record
    outer = collection([*packet[:5], inner])
    assert outer["entry"][-1]["resource"]["resourceType"] == "Bundle"
    nested = segment(capsys, write_json(tmp_path / "nested.json", outer))
    flat = segment(capsys, write_json(tmp_path / "flat.json", collection(packet)))
    assert nested == flat
    assert nested[0]["segments"] == ["ready-to-schedule"]


def test_a_bundle_as_an_ndjson_line_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    packet = p.ada_packet()
    path = write_ndjson(tmp_path / "mixed.ndjson", [*packet[:5], collection(packet[5:])])
    [found] = segment(capsys, path)
    assert found["segments"] == ["ready-to-schedule"]


# --- the output contract ----------------------------------------------------------------------


def test_each_line_is_one_json_object_with_exactly_the_contract_keys_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys,
        "segment",
        "--input",
        write_json(tmp_path / "month.json", collection(practice_month())),
        "--as-of",
        AS_OF,
    )
    assert code == 0
    assert err == ""
    assert out.endswith("\n")
    raw_lines = out.split("\n")[:-1]
    assert len(raw_lines) == 4
    precedence = terminology().segments
    for raw in raw_lines:
        evaluation = orjson.loads(raw)
        assert isinstance(evaluation, dict)
        assert list(evaluation) == CONTRACT_KEYS
        segments = evaluation["segments"]
        assert segments == sorted(segments, key=precedence.index)
        if evaluation["state"] == "open":
            assert evaluation["primary_segment"] == segments[0]
            assert sum(s in ("ready-to-schedule", "missing-detail") for s in segments) == 1
            assert evaluation["next_action"]["segment"] == segments[0]
        else:
            assert segments == []
            assert evaluation["primary_segment"] is None
            assert evaluation["next_action"] is None
        for reason in evaluation["reasons"]:
            assert reason["because"]
            assert reason["expression"]


def test_the_documented_fields_of_a_ready_referral(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    [found] = segment(capsys, write_json(tmp_path / "b.json", collection(p.ada_packet())))
    assert found["referral"] == "ServiceRequest/ref-ada-cardio"
    assert (found["age_days"], found["aging_band"]) == (5, "3-5")
    action = found["next_action"]
    assert action["segment"] == "ready-to-schedule"
    assert action["owner_role"] == "scheduler"
    assert action["backup_owner_role"] == "referral-coordinator"
    assert action["follow_up_business_hours"] == 8
    # Authored Friday 2025-01-10 09:30Z: 7.5 business hours that day, 0.5 on Monday.
    assert action["due"] == "2025-01-13T08:30:00Z"
    assert action["overdue"] is True
    assert [r["segment"] for r in found["reasons"]] == ["ready-to-schedule"]


# --- --as-of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "age_days"),
    [
        # Ada's referral was authored 2025-01-10T09:30Z; it turns 5 days old at 2025-01-15T09:30Z.
        ("2025-01-15", 4),  # midnight UTC, not the end of the day
        ("2025-01-16", 5),
        ("2025-01-15T09:30:00Z", 5),
        ("2025-01-15T09:29:59Z", 4),
        ("2025-01-15T09:30:00+00:00", 5),
        ("2025-01-15T04:30:00-05:00", 5),  # 09:30Z
        ("2025-01-15T04:30:00", 4),  # no offset: UTC, so 04:30Z
        ("2025-01-15T11:29:00+02:00", 4),  # 09:29Z
        ("2025-01-15T11:29:00", 5),  # 11:29Z
    ],
)
def test_as_of_dates_are_midnight_utc_and_offsets_are_converted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, as_of: str, age_days: int
) -> None:
    path = write_json(tmp_path / "b.json", collection(p.ada_packet()))
    [found] = segment(capsys, path, "--as-of", as_of)
    assert found["age_days"] == age_days


def test_as_of_does_not_depend_on_the_local_time_zone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(tmp_path / "b.json", collection(p.ada_packet()))
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        [date_only] = segment(capsys, path, "--as-of", "2025-01-15")
        [naive] = segment(capsys, path, "--as-of", "2025-01-15T04:30:00")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert date_only["age_days"] == 4
    assert naive["age_days"] == 4


@pytest.mark.parametrize("as_of", ["tomorrow", "2025-13-01", "2025-02-30", "", "15/01/2025"])
def test_a_bad_as_of_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, as_of: str
) -> None:
    path = write_json(tmp_path / "b.json", collection(p.ada_packet()))
    code, out, err = run(capsys, "segment", "--input", path, "--as-of", as_of)
    assert_one_line_error(code, out, err)
    assert "--as-of" in err


# --- --rules ----------------------------------------------------------------------------------


def test_a_practice_rules_file_changes_the_evaluation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_json(tmp_path / "b.json", collection(p.ada_packet()))
    rules = tmp_path / "practice.yaml"
    rules.write_text(
        "time_sensitive:\n"
        "  service_codes:\n"
        "    - {system: 'http://snomed.info/sct', code: '183519002'}  # cardiology\n"
        "high_relationship:\n"
        "  sources: ['http://hl7.org/fhir/sid/us-npi|9910000001']  # Northside's NPI\n"
        "segments:\n"
        "  time-sensitive:\n"
        "    owner_role: cardiology-triage-nurse\n",
        encoding="utf-8",
    )
    [before] = segment(capsys, path)
    [after] = segment(capsys, path, "--rules", str(rules))
    assert before["segments"] == ["ready-to-schedule"]
    assert after["segments"] == ["time-sensitive", "ready-to-schedule", "high-relationship"]
    assert after["primary_segment"] == "time-sensitive"
    assert after["next_action"]["owner_role"] == "cardiology-triage-nurse"
    # Only the key the file names changed; the rest of the standard is the default.
    assert after["next_action"]["backup_owner_role"] == "practice-manager"
    assert after["next_action"]["follow_up_business_hours"] == 4


def test_a_rules_list_replaces_the_default_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    packet = [r for r in p.ada_packet() if r["resourceType"] != "ServiceRequest"]
    path = write_json(tmp_path / "b.json", collection([*packet, p.ada_referral(priority="urgent")]))
    rules = tmp_path / "practice.yaml"
    rules.write_text("time_sensitive:\n  priorities: [stat]\n", encoding="utf-8")
    [default] = segment(capsys, path)
    [practice] = segment(capsys, path, "--rules", str(rules))
    assert default["segments"][0] == "time-sensitive"
    assert "time-sensitive" not in practice["segments"]


def test_the_referral_category_filter(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_json(tmp_path / "b.json", collection(p.ada_packet()))
    other = tmp_path / "other.yaml"
    other.write_text("referrals:\n  categories: [{code: '108252007'}]\n", encoding="utf-8")
    referral = tmp_path / "referral.yaml"
    referral.write_text(
        "referrals:\n  categories: [{system: 'http://snomed.info/sct', code: '3457005'}]\n",
        encoding="utf-8",
    )
    assert segment(capsys, path, "--rules", str(other)) == []
    assert len(segment(capsys, path, "--rules", str(referral))) == 1


# --- --summary --------------------------------------------------------------------------------


def parse_summary(text: str) -> tuple[list[str], dict[str, dict[str, int]], list[str]]:
    """(columns, {row: {column: count}}, the lines after the table)."""
    table = text.splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("segment "))
    columns = table[start].split()[1:]
    rows: dict[str, dict[str, int]] = {}
    end = start + 1
    for end in range(start + 1, len(table)):
        line = table[end]
        if not line.strip():
            break
        if set(line) == {"-"}:
            continue
        name, *cells = line.split()
        assert len(cells) == len(columns), line
        rows[name] = dict(zip(columns, map(int, cells), strict=True))
    return columns, rows, table[end:]


def test_summary_of_synth_output_adds_up_to_the_json_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "demo-data"
    code, _, err = run(
        capsys, "synth", "--referrals", "80", "--seed", "7", "--out", data, "--as-of", "2025-03-01"
    )
    assert code == 0, err
    evaluations = segment(capsys, data, "--as-of", "2025-03-01")
    code, text, err = run(capsys, "segment", "--input", data, "--as-of", "2025-03-01", "--summary")
    assert code == 0
    assert "Traceback" not in err

    terms = terminology()
    bands = [b.code for b in terms.aging_bands]
    assert bands == ["0-2", "3-5", "6-10", "11+"]
    columns, rows, rest = parse_summary(text)
    assert columns == [*bands, "total", "overdue"]
    assert list(rows) == [*terms.segments, "total"]

    open_ones = [e for e in evaluations if e["state"] == "open"]
    assert len(evaluations) == 80
    assert open_ones
    by_cell = Counter((e["primary_segment"], e["aging_band"]) for e in open_ones)
    for segment_code in terms.segments:
        row = rows[segment_code]
        assert sum(row[b] for b in bands) == row["total"]
        assert row["total"] == sum(e["primary_segment"] == segment_code for e in open_ones)
        for band in bands:
            assert row[band] == by_cell[(segment_code, band)], (segment_code, band)
        overdue = sum(
            e["primary_segment"] == segment_code and e["next_action"]["overdue"] for e in open_ones
        )
        assert row["overdue"] == overdue
    for column in columns:
        assert rows["total"][column] == sum(rows[s][column] for s in terms.segments)
    assert rows["total"]["total"] == len(open_ones)

    footer = "\n".join(rest)
    states = Counter(e["state"] for e in evaluations)
    assert (
        f"Referrals: 80 (open {states['open']}, scheduled {states['scheduled']}, "
        f"closed {states['closed']})"
    ) in footer
    membership = Counter(s for e in open_ones for s in e["segments"])
    for segment_code in terms.segments:
        assert f"{segment_code} {membership[segment_code]}" in footer
    missing = Counter(m["item"] for e in open_ones for m in e["missing"])
    for item in terms.missing_items:
        assert f"{item.code} {missing[item.code]} (ask the" in footer


def test_summary_accounts_for_open_referrals_of_unknown_age(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No authoredOn and no meta.lastUpdated: the age is unknown (null). The table must still
    # add up: the row's cells outside `total` and `overdue` sum to its total.
    packet = [r for r in p.ada_packet() if r["resourceType"] != "ServiceRequest"]
    ageless = p.ada_referral(authoredOn=None, meta=None)
    path = write_json(tmp_path / "b.json", collection([*packet, ageless]))
    [found] = segment(capsys, path)
    assert (found["state"], found["age_days"], found["aging_band"]) == ("open", None, None)
    code, text, _ = run(capsys, "segment", "--input", path, "--as-of", AS_OF, "--summary")
    assert code == 0
    columns, rows, _ = parse_summary(text)
    row = rows["ready-to-schedule"]
    assert row["total"] == 1
    assert sum(row[c] for c in columns if c not in ("total", "overdue")) == row["total"], text


# --- bad input --------------------------------------------------------------------------------


def bad_resources() -> tuple[list[str], dict[str, str]]:
    """NDJSON lines of Ada's packet with bad ones mixed in, and what each bad line must report."""
    good = [orjson.dumps(r).decode() for r in p.ada_packet()]
    wrong_birth = p.ada_quill()
    wrong_birth.update(id="pat-wrong-birth", birthDate=SECRET_NAME)
    wrong_name = p.ada_quill()
    wrong_name.update(id="pat-wrong-name", name=SECRET_NAME)
    numeric_birth = p.ada_quill()
    numeric_birth.update(id="pat-numeric-birth", birthDate=12345)
    wrong_gender = p.ada_quill()
    wrong_gender.update(id="pat-wrong-gender", gender=SECRET_WORD)
    wrong_subject = p.ada_referral(id="ref-wrong-subject", subject=f"Patient/{SECRET_NAME}")
    wrong_phone = p.ada_quill()
    wrong_phone.update(id="pat-wrong-phone", telecom=[{"system": "phone", "value": 5550142}])
    bad = [
        '{"resourceType": "Patient", "id": "cut-off", "name": [{"family": "' + SECRET_WORD,
        orjson.dumps(wrong_birth).decode(),
        orjson.dumps(wrong_name).decode(),
        orjson.dumps(numeric_birth).decode(),
        orjson.dumps(wrong_gender).decode(),
        orjson.dumps(wrong_subject).decode(),
        orjson.dumps(wrong_phone).decode(),
        orjson.dumps({"resourceType": "Frobnicator", "id": "x1", "note": SECRET_NAME}).decode(),
        orjson.dumps({"id": "no-type", "name": [{"family": SECRET_WORD}]}).decode(),
    ]
    # Lines 1-9 are Ada's packet, then the bad ones (line numbers count from 1).
    expected = {
        f":{len(good) + 1}": "not valid JSON",
        f":{len(good) + 2}": "Patient.birthDate",
        f":{len(good) + 3}": "Patient.name",
        f":{len(good) + 4}": "Patient.birthDate",
        f":{len(good) + 5}": "Patient.gender",
        f":{len(good) + 6}": "ServiceRequest.subject",
        f":{len(good) + 7}": "Patient.telecom[0].value",
        f":{len(good) + 8}": "unknown resource type",
        f":{len(good) + 9}": "no resourceType",
    }
    return good + bad, expected


def test_bad_ndjson_lines_are_reported_by_file_and_line_and_the_rest_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw, expected = bad_resources()
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join(raw) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "segment", "--input", path, "--as-of", AS_OF)
    assert code == 0
    assert "Traceback" not in err
    [found] = lines(out)
    assert found["referral"] == "ServiceRequest/ref-ada-cardio"
    assert found["segments"] == ["ready-to-schedule"]
    reports = err.splitlines()
    assert all(r.startswith(PROG) for r in reports)
    for where, what in expected.items():
        matching = [r for r in reports if f"{path}{where}:" in r]
        assert len(matching) == 1, (where, reports)
        assert what in matching[0], (what, matching[0])
    assert re.fullmatch(rf"{PROG}\d+ unreadable resources skipped", reports[-1]), reports[-1]


def test_reports_never_repeat_the_values_of_bad_fields(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw, _ = bad_resources()
    ndjson = tmp_path / "mixed.ndjson"
    ndjson.write_text("\n".join(raw) + "\n", encoding="utf-8")
    parsed = [orjson.loads(line) for line in raw if not line.endswith(SECRET_WORD)]
    bundle = write_json(tmp_path / "mixed.json", collection(parsed))
    for path in (ndjson, bundle):
        code, _, err = run(capsys, "segment", "--input", path, "--as-of", AS_OF)
        assert code == 0
        assert "skipped" in err
        assert SECRET_WORD not in err
        assert "Quimbly" not in err
        assert "12345" not in err
        assert "5550142" not in err


def test_a_bad_entry_inside_a_bundle_is_skipped_and_the_rest_evaluated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wrong = p.ada_quill()
    wrong.update(id="pat-wrong", birthDate=SECRET_NAME)
    bundle = collection([*p.ada_packet(), wrong, {"resourceType": "Frobnicator"}, {"id": "x"}])
    path = write_json(tmp_path / "b.json", bundle)
    code, out, err = run(capsys, "segment", "--input", path, "--as-of", AS_OF)
    assert code == 0
    [found] = lines(out)
    assert found["segments"] == ["ready-to-schedule"]
    reports = err.splitlines()
    assert any(
        r.startswith(f"{PROG}Patient/pat-wrong at {path} entry[9]: Patient.birthDate")
        for r in reports
    ), reports
    assert any(f"{path} entry[10]: resourceType: unknown resource type" in r for r in reports)
    assert any(f"{path} entry[11]: (resource): no resourceType" in r for r in reports)
    assert reports[-1] == f"{PROG}3 unreadable resources skipped"
    assert SECRET_WORD not in err


def test_a_nested_bundle_whose_entry_is_not_a_list_is_skipped_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = {"resourceType": "Bundle", "type": "collection", "entry": {"resource": {}}}
    path = write_json(tmp_path / "b.json", collection([*p.ada_packet(), broken]))
    code, out, err = run(capsys, "segment", "--input", path, "--as-of", AS_OF)
    assert code == 0
    assert len(lines(out)) == 1
    assert f"{path} entry[9]" in err
    assert "entry is not a list" in err


def test_unreadable_lines_count_among_the_skipped_in_the_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # DESIGN.md: a resource that is not JSON is one that cannot be read, reported and skipped.
    wrong = p.ada_quill()
    wrong.update(id="pat-wrong", birthDate="not a date")
    raw = [orjson.dumps(r).decode() for r in p.ada_packet()]
    raw += ['{"resourceType": "Patient", "id":', orjson.dumps(wrong).decode()]
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join(raw) + "\n", encoding="utf-8")
    code, text, err = run(capsys, "segment", "--input", path, "--as-of", AS_OF, "--summary")
    assert code == 0
    assert f"{path}:10: not valid JSON" in err
    assert "skipped as unreadable: 2." in text, text


# --- input that cannot be read at all: one line, exit 2 ---------------------------------------


def unreadable_inputs(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    packet = p.ada_packet()
    entry_object = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": {"resource": packet[0]},
    }
    yield "bundle-entry-is-an-object", write_json(tmp_path / "entry-object.json", entry_object)
    entry_string = {"resourceType": "Bundle", "type": "collection", "entry": "Patient/ada-quill"}
    yield "bundle-entry-is-a-string", write_json(tmp_path / "entry-string.json", entry_string)
    yield "top-level-array", write_json(tmp_path / "array.json", packet)
    yield "no-resource-type", write_json(tmp_path / "plain.json", {"id": "x", "name": "y"})
    yield "resource-type-not-a-string", write_json(tmp_path / "rt.json", {"resourceType": 7})
    yield "json-string", write_json(tmp_path / "string.json", "Patient")
    yield "json-null", write_json(tmp_path / "null.json", None)
    yield "json-number", write_json(tmp_path / "number.json", 42)
    not_json = tmp_path / "notes.json"
    not_json.write_text("Referral for Ada Quill, please call back.\n", encoding="utf-8")
    yield "not-json", not_json
    not_json_txt = tmp_path / "notes.txt"
    not_json_txt.write_text("Referral notes\nsecond line\n", encoding="utf-8")
    yield "not-json-txt", not_json_txt
    empty_file = tmp_path / "empty.json"
    empty_file.write_bytes(b"")
    yield "empty-file", empty_file
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    yield "empty-directory", empty_dir
    no_data = tmp_path / "no-data"
    no_data.mkdir()
    (no_data / "README.txt").write_text("nothing here\n", encoding="utf-8")
    (no_data / "sub").mkdir()
    write_ndjson(no_data / "sub" / "Patient.ndjson", [packet[5]])
    yield "directory-without-data-files", no_data
    yield "nonexistent", tmp_path / "does-not-exist.ndjson"
    yield "device", Path(os.devnull)


UNREADABLE = [
    "bundle-entry-is-an-object",
    "bundle-entry-is-a-string",
    "top-level-array",
    "no-resource-type",
    "resource-type-not-a-string",
    "json-string",
    "json-null",
    "json-number",
    "not-json",
    "not-json-txt",
    "empty-file",
    "empty-directory",
    "directory-without-data-files",
    "nonexistent",
    "device",
]


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_input_is_one_line_on_stderr_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    inputs = dict(unreadable_inputs(tmp_path))
    assert list(inputs) == UNREADABLE
    path = inputs[case]
    code, out, err = run(capsys, "segment", "--input", path, "--as-of", AS_OF)
    assert_one_line_error(code, out, err)
    assert str(path) in err
    assert "Ada Quill" not in err


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bundle-entry-is-an-object", "a Bundle whose entry is not a list"),
        ("top-level-array", "not a FHIR resource or Bundle (no resourceType)"),
        ("no-resource-type", "not a FHIR resource or Bundle (no resourceType)"),
        ("not-json", "not valid JSON or NDJSON"),
        ("empty-directory", "the directory holds no .ndjson or .json files"),
        ("nonexistent", "no such file or directory"),
    ],
)
def test_unreadable_input_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, message: str
) -> None:
    path = dict(unreadable_inputs(tmp_path))[case]
    code, _, err = run(capsys, "segment", "--input", path)
    assert code == 2
    assert err == f"{PROG}{path}: {message}\n"


# --- the installed console script -------------------------------------------------------------


def console_script() -> str:
    beside = Path(sys.executable).parent / "referral-adapter"
    if beside.is_file():
        return str(beside)
    found = shutil.which("referral-adapter")
    assert found, "the referral-adapter console script is not installed"
    return found


def test_the_installed_console_script_runs_segment(tmp_path: Path) -> None:
    path = write_json(tmp_path / "b.json", collection(p.ada_packet()))
    script = console_script()
    done = subprocess.run(
        [script, "segment", "--input", str(path), "--as-of", AS_OF],
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    [found] = lines(done.stdout.decode())
    assert list(found) == CONTRACT_KEYS
    assert found["segments"] == ["ready-to-schedule"]

    missing = subprocess.run(
        [script, "segment", "--input", str(tmp_path / "nope")],
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stdout == b""
    assert re.fullmatch(rb"referral-adapter: .*nope: no such file or directory\n", missing.stderr)
