"""The launches, in Chromium: the EHR launch inside the EHR's cross-site iframe (user-level and
with a patient in context) and the standalone launch, each through oidc-provider to the queue."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, Page

from tests.browser.conftest import Stack, app_frame, ehr_launch, new_page, shown_referrals


def token_requests(stack: Stack) -> list[dict[str, object]]:
    found: list[dict[str, object]] = httpx.get(f"{stack.ehr_url}/test/token-requests").json()
    return found


def test_the_ehr_launch_in_a_cross_site_iframe_ends_on_the_whole_queue(
    page: Page, stack: Stack
) -> None:
    before = len(token_requests(stack))
    frame = ehr_launch(page, stack)

    # The EHR page and the view are different sites: 127.0.0.1 frames localhost.
    assert urlsplit(page.url).hostname == "127.0.0.1"
    assert urlsplit(frame.url).hostname == "localhost"
    assert frame.locator("h1").inner_text() == "Work queue"
    # A user-level launch: the whole queue, no patient banner.
    assert shown_referrals(frame) == stack.referrals_of()
    assert frame.locator("p.context").count() == 0
    # The user is named from the EHR's FHIR server (Practitioner read with the new token).
    assert "Sam Park" in frame.locator("header .who").inner_text()
    # The code was redeemed once, with the PKCE verifier and a private_key_jwt assertion.
    redeemed = token_requests(stack)[before:]
    assert [(r["grant_type"], r["status"]) for r in redeemed] == [("authorization_code", 200)]
    assert redeemed[0]["has_code_verifier"] is True
    assert redeemed[0]["client_assertion_alg"] == "RS384"


def test_a_patient_launch_opens_only_that_patients_referrals(page: Page, stack: Stack) -> None:
    patient = stack.standalone_patient
    wanted = stack.referrals_of(patient)
    assert wanted, "the chosen patient has open referrals"
    assert len(stack.referrals_of()) > len(wanted)

    frame = ehr_launch(page, stack, patient=patient)

    assert shown_referrals(frame) == wanted
    assert f"Patient/{patient}" in frame.locator("p.context").inner_text()
    # Another patient's referral is not found, even by its address.
    other = next(r for r in stack.referrals_of() if r not in wanted)
    response = frame.goto(f"{stack.view_url}/referrals/{other}")
    assert response is not None
    assert response.status == 404


def test_the_standalone_launch_signs_in_at_the_ehr_and_ends_on_the_queue(
    page: Page, stack: Stack
) -> None:
    page.goto(stack.view_url + "/")
    page.get_by_role("link", name=f"Sign in with {stack.fhir_base}").click()
    page.wait_for_url(f"{stack.view_url}/queue**")

    assert page.locator("h1").inner_text() == "Work queue"
    # The EHR's standalone login picks a patient (launch/patient): that patient's referrals.
    assert shown_referrals(page.main_frame) == stack.referrals_of(stack.standalone_patient)
    assert "Sam Park" in page.locator("header .who").inner_text()


def test_a_site_not_in_frame_ancestors_cannot_frame_the_view(
    browser: Browser, stack: Stack
) -> None:
    page = new_page(browser)
    # A page of another site (not the configured EHR) that frames the view.
    page.route(
        "http://other-ehr.test/",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<!DOCTYPE html><title>Other</title><iframe id="app" src="{stack.view_url}/">'
            "</iframe>",
        ),
    )
    try:
        page.goto("http://other-ehr.test/")
        frame = app_frame(page)
        frame.wait_for_load_state()
        # The view is up and names only the EHR as an ancestor; Chromium refused the frame.
        answer = httpx.get(f"{stack.view_url}/")
        assert answer.status_code == 200
        policy = answer.headers["content-security-policy"]
        assert policy.endswith(f"frame-ancestors 'self' {stack.ehr_url}")
        assert frame.url.startswith("chrome-error://")
        assert "Referral follow-up" not in frame.content()
    finally:
        page.context.close()
