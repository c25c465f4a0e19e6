"""What the pages must never do, seen from the browser: show a token (in HTML, a script, a
cookie or web storage), run a patient's name as markup, or fail people who use assistive
technology (axe-core's serious and critical rules). Screenshots of the queue and a referral
are written as artifacts."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Frame, Page
from sqlalchemy.orm import Session

from adapter.store_models import WebSession
from tests.browser.conftest import AXE, HOSTILE, Stack, ehr_launch, new_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def issued_tokens(stack: Stack) -> list[str]:
    issued = httpx.get(f"{stack.ehr_url}/test/issued").json()
    return [*issued["access_tokens"], *issued["refresh_tokens"]]


def test_tokens_appear_in_no_html_script_cookie_or_storage(page: Page, stack: Stack) -> None:
    frame = ehr_launch(page, stack)
    rid = stack.referrals_of()[0]
    seen: list[tuple[str, str]] = [("queue HTML", frame.content())]
    frame.goto(f"{stack.view_url}/referrals/{rid}")
    seen.append(("referral HTML", frame.content()))
    seen.append(("EHR page HTML", page.content()))
    script = page.context.request.get(f"{stack.view_url}/static/app.js")
    assert script.ok
    seen.append(("app.js", script.text()))
    # A third-party frame may be denied web storage altogether; then nothing is kept there.
    storage = frame.evaluate(
        """() => {
            try { return JSON.stringify([{...localStorage}, {...sessionStorage}]); }
            catch (error) { return `no access: ${error.name}`; }
        }"""
    )
    seen.append(("web storage", storage))
    window_names = frame.evaluate("() => Object.keys(window).join(' ')")
    seen.append(("window globals", window_names))

    cookies = page.context.cookies()
    view_cookies = [c for c in cookies if c["domain"] == "localhost"]
    assert [c["name"] for c in view_cookies] == ["ra_session"]
    cookie = view_cookies[0]
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "None"
    # Partitioned (CHIPS): kept in the jar of the EHR's site, the top-level page.
    assert cookie.get("partitionKey") == "http://127.0.0.1"
    # Decoded, the cookie is 32 random bytes: the id of a session row kept on the server.
    value = cookie["value"]
    assert len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == 32
    with Session(stack.engine) as session:
        row = session.get(WebSession, value)
        assert row is not None
        stored_data, stored_secret = json.dumps(row.data), row.secret or ""
    for c in cookies:
        seen.append((f"cookie {c['name']}", f"{c['value']} {c}"))
    # The tokens are in the session's secret, encrypted; the clear part holds none.
    secret = stack.sessions().load(value)
    assert secret is not None
    mine = [
        secret.secret["access_token"],
        secret.secret["refresh_token"],
        secret.secret["id_token"],
    ]
    assert all(isinstance(t, str) and t for t in mine)
    assert secret.secret["access_token"] in issued_tokens(stack)
    seen.append(("session data in the store", stored_data))
    seen.append(("session secret in the store (encrypted)", stored_secret))

    for token in {*mine, *issued_tokens(stack)}:
        for where, text in seen:
            assert token not in text, f"a token is in the {where}"


def test_a_patient_named_like_markup_renders_as_text(page: Page, stack: Stack) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    frame = ehr_launch(page, stack, patient=stack.hostile_patient)

    heading = frame.locator("article.card h3 a").first
    assert HOSTILE in heading.inner_text()
    assert frame.get_by_text(HOSTILE, exact=False).first.is_visible()
    assert frame.locator("img").count() == 0
    heading.click()
    frame.wait_for_url(f"{stack.view_url}/referrals/**")
    assert HOSTILE in frame.locator("h1").inner_text()
    assert frame.locator("img").count() == 0
    assert "&lt;img src=x onerror=alert(1)&gt;" in frame.content()
    assert dialogs == []


def axe_violations(frame: Frame) -> list[dict[str, Any]]:
    frame.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = frame.evaluate(
        """async () => {
            const results = await axe.run(document);
            return results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5),
            }));
        }"""
    )
    return found


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def test_no_serious_or_critical_accessibility_violations(browser: Browser, stack: Stack) -> None:
    # axe is injected as an inline script, which the view's strict CSP (script-src 'self')
    # rightly refuses; this context alone bypasses CSP so the checker can run in the page.
    page = new_page(browser, bypass_csp=True)
    try:
        frame = ehr_launch(page, stack)
        queue = axe_violations(frame)
        rid = stack.referrals_of()[0]
        frame.goto(f"{stack.view_url}/referrals/{rid}")
        frame.wait_for_load_state()
        referral = axe_violations(frame)
        # The control: the checker does see a serious fault put into the same page.
        frame.evaluate(
            """() => document.querySelector('main').insertAdjacentHTML(
                'beforeend', '<input type="text" id="unlabelled-control">')"""
        )
        control = frame.evaluate(
            "async () => (await axe.run(document)).violations.map(v => [v.id, v.impact])"
        )
    finally:
        page.context.close()
    assert serious(queue) == [], queue
    assert serious(referral) == [], referral
    assert ["label", "critical"] in control, control


def written_png(path: Path) -> bytes:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_SIGNATURE)
    return data


def test_screenshots_of_the_queue_and_a_referral(
    page: Page, stack: Stack, artifacts_dir: Path
) -> None:
    queue_png = artifacts_dir / "queue.png"
    referral_png = artifacts_dir / "referral.png"
    for stale in (queue_png, referral_png):
        stale.unlink(missing_ok=True)

    # A tall window, so the EHR's frame (90% of its height) shows the view at length.
    page.set_viewport_size({"width": 1280, "height": 2400})
    frame = ehr_launch(page, stack)
    page.screenshot(path=str(queue_png))
    frame.locator("article.card h3 a").first.click()
    frame.wait_for_url(f"{stack.view_url}/referrals/**")
    frame.wait_for_load_state()
    # The referral page is drawn (not the queue still on screen) before the picture is taken.
    frame.locator("#h-status").wait_for(state="visible")
    assert frame.locator("#h-status").inner_text() == "Where it stands"
    page.screenshot(path=str(referral_png))

    assert written_png(queue_png) != written_png(referral_png)


def test_an_access_token_about_to_expire_is_refreshed_on_the_server(
    page: Page, stack: Stack
) -> None:
    """The view refreshes the EHR's token shortly before it expires (refresh_margin_s), with
    the refresh token, at the real authorization server; the new tokens stay on the server."""
    frame = ehr_launch(page, stack)
    [cookie] = [c for c in page.context.cookies() if c["domain"] == "localhost"]
    sessions = stack.sessions()
    before = sessions.load(cookie["value"])
    assert before is not None
    old_access = before.secret["access_token"]
    # As if the token had been issued long ago: it expires within the refresh margin.
    before.set_secret("expires_at", int(time.time()) + 5)
    sessions.save(before)
    requests_before = httpx.get(f"{stack.ehr_url}/test/token-requests").json()

    frame.goto(f"{stack.view_url}/queue")
    frame.wait_for_load_state()

    after = sessions.load(cookie["value"])
    assert after is not None
    assert after.secret["access_token"] != old_access
    assert after.secret["access_token"] in issued_tokens(stack)
    assert after.secret["expires_at"] > time.time() + 60
    new_requests = httpx.get(f"{stack.ehr_url}/test/token-requests").json()[len(requests_before) :]
    assert [(r["grant_type"], r["status"]) for r in new_requests] == [("refresh_token", 200)]
    assert after.secret["access_token"] not in frame.content()
