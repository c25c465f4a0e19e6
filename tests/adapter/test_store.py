"""The store on SQLite and on a real PostgreSQL: migrations, version-aware upserts, history,
cursors, quarantine, and two writers at once."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session

from adapter import store
from adapter.store_models import (
    Base,
    Referral,
    ResourceTie,
    StoredResource,
    SyncCursor,
    UTCDateTime,
)
from mappings.model import Reason, ReferralEvaluation

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TABLES = {
    "alembic_version",
    "audit_event",
    "contact_attempt",
    "evaluation_mark",
    "outbox",
    "pending_evaluation",
    "quarantine",
    "referral",
    "referral_note",
    "referral_owner",
    "referral_review",
    "resource",
    "resource_tie",
    "segment_history",
    "sync_cursor",
    "task_record",
    "web_session",
    "writeback_state",
}


def patient(version: str | None, updated: str | None, phone: str = "555-0100") -> dict[str, Any]:
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", updated)) if v}
    return {
        "resourceType": "Patient",
        "id": "ana",
        "meta": meta,
        "telecom": [{"system": "phone", "value": phone}],
    }


def in_tx(engine: Engine, work: Callable[[Session], Any]) -> Any:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return work(session)


def referral(state: str = "open", segments: tuple[str, ...] = ("missing-detail",)) -> Any:
    return ReferralEvaluation(
        referral="ServiceRequest/sr-1",
        patient="Patient/ana",
        state=state,
        segments=segments,
        primary_segment=segments[0] if segments else None,
        missing=(),
        age_days=3,
        aging_band="3-5",
        source="Organization/north-clinic",
        next_action=None,
        reasons=(Reason("no active Coverage", "Coverage.status", item="insurance"),),
    )


def test_migrations_build_the_schema_from_empty_and_rerun_harmlessly(db_url: str) -> None:
    store.upgrade(db_url)
    store.upgrade(db_url)
    engine = store.make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            # The hand-written migration and the models describe the same schema.
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                (store.HEAD,)
            ]
    finally:
        engine.dispose()


def test_a_store_at_the_head_is_not_migrated_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == store.HEAD
    store.upgrade(db_url)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Alembic ran on a store at the head")

    monkeypatch.setattr(command, "upgrade", refuse)
    store.upgrade(db_url)  # the fast path: no Alembic
    with pytest.raises(AssertionError, match="Alembic ran"):
        store.upgrade(db_url, "0001")  # an explicit revision always goes to Alembic


def test_two_upgrades_at_once_both_succeed(db_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            store.upgrade(db_url)
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    engine = store.make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()


def test_an_older_version_never_overwrites_a_newer_one(engine: Engine) -> None:
    put = store.put_resource
    v9 = patient("9", "2026-03-01T10:00:00Z", phone="old")
    v10 = patient("10", "2026-03-01T09:00:00+05:00", phone="new")
    assert in_tx(engine, lambda s: put(s, v9, "hapi"))
    # "10" > "9" numerically, though its lastUpdated is earlier and it sorts first as text.
    assert in_tx(engine, lambda s: put(s, v10, "hapi"))
    assert not in_tx(engine, lambda s: put(s, v9, "hapi"))
    assert not in_tx(engine, lambda s: put(s, dict(v10, gender="x"), "hapi"))  # same version
    stored = in_tx(engine, lambda s: store.get_resource(s, "Patient", "ana"))
    assert stored == v10
    row = in_tx(engine, lambda s: s.execute(select(StoredResource)).scalar_one())
    assert (row.version_id, row.version_num) == ("10", 10)
    assert row.last_updated == datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    assert row.last_updated.tzinfo is UTC


def test_a_page_is_stored_in_one_statement_with_the_same_rules(engine: Engine) -> None:
    v9 = patient("9", "2026-03-01T10:00:00Z", phone="old")
    v10 = patient("10", "2026-03-01T09:00:00Z", phone="new")
    other = dict(patient("1", "2026-03-01T08:00:00Z"), id="bea")
    # In one call, the newest copy of a resource wins whatever the order.
    assert in_tx(engine, lambda s: store.put_resources(s, [v10, other, v9], "hapi")) == 2
    assert in_tx(engine, lambda s: store.get_resource(s, "Patient", "ana")) == v10
    # Again: nothing is newer, so nothing counts; a newer copy of one counts once.
    assert in_tx(engine, lambda s: store.put_resources(s, [v9, v10, other], "hapi")) == 0
    v11 = patient("11", "2026-03-02T09:00:00Z", phone="newest")
    assert in_tx(engine, lambda s: store.put_resources(s, [v11, other], "hapi")) == 1
    assert in_tx(engine, lambda s: store.put_resources(s, [], "hapi")) == 0


def test_without_numeric_versions_lastupdated_decides(engine: Engine) -> None:
    put = store.put_resource
    later = patient("b", "2026-03-01T10:00:00Z", phone="later")
    earlier = patient("a", "2026-03-01T09:00:00Z", phone="earlier")
    assert in_tx(engine, lambda s: put(s, later, "epic"))
    assert not in_tx(engine, lambda s: put(s, earlier, "epic"))
    assert not in_tx(engine, lambda s: put(s, later, "epic"))
    newest = patient("c", "2026-03-01T11:00:00Z", phone="newest")
    assert in_tx(engine, lambda s: put(s, newest, "epic"))
    # No version information at all: a different body replaces, the same body is a no-op.
    bare = patient(None, None, phone="file")
    other = {"resourceType": "Coverage", "id": "c1", "status": "active"}
    assert in_tx(engine, lambda s: put(s, other, "file"))
    assert not in_tx(engine, lambda s: put(s, other, "file"))
    assert in_tx(engine, lambda s: put(s, dict(other, status="cancelled"), "file"))
    assert in_tx(engine, lambda s: put(s, dict(bare, id="bo"), "file"))
    bodies = in_tx(engine, lambda s: list(store.iter_resources(s)))
    assert [(b["resourceType"], b["id"]) for b in bodies] == [
        ("Coverage", "c1"),
        ("Patient", "ana"),
        ("Patient", "bo"),
    ]
    assert bodies[0]["status"] == "cancelled"
    assert bodies[1]["telecom"][0]["value"] == "newest"
    only = in_tx(engine, lambda s: list(store.iter_resources(s, types=["Coverage"])))
    assert [b["id"] for b in only] == ["c1"]


def test_evaluation_upsert_records_history_only_on_change(engine: Engine) -> None:
    save = store.save_evaluation
    first = referral()
    assert in_tx(engine, lambda s: save(s, first, T0))
    # Same state and segments a day later (age moved on): row updated, no history.
    aged = replace(first, age_days=4)
    assert not in_tx(engine, lambda s: save(s, aged, T0 + timedelta(days=1)))
    moved = referral(segments=("patient-active", "ready-to-schedule"))
    assert in_tx(engine, lambda s: save(s, moved, T0 + timedelta(days=2)))
    # A late writer with an older picture changes nothing.
    assert not in_tx(engine, lambda s: save(s, first, T0 + timedelta(hours=1)))
    closed = referral(state="closed", segments=())
    assert in_tx(engine, lambda s: save(s, closed, T0 + timedelta(days=3)))

    with Session(engine) as session:
        row = session.execute(select(Referral)).scalar_one()
        assert (row.state, row.segments, row.primary_segment) == ("closed", [], None)
        assert row.evaluation == closed.to_json()
        assert row.evaluated_at == T0 + timedelta(days=3)
        assert store.stored_evaluation(session, "ServiceRequest/sr-1") == closed.to_json()
        changes = store.history(session, "ServiceRequest/sr-1")
    assert [(c.from_state, c.to_state) for c in changes] == [
        (None, "open"),
        ("open", "open"),
        ("open", "closed"),
    ]
    assert [c.to_segments for c in changes] == [
        ["missing-detail"],
        ["patient-active", "ready-to-schedule"],
        [],
    ]
    assert changes[1].from_segments == ["missing-detail"]
    assert (changes[1].from_primary, changes[1].to_primary) == ("missing-detail", "patient-active")
    assert [c.as_of for c in changes] == [T0, T0 + timedelta(days=2), T0 + timedelta(days=3)]
    assert all(c.as_of.tzinfo is UTC for c in changes)
    assert changes[0].reasons == [
        {"item": "insurance", "because": "no active Coverage", "expression": "Coverage.status"}
    ]


def test_the_cursor_never_moves_backwards(engine: Engine) -> None:
    base = "http://hapi.test/fhir"
    cet = timezone(timedelta(hours=1))
    assert in_tx(engine, lambda s: store.get_cursor(s, base, "ServiceRequest")) is None
    assert in_tx(engine, lambda s: store.advance_cursor(s, base, "ServiceRequest", T0))
    earlier = T0.astimezone(cet) - timedelta(minutes=1)
    assert not in_tx(engine, lambda s: store.advance_cursor(s, base, "ServiceRequest", earlier))
    assert not in_tx(engine, lambda s: store.advance_cursor(s, base, "ServiceRequest", T0))
    later = T0.astimezone(cet) + timedelta(seconds=1)
    assert in_tx(engine, lambda s: store.advance_cursor(s, base, "ServiceRequest", later))
    assert in_tx(engine, lambda s: store.advance_cursor(s, base, "Patient", earlier))
    got = in_tx(engine, lambda s: store.get_cursor(s, base, "ServiceRequest"))
    assert got == T0 + timedelta(seconds=1)
    assert got.tzinfo is UTC
    assert in_tx(engine, lambda s: store.get_cursor(s, base, "Patient")) == earlier
    assert in_tx(engine, lambda s: store.get_cursor(s, "http://other/fhir", "Patient")) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        in_tx(engine, lambda s: store.advance_cursor(s, base, "Patient", datetime(2026, 4, 1)))


@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
)
def test_on_sqlite_a_datetime_is_stored_as_the_dialects_own_text_of_its_utc_time(
    moment: datetime,
) -> None:
    """Existing SQLite stores compare and order these columns as text: the store's own bind
    must write exactly what SQLAlchemy's SQLite DATETIME writes for the naive UTC time."""
    dialect = sqlite_dialect.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = sqlite_dialect.DATETIME().bind_processor(dialect)
    assert ours is not None
    assert theirs is not None
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        ours(moment.replace(tzinfo=None))


def test_quarantine_records_which_why_and_when(engine: Engine) -> None:
    before = datetime.now(UTC)
    why = "Patient.birthDate: not a date"

    def record(session: Session) -> None:
        store.quarantine(session, "http://hapi.test/fhir", "Patient", "p1", why)
        store.quarantine(session, "http://hapi.test/fhir", "Patient", "p1", why)  # re-run
        store.quarantine(session, "bulk/Patient.ndjson:7", None, None, "not JSON")
        store.quarantine(session, "bulk/Patient.ndjson:7", None, None, "no resourceType")

    in_tx(engine, record)
    with Session(engine) as session:
        rows = store.list_quarantine(session)
        assert len(rows) == 3
        hapi = store.list_quarantine(session, source="http://hapi.test/fhir")
        assert [(r.resource_type, r.resource_id, r.reason) for r in hapi] == [
            ("Patient", "p1", why)
        ]
        assert all(r.first_seen.tzinfo is UTC and r.first_seen >= before for r in rows)
        assert {r.reason for r in rows if r.resource_id is None} == {"not JSON", "no resourceType"}
    released = in_tx(
        engine,
        lambda s: store.release_quarantine(s, "http://hapi.test/fhir", "Patient", "p1"),
    )
    assert released
    assert len(in_tx(engine, store.list_quarantine)) == 2


def test_two_writers_at_once_end_with_one_row_each_and_the_max_cursor(db_url: str) -> None:
    store.upgrade(db_url)
    base = "http://hapi.test/fhir"
    ids = [f"p{n:02d}" for n in range(20)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        engine = store.make_engine(db_url)
        try:
            barrier.wait()
            for version in range(1 + offset, 13, 2):  # one writer odd versions, the other even
                stamp = T0 + timedelta(minutes=version)
                with Session(engine) as session, session.begin():
                    # Read, then write, as a sync does (SQLite must not fail the upgrade to a
                    # write lock); then a page: the same resources in the same order in both.
                    store.get_cursor(session, base, "Patient")
                    for rid in ids:
                        body = dict(patient(str(version), stamp.isoformat()), id=rid)
                        store.put_resource(session, body, f"writer-{offset}")
                    evaluation = referral(segments=("missing-detail",) if version < 12 else ())
                    store.save_evaluation(session, evaluation, T0)
                    store.advance_cursor(session, base, "Patient", stamp)
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer, args=(offset,)) for offset in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    engine = store.make_engine(db_url)
    try:
        with Session(engine) as session:
            count = session.scalar(select(func.count()).select_from(StoredResource))
            assert count == len(ids)
            versions = set(session.scalars(select(StoredResource.version_num)))
            assert versions == {12}
            assert session.scalar(select(func.count()).select_from(SyncCursor)) == 1
            assert store.get_cursor(session, base, "Patient") == T0 + timedelta(minutes=12)
            assert session.scalar(select(func.count()).select_from(Referral)) == 1
            changes = store.history(session, "ServiceRequest/sr-1")
            final_segments = session.scalar(select(Referral.segments))
    finally:
        engine.dispose()
    # Created once, then an unbroken chain: no change lost, none recorded twice.
    assert [c.from_state for c in changes][:1] == [None]
    assert sum(c.from_state is None for c in changes) == 1
    for before, after in itertools.pairwise(changes):
        assert after.from_segments == before.to_segments != after.to_segments
    assert changes[-1].to_segments == final_segments


def test_a_resource_stored_again_ties_to_what_it_touches_now(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    store.upgrade(url)
    engine = store.make_engine(url)

    def coverage(version: str, patient: str) -> dict[str, Any]:
        return {
            "resourceType": "Coverage",
            "id": "cov-moving",
            "meta": {"versionId": version, "lastUpdated": f"2026-12-0{version}T10:00:00Z"},
            "status": "active",
            "beneficiary": {"reference": patient},
            "payor": [{"reference": "Organization/payer"}],
        }

    def ties() -> set[str]:
        with Session(engine) as session:
            return set(
                session.scalars(select(ResourceTie.target).where(ResourceTie.id == "cov-moving"))
            )

    # Written the way a first sync writes (collecting what changes touch), and the way any
    # other store write does.
    for version, patient, touched in (
        ("1", "Patient/first", set()),
        ("2", "Patient/second", None),
        ("3", "Patient/third", set()),
    ):
        with Session(engine) as session, session.begin():
            store.put_resources(session, [coverage(version, patient)], "test", touched=touched)
        assert ties() == {"Coverage/cov-moving", patient}
    engine.dispose()
