"""`referral-adapter sync` from the real HAPI FHIR R4 server into the store (SQLite, PostgreSQL).

The server is shared by the session's tests, so comparisons are against everything it holds:
a dump of the server's resources, evaluated by `segment`, must equal what `sync` stored.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import store
from adapter.cli import main
from adapter.fhir_client import FhirClient
from adapter.http_policy import make_http_client
from adapter.store_models import StoredResource
from adapter.sync import SYNC_TYPES
from adapter.synth import synth_to_dir

JSON = dict[str, Any]


@pytest.fixture
def client(hapi_base_url: str) -> Iterator[FhirClient]:
    with make_http_client(timeout=60.0) as http:
        yield FhirClient(hapi_base_url, http)


def dump(client: FhirClient, folder: Path) -> Path:
    """Every resource of the synced types the server holds, as a Bulk Data directory."""
    folder.mkdir()
    for resource_type in SYNC_TYPES:
        lines = [
            orjson.dumps(e["resource"])
            for page in client.search(resource_type, {"_count": "200"})
            for e in page.get("entry", [])
        ]
        (folder / f"{resource_type}.ndjson").write_bytes(b"".join(x + b"\n" for x in lines))
    return folder


def lines_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, JSON]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return {e["referral"]: e for e in map(orjson.loads, out.splitlines())}


def sync(capsys: pytest.CaptureFixture[str], url: str, db: str, as_of: str) -> JSON:
    assert main(["sync", "--fhir-base", url, "--db", db, "--as-of", as_of, "--json"]) == 0
    events = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "summary"
    assert events[-2]["event"] == "evaluated"
    summary: JSON = events[-1]
    return summary


def history_rows(db: str, key: str) -> int:
    engine = store.make_engine(db)
    with Session(engine) as session:
        return len(store.history(session, key))


def test_sync_stores_what_segment_makes_of_the_server_and_follows_changes(
    client: FhirClient,
    hapi_base_url: str,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    export = tmp_path / "export"
    synth_to_dir(30, 21, datetime(2026, 12, 3, tzinfo=UTC), export)
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
    capsys.readouterr()
    # A referral of our own that surely lacks insurance (the run before may have fixed synth's).
    suffix = uuid.uuid4().hex[:8]
    client.update(
        {
            "resourceType": "Patient",
            "id": f"pat-sync-{suffix}",
            "name": [{"family": "Sync", "given": ["Test"]}],
            "birthDate": "1980-02-03",
            "telecom": [{"system": "phone", "value": "555-555-0199"}],
        }
    )
    client.update(
        {
            "resourceType": "ServiceRequest",
            "id": f"sr-sync-{suffix}",
            "status": "active",
            "intent": "order",
            "authoredOn": "2026-12-01T10:00:00Z",
            "code": {"text": "Cardiology consult"},
            "reasonCode": [{"text": "Palpitations"}],
            "subject": {"reference": f"Patient/pat-sync-{suffix}"},
            "requester": {"reference": "Organization/org-northside"},
            "supportingInfo": [{"reference": "DocumentReference/none"}],
        }
    )
    # And one whose patient has no phone or SMS number yet.
    client.update(
        {
            "resourceType": "Patient",
            "id": f"pat-nophone-{suffix}",
            "name": [{"family": "Sync", "given": ["Quiet"]}],
            "birthDate": "1981-04-05",
        }
    )
    client.update(
        {
            "resourceType": "Coverage",
            "id": f"cov-nophone-{suffix}",
            "status": "active",
            "subscriberId": "SYN-NOPHONE",
            "beneficiary": {"reference": f"Patient/pat-nophone-{suffix}"},
            "payor": [{"reference": "Organization/payer-synthetic-mutual"}],
        }
    )
    client.update(
        {
            "resourceType": "ServiceRequest",
            "id": f"sr-nophone-{suffix}",
            "status": "active",
            "intent": "order",
            "authoredOn": "2026-12-01T10:00:00Z",
            "code": {"text": "Cardiology consult"},
            "reasonCode": [{"text": "Palpitations"}],
            "subject": {"reference": f"Patient/pat-nophone-{suffix}"},
            "requester": {"reference": "Organization/org-northside"},
            "supportingInfo": [{"reference": "DocumentReference/none"}],
        }
    )
    db = db_url  # SQLite, then a real PostgreSQL
    first_as_of = "2026-12-03T12:00:00Z"

    summary = sync(capsys, hapi_base_url, db, first_as_of)
    assert summary["fetched"] > 0
    assert summary["quarantined"] == 0
    stored = lines_of(capsys, ["referrals", "--db", db])
    assert summary["referrals"] == len(stored) >= 25
    from_dump = lines_of(
        capsys, ["segment", "--input", str(dump(client, tmp_path / "d1")), "--as-of", first_as_of]
    )
    assert stored == from_dump

    # Nothing changed on the server: a second sync fetches only its overlap and moves nothing.
    again = sync(capsys, hapi_base_url, db, first_as_of)
    assert again["changed"] == 0
    assert again["moved"] == 0

    # Change context on the server, not the referrals themselves (but for one revocation).
    open_ones = [e for e in stored.values() if e["state"] == "open" and suffix not in e["referral"]]
    no_insurance = stored[f"ServiceRequest/sr-sync-{suffix}"]
    assert [m["item"] for m in no_insurance["missing"]] == ["insurance"]
    quiet = next(
        e
        for e in open_ones
        if "patient-active" not in e["segments"] and e is not no_insurance and e["patient"]
    )
    to_book = next(e for e in open_ones if e not in (no_insurance, quiet))
    to_revoke = next(e for e in open_ones if e not in (no_insurance, quiet, to_book))
    changed = {e["referral"] for e in (no_insurance, quiet, to_book, to_revoke)}
    changed.add(f"ServiceRequest/sr-nophone-{suffix}")
    patient_of = {k: e["patient"] for k, e in stored.items()}

    client.create(
        {
            "resourceType": "Coverage",
            "status": "active",
            "subscriberId": "SYN-NEW-1",
            "beneficiary": {"reference": no_insurance["patient"]},
            "payor": [{"reference": "Organization/payer-synthetic-mutual"}],
        }
    )
    client.create(
        {
            "resourceType": "Communication",
            "status": "completed",
            "sent": "2026-12-03T11:00:00Z",
            "basedOn": [{"reference": quiet["referral"]}],
            "subject": {"reference": quiet["patient"]},
            "sender": {"reference": quiet["patient"]},
            "payload": [{"contentString": "Any news on my referral?"}],
        }
    )
    booking = client.create(
        {
            "resourceType": "Appointment",
            "status": "booked",
            "start": "2026-12-10T15:00:00Z",
            "end": "2026-12-10T15:40:00Z",
            "basedOn": [{"reference": to_book["referral"]}],
            "participant": [{"actor": {"reference": to_book["patient"]}, "status": "accepted"}],
        }
    )
    no_phone = stored[f"ServiceRequest/sr-nophone-{suffix}"]
    assert [m["item"] for m in no_phone["missing"]] == ["demographics"]
    corrected = client.read("Patient", f"pat-nophone-{suffix}")
    corrected["telecom"] = [{"system": "sms", "value": "555-555-0198"}]
    client.update(corrected)
    revoked = client.read("ServiceRequest", to_revoke["referral"].split("/")[1])
    revoked["status"] = "revoked"
    client.update(revoked)

    summary = sync(capsys, hapi_base_url, db, first_as_of)
    assert summary["changed"] == 5
    after = lines_of(capsys, ["referrals", "--db", db])
    assert after[no_insurance["referral"]]["missing"] == []
    assert after[no_phone["referral"]]["missing"] == []
    assert "ready-to-schedule" in after[no_phone["referral"]]["segments"]
    assert "patient-active" in after[quiet["referral"]]["segments"]
    assert after[to_book["referral"]]["state"] == "scheduled"
    assert after[to_revoke["referral"]]["state"] == "closed"
    # Only the touched referrals moved (and other open referrals of the same patients, which a
    # new Coverage or an unlinked message may also concern).
    moved = {
        k
        for k in after
        if after[k]["segments"] != stored[k]["segments"] or after[k]["state"] != stored[k]["state"]
    }
    touched_patients = {patient_of[k] for k in changed}
    assert changed <= moved
    assert all(patient_of[k] in touched_patients for k in moved)
    for key in changed:
        assert history_rows(db, key) == 2  # first sight, then this change
    untouched = next(k for k in stored if k not in moved)
    assert history_rows(db, untouched) == 1

    second_dump = dump(client, tmp_path / "d2")
    from_dump = lines_of(capsys, ["segment", "--input", str(second_dump), "--as-of", first_as_of])
    assert after == from_dump

    # `referrals --as-of` evaluates the stored resources afresh, even at an earlier instant.
    earlier = "2026-11-25T00:00:00Z"
    assert lines_of(capsys, ["referrals", "--db", db, "--as-of", earlier]) == lines_of(
        capsys, ["segment", "--input", str(second_dump), "--as-of", earlier]
    )
    assert lines_of(capsys, ["referrals", "--db", db]) == after  # the store is unchanged

    # Deleted on the server: the booking (its referral is open again) and a referral nothing
    # points at (HAPI refuses to delete what other resources refer to).
    gone = f"ServiceRequest/sr-nophone-{suffix}"
    for path in (f"Appointment/{booking.id}", gone):
        httpx.delete(f"{hapi_base_url}/{path}", timeout=30).raise_for_status()
    summary = sync(capsys, hapi_base_url, db, first_as_of)
    assert (summary["deleted"], summary["removed"]) == (2, 1)
    final = lines_of(capsys, ["referrals", "--db", db])
    assert final[to_book["referral"]]["state"] == "open"
    assert gone not in final
    assert history_rows(db, gone) == 3  # first sight, the phone, then removed
    assert final == lines_of(
        capsys, ["segment", "--input", str(dump(client, tmp_path / "d3")), "--as-of", first_as_of]
    )
    # Synced again: the deleted booking's older versions in the history do not bring it back.
    assert sync(capsys, hapi_base_url, db, first_as_of)["changed"] == 0
    assert lines_of(capsys, ["referrals", "--db", db]) == final


def test_a_full_sync_from_sekmet_stores_what_segment_makes_of_the_server(
    sekmet_base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # sekmet keeps no referential integrity, so everything synth writes loads, orphans too.
    export = tmp_path / "export"
    synth_to_dir(20, 41, datetime(2026, 12, 3, tzinfo=UTC), export)
    assert main(["load", "--fhir-base", sekmet_base_url, "--input", str(export)]) == 0
    assert "0 refused by the server" in capsys.readouterr().err
    db = f"sqlite:///{tmp_path / 'sekmet.db'}"
    as_of = "2026-12-03T12:00:00Z"
    summary = sync(capsys, sekmet_base_url, db, as_of)
    assert summary["quarantined"] == 0
    stored = lines_of(capsys, ["referrals", "--db", db])
    # The server is shared with other tests (same synth ids, other seeds): compare with a dump.
    with make_http_client(timeout=60.0) as http:
        folder = dump(FhirClient(sekmet_base_url, http), tmp_path / "dump")
    from_server = lines_of(capsys, ["segment", "--input", str(folder), "--as-of", as_of])
    assert len(stored) >= 20
    assert stored == from_server


def test_a_write_between_two_pages_on_sekmet_does_not_make_the_sync_skip_a_referral(
    sekmet_base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # sekmet pages by offset without a snapshot: a referral updated while the sync reads the
    # pages moves to the end of the `_lastUpdated` order, and the rest shift back by one.
    export = tmp_path / "export"
    synth_to_dir(20, 43, datetime(2026, 12, 3, tzinfo=UTC), export)
    assert main(["load", "--fhir-base", sekmet_base_url, "--input", str(export)]) == 0
    capsys.readouterr()
    db = f"sqlite:///{tmp_path / 'shifted.db'}"
    command = [str(Path(sys.executable).with_name("referral-adapter")), "sync"]
    command += ["--fhir-base", sekmet_base_url, "--db", db, "--json", "--page-size", "2"]
    with make_http_client(timeout=60.0) as http:
        client = FhirClient(sekmet_base_url, http)
        oldest = next(client.search("ServiceRequest", {"_sort": "_lastUpdated", "_count": "1"}))
        first = oldest["entry"][0]["resource"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        events = [orjson.loads(process.stdout.readline())]
        assert events[0]["step"] == "referrals"  # the first page is stored: now write
        client.update({**first, "priority": "asap"})
        events += [orjson.loads(line) for line in process.stdout]
        assert process.wait() == 0
        on_server = {
            (r["id"], r["meta"]["versionId"])
            for page in client.search("ServiceRequest", {"_count": "200"})
            for r in (e["resource"] for e in page.get("entry", []))
        }
    assert any("pages shifted under a concurrent write" in n for n in events[-1]["notes"])
    engine = store.make_engine(db)
    with Session(engine) as session:
        rows = session.execute(
            select(StoredResource.id, StoredResource.version_id).where(
                StoredResource.resource_type == "ServiceRequest"
            )
        ).all()
    assert {tuple(row) for row in rows} == on_server
