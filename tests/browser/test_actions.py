"""The queue and each action, done in the framed view by clicking and typing, then found in the
store (its tables) and in the outbox (the write-back queued for the EHR)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from playwright.sync_api import Frame, Page
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.store_models import (
    AuditEvent,
    ContactAttemptRow,
    NoteRow,
    OutboxEntry,
    OwnerRow,
    ReviewRow,
)
from tests.browser.conftest import Stack, ehr_launch

# One referral per test (picked by position among the open ones), so the tests do not see each
# other's actions whatever their order.
PICK = {"contact": 1, "note": 2, "owner": 3, "review": 4}


@pytest.fixture
def started() -> datetime:
    return datetime.now(UTC)


def open_referral(page: Page, stack: Stack, rid: str) -> Frame:
    """Launch from the EHR, then click the referral's card in the queue."""
    frame = ehr_launch(page, stack)
    frame.locator(f'article.card h3 a[href="/referrals/{rid}"]').first.click()
    frame.wait_for_url(f"{stack.view_url}/referrals/{rid}")
    return frame


def outbox_since(stack: Stack, rid: str, since: datetime) -> list[OutboxEntry]:
    with Session(stack.engine) as session:
        return list(
            session.scalars(
                select(OutboxEntry)
                .where(
                    OutboxEntry.referral_key == f"ServiceRequest/{rid}",
                    OutboxEntry.created_at >= since,
                )
                .order_by(OutboxEntry.id)
            )
        )


def audited(stack: Stack, rid: str, action: str) -> list[AuditEvent]:
    with Session(stack.engine) as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.referral_key == f"ServiceRequest/{rid}",
                    AuditEvent.action == action,
                )
            )
        )


def test_the_queue_shows_lanes_and_cards_that_open_their_referral(page: Page, stack: Stack) -> None:
    frame = ehr_launch(page, stack)
    lanes = frame.locator("section.lane h2").all_inner_texts()
    assert any(t.startswith("Same-day review") for t in lanes), lanes
    assert frame.locator("article.card").count() >= len(stack.referrals_of())
    rid = stack.referrals_of()[0]
    frame.locator(f'article.card h3 a[href="/referrals/{rid}"]').first.click()
    frame.wait_for_url(f"{stack.view_url}/referrals/{rid}")
    assert f"referral {rid}" in frame.locator("h1").inner_text()
    # Keyboard (static/app.js): j and k move between cards, "/" goes to the filters, and the
    # filter form applies a lane.
    frame.goto(f"{stack.view_url}/queue")
    frame.locator("h1").click()
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    links = frame.locator("article.card h3 a")
    assert links.nth(1).evaluate("a => a === document.activeElement")
    page.keyboard.press("/")
    assert frame.get_by_label("Lane").evaluate("s => s === document.activeElement")
    frame.get_by_label("Lane").select_option("ready-to-schedule")
    frame.get_by_role("button", name="Apply").click()
    frame.wait_for_url("**segment=ready-to-schedule**")
    titles = frame.locator("section.lane h2").all_inner_texts()
    assert len(titles) == 1
    assert titles[0].startswith("Ready to schedule")


def test_a_contact_attempt_is_stored_and_queued(
    page: Page, stack: Stack, started: datetime
) -> None:
    rid = stack.referrals_of()[PICK["contact"]]
    frame = open_referral(page, stack, rid)
    frame.get_by_label("Channel").select_option("phone")
    frame.get_by_label("Outcome").select_option("left-message")
    frame.get_by_label("Note (optional)").fill("Voicemail, asked to call back")
    frame.get_by_role("button", name="Record attempt").click()
    frame.wait_for_load_state()

    assert "Contact attempt recorded" in frame.locator("p.flash").inner_text()
    assert frame.locator("section[aria-labelledby=h-attempts] tbody tr").count() == 1
    with Session(stack.engine) as session:
        rows = session.scalars(
            select(ContactAttemptRow).where(
                ContactAttemptRow.referral_key == f"ServiceRequest/{rid}"
            )
        ).all()
    assert [(r.channel, r.outcome, r.note) for r in rows] == [
        ("phone", "left-message", "Voicemail, asked to call back")
    ]
    assert rows[0].by_reference == "Practitioner/prac-coord-sam-park"
    queued = [e for e in outbox_since(stack, rid, started) if e.kind == "contact"]
    assert len(queued) == 1
    assert queued[0].status == "pending"
    assert queued[0].resource["resourceType"] == "Communication"
    assert queued[0].identifier == queued[0].resource["identifier"][0]["value"]
    assert audited(stack, rid, "contact-attempt")


def test_a_note_for_the_next_person_is_stored_and_queued(
    page: Page, stack: Stack, started: datetime
) -> None:
    rid = stack.referrals_of()[PICK["note"]]
    frame = open_referral(page, stack, rid)
    frame.get_by_label("Who was contacted").fill("Front desk of the referring office")
    frame.get_by_label("What was requested").fill("The last clinic letter")
    frame.get_by_label("What they said").fill("Will fax it this afternoon")
    frame.get_by_label("Next attempt due").fill("2031-03-04T10:30")
    frame.get_by_role("button", name="Save note").click()
    frame.wait_for_load_state()

    assert "Note saved" in frame.locator("p.flash").inner_text()
    assert "Will fax it this afternoon" in frame.locator("ul.notes").inner_text()
    with Session(stack.engine) as session:
        notes = session.scalars(
            select(NoteRow).where(NoteRow.referral_key == f"ServiceRequest/{rid}")
        ).all()
    assert [(n.contacted, n.requested, n.response) for n in notes] == [
        (
            "Front desk of the referring office",
            "The last clinic letter",
            "Will fax it this afternoon",
        )
    ]
    assert notes[0].next_attempt_due is not None
    assert notes[0].next_attempt_due.year == 2031
    tasks = [e for e in outbox_since(stack, rid, started) if e.kind == "task"]
    assert tasks, "the Task carrying the note is queued"
    assert tasks[-1].status == "pending"
    assert b"Will fax it this afternoon" in orjson.dumps(tasks[-1].resource)
    assert audited(stack, rid, "note")


def test_assigning_an_owner_is_stored_and_queued(
    page: Page, stack: Stack, started: datetime
) -> None:
    rid = stack.referrals_of()[PICK["owner"]]
    frame = open_referral(page, stack, rid)
    frame.get_by_label("Assign to").fill("Robin Hale")
    frame.get_by_role("button", name="Assign", exact=True).click()
    frame.wait_for_load_state()

    assert "Owner assigned" in frame.locator("p.flash").inner_text()
    with Session(stack.engine) as session:
        owner = session.get(OwnerRow, f"ServiceRequest/{rid}")
    assert owner is not None
    assert (owner.owner_reference, owner.owner_display) == (None, "Robin Hale")
    assert owner.assigned_by == "Practitioner/prac-coord-sam-park"
    tasks = [e for e in outbox_since(stack, rid, started) if e.kind == "task"]
    assert tasks, "the Task naming the owner is queued"
    assert tasks[-1].resource["owner"]["display"] == "Robin Hale"
    assert audited(stack, rid, "assign")
    # The queue shows the new owner on the referral's card.
    frame.goto(f"{stack.view_url}/queue")
    card = frame.locator("article.card").filter(has=frame.locator(f'h3 a[href="/referrals/{rid}"]'))
    assert "Robin Hale" in card.first.inner_text()


def test_marking_reviewed_is_stored_and_queued(page: Page, stack: Stack, started: datetime) -> None:
    rid = stack.referrals_of()[PICK["review"]]
    frame = open_referral(page, stack, rid)
    frame.get_by_role("button", name="Mark reviewed").click()
    frame.wait_for_load_state()

    assert "Marked reviewed" in frame.locator("p.flash").inner_text()
    tags = frame.locator("p.tags").first.locator(".tag").all_inner_texts()
    assert any(t.startswith("Reviewed ") for t in tags), tags
    assert "Not reviewed" not in tags
    with Session(stack.engine) as session:
        review = session.get(ReviewRow, f"ServiceRequest/{rid}")
    assert review is not None
    assert review.reviewed_by == "Sam Park"
    tasks = [e for e in outbox_since(stack, rid, started) if e.kind == "task"]
    assert tasks, "the Task that says it was reviewed is queued"
    assert tasks[-1].status == "pending"
    assert audited(stack, rid, "review")
