"""The work queue and the referral page through Flask's test client, over a store filled by the
real pipeline, on SQLite and PostgreSQL: lanes and their order, filters, every action stored,
audited and queued for write-back, CSRF, escaping, the security headers and the cookie.
(Launches against a real authorization server, in a real browser: tests/integration.)"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import template_rendered
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from adapter.errors import ConfigError
from adapter.store_models import (
    AuditEvent,
    ContactAttemptRow,
    NoteRow,
    OutboxEntry,
    OwnerRow,
    Referral,
    ReviewRow,
    WebSession,
)
from fhir_profiles import terminology
from smart_launch import load_config, queue
from tests.smart_launch.conftest import HOSTILE, NOW, csrf_of, signed_in, view

LANE = re.compile(r'<h2 id="lane-([a-z-]+)">[^<]*<span class="count">(\d+)</span>')
CARD = re.compile(r'<a href="/referrals/([^"]+)">')


def lanes_of(html: str) -> dict[str, int]:
    return {code: int(count) for code, count in LANE.findall(html)}


def open_counts(engine: Engine) -> dict[str | None, int]:
    with Session(engine) as session:
        return dict(
            session.execute(
                select(Referral.primary_segment, func.count())
                .where(Referral.state == "open")
                .group_by(Referral.primary_segment)
            ).all()
        )


def test_the_queue_shows_ready_work_before_work_that_cannot_move(engine: Engine) -> None:
    client = signed_in(view(engine))
    page = client.get("/queue")
    assert page.status_code == 200
    lanes = lanes_of(page.text)
    assert list(lanes) == ["same-day-review", *terminology().segments]
    counts = open_counts(engine)
    for segment in ("time-sensitive", "patient-active", "ready-to-schedule", "missing-detail"):
        assert lanes[segment] == counts.get(segment, 0)
    assert sum(lanes[s] for s in counts) == sum(counts.values()) > 0
    # Each card names what is missing and whom to ask, the next action and its owner.
    assert "ask referring office" in page.text or "ask patient" in page.text
    assert "backup:" in page.text


def test_lane_filter_and_sorting(engine: Engine) -> None:
    client = signed_in(view(engine))
    ready = client.get("/queue?segment=ready-to-schedule&sort=age")
    assert list(lanes_of(ready.text)) == ["ready-to-schedule"]
    ids = CARD.findall(ready.text)
    with Session(engine) as session:
        ages = {
            key.partition("/")[2]: age
            for key, age in session.execute(select(Referral.key, Referral.age_days))
        }
    shown = [ages[i] for i in ids]
    assert shown == sorted(shown, reverse=True)
    overdue = client.get("/queue?overdue=1")
    assert "Overdue" in overdue.text
    assert sum(lanes_of(overdue.text).values()) <= sum(lanes_of(client.get("/queue").text).values())
    # Nobody is assigned yet: every referral is unassigned, none is Dana's.
    unassigned = lanes_of(client.get("/queue?owner=unassigned").text)
    assert unassigned == lanes_of(client.get("/queue").text)
    assert sum(lanes_of(client.get("/queue?owner=Dana").text).values()) == 0
    band = client.get("/queue?band=0-2")
    with Session(engine) as session:
        young = session.execute(
            select(func.count()).where(Referral.state == "open", Referral.aging_band == "0-2")
        ).scalar_one()
    assert (
        sum(
            v
            for k, v in lanes_of(band.text).items()
            if k not in ("same-day-review", "high-relationship")
        )
        == young
    )


def test_the_source_filter_offers_the_busiest_sources_and_the_chosen_one(engine: Engine) -> None:
    with Session(engine) as session:
        counts = dict(
            session.execute(
                select(Referral.source, func.count())
                .where(Referral.state == "open", Referral.source.is_not(None))
                .group_by(Referral.source)
            ).all()
        )
        assert len(counts) > 3
        top = queue.source_names(session, limit=3)
        quiet = min(counts, key=lambda k: (counts[k], k))
        with_chosen = queue.source_names(session, selected=quiet, limit=3)
    busiest = sorted(counts.values(), reverse=True)[:3]
    assert sorted((n for _, _, n in top), reverse=True) == busiest
    assert all(counts[key] == n for key, _, n in top)
    assert [name.lower() for _, name, _ in top] == sorted(name.lower() for _, name, _ in top)
    assert {key for key, _, _ in with_chosen} == {key for key, _, _ in top} | {quiet}
    page = signed_in(view(engine)).get("/queue").text
    options = re.findall(r'<option value="([A-Za-z]+/[^"]+)"', page)
    assert set(options) <= set(counts)
    assert len(options) == min(len(counts), queue.SOURCE_CHOICES)


def test_every_action_is_stored_audited_and_queued(engine: Engine) -> None:
    client = signed_in(view(engine))
    rid = CARD.findall(client.get("/queue?segment=missing-detail").text)[0]
    key = f"ServiceRequest/{rid}"
    page = client.get(f"/referrals/{rid}")
    assert page.status_code == 200
    token = csrf_of(page.text)
    with Session(engine) as session:
        before = session.execute(select(func.count()).select_from(OutboxEntry)).scalar_one()
    posts = [
        ("contact", {"channel": "phone", "outcome": "no-answer", "note": "rang twice"}),
        (
            "note",
            {
                "contacted": "the patient",
                "requested": "insurance card",
                "said": "will send it",
                "still_missing": ["insurance"],
                "next_due": "2026-12-10T09:30",
            },
        ),
        ("assign", {"owner": "me"}),
        ("review", {}),
    ]
    for action, form in posts:
        answer = client.post(f"/referrals/{rid}/{action}", data={"csrf_token": token, **form})
        assert answer.status_code == 302, action
        assert answer.headers["Location"].endswith(f"/referrals/{rid}")
    with Session(engine) as session:
        attempt = session.execute(select(ContactAttemptRow)).scalar_one()
        assert (attempt.referral_key, attempt.channel, attempt.outcome) == (
            key,
            "phone",
            "no-answer",
        )
        assert attempt.by_reference == "Practitioner/prac-coord-sam-park"
        note = session.execute(select(NoteRow)).scalar_one()
        assert (note.requested, note.still_missing) == ("insurance card", ["insurance"])
        assert note.next_attempt_due is not None
        owner = session.get(OwnerRow, key)
        assert owner is not None
        assert owner.owner_reference == "Practitioner/prac-coord-sam-park"
        assert session.get(ReviewRow, key) is not None
        entries = list(
            session.execute(
                select(OutboxEntry).where(OutboxEntry.referral_key == key).order_by(OutboxEntry.id)
            ).scalars()
        )
        kinds = [e.kind for e in entries if e.status == "pending"]
        assert "contact" in kinds
        # The latest Task intent carries the note, the owner and the review mark.
        [task] = [e for e in entries if e.kind == "task" and e.status == "pending"]
        assert task.resource["owner"]["reference"] == "Practitioner/prac-coord-sam-park"
        assert [n["id"] for n in task.resource["note"]] == ["next-person-note", "same-day-review"]
        total = session.execute(select(func.count()).select_from(OutboxEntry)).scalar_one()
        assert total > before
        audited = [
            (a.action, a.referral_key)
            for a in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()
        ]
    for action in ("contact-attempt", "note", "assign", "review", "referral-view"):
        assert (action, key) in audited
    assert ("queue-view", None) in audited
    shown = client.get(f"/referrals/{rid}").text
    assert "Marked reviewed." in shown
    assert "No answer" in shown
    assert "will send it" in shown


def test_views_are_audited_by_identifiers_never_names(engine: Engine) -> None:
    client = signed_in(view(engine))
    client.get("/queue")
    with Session(engine) as session:
        event = session.execute(
            select(AuditEvent).where(AuditEvent.action == "queue-view")
        ).scalar_one()
    assert event.actor == "Practitioner/prac-coord-sam-park"
    assert event.detail["patients"]
    assert all(p.startswith("Patient/") for p in event.detail["patients"])
    assert HOSTILE not in str(event.detail)


@pytest.mark.parametrize("token", [None, "forged"])
def test_a_form_without_its_csrf_token_is_refused(engine: Engine, token: str | None) -> None:
    client = signed_in(view(engine))
    rid = CARD.findall(client.get("/queue").text)[0]
    data = {"channel": "phone", "outcome": "reached"}
    if token is not None:
        data["csrf_token"] = token
    answer = client.post(f"/referrals/{rid}/contact", data=data)
    assert answer.status_code == 400
    assert "CSRF" in answer.text
    with Session(engine) as session:
        assert (
            session.execute(select(func.count()).select_from(ContactAttemptRow)).scalar_one() == 0
        )


def test_a_hostile_name_renders_as_text(engine: Engine) -> None:
    client = signed_in(view(engine))
    page = client.get("/queue").text + "".join(
        client.get(f"/referrals/{rid}").text for rid in CARD.findall(client.get("/queue").text)[:60]
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page


def test_pages_carry_a_strict_policy_and_no_inline_script(engine: Engine) -> None:
    app = view(engine, frame_ancestors=("https://ehr.example.org",))
    client = signed_in(app)
    for path in ("/queue", f"/referrals/{CARD.findall(client.get('/queue').text)[0]}", "/demo"):
        answer = client.get(path)
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'self' https://ehr.example.org" in policy
        assert "'unsafe-inline'" not in policy
        assert answer.headers["Cache-Control"] == "no-store"
        html = answer.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        # No event-handler or style attribute in any tag (the hostile name is text, escaped).
        assert not re.search(r"<[^>]*\son[a-z]+=", html), path
        assert not re.search(r"<[^>]*\sstyle=", html), path


def test_the_cookie_is_an_opaque_partitioned_cross_site_cookie(engine: Engine) -> None:
    app = view(engine, secure_cookies=True)
    client = app.test_client()
    answer = client.get("/demo")
    cookie = answer.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=None", "Partitioned", "Path=/"):
        assert attribute in cookie
    value = cookie.split(";")[0].partition("=")[2]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)  # 256 random bits, nothing else
    with Session(engine) as session:
        row = session.get(WebSession, value)
        assert row is not None
        assert "csrf" in row.data


def test_signing_in_gives_a_new_session_id(engine: Engine) -> None:
    app = view(engine)
    client = app.test_client()
    first = client.get("/demo")
    before = first.headers["Set-Cookie"].split(";")[0]
    token = csrf_of(first.text)
    signed = client.post("/demo", data={"csrf_token": token, "user": "dana"})
    after = signed.headers["Set-Cookie"].split(";")[0]
    assert before != after
    with Session(engine) as session:
        assert session.get(WebSession, before.partition("=")[2]) is None


def test_a_patient_launch_shows_only_that_patients_referrals(engine: Engine) -> None:
    app = view(engine)
    client = signed_in(app)
    with Session(engine) as session:
        patient, mine = session.execute(
            select(Referral.patient, Referral.key).where(Referral.state == "open").limit(1)
        ).one()
        other = session.execute(
            select(Referral.key)
            .where(Referral.state == "open", Referral.patient != patient)
            .limit(1)
        ).scalar_one()
        cookie = client.get_cookie("ra_session")
        assert cookie is not None
        row = session.get(WebSession, cookie.value)
        assert row is not None
        row.data = {**row.data, "patient": patient}
        session.commit()
    page = client.get("/queue").text
    shown = {f"ServiceRequest/{rid}" for rid in CARD.findall(page)}
    assert mine in shown
    assert other not in shown
    assert patient in page
    assert client.get(f"/referrals/{other.partition('/')[2]}").status_code == 404
    assert client.get(f"/referrals/{mine.partition('/')[2]}").status_code == 200
    # The practice-wide referral review is neither offered nor served in a patient's launch.
    assert 'href="/metrics"' not in page
    assert client.get("/metrics").status_code == 403


def test_a_read_only_grant_turns_the_actions_off(engine: Engine) -> None:
    app = view(engine)
    client = signed_in(app)
    with Session(engine) as session:
        cookie = client.get_cookie("ra_session")
        assert cookie is not None
        row = session.get(WebSession, cookie.value)
        assert row is not None
        row.data = {**row.data, "scope": "launch openid fhirUser user/ServiceRequest.rs"}
        session.commit()
    rid = CARD.findall(client.get("/queue").text)[0]
    page = client.get(f"/referrals/{rid}").text
    assert "allows reading only" in page
    assert "Record attempt" not in page
    answer = client.post(
        f"/referrals/{rid}/review", data={"csrf_token": csrf_of(client.get("/queue").text)}
    )
    assert answer.status_code == 403


def test_the_demo_sign_in_exists_only_in_the_demo(engine: Engine) -> None:
    client = view(engine, demo=False).test_client()
    assert client.get("/demo").status_code == 404
    assert "Demo" not in client.get("/").text
    assert client.get("/queue").status_code == 302  # not signed in: to the start page


def test_launches_from_unknown_ehrs_are_refused(engine: Engine) -> None:
    client = view(engine, demo=False).test_client()
    refused = client.get("/launch?iss=https://evil.example/fhir&launch=abc")
    assert refused.status_code == 403
    assert "not configured" in refused.text
    assert client.get("/launch").status_code == 400
    assert client.get("/launch/standalone?iss=https://evil.example/fhir").status_code == 403
    forged = client.get("/launch/callback?code=abc&state=forged")
    assert forged.status_code == 400
    assert "state" in forged.text


def test_sessions_expire(engine: Engine) -> None:
    client = signed_in(view(engine))
    with Session(engine) as session:
        cookie = client.get_cookie("ra_session")
        assert cookie is not None
        row = session.get(WebSession, cookie.value)
        assert row is not None
        row.expires_at = NOW - timedelta(minutes=1)
        session.commit()
    assert client.get("/queue").status_code == 302


def test_the_queue_is_shared_for_seconds_and_an_action_shows_at_once(engine: Engine) -> None:
    client = signed_in(view(engine))
    before = client.get("/queue?segment=ready-to-schedule").text
    ready = CARD.findall(before)
    assert ready
    first = ready[0]
    # A sync closes the first ready referral: within the cache's seconds the queue is the
    # one just computed (shared by everyone opening it)...
    with Session(engine) as session, session.begin():
        row = session.get(Referral, f"ServiceRequest/{first}")
        assert row is not None
        row.state = "closed"
    assert CARD.findall(client.get("/queue?segment=ready-to-schedule").text) == ready
    # ...and an action taken in the view clears it: the queue is read afresh.
    other = ready[1] if len(ready) > 1 else first
    page = client.get(f"/referrals/{other}")
    answer = client.post(f"/referrals/{other}/review", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 302
    assert first not in CARD.findall(client.get("/queue?segment=ready-to-schedule").text)


def test_without_the_queue_cache_every_request_reads_the_store(engine: Engine) -> None:
    client = signed_in(view(engine, queue_cache_seconds=0))
    ready = CARD.findall(client.get("/queue?segment=ready-to-schedule").text)
    with Session(engine) as session, session.begin():
        row = session.get(Referral, f"ServiceRequest/{ready[0]}")
        assert row is not None
        row.state = "closed"
    assert ready[0] not in CARD.findall(client.get("/queue?segment=ready-to-schedule").text)


@pytest.mark.parametrize("seconds", [-1, "soon", True])
def test_the_queue_cache_takes_seconds_only(seconds: object, tmp_path: Path) -> None:
    config = tmp_path / "view.yaml"
    config.write_text(yaml.safe_dump({"secret_key": "k", "queue_cache_seconds": seconds}))
    with pytest.raises(ConfigError, match="queue_cache_seconds"):
        load_config(config, environ={})


def test_people_share_the_rendered_lanes_but_not_their_header_token_or_audit(
    engine: Engine,
) -> None:
    app = view(engine)
    rendered: list[str] = []

    def note(sender: object, template: Any, context: object, **extra: object) -> None:
        rendered.append(template.name)

    sam, dana = signed_in(app, "sam"), signed_in(app, "dana")
    with template_rendered.connected_to(note, app):
        first = sam.get("/queue").text
        second = dana.get("/queue").text
    # The lanes were rendered once, for the first request; the second page reused them.
    assert rendered.count("_lanes.html") == 1
    assert rendered.count("queue.html") == 2
    assert CARD.findall(first) == CARD.findall(second) != []
    # Around the shared lanes each page is its own person's: their name, their form token.
    assert "Sam Park" in first
    assert "Dana Ortiz" not in first
    assert "Dana Ortiz" in second
    assert "Sam Park" not in second
    assert csrf_of(first) != csrf_of(second)
    with Session(engine) as session:
        actors = session.execute(
            select(AuditEvent.actor).where(AuditEvent.action == "queue-view")
        ).scalars()
        assert sorted(actors) == ["Dana Ortiz (scheduler)", "Practitioner/prac-coord-sam-park"]
    # Other filters are another page, rendered for themselves.
    with template_rendered.connected_to(note, app):
        sam.get("/queue?segment=ready-to-schedule")
    assert rendered.count("_lanes.html") == 2
