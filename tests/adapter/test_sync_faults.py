"""`sync` against a scripted server (respx, tests/adapter/minifhir.py): what it fetches and
keeps, how it falls back when the server lacks includes, revincludes or history, deletions,
and faults that stop it clearly without the cursor skipping data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import personas as p
from adapter import store
from adapter.errors import TemporaryServerError
from adapter.fhir_client import FhirClient
from adapter.http_policy import RetryPolicy, make_http_client
from adapter.practice_rules import default_rules
from adapter.store_models import StoredResource
from adapter.sync import OVERLAP, SyncSummary, run_sync
from tests.adapter.minifhir import BASE, MiniServer, outcome

AS_OF = datetime(2025, 1, 15, 12, tzinfo=UTC)
# What the three referrals need: patients, the coverage, the record, the requester's role, its
# practitioner and organization. Not the practice's own organization or the payer, which
# nothing the model follows points at, and not the malformed patient (quarantined).
NEEDED = {
    "ServiceRequest/ref-ada-cardio",
    "ServiceRequest/ref-2",
    "ServiceRequest/ref-3",
    "Patient/ada-quill",
    "Patient/pat-2",
    "Coverage/cov-ada",
    "DocumentReference/doc-ada-cardio",
    "PractitionerRole/role-ivy-chen",
    "Practitioner/prac-ivy-chen",
    "Organization/org-northside",
}


def fill(server: MiniServer) -> None:
    for resource in p.ada_packet():
        server.put(resource)
    server.put({**p.ada_quill(), "id": "pat-2"})
    server.put(p.ada_referral(id="ref-2", subject={"reference": "Patient/pat-2"}))
    server.put({**p.ada_quill(), "id": "pat-3", "birthDate": "not a date"})
    server.put(p.ada_referral(id="ref-3", subject={"reference": "Patient/pat-3"}))


def serve(scripted: MiniServer) -> Iterator[MiniServer]:
    fill(scripted)
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.route().mock(side_effect=scripted.handle)
        yield scripted


@pytest.fixture
def server() -> Iterator[MiniServer]:
    yield from serve(MiniServer())


@pytest.fixture
def bare_server() -> Iterator[MiniServer]:
    """No _include, no _revinclude, no history: every fallback."""
    yield from serve(MiniServer(includes=False, revincludes=False, history=False))


def sync_once(db: str, page_size: int = 1) -> SyncSummary:
    engine = store.make_engine(db)
    policy = RetryPolicy(max_attempts=3, sleep=lambda seconds: None)
    with make_http_client() as http:
        client = FhirClient(BASE, http, policy=policy)
        return run_sync(
            client,
            engine,
            default_rules(),
            on_problem=lambda w, m: None,
            as_of=AS_OF,
            page_size=page_size,
        )


def stored(db: str) -> set[str]:
    with Session(store.make_engine(db)) as session:
        return store.stored_keys(session, {k.split("/")[0] for k in NEEDED})


def fail_page(number: int, times: int) -> Any:
    """A fault: the referral search's page `number` answers 503 `times` times."""
    left = [times]

    def fault(request: httpx.Request) -> httpx.Response | None:
        page = request.url.params.get("page", "1")
        if request.url.path.endswith("/ServiceRequest") and page == str(number) and left[0]:
            left[0] -= 1
            return outcome(503, "database is busy")
        return None

    return fault


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store.upgrade(url)
    return url


def test_the_sync_fetches_what_the_referrals_need_and_nothing_more(
    server: MiniServer, db: str
) -> None:
    summary = sync_once(db)
    assert stored(db) == NEEDED
    assert summary.referrals == 3
    assert summary.quarantined == 1
    assert summary.notes == []
    queries = [u for u in server.requests if u.path.endswith("/ServiceRequest")]
    assert queries[0].params.get_list("_include") == [
        "ServiceRequest:subject",
        "ServiceRequest:requester",
    ]
    assert "DocumentReference:related" in queries[0].params.get_list("_revinclude")


def test_a_servers_outcome_entries_in_search_pages_are_not_resources_to_store(
    server: MiniServer, db: str
) -> None:
    server.warn = True
    summary = sync_once(db)
    assert stored(db) == NEEDED
    assert summary.quarantined == 1  # the malformed patient only


def test_without_includes_revincludes_or_history_separate_queries_fetch_the_same(
    bare_server: MiniServer, db: str
) -> None:
    summary = sync_once(db)
    assert stored(db) == NEEDED
    asked = [(u.path.rsplit("/", 1)[-1], sorted(u.params.keys())) for u in bare_server.requests]
    assert ("Patient", ["_id"]) in asked
    assert ("DocumentReference", ["_count", "related"]) in asked
    assert ("Appointment", ["_count", "based-on"]) in asked
    assert any("_revinclude=DocumentReference:related is not offered" in n for n in summary.notes)
    assert all("_include" not in u.params for u in bare_server.requests)


def test_pages_shifted_by_a_concurrent_write_are_read_again_so_nothing_is_skipped(
    server: MiniServer, db: str
) -> None:
    # The scripted server pages by offset without a snapshot, as sekmet does. While the sync
    # reads page 2, Ada's referral (on page 1) is updated and moves to the end: ref-2 slides
    # back onto page 1, which was read already.
    writes = []

    def concurrent_write(request: httpx.Request) -> None:
        page_two = request.url.params.get("page") == "2"
        if request.url.path.endswith("/ServiceRequest") and page_two and not writes:
            writes.append(server.put(p.ada_referral(priority="urgent")))

    server.fault = concurrent_write
    summary = sync_once(db)
    assert writes
    assert stored(db) == NEEDED  # ref-2 included
    assert any("pages shifted under a concurrent write (2 of 3" in n for n in summary.notes)
    evaluation = referral(db, "ServiceRequest/ref-ada-cardio") or {}
    assert evaluation["referral"] == "ServiceRequest/ref-ada-cardio"


def test_a_failing_page_stops_the_sync_and_the_rerun_misses_nothing(
    server: MiniServer, db: str
) -> None:
    server.fault = fail_page(2, times=10)  # more than the retries
    with pytest.raises(TemporaryServerError, match="database is busy"):
        sync_once(db)
    first = server.current["ServiceRequest/ref-ada-cardio"]["meta"]["lastUpdated"]
    engine = store.make_engine(db)
    with Session(engine) as session:
        # Page one was stored with its context and cursor; page two was not, and the cursor
        # stayed behind it.
        assert store.get_resource(session, "Coverage", "cov-ada") is not None
        assert store.get_resource(session, "ServiceRequest", "ref-2") is None
        cursor = store.get_cursor(session, BASE, "ServiceRequest")
        assert cursor is not None
        assert cursor.isoformat().startswith(first[:16])

    server.fault = lambda request: None
    server.requests.clear()
    summary = sync_once(db)
    assert stored(db) == NEEDED
    with Session(engine) as session:
        quarantined = store.list_quarantine(session, BASE)
        assert [(q.resource_type, q.resource_id) for q in quarantined] == [("Patient", "pat-3")]
        assert "Patient.birthDate: not a valid date" in quarantined[0].reason
        assert "not a date" not in quarantined[0].reason  # never the value
        assert store.stored_evaluation(session, "ServiceRequest/ref-2") is not None
    assert summary.referrals == 3
    # The rerun asked again from the stored cursor, less the overlap window.
    rerun = next(u for u in server.requests if u.path.endswith("/ServiceRequest"))
    behind = datetime.fromisoformat(first.replace("Z", "+00:00")) - OVERLAP
    assert rerun.params.get("_lastUpdated") == behind.strftime("ge%Y-%m-%dT%H:%M:%S.000Z")


def test_a_page_that_recovers_within_the_retries_is_just_slower(
    server: MiniServer, db: str
) -> None:
    server.fault = fail_page(2, times=2)
    summary = sync_once(db)
    assert stored(db) == NEEDED
    assert summary.quarantined == 1


def referral(db: str, key: str) -> dict[str, Any] | None:
    with Session(store.make_engine(db)) as session:
        return store.stored_evaluation(session, key)


def test_context_changes_and_deletions_move_exactly_the_referrals_they_touch(
    server: MiniServer, db: str
) -> None:
    sync_once(db, page_size=100)
    ada = "ServiceRequest/ref-ada-cardio"
    assert (referral(db, ada) or {})["state"] == "open"
    # Changes: Ada's appointment is booked; a Coverage arrives for a patient with no referral.
    server.put(p.ada_appointment())
    server.put({**p.ada_coverage(), "id": "cov-x", "beneficiary": {"reference": "Patient/x"}})
    summary = sync_once(db, page_size=100)
    assert (referral(db, ada) or {})["state"] == "scheduled"
    assert summary.moved == 1
    with Session(store.make_engine(db)) as session:
        assert store.get_resource(session, "Appointment", "appt-ada-cardio") is not None
        assert store.get_resource(session, "Coverage", "cov-x") is None  # nobody's referral

    # Deletions: the appointment and a referral.
    server.delete("Appointment/appt-ada-cardio")
    server.delete("ServiceRequest/ref-2")
    summary = sync_once(db, page_size=100)
    assert summary.deleted == 2
    assert (referral(db, ada) or {})["state"] == "open"
    assert referral(db, "ServiceRequest/ref-2") is None
    assert summary.removed == 1
    with Session(store.make_engine(db)) as session:
        assert [c.to_state for c in store.history(session, "ServiceRequest/ref-2")] == [
            "open",
            "removed",
        ]
        tombstone = session.execute(
            select(StoredResource).where(StoredResource.id == "appt-ada-cardio")
        ).scalar_one()
        assert tombstone.deleted
        assert tombstone.version_id == "2"
    # An older copy read again (a page fetched before the delete) does not bring it back.
    with Session(store.make_engine(db)) as session, session.begin():
        booked = {**p.ada_appointment(), "meta": {"versionId": "1"}}
        assert store.put_resources(session, [booked], BASE) == 0
    assert sync_once(db, page_size=100).moved == 0


def test_a_referral_deleted_and_created_again_stays(server: MiniServer, db: str) -> None:
    sync_once(db, page_size=100)
    server.delete("ServiceRequest/ref-2")
    server.put(p.ada_referral(id="ref-2", subject={"reference": "Patient/pat-2"}))
    summary = sync_once(db, page_size=100)
    assert summary.deleted == 0  # the deletion is older than the re-creation
    assert referral(db, "ServiceRequest/ref-2") is not None
    with Session(store.make_engine(db)) as session:
        assert (store.get_resource(session, "ServiceRequest", "ref-2") or {})["meta"][
            "versionId"
        ] == "3"


def test_without_history_changes_arrive_by_search_and_deletions_are_named_as_unseen(
    bare_server: MiniServer, db: str
) -> None:
    sync_once(db, page_size=100)
    bare_server.put(p.ada_appointment())
    summary = sync_once(db, page_size=100)
    assert (referral(db, "ServiceRequest/ref-ada-cardio") or {})["state"] == "scheduled"
    assert "Appointment: the server offers no history, so deletions are not seen" in summary.notes
    assert any(
        u.path.endswith("/Appointment") and u.params.get("_lastUpdated", "").startswith("ge")
        for u in bare_server.requests
    )


class Stop(BaseException):  # not an Exception: main() reports those as internal errors
    """Ends the worker loop in the test."""


def test_the_worker_outlives_a_bad_round(
    server: MiniServer,
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
    server.fault = fail_page(2, times=100)
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
        "--page-size",
        "1",
        "--as-of",
        "2025-01-15T12:00:00Z",
    ]
    with pytest.raises(Stop):
        cli.main(argv)
    out, err = capsys.readouterr()
    assert "sync failed, next try in 30 s: " in err
    assert "database is busy" in err
    events = [orjson.loads(line) for line in out.splitlines()]
    # Each failed round: the pages stored before the failure, then the failure, as JSON lines.
    assert [e["event"] for e in events if e["event"] != "page"] == ["failed", "failed"]
    assert events[0] == {**events[0], "event": "page", "step": "referrals", "matches": 1}
    assert "database is busy" in events[1]["error"]
    server.fault = lambda request: None
    rounds.clear()
    with pytest.raises(Stop):
        cli.main(argv)
    out, _ = capsys.readouterr()
    events = [orjson.loads(line) for line in out.splitlines()]
    summaries = [e for e in events if e["event"] == "summary"]
    assert len(summaries) == 2
    assert summaries[0]["quarantined"] == 1
    assert summaries[0]["referrals"] == 3
    assert summaries[1]["changed"] == 0  # the second round found nothing new
    pages = [e for e in events if e["event"] == "page" and e["step"] == "referrals"]
    assert [e["total"] for e in pages[:3]] == [3, 3, 3]
    assert rounds == [30, 30]


def test_the_command_line_overlap_default_is_the_sync_default() -> None:
    from adapter.cli import DEFAULT_OVERLAP_SECONDS, DEFAULT_PAGE_SIZE
    from adapter.sync import OVERLAP, PAGE_SIZE

    assert OVERLAP.total_seconds() == DEFAULT_OVERLAP_SECONDS
    assert PAGE_SIZE == DEFAULT_PAGE_SIZE


def test_the_progress_line_draws_a_bar_from_the_servers_total() -> None:
    import io

    from adapter.cli import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out)
    page = {"event": "page", "step": "referrals", "type": "ServiceRequest", "total": 4}
    bar.show({**page, "matches": 1, "resources": 5, "fetched": 5, "changed": 5})
    bar.show({**page, "matches": 3, "resources": 9, "fetched": 14, "changed": 12})
    bar.show({"event": "evaluated", "referrals": 4, "moved": 4, "removed": 0})  # not drawn
    bar.end()
    drawn = out.getvalue().split("\r")[1:]
    assert drawn[0].startswith("referral-adapter: referrals ServiceRequest [" + "#" * 6 + ".")
    assert "fetched 5, changed 5" in drawn[0]
    assert "[" + "#" * ProgressBar.WIDTH + "]" in drawn[1]
    assert drawn[1].endswith("fetched 14, changed 12\x1b[K\n")


def test_sync_authenticates_with_smart_backend_services_from_the_command_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from adapter import cli

    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    token_url = "http://auth.test/token"
    server = MiniServer()
    fill(server)
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{BASE}/.well-known/smart-configuration").mock(
            return_value=httpx.Response(200, json={"token_endpoint": token_url})
        )
        token = router.post(token_url).mock(
            return_value=httpx.Response(
                200, json={"access_token": "tok-1", "token_type": "bearer", "expires_in": 300}
            )
        )
        fhir = router.route(url__startswith=BASE).mock(side_effect=server.handle)
        monkeypatch.delenv(cli.TOKEN_VARIABLE, raising=False)
        monkeypatch.setenv("REFERRAL_ADAPTER_SMART_KEY_ID", "kid-1")  # from the environment
        argv = ["sync", "--fhir-base", BASE, "--db", f"sqlite:///{tmp_path / 's.db'}"]
        argv += ["--smart-client-id", "adapter-1", "--smart-key", str(pem), "--json"]
        assert cli.main([*argv, "--as-of", "2025-01-15T12:00:00Z"]) == 0
    assert token.call_count == 1  # one token for the whole sync
    form = dict(httpx.QueryParams(token.calls[0].request.content.decode()))
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/*.rs"
    claims = jwt.decode(
        form["client_assertion"], key.public_key(), algorithms=["ES384"], audience=token_url
    )
    assert claims["iss"] == claims["sub"] == "adapter-1"
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "kid-1"
    assert fhir.calls
    assert all(c.request.headers["Authorization"] == "Bearer tok-1" for c in fhir.calls)
    events = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["referrals"] == 3


@pytest.mark.parametrize(
    ("options", "token", "message"),
    [
        (
            ["--smart-client-id", "a"],
            None,
            "needs --smart-client-id, --smart-key and --smart-key-id",
        ),
        (
            ["--smart-client-id", "a", "--smart-key", "k.pem", "--smart-key-id", "1"],
            "static",
            "use it or SMART options, not both",
        ),
        (
            ["--smart-client-id", "a", "--smart-key", "/nonexistent.pem", "--smart-key-id", "1"],
            None,
            "--smart-key /nonexistent.pem: cannot read",
        ),
    ],
)
def test_incomplete_or_conflicting_authentication_options_are_refused_in_one_line(
    *,
    options: list[str],
    token: str | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapter import cli

    for name in ("CLIENT_ID", "KEY", "KEY_ID"):
        monkeypatch.delenv(f"REFERRAL_ADAPTER_SMART_{name}", raising=False)
    if token:
        monkeypatch.setenv(cli.TOKEN_VARIABLE, token)
    else:
        monkeypatch.delenv(cli.TOKEN_VARIABLE, raising=False)
    argv = ["sync", "--fhir-base", BASE, "--db", f"sqlite:///{tmp_path / 's.db'}", *options]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.splitlines()) == 1
