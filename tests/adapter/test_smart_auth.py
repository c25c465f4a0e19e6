"""`adapter.smart_auth`: the SMART Backend Services assertion, token caching, discovery errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapter.errors import AuthenticationFailed, ConfigError, TemporaryServerError
from adapter.fhir_client import FhirClient
from adapter.http_policy import RetryPolicy, make_http_client
from adapter.smart_auth import CLIENT_ASSERTION_TYPE, BearerToken, SmartBackendAuth

BASE = "https://ehr.example.org/fhir/r4"
TOKEN_URL = "https://auth.example.org/oauth2/token"
CLIENT_ID = "referral-adapter-test"
KID = "key-2026-03"
T0 = 1_772_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{BASE}/.well-known/smart-configuration").mock(
            return_value=httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                },
            )
        )
        yield router


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with make_http_client() as client:
        yield client


def token_route(mock: respx.MockRouter, *tokens: tuple[str, int]) -> respx.Route:
    return mock.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json={"access_token": t, "token_type": "bearer", "expires_in": s})
            for t, s in tokens
        ]
    )


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


@pytest.mark.parametrize(("key_name", "alg"), [("rsa_key", "RS384"), ("ec_key", "ES384")])
def test_the_assertion_has_the_smart_claims_and_header(
    request: pytest.FixtureRequest,
    mock: respx.MockRouter,
    http: httpx.Client,
    key_name: str,
    alg: str,
) -> None:
    key = request.getfixturevalue(key_name)
    clock = Clock()
    route = token_route(mock, ("tok-1", 300))
    auth = SmartBackendAuth(BASE, CLIENT_ID, key, KID, clock=clock)
    assert auth.algorithm == alg
    assert auth.headers(http) == {"Authorization": "Bearer tok-1"}

    form = form_of(route.calls.last.request)
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/*.rs"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == alg
    assert header["kid"] == KID
    assert header["typ"] == "JWT"
    claims: dict[str, Any] = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=[alg],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - T0 <= 300


def test_pem_keys_are_accepted_and_the_scope_is_configurable(
    ec_key: ec.EllipticCurvePrivateKey, mock: respx.MockRouter, http: httpx.Client
) -> None:
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    route = token_route(mock, ("tok", 300))
    auth = SmartBackendAuth(BASE, CLIENT_ID, pem, KID, scope="system/ServiceRequest.rs")
    auth.headers(http)
    assert form_of(route.calls.last.request)["scope"] == "system/ServiceRequest.rs"


def test_each_assertion_has_a_fresh_jti(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = SmartBackendAuth(BASE, CLIENT_ID, rsa_key, KID)
    jtis = {
        jwt.decode(
            auth.client_assertion(TOKEN_URL),
            rsa_key.public_key(),
            algorithms=["RS384"],
            audience=TOKEN_URL,
        )["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_the_token_is_reused_until_shortly_before_it_expires(
    ec_key: ec.EllipticCurvePrivateKey, mock: respx.MockRouter, http: httpx.Client
) -> None:
    clock = Clock()
    route = token_route(mock, ("tok-1", 300), ("tok-2", 300))
    auth = SmartBackendAuth(BASE, CLIENT_ID, ec_key, KID, clock=clock)
    assert auth.headers(http)["Authorization"] == "Bearer tok-1"
    clock.now = T0 + 200
    assert auth.headers(http)["Authorization"] == "Bearer tok-1"
    assert route.call_count == 1
    clock.now = T0 + 241  # within the 60 s refresh margin
    assert auth.headers(http)["Authorization"] == "Bearer tok-2"
    assert route.call_count == 2
    # Discovery happened once.
    assert mock.routes[0].call_count == 1


def test_a_401_from_the_fhir_server_fetches_a_new_token_once(
    rsa_key: rsa.RSAPrivateKey, mock: respx.MockRouter, http: httpx.Client
) -> None:
    token_route(mock, ("stale", 3600), ("fresh", 3600))
    read = mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[
            httpx.Response(401),
            httpx.Response(200, json={"resourceType": "Patient", "id": "ana-1"}),
        ]
    )
    auth = SmartBackendAuth(BASE, CLIENT_ID, rsa_key, KID)
    client = FhirClient(BASE, http, auth, RetryPolicy(sleep=lambda s: None))
    assert client.read("Patient", "ana-1")["id"] == "ana-1"
    assert [c.request.headers["Authorization"] for c in read.calls] == [
        "Bearer stale",
        "Bearer fresh",
    ]


def test_a_refused_token_request_is_authentication_failed_with_the_oauth_error(
    rsa_key: rsa.RSAPrivateKey, mock: respx.MockRouter, http: httpx.Client
) -> None:
    mock.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400, json={"error": "invalid_client", "error_description": "unknown kid"}
        )
    )
    auth = SmartBackendAuth(BASE, CLIENT_ID, rsa_key, KID)
    with pytest.raises(AuthenticationFailed, match="invalid_client - unknown kid"):
        auth.headers(http)


def test_a_token_endpoint_outage_is_temporary(
    rsa_key: rsa.RSAPrivateKey, mock: respx.MockRouter, http: httpx.Client
) -> None:
    mock.post(TOKEN_URL).mock(return_value=httpx.Response(503))
    with pytest.raises(TemporaryServerError):
        SmartBackendAuth(BASE, CLIENT_ID, rsa_key, KID).headers(http)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(404), "smart-configuration answered HTTP 404"),
        (httpx.Response(200, text="<html>"), "gave no token_endpoint"),
        (httpx.Response(200, json={"issuer": "x"}), "gave no token_endpoint"),
        (
            httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                },
            ),
            "does not offer private_key_jwt",
        ),
        (
            httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_signing_alg_values_supported": ["RS384"],
                },
            ),
            "does not accept ES384",
        ),
    ],
)
def test_discovery_failure_gives_a_clear_error(
    ec_key: ec.EllipticCurvePrivateKey, http: httpx.Client, answer: httpx.Response, message: str
) -> None:
    with respx.mock() as router:
        router.get(f"{BASE}/.well-known/smart-configuration").mock(return_value=answer)
        auth = SmartBackendAuth(BASE, CLIENT_ID, ec_key, KID)
        with pytest.raises(AuthenticationFailed, match=message):
            auth.headers(http)


def test_a_configured_token_endpoint_skips_discovery(
    ec_key: ec.EllipticCurvePrivateKey, http: httpx.Client
) -> None:
    with respx.mock() as router:
        route = token_route(router, ("tok", 300))
        auth = SmartBackendAuth(BASE, CLIENT_ID, ec_key, KID, token_endpoint=TOKEN_URL)
        assert auth.headers(http)["Authorization"] == "Bearer tok"
        assert route.call_count == 1


def test_keys_that_cannot_sign_rs384_or_es384_are_refused() -> None:
    with pytest.raises(ConfigError, match="P-384"):
        SmartBackendAuth(BASE, CLIENT_ID, ec.generate_private_key(ec.SECP256R1()), KID)
    with pytest.raises(ConfigError, match="PEM"):
        SmartBackendAuth(BASE, CLIENT_ID, "not a key", KID)


def test_a_static_bearer_token_is_sent_and_never_shown() -> None:
    auth = BearerToken("s3cret")
    with make_http_client() as http:
        assert auth.headers(http) == {"Authorization": "Bearer s3cret"}
        assert auth.refresh(http) is False
    assert "s3cret" not in repr(auth)
