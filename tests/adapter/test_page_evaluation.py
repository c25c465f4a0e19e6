"""A first sync evaluates page by page (adapter.store_evaluation.PageEvaluation): the referrals
that nothing still to come can move are evaluated while the next pages are fetched, the others
at the end, and the store ends exactly as a full evaluation of it at the same instant, with one
history row per referral, also when the server changes between two pages. On SQLite and
PostgreSQL, against the scripted server (tests/adapter/minifhir.py)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from adapter import store
from adapter.fhir_client import FhirClient
from adapter.http_policy import RetryPolicy, make_http_client
from adapter.planning import PlanSummary
from adapter.practice_rules import default_rules
from adapter.store_evaluation import PageEvaluation
from adapter.store_models import Referral, SegmentChange
from adapter.sync import SyncSummary, evaluate_stored, run_sync
from adapter.synth import iter_resources
from mappings.rules import PracticeRules, merge_rules, parse_rules
from tests.adapter.minifhir import BASE, MiniServer

JSON = dict[str, Any]
AS_OF = datetime(2026, 12, 3, 12, tzinfo=UTC)
PAGE = 10
RULES = default_rules()
# Every source high-relationship from its first referral: every referral settles on its page.
ONE_IS_ENOUGH = parse_rules(
    merge_rules(RULES.model_dump(mode="json"), {"high_relationship": {"min_referrals": 1}}),
    "test",
)


def nowhere(where: str, what: str) -> None:
    raise AssertionError((where, what))


@pytest.fixture
def server() -> Iterator[MiniServer]:
    scripted = MiniServer()
    for resource in iter_resources(60, 5, AS_OF.replace(hour=0)):
        scripted.put(resource)
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.route().mock(side_effect=scripted.handle)
        yield scripted


def sync(engine: Engine, rules: PracticeRules, seen: list[set[str]] | None = None) -> SyncSummary:
    """A sync of the scripted server; `seen`: the evaluated referrals after each page."""

    def on_event(event: JSON) -> None:
        if seen is not None and event["event"] == "page" and event["step"] == "referrals":
            with Session(engine) as session:
                seen.append(set(session.scalars(select(Referral.key))))

    policy = RetryPolicy(max_attempts=2, sleep=lambda seconds: None)
    with make_http_client() as http:
        return run_sync(
            FhirClient(BASE, http, policy=policy),
            engine,
            rules,
            on_problem=nowhere,
            on_event=on_event,
            as_of=AS_OF,
            page_size=PAGE,
        )


def evaluations(engine: Engine) -> dict[str, JSON]:
    with Session(engine) as session:
        return dict(session.execute(select(Referral.key, Referral.evaluation)).all())


def history(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.execute(
            select(SegmentChange.referral_key, func.count()).group_by(SegmentChange.referral_key)
        )
        return dict(rows.all())


def assert_as_a_full_evaluation(engine: Engine, rules: PracticeRules) -> None:
    fresh = {e.referral: e.to_json() for e in evaluate_stored(engine, rules, AS_OF, nowhere)}
    assert evaluations(engine) == fresh


def on_last_page(server: MiniServer, change: Any) -> None:
    """Run `change` once, when the referral search's last page is asked for."""
    referrals = sum(k.startswith("ServiceRequest/") for k in server.current)
    last = str(-(-referrals // PAGE))

    def fault(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/ServiceRequest") and request.url.params.get("page") == last:
            server.fault = lambda request: None
            change()
        return None

    server.fault = fault


def test_a_first_sync_evaluates_while_it_fetches_and_ends_as_a_full_evaluation(
    server: MiniServer, engine: Engine
) -> None:
    seen: list[set[str]] = []
    summary = sync(engine, RULES, seen)
    counts = [len(keys) for keys in seen]
    referrals = evaluations(engine)
    assert len(referrals) == summary.referrals >= 55
    assert len(counts) >= 6
    # Evaluated page by page: rows from the first pages on, before the last page came...
    assert 0 < counts[len(counts) // 2] < counts[-2]
    # ...and not all of them: the referrals of a source not yet high-relationship waited for
    # the end, when its standing was known.
    assert counts[-1] < len(referrals)
    assert_as_a_full_evaluation(engine, RULES)
    assert set(history(engine).values()) == {1}  # one first sighting each
    assert summary.moved == len(referrals)
    # A referral whose source was not high-relationship yet when its page came waited, and
    # was evaluated on the page where its source became one, before the end.
    order = sorted(
        (r for k, r in server.current.items() if k.startswith("ServiceRequest/")),
        key=lambda r: (r["meta"]["lastUpdated"], r["id"]),
    )
    page_of = {f"ServiceRequest/{r['id']}": n // PAGE for n, r in enumerate(order)}
    first_seen = {key: next(n for n, keys in enumerate(seen) if key in keys) for key in seen[-1]}
    waited = [
        key
        for key, n in first_seen.items()
        if n > page_of[key] and "high-relationship" in referrals[key]["segments"]
    ]
    assert waited, "no referral waited for its source to become high-relationship"


def first_referral(server: MiniServer) -> JSON:
    return next(r for k, r in server.current.items() if k.startswith("ServiceRequest/"))


def late_referral(server: MiniServer, like: JSON) -> None:
    """A referral like `like` (its patient, its requester) put last: on the last page."""
    late = copy.deepcopy(like)
    late["id"] = "late-referral"
    late.pop("meta", None)
    server.put(late)


def test_a_patient_changed_between_pages_is_evaluated_again_at_the_end(
    server: MiniServer, engine: Engine
) -> None:
    first = first_referral(server)
    patient_key = first["subject"]["reference"]
    assert server.current[patient_key].get("telecom")
    late_referral(server, first)

    def lose_the_phone() -> None:
        patient = copy.deepcopy(server.current[patient_key])
        patient.pop("meta")
        patient["telecom"] = [t for t in patient["telecom"] if t.get("system") == "email"]
        server.put(patient)

    on_last_page(server, lose_the_phone)
    sync(engine, ONE_IS_ENOUGH)
    assert_as_a_full_evaluation(engine, ONE_IS_ENOUGH)
    key = f"ServiceRequest/{first['id']}"
    evaluation = evaluations(engine)[key]
    assert any("no phone or SMS number" in m["detail"] for m in evaluation["missing"])
    # First seen with the phone on the first page, then without it on the last.
    assert history(engine)[key] == 2


def test_a_party_changed_between_pages_evaluates_everything_again(
    server: MiniServer, engine: Engine
) -> None:
    first = first_referral(server)
    role_key = first["requester"]["reference"]
    assert role_key.startswith("PractitionerRole/"), role_key
    before = server.current[role_key]["organization"]["reference"]
    other = next(k for k in server.current if k.startswith("Organization/") and k != before)
    late_referral(server, first)

    def move_the_role() -> None:
        role = copy.deepcopy(server.current[role_key])
        role.pop("meta")
        role["organization"] = {"reference": other}
        server.put(role)

    on_last_page(server, move_the_role)
    sync(engine, ONE_IS_ENOUGH)
    assert_as_a_full_evaluation(engine, ONE_IS_ENOUGH)
    assert evaluations(engine)[f"ServiceRequest/{first['id']}"]["source"] == other


def test_a_coverage_naming_an_evaluated_patient_by_identifier_is_read_at_the_end(
    server: MiniServer, engine: Engine
) -> None:
    uninsured = {
        k
        for k, r in server.current.items()
        if k.startswith("Patient/")
        and not any(
            c.get("beneficiary", {}).get("reference") == k
            for key, c in server.current.items()
            if key.startswith("Coverage/")
        )
    }
    referral = next(
        r
        for k, r in server.current.items()
        if k.startswith("ServiceRequest/") and r["subject"]["reference"] in uninsured
    )
    patient = server.current[referral["subject"]["reference"]]
    # The Coverage comes as the insurance of another patient's referral, on the last page:
    # nothing else on that page touches the uninsured patient.
    late = copy.deepcopy(
        next(
            r
            for r in server.current.values()
            if r is not referral
            and r["resourceType"] == "ServiceRequest"
            and r["subject"] != referral["subject"]
        )
    )
    late["insurance"] = [{"reference": "Coverage/cov-late"}]
    late_referral(server, late)
    template = next(r for k, r in server.current.items() if k.startswith("Coverage/"))

    def insure_by_identifier() -> None:
        coverage = {k: v for k, v in copy.deepcopy(template).items() if k != "meta"}
        coverage["id"] = "cov-late"
        coverage["beneficiary"] = {"identifier": patient["identifier"][0]}
        server.put(coverage)

    on_last_page(server, insure_by_identifier)
    sync(engine, ONE_IS_ENOUGH)
    assert_as_a_full_evaluation(engine, ONE_IS_ENOUGH)
    key = f"ServiceRequest/{referral['id']}"
    assert not any(m["item"] == "insurance" for m in evaluations(engine)[key]["missing"])


def test_a_referral_whose_requester_is_not_stored_yet_waits_for_it(
    server: MiniServer, engine: Engine
) -> None:
    first = first_referral(server)
    role = copy.deepcopy(server.current[first["requester"]["reference"]])
    organization = next(
        k
        for k in server.current
        if k.startswith("Organization/") and k != role["organization"]["reference"]
    )
    waiting = {k: v for k, v in copy.deepcopy(first).items() if k != "meta"}
    waiting["requester"] = {"reference": "PractitionerRole/role-late"}
    server.put(waiting, when=first["meta"]["lastUpdated"])  # still on the first page
    # Another patient's referral names the role on the last page, when it has come.
    other = next(
        k for k in server.current if k.startswith("Patient/") and k != first["subject"]["reference"]
    )
    late_referral(server, {**waiting, "subject": {"reference": other}})

    def create_the_role() -> None:
        role.pop("meta")
        server.put({**role, "id": "role-late", "organization": {"reference": organization}})

    on_last_page(server, create_the_role)
    sync(engine, ONE_IS_ENOUGH)
    assert_as_a_full_evaluation(engine, ONE_IS_ENOUGH)
    assert evaluations(engine)[f"ServiceRequest/{first['id']}"]["source"] == organization


def test_a_resource_twice_on_a_page_is_known_by_the_copy_the_store_kept(engine: Engine) -> None:
    newer = {
        "resourceType": "Organization",
        "id": "org-twice",
        "meta": {"versionId": "2", "lastUpdated": "2026-12-02T10:00:00Z"},
        "name": "Twice Clinic",
        "partOf": {"reference": "Organization/parent"},
    }
    older = {**newer, "meta": {"versionId": "1", "lastUpdated": "2026-12-01T10:00:00Z"}}
    role = {
        "resourceType": "PractitionerRole",
        "id": "role-twice",
        "meta": {"versionId": "1", "lastUpdated": "2026-12-01T10:00:00Z"},
        "organization": {"reference": "Organization/org-twice"},
    }
    older_role = {**role, "organization": {"reference": "Organization/elsewhere"}}
    older_role["meta"] = {"versionId": "0", "lastUpdated": "2026-11-01T10:00:00Z"}
    pages = PageEvaluation(engine, RULES, AS_OF, nowhere, PlanSummary())
    page = [newer, role, older, older_role]  # the older copies last
    touched: set[str] = set()
    written: set[tuple[str, str]] = set()
    with Session(engine) as session, session.begin():
        store.put_resources(session, page, "test", touched=touched, written=written)
    assert ("PractitionerRole", "role-twice") in written
    pages.stored(page, written, (), touched)
    known = pages.directory.parties["PractitionerRole/role-twice"]
    assert getattr(known, "organization", None) == "Organization/org-twice"
