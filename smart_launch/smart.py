"""The SMART App Launch 2.2 client side: discovery, the authorization request (PKCE S256,
`aud` = `iss`, a state of 256 random bits), the code exchange and refresh (private_key_jwt for a
confidential client, client_id alone for a public one), and what a granted scope allows.

Every request has a timeout; errors are `LaunchError`s whose message names what went wrong and
never carries a token, a code or a verifier.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from adapter.smart_auth import CLIENT_ASSERTION_TYPE, client_assertion
from smart_launch.config import Issuer

__all__ = [
    "LaunchError",
    "Scopes",
    "SmartConfiguration",
    "TokenResponse",
    "authorize_url",
    "discover",
    "exchange_code",
    "new_pkce",
    "new_state",
    "refresh_tokens",
]

DISCOVERY_TTL_S = 3600.0
_discovered: dict[str, tuple[float, SmartConfiguration]] = {}


class LaunchError(Exception):
    """The launch cannot go on (refused, misconfigured, or the EHR failed)."""


@dataclass(frozen=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str
    capabilities: frozenset[str]
    issuer: str | None


def discover(http: httpx.Client, iss: str) -> SmartConfiguration:
    """The EHR's `.well-known/smart-configuration` (cached for an hour)."""
    cached = _discovered.get(iss)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    url = f"{iss.rstrip('/')}/.well-known/smart-configuration"
    try:
        response = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        raise LaunchError(
            f"the EHR's SMART configuration could not be read ({type(error).__name__})"
        ) from None
    if response.status_code != 200:
        raise LaunchError(f"the EHR's SMART configuration answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise LaunchError("the EHR's SMART configuration is not JSON") from None
    if not isinstance(body, dict):
        raise LaunchError("the EHR's SMART configuration is not a JSON object")
    authorize, token = body.get("authorization_endpoint"), body.get("token_endpoint")
    if not isinstance(authorize, str) or not isinstance(token, str):
        raise LaunchError("the EHR's SMART configuration names no authorization or token endpoint")
    methods = body.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise LaunchError("the EHR does not support PKCE with S256")
    capabilities = body.get("capabilities")
    found = SmartConfiguration(
        authorization_endpoint=authorize,
        token_endpoint=token,
        capabilities=frozenset(c for c in capabilities or [] if isinstance(c, str)),
        issuer=body.get("issuer") if isinstance(body.get("issuer"), str) else None,
    )
    _discovered[iss] = (time.monotonic() + DISCOVERY_TTL_S, found)
    return found


def new_state() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_pkce() -> tuple[str, str]:
    """(code_verifier, code_challenge) for PKCE S256."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def authorize_url(
    config: SmartConfiguration,
    issuer: Issuer,
    *,
    redirect_uri: str,
    scope: str,
    state: str,
    code_challenge: str,
    launch: str | None,
) -> str:
    params = {
        "response_type": "code",
        "client_id": issuer.client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": issuer.iss,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if launch is not None:
        params["launch"] = launch
    separator = "&" if "?" in config.authorization_endpoint else "?"
    return f"{config.authorization_endpoint}{separator}{urlencode(params)}"


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    refresh_token: str | None
    expires_at: float  # epoch seconds
    scope: str
    patient: str | None
    fhir_user: str | None
    id_token: str | None

    def secrets(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "id_token": self.id_token,
        }


def _client_auth(issuer: Issuer, token_endpoint: str) -> dict[str, str]:
    if issuer.private_key is None:
        return {"client_id": issuer.client_id}
    assert issuer.key_id is not None
    return {
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(
            issuer.private_key, issuer.key_id, issuer.client_id, token_endpoint, time.time()
        ),
    }


def _token_request(
    http: httpx.Client, config: SmartConfiguration, issuer: Issuer, form: dict[str, str]
) -> dict[str, Any]:
    started = time.time()
    try:
        response = http.post(
            config.token_endpoint,
            data={**form, **_client_auth(issuer, config.token_endpoint)},
            headers={"Accept": "application/json"},
        )
    except httpx.HTTPError as error:
        raise LaunchError(
            f"the EHR's token endpoint could not be reached ({type(error).__name__})"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        code = body.get("error") if isinstance(body, dict) else None
        shown = (
            f" ({code})" if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else ""
        )
        raise LaunchError(f"the EHR refused the token request: HTTP {response.status_code}{shown}")
    body["_started"] = started
    return body


def _parse(body: dict[str, Any], previous_scope: str | None = None) -> TokenResponse:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise LaunchError("the EHR's token response has no access_token")
    if str(body.get("token_type", "")).lower() != "bearer":
        raise LaunchError("the EHR's token response is not a bearer token")
    expires_in = body.get("expires_in")
    lifetime = (
        float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
    )
    scope = body.get("scope")
    if not isinstance(scope, str):
        if previous_scope is None:
            raise LaunchError("the EHR's token response does not say which scopes it granted")
        scope = previous_scope
    patient = body.get("patient")
    id_token = body.get("id_token") if isinstance(body.get("id_token"), str) else None
    fhir_user = None
    if id_token:
        # The id_token came straight from the token endpoint over TLS, so its claims are taken
        # as the EHR's; the view does not make access decisions on it beyond naming the user.
        claims = jwt.decode(id_token, options={"verify_signature": False})
        value = claims.get("fhirUser")
        fhir_user = value if isinstance(value, str) else None
    refresh = body.get("refresh_token")
    return TokenResponse(
        access_token=token,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_at=float(body["_started"]) + lifetime,
        scope=scope,
        patient=str(patient) if isinstance(patient, str) and patient else None,
        fhir_user=fhir_user,
        id_token=id_token,
    )


def exchange_code(
    http: httpx.Client,
    config: SmartConfiguration,
    issuer: Issuer,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
) -> TokenResponse:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    return _parse(_token_request(http, config, issuer, form))


def refresh_tokens(
    http: httpx.Client, config: SmartConfiguration, issuer: Issuer, refresh_token: str, scope: str
) -> TokenResponse:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    refreshed = _parse(_token_request(http, config, issuer, form), previous_scope=scope)
    if refreshed.refresh_token is None:  # the EHR keeps the old refresh token valid
        return TokenResponse(**{**refreshed.__dict__, "refresh_token": refresh_token})
    return refreshed


# SMART scopes: v2 `context/Type.cruds` and v1 `context/Type.read|write|*`.
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|[cruds]+)(\?.*)?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Scopes:
    """What a granted scope string allows."""

    granted: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scopes:
        return cls(frozenset(text.split()))

    def allows(self, resource_type: str, permission: str, context: str | None = None) -> bool:
        """Whether some granted scope gives `permission` (one of c r u d s) on the type, in the
        given context (patient, user) or any."""
        for scope in self.granted:
            match = _SCOPE.match(scope)
            if match is None or (context is not None and match.group(1) != context):
                continue
            if match.group(2) not in ("*", resource_type):
                continue
            letters = _V1.get(match.group(3), match.group(3))
            if permission in letters:
                return True
        return False

    def contexts(self, resource_type: str, permission: str) -> set[str]:
        return {
            context
            for context in ("patient", "user")
            if self.allows(resource_type, permission, context)
        }
