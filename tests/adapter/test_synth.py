"""The synthetic month: deterministic, valid FHIR R4, and holding every case the model knows."""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter import synth
from adapter.personas import OFFICES

JSON = dict[str, Any]
AS_OF = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SELF_PAY = "http://terminology.hl7.org/CodeSystem/coverage-selfpay"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@pytest.fixture(scope="module")
def month() -> dict[str, list[JSON]]:
    return synth.generate(300, 7, AS_OF)


def when(value: str) -> datetime:
    """FHIR dateTime as the model reads it: a bare date is midnight UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def target(ref: JSON | None) -> str | None:
    return None if ref is None else str(ref["reference"])


def by_id(data: dict[str, list[JSON]]) -> dict[str, JSON]:
    return {f"{r['resourceType']}/{r['id']}": r for items in data.values() for r in items}


def references(node: Any) -> list[str]:
    """Every literal reference in a resource."""
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for value in node.values() for r in references(value)]
    if isinstance(node, list):
        return [r for value in node for r in references(value)]
    return []


def insurance_causes(sr: JSON, coverages: list[JSON]) -> set[str]:
    """Why no Coverage makes the patient insured at AS_OF (DESIGN.md), one label per reason."""
    usable, causes = [], set()
    for cov in coverages:
        period = cov.get("period", {})
        if cov["status"] != "active":
            causes.add(f"insurance:{cov['status']}")
        elif "end" in period and when(period["end"]) < AS_OF:
            causes.add("insurance:expired")
        elif "start" in period and when(period["start"]) > AS_OF:
            causes.add("insurance:future")
        else:
            usable.append(cov)
    if not coverages:
        return {"insurance:none"}
    if not usable:
        return causes
    self_pay = any(
        c["code"] == "pay" for u in usable for c in u["type"]["coding"] if c["system"] == SELF_PAY
    )
    member_id = any("subscriberId" in u or "identifier" in u for u in usable)
    return set() if self_pay or member_id else {"insurance:no-member-id"}


def missing_causes(data: dict[str, list[JSON]]) -> dict[str, set[str]]:
    """Per referral, each missing detail and its kind, computed independently of mappings/."""
    patients = {p["id"]: p for p in data["Patient"]}
    coverage_of: dict[str, list[JSON]] = defaultdict(list)
    for cov in data["Coverage"]:
        coverage_of[target(cov["beneficiary"]) or ""].append(cov)
    current_docs = {
        target(r)
        for d in data["DocumentReference"]
        if d["status"] == "current"
        for r in d.get("context", {}).get("related", [])
    }
    any_docs = {
        target(r)
        for d in data["DocumentReference"]
        for r in d.get("context", {}).get("related", [])
    }
    out = {}
    for sr in data["ServiceRequest"]:
        causes: set[str] = set()
        subject = target(sr["subject"]) or ""
        pat = patients.get(subject.removeprefix("Patient/"))
        if pat is None:
            causes.add("demographics:absent")
        else:
            if not any(n.get("family") or n.get("given") for n in pat.get("name", [])):
                causes.add("demographics:name")
            if "birthDate" not in pat:
                causes.add("demographics:birthDate")
            if not any(
                t["system"] in ("phone", "sms") and t.get("value") for t in pat.get("telecom", [])
            ):
                causes.add("demographics:phone")
        causes |= insurance_causes(sr, coverage_of[subject])
        key = f"ServiceRequest/{sr['id']}"
        if not sr.get("supportingInfo") and key not in current_docs:
            causes.add("records:not-current" if key in any_docs else "records:none")
        code = sr.get("code", {})
        if not code.get("coding") and not code.get("text"):
            causes.add("clarification:code")
        if not sr.get("reasonCode") and not sr.get("reasonReference"):
            causes.add("clarification:reason")
        if "requester" not in sr:
            causes.add("clarification:requester")
        out[sr["id"]] = causes
    return out


def source_of(sr: JSON, index: dict[str, JSON]) -> str | None:
    """The referral's source as DESIGN.md defines it: a role's organization, else itself."""
    requester = target(sr.get("requester"))
    role = index.get(requester or "")
    if role is not None and role["resourceType"] == "PractitionerRole" and "organization" in role:
        return target(role["organization"])
    return requester


def test_every_resource_validates_and_round_trips_against_r4b() -> None:
    data = synth.generate(60, 3, AS_OF)
    assert sum(map(len, data.values())) > 250
    for resource_type, items in data.items():
        model = get_fhir_model_class(resource_type)
        for resource in items:
            parsed = model.model_validate(resource)
            assert orjson.loads(parsed.model_dump_json()) == resource


def test_same_inputs_give_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = synth.synth_to_dir(200, 11, AS_OF, tmp_path / "a")
    random.seed(99)  # the global generator must not matter
    second = synth.synth_to_dir(200, 11, AS_OF, tmp_path / "b")
    other = synth.synth_to_dir(200, 12, AS_OF, tmp_path / "c")
    assert first == second
    for name in first:
        left = (tmp_path / "a" / f"{name}.ndjson").read_bytes()
        assert left == (tmp_path / "b" / f"{name}.ndjson").read_bytes()
    assert (tmp_path / "a" / "ServiceRequest.ndjson").read_bytes() != (
        tmp_path / "c" / "ServiceRequest.ndjson"
    ).read_bytes()
    assert other["ServiceRequest"] == 200


def test_streaming_and_in_memory_paths_write_the_same_bytes(tmp_path: Path) -> None:
    streamed = synth.synth_to_dir(150, 5, AS_OF, tmp_path / "stream")
    written = synth.write_bulk(synth.generate(150, 5, AS_OF), tmp_path / "memory")
    assert streamed == written
    for name in written:
        path = f"{name}.ndjson"
        assert (tmp_path / "stream" / path).read_bytes() == (
            tmp_path / "memory" / path
        ).read_bytes()


def test_as_of_is_an_instant_whatever_its_offset() -> None:
    eastern = AS_OF.astimezone(timezone(timedelta(hours=-5)))
    assert synth.generate(40, 1, eastern) == synth.generate(40, 1, AS_OF)


def test_naive_as_of_and_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        synth.generate(10, 1, datetime(2025, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="0 or more"):
        synth.iter_resources(-1, 1, AS_OF)


def test_progress_reports_every_thousand_and_the_end() -> None:
    calls: list[tuple[int, int]] = []
    synth.generate(2500, 1, AS_OF, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (2500, 2500)
    assert all(total == 2500 for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) == 3


def test_referrals_are_authored_over_the_30_days_up_to_as_of(month: dict[str, list[JSON]]) -> None:
    authored = [sr["authoredOn"] for sr in month["ServiceRequest"]]
    assert len(authored) == 300
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a) for a in authored)
    ages = [(AS_OF - when(a)).total_seconds() / 86_400 for a in authored]
    assert all(0 <= age <= 30 for age in ages)
    assert min(ages) < 2
    assert max(ages) > 27


OFFSETS = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9, minutes=30))]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    as_of=st.datetimes(
        min_value=datetime(2001, 1, 1),
        max_value=datetime(2090, 1, 1),
        timezones=st.sampled_from(OFFSETS),
    ),
)
def test_any_seed_and_instant_keep_the_month_before_as_of(seed: int, as_of: datetime) -> None:
    data = synth.generate(25, seed, as_of)
    for sr in data["ServiceRequest"]:
        assert as_of - timedelta(days=30) <= when(sr["authoredOn"]) <= as_of
    for items in data.values():
        assert all(when(r["meta"]["lastUpdated"]) <= as_of for r in items)
    for msg in data["Communication"]:
        assert when(msg.get("sent") or msg.get("received") or msg["meta"]["lastUpdated"]) <= as_of


def test_ids_are_readable_unique_and_every_resource_is_stamped(
    month: dict[str, list[JSON]],
) -> None:
    for resource_type, items in month.items():
        ids = [r["id"] for r in items]
        assert len(ids) == len(set(ids)), resource_type
        assert all(FHIR_ID.fullmatch(i) for i in ids)
        assert all(when(r["meta"]["lastUpdated"]) <= AS_OF for r in items)
    assert month["ServiceRequest"][0]["id"] == "sr-000001"
    assert month["Patient"][0]["id"] == "pat-000001"


def test_references_resolve_except_the_absent_patients(month: dict[str, list[JSON]]) -> None:
    index = by_id(month)
    dangling = {
        ref for items in month.values() for r in items for ref in references(r) if ref not in index
    }
    assert dangling, "some referrals must name a Patient the data does not hold"
    assert all(ref.startswith("Patient/") for ref in dangling)
    subjects = {target(sr["subject"]) for sr in month["ServiceRequest"]}
    assert dangling <= subjects
    # The letter may name such a patient, but nobody books, insures or messages them.
    for resource_type in ("Appointment", "Coverage", "Communication", "QuestionnaireResponse"):
        assert not dangling & {ref for r in month[resource_type] for ref in references(r)}


def test_each_kind_of_missing_detail_is_present(month: dict[str, list[JSON]]) -> None:
    seen = Counter(c for causes in missing_causes(month).values() for c in causes)
    expected = {
        "demographics:absent",
        "demographics:name",
        "demographics:birthDate",
        "demographics:phone",
        "insurance:none",
        "insurance:no-member-id",
        "insurance:expired",
        "insurance:cancelled",
        "insurance:future",
        "records:none",
        "records:not-current",
        "clarification:code",
        "clarification:reason",
        "clarification:requester",
    }
    assert expected <= set(seen), expected - set(seen)


def test_about_a_third_of_packets_are_incomplete(month: dict[str, list[JSON]]) -> None:
    causes = missing_causes(month)
    incomplete = sum(1 for c in causes.values() if c) / len(causes)
    assert 0.25 <= incomplete <= 0.42


def test_fine_look_alikes_are_present(month: dict[str, list[JSON]]) -> None:
    coverages = month["Coverage"]
    self_pay = [c for c in coverages if c["type"]["coding"][0]["system"] == SELF_PAY]
    assert self_pay
    assert all("subscriberId" not in c and "identifier" not in c for c in self_pay)
    assert any("identifier" in c and "subscriberId" not in c for c in coverages)
    sms_only = [
        p for p in month["Patient"] if [t["system"] for t in p.get("telecom", [])] == ["sms"]
    ]
    assert sms_only
    assert any(d.get("relatesTo") for d in month["DocumentReference"])
    assert any("coding" not in sr.get("code", {"coding": 1}) for sr in month["ServiceRequest"])


def test_every_lifecycle_status_and_priority_is_present(month: dict[str, list[JSON]]) -> None:
    statuses = Counter(sr["status"] for sr in month["ServiceRequest"])
    assert set(statuses) == {
        "active",
        "completed",
        "revoked",
        "entered-in-error",
        "draft",
        "on-hold",
    }
    assert statuses["active"] > 0.7 * 300
    priorities = Counter(sr.get("priority") for sr in month["ServiceRequest"])
    assert priorities["urgent"] > 0
    assert priorities["routine"] > 0.6 * 300
    assert priorities["asap"] + priorities["stat"] > 0


def test_requested_windows_fall_inside_and_beyond_14_days(month: dict[str, list[JSON]]) -> None:
    horizon = AS_OF + timedelta(days=14)
    ends = [
        when(sr.get("occurrenceDateTime") or sr["occurrencePeriod"]["end"])
        for sr in month["ServiceRequest"]
        if "occurrenceDateTime" in sr or "occurrencePeriod" in sr
    ]
    assert any(e <= horizon for e in ends)
    assert any(e > horizon for e in ends)
    assert any("occurrencePeriod" in sr for sr in month["ServiceRequest"])
    assert any(len(sr.get("occurrenceDateTime", "")) == 10 for sr in month["ServiceRequest"])


def test_patients_call_reply_and_fill_in_forms(month: dict[str, list[JSON]]) -> None:
    recent = AS_OF - timedelta(days=14)
    from_patient = [
        m for m in month["Communication"] if target(m["sender"]) == target(m["subject"])
    ]
    linked = [m for m in from_patient if "basedOn" in m or "about" in m]
    unlinked = [m for m in from_patient if "basedOn" not in m and "about" not in m]

    def sent(m: JSON) -> datetime:
        return when(m.get("sent") or m.get("received") or m["meta"]["lastUpdated"])

    assert any(m["status"] == "completed" and sent(m) >= recent for m in linked)
    assert any(m["status"] == "completed" and sent(m) >= recent for m in unlinked)
    assert any("about" in m for m in linked)
    assert any(sent(m) < recent for m in from_patient)
    assert any(m["status"] == "entered-in-error" for m in from_patient)
    assert any("sent" not in m and "received" in m for m in from_patient)
    from_practice = [m for m in month["Communication"] if m not in from_patient]
    assert from_practice
    assert all(str(target(m["sender"])).startswith("Practitioner/") for m in from_practice)
    forms = [q for q in month["QuestionnaireResponse"] if q["status"] == "completed"]
    assert forms
    assert all(q["author"] == q["subject"] and q["basedOn"] for q in forms)


def test_appointments_are_booked_kept_and_missed(month: dict[str, list[JSON]]) -> None:
    index = by_id(month)
    statuses = Counter(a["status"] for a in month["Appointment"])
    assert {"booked", "fulfilled", "cancelled", "noshow"} <= set(statuses)
    assert all(target(a["basedOn"][0]) in index for a in month["Appointment"])
    booked = [a for a in month["Appointment"] if a["status"] == "booked"]
    assert all(when(a["start"]) > AS_OF for a in booked)


def test_a_few_offices_send_most_referrals_and_the_rest_scatter(
    month: dict[str, list[JSON]],
) -> None:
    index = by_id(month)
    busy = {f"Organization/org-{o.key}" for o in OFFICES}
    sources = Counter(source_of(sr, index) for sr in month["ServiceRequest"] if "requester" in sr)
    share = sum(n for s, n in sources.items() if s in busy) / sum(sources.values())
    assert 0.65 <= share <= 0.85
    scattered = [n for s, n in sources.items() if s not in busy]
    assert len(scattered) > 20
    assert any(n >= 3 for n in scattered)
    assert any(n <= 2 for n in scattered)
    kinds = Counter(
        str(target(sr["requester"])).split("/")[0]
        for sr in month["ServiceRequest"]
        if "requester" in sr
    )
    assert set(kinds) == {"PractitionerRole", "Practitioner", "Organization"}
    roles = month["PractitionerRole"]
    assert any("organization" in r for r in roles)
    assert any("organization" not in r for r in roles)
    lone_roles = {f"PractitionerRole/{r['id']}" for r in roles if "organization" not in r}
    assert any(target(sr.get("requester")) in lone_roles for sr in month["ServiceRequest"])
    offices = [o for o in month["Organization"] if o["type"][0]["coding"][0]["code"] == "prov"]
    assert all(o["identifier"][0]["system"] == "http://hl7.org/fhir/sid/us-npi" for o in offices)


def test_some_patients_have_several_referrals(month: dict[str, list[JSON]]) -> None:
    per_patient = Counter(target(sr["subject"]) for sr in month["ServiceRequest"])
    assert max(per_patient.values()) >= 2
    assert sum(1 for n in per_patient.values() if n == 1) > len(per_patient) / 2


def test_data_is_obviously_synthetic(month: dict[str, list[JSON]]) -> None:
    phones = [
        t["value"]
        for items in month.values()
        for r in items
        for t in r.get("telecom", [])
        if t["system"] in ("phone", "sms") and "value" in t
    ]
    assert phones
    assert all(re.fullmatch(r"555-555-01\d\d", p) for p in phones)
    npis = [
        i["value"]
        for items in month.values()
        for r in items
        for i in r.get("identifier", [])
        if i["system"] == "http://hl7.org/fhir/sid/us-npi"
    ]
    assert npis
    assert all(n.startswith("99") and len(n) == 10 for n in npis)


def test_write_bulk_writes_one_ndjson_file_per_type(tmp_path: Path) -> None:
    data = synth.generate(50, 2, AS_OF)
    out = tmp_path / "nested" / "bulk"
    counts = synth.write_bulk(data, out)
    assert counts == {t: len(items) for t, items in data.items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.ndjson" for t in data)
    for resource_type, items in data.items():
        lines = (out / f"{resource_type}.ndjson").read_bytes().splitlines()
        assert len(lines) == counts[resource_type]
        assert [orjson.loads(line) for line in lines] == items
        assert all(b"\n" not in line and b": " not in line for line in lines)


def test_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(synth.OutDirNotEmptyError, match=r"notes\.txt"):
        synth.synth_to_dir(5, 1, AS_OF, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileExistsError):
        synth.write_bulk({"Patient": []}, tmp_path)
    (tmp_path / "sub").rmdir()
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        synth.write_bulk({}, tmp_path / "file")


def test_rewriting_replaces_an_earlier_export_whole(tmp_path: Path) -> None:
    (tmp_path / "Basic.ndjson").write_text('{"resourceType":"Basic"}\n')
    counts = synth.synth_to_dir(5, 1, AS_OF, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.ndjson" for t in counts)


def test_write_bulk_refuses_misfiled_resources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="listed under Coverage"):
        synth.write_bulk({"Coverage": [{"resourceType": "Patient", "id": "p"}]}, tmp_path)
    with pytest.raises(ValueError, match="not a FHIR resource type"):
        synth.write_bulk({"../evil": [{"resourceType": "../evil"}]}, tmp_path)
