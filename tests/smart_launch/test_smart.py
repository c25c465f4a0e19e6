"""The SMART client's pure parts: PKCE, state, the authorization URL, granted scopes, and the
token response (the flows themselves run against oidc-provider in tests/integration)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from smart_launch.config import Issuer
from smart_launch.smart import (
    LaunchError,
    Scopes,
    SmartConfiguration,
    _parse,
    authorize_url,
    exchange_code,
    new_pkce,
    new_state,
)

CONFIG = SmartConfiguration(
    authorization_endpoint="https://ehr.example/auth",
    token_endpoint="https://ehr.example/token",
    capabilities=frozenset(),
    issuer=None,
)


def test_pkce_is_s256_of_the_verifier() -> None:
    verifier, challenge = new_pkce()
    assert 43 <= len(verifier) <= 128
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert new_pkce()[0] != verifier


def test_state_has_at_least_128_random_bits() -> None:
    states = {new_state() for _ in range(100)}
    assert len(states) == 100
    assert all(len(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))) >= 16 for s in states)


def test_the_authorization_request_names_the_ehr_as_audience() -> None:
    issuer = Issuer(iss="https://ehr.example/fhir", client_id="app")
    url = authorize_url(
        CONFIG,
        issuer,
        redirect_uri="https://app.example/launch/callback",
        scope="launch openid",
        state="s",
        code_challenge="c",
        launch="L1",
    )
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert params == {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": "https://app.example/launch/callback",
        "scope": "launch openid",
        "state": "s",
        "aud": "https://ehr.example/fhir",
        "code_challenge": "c",
        "code_challenge_method": "S256",
        "launch": "L1",
    }


@pytest.mark.parametrize(
    ("granted", "resource", "permission", "allowed"),
    [
        ("user/ServiceRequest.rs", "ServiceRequest", "r", True),
        ("user/ServiceRequest.rs", "ServiceRequest", "c", False),
        ("user/Task.cu", "Task", "c", True),
        ("user/Task.cu", "Task", "r", False),
        ("patient/*.cruds", "Communication", "c", True),
        ("user/*.read", "Task", "r", True),  # SMART v1
        ("user/*.read", "Task", "c", False),
        ("user/Task.write", "Task", "u", True),
        ("patient/Task.cu?status=requested", "Task", "c", True),
        ("openid fhirUser launch", "ServiceRequest", "r", False),
        ("user/ServiceRequests.rs", "ServiceRequest", "r", False),
    ],
)
def test_what_a_granted_scope_allows(
    granted: str, resource: str, permission: str, allowed: bool
) -> None:
    assert Scopes.parse(granted).allows(resource, permission) is allowed


def test_contexts_of_a_grant() -> None:
    scopes = Scopes.parse("patient/ServiceRequest.rs user/Task.cu")
    assert scopes.contexts("ServiceRequest", "r") == {"patient"}
    assert scopes.contexts("Task", "c") == {"user"}


def test_the_token_response_says_what_was_granted() -> None:
    id_token = jwt.encode(
        {"fhirUser": "https://ehr.example/fhir/Practitioner/7"}, "k" * 32, "HS256"
    )
    found = _parse(
        {
            "access_token": "A",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "launch user/ServiceRequest.rs",
            "patient": "p1",
            "refresh_token": "R",
            "id_token": id_token,
            "_started": 1000.0,
        }
    )
    assert (found.patient, found.scope, found.expires_at) == (
        "p1",
        "launch user/ServiceRequest.rs",
        1300.0,
    )
    assert found.fhir_user == "https://ehr.example/fhir/Practitioner/7"
    with pytest.raises(LaunchError, match="which scopes"):
        _parse({"access_token": "A", "token_type": "bearer", "_started": 0})
    with pytest.raises(LaunchError, match="bearer"):
        _parse({"access_token": "A", "token_type": "mac", "scope": "x", "_started": 0})


def _exchange_with(issuer: Issuer) -> dict[str, list[str]]:
    """The form a code exchange posts to the token endpoint, for `issuer`'s client."""
    sent: dict[str, list[str]] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        sent.update(parse_qs(request.content.decode()))
        return httpx.Response(
            200, json={"access_token": "A", "token_type": "Bearer", "scope": "launch"}
        )

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        found = exchange_code(
            http, CONFIG, issuer, code="C", verifier="V", redirect_uri="https://app/cb"
        )
    assert found.access_token == "A"
    return sent


def test_a_public_client_names_itself_and_a_confidential_one_signs_an_assertion() -> None:
    public = _exchange_with(Issuer(iss="https://ehr.example/fhir", client_id="view"))
    assert public["client_id"] == ["view"]
    assert "client_assertion" not in public
    assert public["code_verifier"] == ["V"]

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    confidential = _exchange_with(
        Issuer(iss="https://ehr.example/fhir", client_id="view", private_key=key, key_id="k1")
    )
    assert "client_id" not in confidential
    [assertion] = confidential["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert (header["alg"], header["kid"]) == ("RS384", "k1")
    claims = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=["RS384"],
        audience="https://ehr.example/token",
    )
    assert claims["iss"] == claims["sub"] == "view"
    assert confidential["code_verifier"] == ["V"]
