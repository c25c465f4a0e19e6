"""The metrics page of the view: the weekly referral review, with links to the referrals."""

from __future__ import annotations

import re

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from adapter.practice_rules import default_rules
from adapter.report import Period, compute_report
from adapter.store_models import AuditEvent
from tests.smart_launch.conftest import HOSTILE, NOW, signed_in, view


def test_metrics_page_shows_the_report_numbers_with_their_referrals(engine: Engine) -> None:
    app = view(engine)
    assert app.test_client().get("/metrics").status_code == 302  # not signed in
    client = signed_in(app)
    assert 'href="/metrics"' in client.get("/queue").text  # offered in the navigation
    year, number, _ = NOW.isocalendar()
    week = f"{year}-W{number:02d}"  # the store was evaluated at NOW, in this week
    page = client.get(f"/metrics?week={week}")
    assert page.status_code == 200
    html = page.text
    assert f"Weekly referral review: {week}" in html
    assert html.count("<svg") == 4
    assert HOSTILE not in html
    with Session(engine) as session:
        report = compute_report(session, Period.week(week), default_rules())
    entered = [n for n in report.numbers if n.metric == "entered" and len(n.by) == 1]
    assert entered  # the store was evaluated this week: every referral entered its segments
    for number in entered:
        for key in number.referrals[:50]:
            assert f'href="/referrals/{key.split("/", 1)[1]}"' in html
    assert len(re.findall(r"<tr>", html)) >= len(report.numbers)
    with Session(engine) as session:
        seen = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "metrics-view")
        ).scalars()
        assert list(seen) == [{"week": week}]


def test_metrics_page_refuses_a_bad_week(engine: Engine) -> None:
    client = signed_in(view(engine))
    assert client.get("/metrics?week=2026-W99").status_code == 400
    assert client.get("/metrics").status_code == 200  # the last complete week
