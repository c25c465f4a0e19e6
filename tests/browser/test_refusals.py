"""What the launch and the forms refuse, each against the running view and the real
oidc-provider. The launch refusals are sent with a cookie-keeping HTTP agent rather than the
browser: a forged or replayed callback is a request an attacker crafts, not a page a user
clicks. The CSRF refusal is shown in the browser, on the real form."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter.smart_auth import CLIENT_ASSERTION_TYPE, client_assertion, load_private_key
from adapter.store_models import ContactAttemptRow
from smart_launch.smart import new_state
from tests.browser.conftest import CLIENT_ID, Stack, ehr_launch
from tests.browser.harness import Agent, query_of, with_query


@pytest.fixture
def agent() -> Iterator[Agent]:
    made = Agent()
    yield made
    made.close()


def token_request_count(stack: Stack) -> int:
    return len(httpx.get(f"{stack.ehr_url}/test/token-requests").json())


def launch_id(stack: Stack) -> str:
    """A launch the EHR issued (as its launch page does when the user opens the app)."""
    page = httpx.get(stack.launch_page())
    assert page.status_code == 200
    return page.headers["x-launch-id"]


def authorize_location(agent: Agent, stack: Stack) -> str:
    """Start an EHR launch at the view; the authorization request it redirects to."""
    iss = quote(stack.fhir_base, safe="")
    response = agent.get(f"{stack.view_url}/launch?iss={iss}&launch={launch_id(stack)}")
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{stack.ehr_url}/oauth/auth?")
    return location


def callback_from_ehr(agent: Agent, stack: Stack, authorize: str) -> str:
    """Follow the authorization server's redirects; the callback URL it sends back to the
    view (with its code and state), not yet requested."""
    callback = f"{stack.view_url}/launch/callback"
    _, location = agent.follow(authorize, until=lambda url: url.startswith(callback))
    assert location.startswith(callback), location
    return location


def is_refused_launch(response: httpx.Response, status: int = 400) -> bool:
    return (
        response.status_code == status
        and "location" not in response.headers
        and "Launch refused" in response.text
    )


def signed_in(agent: Agent, stack: Stack) -> bool:
    return agent.get(f"{stack.view_url}/queue").status_code == 200


def test_a_forged_state_is_refused_and_the_code_never_redeemed(agent: Agent, stack: Stack) -> None:
    callback = callback_from_ehr(agent, stack, authorize_location(agent, stack))
    before = token_request_count(stack)
    forged = agent.get(with_query(callback, state=new_state()))
    assert is_refused_launch(forged)
    assert token_request_count(stack) == before
    assert not signed_in(agent, stack)


def test_a_missing_state_is_refused(agent: Agent, stack: Stack) -> None:
    callback = callback_from_ehr(agent, stack, authorize_location(agent, stack))
    before = token_request_count(stack)
    assert is_refused_launch(agent.get(with_query(callback, state=None)))
    assert token_request_count(stack) == before
    assert not signed_in(agent, stack)


def test_a_state_is_single_use(agent: Agent, stack: Stack) -> None:
    callback = callback_from_ehr(agent, stack, authorize_location(agent, stack))
    first = agent.get(callback)
    assert first.status_code == 302
    assert first.headers["location"] == "/queue"
    before = token_request_count(stack)
    assert is_refused_launch(agent.get(callback))
    assert token_request_count(stack) == before


def test_a_state_from_another_browser_is_refused(agent: Agent, stack: Stack) -> None:
    callback = callback_from_ehr(agent, stack, authorize_location(agent, stack))
    other = Agent()
    try:
        assert is_refused_launch(other.get(callback))
    finally:
        other.close()
    # The browser that started the launch can still finish it.
    assert agent.get(callback).status_code == 302
    assert signed_in(agent, stack)


def test_the_audience_is_the_iss_and_a_wrong_one_is_refused(agent: Agent, stack: Stack) -> None:
    authorize = authorize_location(agent, stack)
    assert query_of(authorize)["aud"] == stack.fhir_base

    wrong = with_query(authorize, aud="http://127.0.0.1:9/fhir")
    response = agent.get(wrong)
    # The authorization server sends the error back to the registered redirect URI.
    assert response.is_redirect
    location = response.headers["location"]
    assert location.startswith(f"{stack.view_url}/launch/callback?")
    answer = query_of(location)
    assert answer["error"] == "invalid_request"
    assert "aud" in answer["error_description"]
    assert "code" not in answer
    refused = agent.get(location)
    assert refused.status_code == 403
    assert "did not authorize" in refused.text
    assert not signed_in(agent, stack)


@pytest.mark.parametrize(
    "iss",
    [
        "https://ehr.example.org/fhir",
        # The same EHR host, another path: still not a configured issuer.
        "{ehr}/other/fhir",
    ],
)
def test_an_unlisted_iss_is_refused_before_anything_is_fetched(
    agent: Agent, stack: Stack, iss: str
) -> None:
    iss = iss.format(ehr=stack.ehr_url)
    response = agent.get(
        f"{stack.view_url}/launch?iss={quote(iss, safe='')}&launch={launch_id(stack)}"
    )
    assert response.status_code == 403
    assert "location" not in response.headers
    assert "Unknown EHR" in response.text
    # The EHR's log shows no request for that issuer's discovery document.
    assert "/other/fhir" not in stack.ehr.log_file.read_text()


def test_the_authorization_server_requires_pkce(agent: Agent, stack: Stack) -> None:
    authorize = authorize_location(agent, stack)
    stripped = with_query(authorize, code_challenge=None, code_challenge_method=None)
    response = agent.get(stripped)
    assert response.is_redirect
    answer = query_of(response.headers["location"])
    assert answer["error"] == "invalid_request"
    assert "PKCE" in answer["error_description"]


def test_a_token_request_without_the_code_verifier_is_refused(agent: Agent, stack: Stack) -> None:
    callback = callback_from_ehr(agent, stack, authorize_location(agent, stack))
    code, state = query_of(callback)["code"], query_of(callback)["state"]
    token_endpoint = f"{stack.ehr_url}/oauth/token"
    key = load_private_key(stack.client_key.pem_file.read_bytes())

    def redeem(**extra: str) -> httpx.Response:
        # What the view sends, signed with the view's own key.
        return httpx.post(
            token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": f"{stack.view_url}/launch/callback",
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": client_assertion(
                    key, stack.client_key.key_id, CLIENT_ID, token_endpoint, time.time()
                ),
                **extra,
            },
        )

    refused = redeem()
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert "access_token" not in refused.json()
    last = httpx.get(f"{stack.ehr_url}/test/token-requests").json()[-1]
    assert (last["has_code_verifier"], last["status"]) == (False, 400)
    # The control: the same request with the launch's verifier (kept encrypted in the view's
    # session) is granted, so it was the missing verifier that was refused.
    session = stack.sessions().load(agent.jar[stack.view_url.removeprefix("http://")]["ra_session"])
    assert session is not None
    granted = redeem(code_verifier=session.secret["verifiers"][state])
    assert granted.status_code == 200
    assert granted.json()["token_type"].lower() == "bearer"


def test_a_form_post_without_its_csrf_token_is_refused(page: Page, stack: Stack) -> None:
    rid = stack.referrals_of()[5]
    frame = ehr_launch(page, stack)
    frame.goto(f"{stack.view_url}/referrals/{rid}")
    form = frame.locator("form").filter(has=frame.get_by_role("button", name="Record attempt"))
    form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    with frame.expect_navigation():
        form.get_by_role("button", name="Record attempt").click()

    assert "CSRF token is missing or wrong" in frame.locator("main").inner_text()
    assert frame.locator("h1").inner_text() == "Request refused"
    with Session(stack.engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(ContactAttemptRow)
            .where(ContactAttemptRow.referral_key == f"ServiceRequest/{rid}")
        )
    assert count == 0
