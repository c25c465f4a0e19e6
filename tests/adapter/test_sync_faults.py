"""`sync` against a scripted server (respx): faults stop it clearly without the cursor skipping
data, malformed resources are quarantined, and a rerun completes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from sqlalchemy.orm import Session

from adapter import personas as p
from adapter import store
from adapter.errors import TemporaryServerError
from adapter.fhir_client import FhirClient
from adapter.http_policy import RetryPolicy, make_http_client
from adapter.practice_rules import default_rules
from adapter.sync import SYNC_TYPES, run_sync

BASE = "http://ehr.test/fhir"
JSON = dict[str, Any]


def capability_statement() -> JSON:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "software": {"name": "Scripted test server"},
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": t,
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [{"name": "_lastUpdated", "type": "date"}],
                    }
                    for t in SYNC_TYPES
                ],
                "searchParam": [
                    {"name": "_sort", "type": "string"},
                    {"name": "_count", "type": "number"},
                ],
            }
        ],
    }


def bundle(resources: list[JSON], next_url: str | None = None) -> JSON:
    page: JSON = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        page["link"] = [{"relation": "next", "url": next_url}]
    return page


def stamped(resource: JSON, when: str) -> JSON:
    return {**resource, "meta": {"versionId": "1", "lastUpdated": when}}


class Server:
    """A server whose Patient search has two pages; page two can be made to fail."""

    def __init__(self) -> None:
        self.fail_page_two = 0  # how many more times page two answers 503
        ada = stamped(p.ada_quill(), "2026-12-01T10:00:00Z")
        other = {**stamped(p.ada_quill(), "2026-12-02T10:00:00Z"), "id": "pat-2"}
        broken = {
            **stamped(p.ada_quill(), "2026-12-02T11:00:00Z"),
            "id": "pat-3",
            "birthDate": "not a date",
        }
        self.pages = [[ada], [other, broken]]
        self.others = {
            "Organization": [stamped(p.northside_family_medicine(), "2026-12-01T09:00:00Z")],
            "PractitionerRole": [stamped(p.dr_ivy_chen_role(), "2026-12-01T09:00:00Z")],
            "Coverage": [stamped(p.ada_coverage(), "2026-12-01T09:00:00Z")],
            "ServiceRequest": [stamped(p.ada_referral(), "2026-12-01T09:30:00Z")],
            "DocumentReference": [stamped(p.ada_record(), "2026-12-01T09:30:00Z")],
        }
        self.searches: list[httpx.URL] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json=capability_statement())
        self.searches.append(request.url)
        resource_type = request.url.path.rsplit("/", 1)[-1]
        if resource_type == "Patient":
            if request.url.params.get("page") == "2":
                if self.fail_page_two:
                    self.fail_page_two -= 1
                    return httpx.Response(
                        503,
                        json={
                            "resourceType": "OperationOutcome",
                            "issue": [
                                {
                                    "severity": "error",
                                    "code": "transient",
                                    "diagnostics": "database is busy",
                                }
                            ],
                        },
                    )
                return httpx.Response(200, json=bundle(self.pages[1]))
            return httpx.Response(200, json=bundle(self.pages[0], f"{BASE}/Patient?page=2"))
        return httpx.Response(200, json=bundle(self.others.get(resource_type, [])))


@pytest.fixture
def server() -> Iterator[Server]:
    scripted = Server()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.route().mock(side_effect=scripted.handle)
        yield scripted


def sync_once(db: str) -> Any:
    engine = store.make_engine(db)
    policy = RetryPolicy(max_attempts=3, sleep=lambda seconds: None)
    with make_http_client() as http:
        client = FhirClient(BASE, http, policy=policy)
        return run_sync(
            client,
            engine,
            default_rules(),
            on_problem=lambda w, m: None,
            as_of=datetime(2026, 12, 3, 12, tzinfo=UTC),
        )


def test_a_failing_page_stops_the_sync_and_the_rerun_misses_nothing(
    server: Server, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store.upgrade(db)
    server.fail_page_two = 10  # more than the retries
    with pytest.raises(TemporaryServerError, match="database is busy"):
        sync_once(db)
    engine = store.make_engine(db)
    with Session(engine) as session:
        # Page one was stored with its cursor; page two was not, and the cursor stayed behind it.
        assert store.get_resource(session, "Patient", "ada-quill") is not None
        assert store.get_resource(session, "Patient", "pat-2") is None
        assert store.get_cursor(session, BASE, "Patient") == datetime(2026, 12, 1, 10, tzinfo=UTC)
        assert store.get_cursor(session, BASE, "ServiceRequest") is None  # never reached

    server.fail_page_two = 0
    summary = sync_once(db)
    with Session(engine) as session:
        assert store.get_resource(session, "Patient", "pat-2") is not None
        quarantined = store.list_quarantine(session, BASE)
        assert [(q.resource_type, q.resource_id) for q in quarantined] == [("Patient", "pat-3")]
        assert "Patient.birthDate: not a valid date" in quarantined[0].reason
        assert "not a date" not in quarantined[0].reason  # never the value
        assert store.stored_evaluation(session, "ServiceRequest/ref-ada-cardio") is not None
    assert summary.quarantined == 1
    assert summary.referrals == 1
    # The rerun asked again from the stored cursor, less the overlap window.
    patient_queries = [u for u in server.searches if u.path.endswith("/Patient")]
    assert patient_queries[-2].params.get("_lastUpdated") == "ge2026-12-01T09:55:00.000Z"


def test_a_page_that_recovers_within_the_retries_is_just_slower(
    server: Server, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store.upgrade(db)
    server.fail_page_two = 2
    summary = sync_once(db)
    assert summary.fetched == 8  # an organization, a role, three patients, coverage, referral,
    assert summary.changed == 7  # letter; all stored but the malformed patient
    assert summary.quarantined == 1


class Stop(BaseException):  # not an Exception: main() reports those as internal errors
    """Ends the worker loop in the test."""


def test_the_worker_outlives_a_bad_round(
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapter import cli
    from adapter.http_policy import RetryPolicy as Policy

    rounds: list[float] = []

    def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 2:
            raise Stop

    monkeypatch.setattr(cli.time, "sleep", sleep)
    # The client's own retries must not wait either.
    monkeypatch.setattr("adapter.fhir_client.RetryPolicy", lambda: Policy(sleep=lambda s: None))
    server.fail_page_two = 100
    db = f"sqlite:///{tmp_path / 'worker.db'}"
    argv = [
        "sync",
        "--fhir-base",
        BASE,
        "--db",
        db,
        "--every",
        "30",
        "--json",
        "--as-of",
        "2026-12-03T12:00:00Z",
    ]
    with pytest.raises(Stop):
        cli.main(argv)
    out, err = capsys.readouterr()
    assert "sync failed, next try in 30 s: " in err
    assert "database is busy" in err
    assert out == ""
    server.fail_page_two = 0
    rounds.clear()
    with pytest.raises(Stop):
        cli.main(argv)
    out, _ = capsys.readouterr()
    summaries = [orjson.loads(line) for line in out.splitlines()]
    assert len(summaries) == 2
    assert summaries[0]["quarantined"] == 1
    assert summaries[0]["referrals"] == 1
    assert rounds == [30, 30]


def test_the_command_line_overlap_default_is_the_sync_default() -> None:
    from adapter.cli import DEFAULT_OVERLAP_SECONDS
    from adapter.sync import OVERLAP

    assert OVERLAP.total_seconds() == DEFAULT_OVERLAP_SECONDS
