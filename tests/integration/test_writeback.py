"""Write-back against the real servers (HAPI FHIR and sekmet-fhir): every resource valid against
our profiles (the offline HAPI validator) and accepted, written exactly once, findable, never
overwriting someone else's change, and following the referral as it moves."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adapter import store
from adapter.cli import main
from adapter.fhir_client import FhirClient
from adapter.http_policy import make_http_client
from adapter.practice_rules import load_rules
from adapter.writeback import run_writeback
from mappings.writeback import NOTE_ID, TASK_PROFILE
from tests.integration.fhir_helpers import raw_client
from tests.integration.java_tools import Validator
from tests.integration.writeback_helpers import (
    AS_OF,
    our_communications,
    our_task,
    outbox_rows,
    own_data_set,
    search_all,
    tasks_for,
)

JSON = dict[str, Any]


@pytest.fixture(params=["hapi", "sekmet"])
def server(request: pytest.FixtureRequest) -> str:
    """The base URL of each real FHIR server in turn."""
    url: str = request.getfixturevalue(f"{request.param}_base_url")
    return url


def json_lines(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[JSON]:
    assert main(argv) == 0, capsys.readouterr().err
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def sync_and_write(
    capsys: pytest.CaptureFixture[str], url: str, db: str, rules: Path, *extra: str
) -> tuple[JSON, JSON]:
    """(the sync's summary, the write-back's summary) of `sync --write-back --json`."""
    events = json_lines(
        capsys,
        [
            "sync",
            "--fhir-base",
            url,
            "--db",
            db,
            "--rules",
            str(rules),
            "--as-of",
            AS_OF,
            "--json",
            "--write-back",
            *extra,
        ],
    )
    summary = next(e for e in events if e["event"] == "summary")
    written = next(e for e in events if e["event"] == "writeback")
    return summary, written


def evaluations(capsys: pytest.CaptureFixture[str], db: str) -> dict[str, JSON]:
    return {e["referral"]: e for e in json_lines(capsys, ["referrals", "--db", db])}


def versions(fhir: httpx.Client, referrals: list[str]) -> dict[str, str]:
    found = {}
    for referral in referrals:
        [task] = tasks_for(fhir, referral)
        found[referral] = task["meta"]["versionId"]
    return found


def test_write_back_is_valid_accepted_once_and_findable(
    server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fhir_validator: Validator,
) -> None:
    prefix, export, rules = own_data_set(tmp_path, 24, 5)
    assert main(["load", "--fhir-base", server, "--input", str(export)]) == 0
    capsys.readouterr()
    db = f"sqlite:///{tmp_path / 'store.db'}"

    summary, written = sync_and_write(capsys, server, db, rules)
    assert summary["planned_tasks"] > 0
    assert summary["planned_messages"] > 0
    assert written["dead"] == 0
    assert written["written"] == summary["planned_tasks"] + summary["planned_messages"]
    stored = evaluations(capsys, db)
    assert all(key.startswith(f"ServiceRequest/{prefix}") for key in stored)
    rows = outbox_rows(db)
    assert {row.status for row in rows} == {"done"}
    with_task = {row.referral_key for row in rows if row.kind == "task"}
    # Every referral first seen open or scheduled has its Task; those first seen closed none.
    assert with_task == {k for k, e in stored.items() if e["state"] != "closed"}

    # Staff actions: a contact attempt (with the office's patient-contacted update), a note
    # for the next person and an owner, then the next write-back.
    referral = sorted(k for k, e in stored.items() if e["state"] == "open")[0]
    base = ["--db", db, "--rules", str(rules), "--referral", referral]
    by = ["--by", "Practitioner/" + prefix + "prac-coord-sam-park", "--by-name", "Sam Park"]
    assert main(["contact", *base, *by, "--channel", "phone", "--outcome", "no-answer"]) == 0
    assert main(["contact", *base, *by, "--channel", "sms", "--outcome", "reached"]) == 0
    assert (
        main(
            [
                "note",
                *base,
                "--contacted",
                "the patient, by SMS",
                "--requested",
                "a good time to call",
                "--said",
                "mornings are best",
                "--still-missing",
                "records",
                "--next-due",
                "2026-12-04T09:00:00Z",
            ]
        )
        == 0
    )
    assert main(["assign", *base, "--owner-name", "Sam Park"]) == 0
    capsys.readouterr()
    again, second = sync_and_write(capsys, server, db, rules)
    assert again["planned_tasks"] == 0  # the actions queued theirs already
    assert second["dead"] == 0
    assert second["written"] == 4  # two contact attempts, the office update, the Task

    with raw_client(server) as fhir:
        # Exactly one Task per referral, found by its focus.
        for key in with_task:
            [task] = tasks_for(fhir, key)
            assert our_task(task) == key
        [task] = tasks_for(fhir, referral)
        assert task["owner"] == {"display": "Sam Park"}
        assert [n["id"] for n in task["note"]] == [NOTE_ID]

        # Every resource written validates against its profile with zero errors, as the
        # server holds it.
        # (The note's Task was superseded by the assignment's before it was written.)
        rows = [row for row in outbox_rows(db) if row.status != "superseded"]
        kinds = Counter(row.kind for row in rows)
        assert kinds["task"] >= len(with_task)
        assert kinds["contact"] == 2
        assert kinds["status"] >= 2
        for row in rows:
            assert row.status == "done"
            assert row.written is not None
            path = "/".join(row.written.split("/")[:2])
            held = fhir.get(f"/{path}").json()
            assert held["meta"]["profile"][0].startswith("https://fhir.referral-adapter.org/")
            result = fhir_validator.validate(held)
            errors = [
                i for i in result["outcome"].get("issue", []) if i["severity"] in ("error", "fatal")
            ]
            assert result["errors"] == 0, (row.key, errors)

        # An office's updates are found by recipient.
        updates: dict[str, set[str]] = {}
        for row in rows:
            if row.kind == "status":
                recipient = row.resource["recipient"][0]["reference"]
                updates.setdefault(recipient, set()).add(row.identifier)
        office, expected = max(updates.items(), key=lambda item: len(item[1]))
        found = {
            identifier["value"]
            for c in search_all(fhir, "/Communication", {"recipient": office})
            for identifier in c.get("identifier", [])
            if identifier["value"].startswith(f"ServiceRequest/{prefix}")
        }
        assert found == expected
        before = versions(fhir, sorted(with_task))

        # Run again: nothing new is planned, nothing written, no Task gets a new version.
        third, third_written = sync_and_write(capsys, server, db, rules)
        assert third["planned_tasks"] == third["planned_messages"] == 0
        assert third_written["written"] == third_written["entries"] == 0
        assert versions(fhir, sorted(with_task)) == before
        # And a fresh store (the outbox lost) finds everything already there, one request per
        # resource; only the Task whose owner and note the first store alone knew changes.
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        _, rewritten = sync_and_write(capsys, server, fresh, rules, "--no-batch")
        assert rewritten["written"] == 1
        assert rewritten["already"] == rewritten["entries"] - 1 > 0
        now = versions(fhir, sorted(with_task))
        assert {k: v for k, v in now.items() if k != referral} == {
            k: v for k, v in before.items() if k != referral
        }
        for row in rows:
            if row.kind != "task":
                assert len(our_communications(fhir, row.identifier)) == 1, row.identifier


def test_no_lost_update_when_someone_else_changes_the_task(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _prefix, export, rules = own_data_set(tmp_path, 6, 8)
    assert main(["load", "--fhir-base", server, "--input", str(export)]) == 0
    capsys.readouterr()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    sync_and_write(capsys, server, db, rules)
    stored = evaluations(capsys, db)
    referral = sorted(k for k, e in stored.items() if e["state"] == "open")[0]

    with raw_client(server) as fhir:
        [task] = tasks_for(fhir, referral)

        def their_change(current: JSON, text: str) -> None:
            # Another user adds a note and raises the priority on the EHR side.
            changed = {
                **current,
                "priority": "urgent",
                "note": [*current.get("note", []), {"text": text}],
            }
            response = fhir.put(f"/Task/{current['id']}", json=changed)
            assert response.status_code == 200, response.text

        their_change(task, "Called by the EHR user")
        # Then a coordinator assigns an owner in the adapter; our record of the Task is stale.
        assert (
            main(
                [
                    "assign",
                    "--db",
                    db,
                    "--rules",
                    str(rules),
                    "--referral",
                    referral,
                    "--owner-name",
                    "Dana Ortiz",
                ]
            )
            == 0
        )
        # And between our re-read and our write someone changes it once more.
        changes = iter(["And again, in between"])

        def between(current: JSON) -> None:
            text = next(changes, None)
            if text is not None:
                their_change(current, text)

        engine = store.make_engine(db)
        with make_http_client(timeout=60.0) as http:
            summary = run_writeback(
                FhirClient(server, http), engine, load_rules(rules), on_read=between
            )
        engine.dispose()
        assert summary.conflicts >= 2
        assert summary.dead == 0
        [after] = tasks_for(fhir, referral)
        assert after["owner"] == {"display": "Dana Ortiz"}  # our change
        assert after["priority"] == "urgent"  # theirs, kept
        notes = [n.get("text") for n in after.get("note", [])]
        assert "Called by the EHR user" in notes
        assert "And again, in between" in notes
        assert int(after["meta"]["versionId"]) == int(task["meta"]["versionId"]) + 3
        assert after["meta"]["profile"][0] == TASK_PROFILE


def without_coverage(export: Path, capsys: pytest.CaptureFixture[str], rules: Path) -> str:
    """Make one ready referral of the data set lack only its insurance: its patient's
    Coverages (and the referral's insurance references) leave the export. Its key."""
    evaluated = json_lines(
        capsys, ["segment", "--input", str(export), "--as-of", AS_OF, "--rules", str(rules)]
    )
    patients = Counter(e["patient"] for e in evaluated)
    chosen = next(
        e
        for e in sorted(evaluated, key=lambda e: e["referral"])
        if e["state"] == "open"
        and not e["missing"]
        and e["source"]
        and patients[e["patient"]] == 1
        and "time-sensitive" not in e["segments"]
    )

    def rewrite(name: str, keep: Any) -> None:
        path = export / name
        kept = [r for r in map(orjson.loads, path.read_bytes().splitlines()) if keep(r)]
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in kept))

    rewrite(
        "Coverage.ndjson",
        lambda c: c.get("beneficiary", {}).get("reference") != chosen["patient"],
    )
    referral_id = chosen["referral"].partition("/")[2]

    def strip_insurance(r: JSON) -> bool:
        if r["id"] == referral_id:
            r.pop("insurance", None)
        return True

    rewrite("ServiceRequest.ndjson", strip_insurance)
    return str(chosen["referral"])


def test_a_coverage_arriving_moves_the_task_and_tells_the_office_once(
    hapi_base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix, export, rules = own_data_set(tmp_path, 12, 12)
    referral = without_coverage(export, capsys, rules)
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
    capsys.readouterr()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    sync_and_write(capsys, hapi_base_url, db, rules)
    stored = evaluations(capsys, db)
    assert [m["item"] for m in stored[referral]["missing"]] == ["insurance"]
    with raw_client(hapi_base_url) as fhir:
        [task] = tasks_for(fhir, referral)
        assert task["status"] == "on-hold"
        assert task["businessStatus"]["coding"][0]["code"] == "awaiting-information"
        response = fhir.post(
            "/Coverage",
            json={
                "resourceType": "Coverage",
                "status": "active",
                "subscriberId": "SYN-ARRIVED-1",
                "beneficiary": {"reference": stored[referral]["patient"]},
                "payor": [{"reference": f"Organization/{prefix}payer-synthetic-mutual"}],
            },
        )
        assert response.status_code == 201, response.text

        _summary, written = sync_and_write(capsys, hapi_base_url, db, rules)
        assert written["dead"] == 0
        [moved] = tasks_for(fhir, referral)
        assert moved["status"] == "in-progress"
        assert moved["businessStatus"]["coding"][0]["code"] != "awaiting-information"
        assert "input" not in moved
        # The Task went on-hold -> in-progress: a move the Task state machine allows.
        history = fhir.get(f"/Task/{moved['id']}/_history").json()
        statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
        assert statuses[-2:] == ["on-hold", "in-progress"]
        [update] = our_communications(fhir, f"{referral}:details-complete")
        assert update["topic"]["coding"][0]["code"] == "details-complete"

        # Once: the next runs send nothing more.
        sync_and_write(capsys, hapi_base_url, db, rules)
        sync_and_write(capsys, hapi_base_url, db, rules)
        assert len(our_communications(fhir, f"{referral}:details-complete")) == 1
        assert len(tasks_for(fhir, referral)) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_write_back_from_a_postgresql_store(
    hapi_base_url: str, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    postgres_db = db_url
    _, export, rules = own_data_set(tmp_path, 8, 14)
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
    capsys.readouterr()
    summary, written = sync_and_write(capsys, hapi_base_url, postgres_db, rules)
    assert written["written"] == summary["planned_tasks"] + summary["planned_messages"] > 0
    assert {row.status for row in outbox_rows(postgres_db)} == {"done"}
    _, again = sync_and_write(capsys, hapi_base_url, postgres_db, rules)
    assert again["entries"] == 0
