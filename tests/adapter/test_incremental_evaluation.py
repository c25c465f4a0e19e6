"""Incremental evaluation (adapter.sync.evaluate_store): after changes to the stored resources
and as time moves, re-evaluating only what may have moved leaves every stored referral exactly
as a full evaluation of the same store at the same instant would, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from adapter import store, store_evaluation
from adapter.ingest import ingest
from adapter.practice_rules import default_rules
from adapter.store_models import PendingEvaluation, Referral, ResourceTie, StoredResource
from adapter.sync import evaluate_store, evaluate_stored
from adapter.synth import synth_to_dir
from mappings.rules import merge_rules, parse_rules

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RULES = default_rules()
JSON = dict[str, Any]


def nowhere(where: str, what: str) -> None:
    raise AssertionError((where, what))


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    synth_to_dir(120, 4, T0.replace(hour=0), tmp_path / "data")
    store.upgrade(db_url)
    made = store.make_engine(db_url)
    ingest(tmp_path / "data", made, RULES, T0, nowhere)
    yield made
    made.dispose()


def stored(engine: Engine) -> dict[str, JSON]:
    with Session(engine) as session:
        return {r.key: r.evaluation for r in session.execute(select(Referral)).scalars()}


def evaluated_at(engine: Engine, moment: datetime) -> int:
    with Session(engine) as session:
        return session.execute(
            select(func.count()).select_from(Referral).where(Referral.evaluated_at == moment)
        ).scalar_one()


def assert_as_a_full_evaluation(engine: Engine, as_of: datetime) -> None:
    fresh = {e.referral: e.to_json() for e in evaluate_stored(engine, RULES, as_of, nowhere)}
    assert stored(engine) == fresh


def body(engine: Engine, key: str) -> JSON:
    resource_type, _, resource_id = key.partition("/")
    with Session(engine) as session:
        found = store.get_resource(session, resource_type, resource_id)
    assert found is not None, key
    return copy.deepcopy(found)


def put(engine: Engine, *resources: JSON) -> None:
    """Store new versions, as a sync would."""
    changed = []
    for resource in resources:
        meta = resource.setdefault("meta", {})
        meta["versionId"] = str(int(meta.get("versionId", "1")) + 1)
        meta["lastUpdated"] = datetime.now(UTC).isoformat()
        changed.append(resource)
    with Session(engine) as session, session.begin():
        assert store.put_resources(session, changed, "test") == len(changed)


def referrals_of(engine: Engine) -> list[Referral]:
    with Session(engine) as session:
        return list(session.execute(select(Referral).order_by(Referral.key)).scalars())


def busiest_source(
    engine: Engine, counts: Callable[[Referral], bool] = lambda row: True
) -> tuple[str, list[Referral]]:
    """The source with the most stored referrals among those `counts` keeps, and them."""
    by_source: dict[str, list[Referral]] = {}
    for row in referrals_of(engine):
        if row.source and counts(row):
            by_source.setdefault(row.source, []).append(row)
    return max(by_source.items(), key=lambda item: len(item[1]))


def test_time_alone_moves_only_the_referrals_whose_instant_came(engine: Engine) -> None:
    total = len(referrals_of(engine))
    for step in (timedelta(minutes=10), timedelta(hours=5), timedelta(days=1, hours=3)):
        as_of = T0 + step
        evaluate_store(engine, RULES, as_of, nowhere)
        assert_as_a_full_evaluation(engine, as_of)
    # Ten minutes on, few referrals reached their instant of change; a day on, all did.
    evaluate_store(engine, RULES, T0 + timedelta(days=1, hours=3, minutes=10), nowhere)
    later = evaluated_at(engine, T0 + timedelta(days=1, hours=3, minutes=10))
    assert later < total / 4


def test_changed_data_moves_exactly_the_referrals_it_touches(engine: Engine) -> None:
    as_of = T0 + timedelta(minutes=30)
    evaluate_store(engine, RULES, as_of, nowhere)  # everything settled at this instant
    rows = referrals_of(engine)
    by_state = {}
    for row in rows:
        by_state.setdefault((row.state, row.primary_segment), row)
    open_rows = [r for r in rows if r.state == "open"]
    missing_insurance = next(
        r for r in open_rows if any(m["item"] == "insurance" for m in r.evaluation["missing"])
    )
    revoked = open_rows[0]
    with Session(engine) as session:
        coverages = [
            b
            for (b,) in session.execute(
                select(store.StoredResource.body).where(
                    store.StoredResource.resource_type == "Coverage",
                    store.StoredResource.deleted.is_(False),
                )
            )
        ]
    # A Coverage arrives for a patient without one; a referral is revoked; a Coverage moves
    # from one patient to another (the first one's referrals must see it gone); a Coverage is
    # deleted on the server.
    patient = missing_insurance.patient
    assert patient is not None
    arriving = {
        "resourceType": "Coverage",
        "id": "cov-arriving",
        "meta": {"versionId": "0"},
        "status": "active",
        "beneficiary": {"reference": patient},
        "payor": [{"reference": "Organization/payer-1"}],
        "subscriberId": "M-123",
    }
    sr = body(engine, revoked.key)
    sr["status"] = "revoked"
    moving = copy.deepcopy(next(c for c in coverages if c["beneficiary"]["reference"] != patient))
    moving["beneficiary"] = {"reference": patient}
    put(engine, arriving, sr, moving)
    gone = next(
        c for c in coverages if c["id"] != moving["id"] and c["beneficiary"]["reference"] != patient
    )
    with Session(engine) as session, session.begin():
        store.mark_deleted(session, [("Coverage", gone["id"], "99", datetime.now(UTC))], "test")
    later = as_of + timedelta(minutes=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    after = {r.key: r for r in referrals_of(engine)}
    assert after[revoked.key].state == "closed"
    assert not any(
        m["item"] == "insurance" for m in after[missing_insurance.key].evaluation["missing"]
    )
    # Only what the changes reach (and the few whose instant came) was evaluated again.
    assert 0 < evaluated_at(engine, later) < len(rows) / 2
    with Session(engine) as session:
        assert (
            session.execute(select(func.count()).select_from(PendingEvaluation)).scalar_one() == 0
        )


def test_a_changed_party_or_other_rules_or_an_earlier_instant_evaluate_everything(
    engine: Engine,
) -> None:
    total = len(referrals_of(engine))
    moment = T0 + timedelta(minutes=5)
    evaluate_store(engine, RULES, moment, nowhere)
    # A party: it can move any referral's source.
    with Session(engine) as session:
        role = (
            session.execute(
                select(store.StoredResource.body).where(
                    store.StoredResource.resource_type == "PractitionerRole"
                )
            )
            .scalars()
            .first()
        )
    assert role is not None
    put(engine, copy.deepcopy(role))
    moment += timedelta(minutes=1)
    evaluate_store(engine, RULES, moment, nowhere)
    assert evaluated_at(engine, moment) == total
    # Other rules.
    stricter = parse_rules(
        merge_rules(RULES.model_dump(mode="json"), {"high_relationship": {"min_referrals": 2}}),
        "test rules",
    )
    moment += timedelta(minutes=1)
    evaluate_store(engine, stricter, moment, nowhere)
    assert evaluated_at(engine, moment) == total
    # Nothing changed: almost nothing is evaluated again.
    moment += timedelta(minutes=1)
    evaluate_store(engine, stricter, moment, nowhere)
    assert evaluated_at(engine, moment) < total / 4
    # An instant before the last evaluation's saves nothing over the later evaluations, and
    # leaves a change noted since for the next evaluation that does.
    sr = body(engine, referrals_of(engine)[0].key)
    sr["status"] = "revoked"
    put(engine, sr)
    evaluate_store(engine, stricter, T0 - timedelta(days=2), nowhere)
    assert evaluated_at(engine, T0 - timedelta(days=2)) == 0
    moment += timedelta(minutes=1)
    evaluate_store(engine, stricter, moment, nowhere)
    assert referrals_of(engine)[0].state == "closed"
    fresh = {e.referral: e.to_json() for e in evaluate_stored(engine, stricter, moment, nowhere)}
    assert stored(engine) == fresh


def test_a_change_to_one_referral_moves_the_others_of_its_source(engine: Engine) -> None:
    as_of = T0 + timedelta(minutes=30)
    evaluate_store(engine, RULES, as_of, nowhere)
    source, rows = busiest_source(
        engine,
        lambda row: any(
            r.get("segment") == "high-relationship" and " or more referrals in the " in r["because"]
            for r in row.evaluation["reasons"]
        ),
    )
    minimum = RULES.high_relationship.min_referrals
    assert len(rows) >= minimum
    # All but min - 1 of the source's referrals (of any state: all count) are back-dated out
    # of the window: the others, whose own data did not change, fall below the count.
    kept = rows[: minimum - 1]
    moved = [
        r for r in referrals_of(engine) if r.source == source and r.key not in {k.key for k in kept}
    ]
    changed = []
    for row in moved:
        sr = body(engine, row.key)
        sr["authoredOn"] = "2020-01-01T00:00:00Z"
        changed.append(sr)
    put(engine, *changed)
    later = as_of + timedelta(minutes=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    after = {r.key: r for r in referrals_of(engine)}
    for row in kept:
        assert "high-relationship" not in after[row.key].segments, (source, row.key)


def test_a_coverage_moved_to_another_patient_is_gone_for_the_first(engine: Engine) -> None:
    as_of = T0 + timedelta(minutes=30)
    evaluate_store(engine, RULES, as_of, nowhere)
    with Session(engine) as session:
        coverages = list(
            session.execute(
                select(store.StoredResource.body).where(
                    store.StoredResource.resource_type == "Coverage",
                    store.StoredResource.deleted.is_(False),
                )
            ).scalars()
        )
    holders: dict[str, list[JSON]] = {}
    for coverage in coverages:
        holders.setdefault(coverage["beneficiary"]["reference"], []).append(coverage)
    insured = {
        r.patient: r
        for r in referrals_of(engine)
        if r.state == "open"
        and r.patient in holders
        and len(holders[r.patient]) == 1
        and not any(m["item"] == "insurance" for m in r.evaluation["missing"])
        and not body(engine, r.key).get("insurance")  # found by beneficiary only
    }
    first, referral = next(iter(insured.items()))
    moving = copy.deepcopy(holders[first][0])
    moving["beneficiary"] = {"reference": next(p for p in holders if p != first)}
    put(engine, moving)
    later = as_of + timedelta(minutes=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    after = {r.key: r for r in referrals_of(engine)}
    assert any(m["item"] == "insurance" for m in after[referral.key].evaluation["missing"])


def test_evaluating_a_few_patients_at_a_time_gives_what_one_index_of_everything_gives(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some referrals and messages name their patient by identifier only, so that a chunk
    # needs the store's identifier aliases and the messages tied to an identifier.
    rows = [r for r in referrals_of(engine) if r.patient][:30]
    changed = []
    for row in rows[::3]:
        assert row.patient is not None
        patient = body(engine, row.patient)
        identifier = (patient.get("identifier") or [None])[0]
        if identifier is None:
            continue
        sr = body(engine, row.key)
        sr["subject"] = {"identifier": identifier}
        changed.append(sr)
        changed.append(
            {
                "resourceType": "Communication",
                "id": f"msg-by-identifier-{row.key.partition('/')[2]}",
                "meta": {"versionId": "0"},
                "status": "completed",
                "sent": (T0 - timedelta(days=1)).isoformat(),
                "sender": {"identifier": identifier},
                "payload": [{"contentString": "Please call me back."}],
            }
        )
    assert len(changed) >= 6
    put(engine, *changed)
    monkeypatch.setattr(store_evaluation, "CHUNK", 7)
    as_of = T0 + timedelta(hours=2)
    evaluate_store(engine, RULES, as_of, nowhere)
    assert_as_a_full_evaluation(engine, as_of)
    after = {r.key: r for r in referrals_of(engine)}
    assert any("patient-active" in after[r.key].segments for r in rows[::3])


def test_the_ties_of_a_store_from_before_them_are_filled_in(db_url: str, tmp_path: Path) -> None:
    synth_to_dir(20, 9, T0.replace(hour=0), tmp_path / "data")
    store.upgrade(db_url, "0006")
    made = store.make_engine(db_url)
    bodies = [
        orjson.loads(line)
        for file in sorted((tmp_path / "data").glob("*.ndjson"))
        for line in file.read_bytes().splitlines()
    ]
    now = datetime.now(UTC)
    with Session(made) as session, session.begin():
        session.execute(
            insert(StoredResource.__table__),
            [
                {
                    "resource_type": b["resourceType"],
                    "id": b["id"],
                    "source": "test",
                    "body": b,
                    "stored_at": now,
                    "deleted": False,
                }
                for b in bodies
            ],
        )
    store.upgrade(db_url)
    with Session(made) as session:
        ties = set(
            session.execute(select(ResourceTie.resource_type, ResourceTie.id, ResourceTie.target))
        )
    expected = {
        (b["resourceType"], b["id"], target)
        for b in bodies
        for target in store.evaluation_targets(b) - {store.EVERYTHING}
    }
    assert ties == expected
    assert any(t[0] == "Coverage" and t[2].startswith("Patient/") for t in ties)
    evaluate_store(made, RULES, T0, nowhere)
    assert_as_a_full_evaluation(made, T0)
    made.dispose()


def test_a_reference_too_long_for_the_column_still_ties(engine: Engine) -> None:
    # An identifier of 300 characters: kept as a digest, found by the same digest.
    rows = [r for r in referrals_of(engine) if r.patient and r.state == "open"]
    row = rows[0]
    assert row.patient is not None
    patient = body(engine, row.patient)
    identifier = {"system": "urn:example:" + "x" * 300, "value": "p-1"}
    patient["identifier"] = [*patient.get("identifier", []), identifier]
    message = {
        "resourceType": "Communication",
        "id": "msg-long-identifier",
        "meta": {"versionId": "0"},
        "status": "completed",
        "sent": (T0 - timedelta(hours=3)).isoformat(),
        "sender": {"identifier": identifier},  # found only through the identifier's tie
        "payload": [{"contentString": "Calling back about my referral."}],
    }
    put(engine, patient, message)
    as_of = T0 + timedelta(hours=1)
    evaluate_store(engine, RULES, as_of, nowhere)
    assert_as_a_full_evaluation(engine, as_of)
    after = {r.key: r for r in referrals_of(engine)}
    assert "patient-active" in after[row.key].segments


def test_a_referral_changing_but_not_its_date_or_source_leaves_its_source_alone(
    engine: Engine,
) -> None:
    as_of = T0 + timedelta(minutes=30)
    evaluate_store(engine, RULES, as_of, nowhere)
    source, rows = busiest_source(engine)
    assert len(rows) >= 10
    first = next(r for r in rows if r.state == "open")
    sr = body(engine, first.key)
    sr["priority"] = "urgent"
    put(engine, sr)
    later = as_of + timedelta(seconds=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    again = evaluated_at(engine, later)
    assert 1 <= again < len(rows) / 2, (source, again, len(rows))
    assert "time-sensitive" in {r.key: r for r in referrals_of(engine)}[first.key].segments


def test_a_new_referral_from_a_busy_source_leaves_its_other_referrals_alone(
    engine: Engine,
) -> None:
    # Its count moves, not its standing: the others keep their evaluation (the reason names the
    # threshold, not the count).
    as_of = T0 + timedelta(minutes=30)
    evaluate_store(engine, RULES, as_of, nowhere)
    source, rows = busiest_source(engine, lambda row: row.state == "open" and row.high_relationship)
    assert len(rows) >= 10
    sr = body(engine, rows[0].key)
    sr["id"] = "busy-source-new"
    sr["authoredOn"] = as_of.isoformat()
    sr.pop("meta", None)
    put(engine, sr)
    later = as_of + timedelta(seconds=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    after = {r.key: r for r in referrals_of(engine)}
    assert "high-relationship" in after["ServiceRequest/busy-source-new"].segments
    assert after["ServiceRequest/busy-source-new"].source == source
    assert evaluated_at(engine, later) < len(rows) / 2, source


def test_a_referral_dated_ahead_moves_its_source_once_its_date_has_come(
    engine: Engine,
) -> None:
    # A small source, two referrals in its window: not high-relationship. A third, dated two
    # hours ahead (a sender's clock), makes it one at that instant; its other referrals, whose
    # own data did not change, must be evaluated again once it has come.
    as_of = T0 + timedelta(minutes=30)
    template = body(engine, referrals_of(engine)[0].key)
    organization = {"resourceType": "Organization", "id": "small-source", "name": "Small source"}
    made = []
    for n, authored in enumerate((as_of - timedelta(hours=12), as_of - timedelta(hours=11))):
        sr = copy.deepcopy(template)
        sr.pop("meta", None)
        sr.update(
            id=f"small-source-{n}",
            status="active",
            requester={"reference": "Organization/small-source"},
            authoredOn=authored.isoformat(),
        )
        sr.pop("occurrenceDateTime", None)
        sr.pop("occurrencePeriod", None)
        sr["priority"] = "routine"
        made.append(sr)
    put(engine, organization, *made)
    evaluate_store(engine, RULES, as_of, nowhere)
    keys = [f"ServiceRequest/small-source-{n}" for n in range(2)]
    before = {r.key: r for r in referrals_of(engine)}
    assert all(before[k].state == "open" and not before[k].high_relationship for k in keys)
    # For another patient: nothing tied to the other two changes.
    first_patient = template["subject"]["reference"]
    other = next(r for r in referrals_of(engine) if r.patient and r.patient != first_patient)
    ahead = copy.deepcopy(made[0])
    ahead.update(
        id="small-source-ahead",
        authoredOn=(as_of + timedelta(hours=2)).isoformat(),
        subject={"reference": other.patient},
    )
    ahead.pop("insurance", None)
    put(engine, ahead)
    for moment in (as_of + timedelta(minutes=1), as_of + timedelta(hours=3)):
        evaluate_store(engine, RULES, moment, nowhere)
        assert_as_a_full_evaluation(engine, moment)
    after = {r.key: r for r in referrals_of(engine)}
    assert all("high-relationship" in after[k].segments for k in keys)


def test_a_new_referring_office_moves_only_the_referrals_naming_it(engine: Engine) -> None:
    # A new office, its role and a referral from it: new parties are routine (every new referring
    # office), and must not evaluate everything the way a changed party does.
    total = len(referrals_of(engine))
    as_of = T0 + timedelta(minutes=30)
    evaluate_store(engine, RULES, as_of, nowhere)
    template = body(engine, referrals_of(engine)[0].key)
    office = {"resourceType": "Organization", "id": "new-office", "name": "New office"}
    role = {
        "resourceType": "PractitionerRole",
        "id": "new-office-role",
        "organization": {"reference": "Organization/new-office"},
    }
    sr = copy.deepcopy(template)
    sr.pop("meta", None)
    sr.update(id="from-new-office", requester={"reference": "PractitionerRole/new-office-role"})
    put(engine, office, role, sr)
    later = as_of + timedelta(seconds=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    assert {r.key: r for r in referrals_of(engine)}[
        "ServiceRequest/from-new-office"
    ].source == "Organization/new-office"
    assert evaluated_at(engine, later) < total / 4


def test_a_referral_naming_an_office_before_it_arrived_moves_when_it_arrives(
    engine: Engine,
) -> None:
    # The role came first, naming an organization the store does not hold yet; when the
    # organization arrives, the role's referral takes it as its source (its own data, and its
    # source's standing, stay as they were).
    total = len(referrals_of(engine))
    as_of = T0 + timedelta(minutes=30)
    template = body(engine, referrals_of(engine)[0].key)
    role = {
        "resourceType": "PractitionerRole",
        "id": "late-office-role",
        "organization": {"identifier": {"system": "urn:offices", "value": "late"}},
    }
    sr = copy.deepcopy(template)
    sr.pop("meta", None)
    sr.update(
        id="from-late-office",
        status="active",
        requester={"reference": "PractitionerRole/late-office-role"},
    )
    put(engine, role, sr)
    evaluate_store(engine, RULES, as_of, nowhere)
    key = "ServiceRequest/from-late-office"
    assert {r.key: r for r in referrals_of(engine)}[key].source != "Organization/late-office"
    office = {
        "resourceType": "Organization",
        "id": "late-office",
        "identifier": [{"system": "urn:offices", "value": "late"}],
        "name": "Late office",
    }
    put(engine, office)
    later = as_of + timedelta(seconds=1)
    evaluate_store(engine, RULES, later, nowhere)
    assert_as_a_full_evaluation(engine, later)
    assert {r.key: r for r in referrals_of(engine)}[key].source == "Organization/late-office"
    assert evaluated_at(engine, later) < total / 4
