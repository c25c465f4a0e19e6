"""Authentication for FHIR requests: none, a static bearer token, or SMART Backend Services.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html): the token
endpoint is discovered from `{base}/.well-known/smart-configuration`, and an access token is
obtained with the `client_credentials` grant, the client authenticating with a `private_key_jwt`
assertion signed RS384 or ES384. The token is reused until shortly before it expires.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapter.errors import AuthenticationFailed, ConfigError, TemporaryServerError

__all__ = [
    "ASSERTION_LIFETIME_S",
    "CLIENT_ASSERTION_TYPE",
    "Auth",
    "BearerToken",
    "PrivateKey",
    "SmartBackendAuth",
    "client_assertion",
    "load_private_key",
    "signing_algorithm",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# The spec caps an assertion's exp at five minutes after now; staying a minute inside the cap
# keeps us valid when our clock runs ahead of the authorization server's.
ASSERTION_LIFETIME_S = 240

# A token is renewed this long before its expiry, so no request leaves with a token that expires
# in flight.
REFRESH_MARGIN_S = 60.0

# Assumed lifetime when the token response omits expires_in (it is only RECOMMENDED by RFC 6749).
DEFAULT_TOKEN_LIFETIME_S = 300.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Auth(Protocol):
    """What `FhirClient` needs from an authentication method."""

    def headers(self, http: httpx.Client) -> dict[str, str]:
        """Headers to send with the next FHIR request (may fetch a token first)."""
        ...

    def refresh(self, http: httpx.Client) -> bool:
        """Drop the cached credential after a 401 and get a new one; False if there is none."""
        ...


class BearerToken:
    """A static bearer token, as issued out of band; a 401 cannot be cured by refreshing it."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("the bearer token is empty")
        self._token = token

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    def headers(self, http: httpx.Client) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self, http: httpx.Client) -> bool:
        return False


def load_private_key(pem: str | bytes, password: bytes | None = None) -> PrivateKey:
    """An RSA or EC private key from PEM text; ConfigError for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ConfigError("the SMART private key is not a readable PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError("the SMART private key must be RSA (RS384) or EC P-384 (ES384)")
    return key


def signing_algorithm(key: PrivateKey) -> str:
    """RS384 for an RSA key of 2048 bits or more, ES384 for an EC P-384 key; else ConfigError."""
    return _algorithm_for(key)


def client_assertion(
    key: PrivateKey, key_id: str, client_id: str, audience: str, now: float
) -> str:
    """A `private_key_jwt` client assertion: iss = sub = the client, aud = the token endpoint,
    a fresh jti, expiring within 5 minutes (SMART App Launch and Backend Services)."""
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": str(uuid.uuid4()),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_S,
    }
    return jwt.encode(
        claims, key, algorithm=_algorithm_for(key), headers={"kid": key_id, "typ": "JWT"}
    )


def _algorithm_for(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError("the SMART RSA key must have at least 2048 bits")
        return "RS384"
    if not isinstance(key.curve, ec.SECP384R1):
        raise ConfigError(f"the SMART EC key must be on P-384 for ES384, not {key.curve.name}")
    return "ES384"


class SmartBackendAuth:
    """SMART Backend Services: client_credentials with a signed private_key_jwt assertion."""

    def __init__(
        self,
        fhir_base_url: str,
        client_id: str,
        private_key: PrivateKey | str | bytes,
        key_id: str,
        *,
        scope: str = "system/*.rs",
        token_endpoint: str | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin_s: float = REFRESH_MARGIN_S,
    ) -> None:
        if not client_id:
            raise ConfigError("the SMART client id is empty")
        if not key_id:
            raise ConfigError("the SMART key id (kid) is empty")
        self.client_id = client_id
        self.key_id = key_id
        self.scope = scope
        self._base = fhir_base_url.rstrip("/")
        self._key = (
            load_private_key(private_key) if isinstance(private_key, str | bytes) else private_key
        )
        self.algorithm = _algorithm_for(self._key)
        self._token_endpoint = token_endpoint
        self._clock = clock
        self._refresh_margin_s = refresh_margin_s
        self._token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, alg={self.algorithm})"

    # -- Auth protocol ----------------------------------------------------------------------

    def headers(self, http: httpx.Client) -> dict[str, str]:
        if self._token is None or self._clock() >= self._expires_at - self._refresh_margin_s:
            self._fetch_token(http)
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self, http: httpx.Client) -> bool:
        self._token = None
        self._fetch_token(http)
        return True

    # -- the pieces -------------------------------------------------------------------------

    def token_endpoint(self, http: httpx.Client) -> str:
        """The token endpoint, discovered once from `.well-known/smart-configuration`."""
        if self._token_endpoint is None:
            self._token_endpoint = self._discover(http)
        return self._token_endpoint

    def client_assertion(self, audience: str) -> str:
        """A freshly signed assertion: iss = sub = client id, aud = token endpoint, new jti."""
        return client_assertion(self._key, self.key_id, self.client_id, audience, self._clock())

    def _discover(self, http: httpx.Client) -> str:
        url = f"{self._base}/.well-known/smart-configuration"
        where = f"SMART discovery at {httpx.URL(url).path}"
        try:
            response = http.get(url, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise TemporaryServerError(f"{where} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise AuthenticationFailed(
                f"{where} answered HTTP {response.status_code}; is SMART enabled on this server?",
                status=response.status_code,
            )
        config = _json_object(response.content)
        endpoint = config.get("token_endpoint") if config is not None else None
        if not isinstance(endpoint, str) or not endpoint:
            raise AuthenticationFailed(f"{where} gave no token_endpoint", status=200)
        assert config is not None
        # Servers that list their methods/algorithms must list ours, or the token call will fail.
        methods = config.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise AuthenticationFailed(f"{where}: the server does not offer private_key_jwt")
        algs = config.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algs, list) and self.algorithm not in algs:
            raise AuthenticationFailed(
                f"{where}: the server does not accept {self.algorithm} assertions "
                f"(it accepts {', '.join(str(a) for a in algs)})"
            )
        return endpoint

    def _fetch_token(self, http: httpx.Client) -> None:
        endpoint = self.token_endpoint(http)
        where = f"SMART token request to {httpx.URL(endpoint).path}"
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(endpoint),
        }
        started = self._clock()
        try:
            response = http.post(endpoint, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise TemporaryServerError(f"{where} failed: {type(exc).__name__}") from exc
        body = _json_object(response.content)
        if response.status_code >= 500:
            raise TemporaryServerError(
                f"{where} answered HTTP {response.status_code}", status=response.status_code
            )
        if response.status_code != 200:
            raise AuthenticationFailed(
                f"{where} was refused (HTTP {response.status_code}){_oauth_error(body)}",
                status=response.status_code,
                outcome_text=_oauth_error(body).removeprefix(": ") or None,
            )
        token = body.get("access_token") if body is not None else None
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed(f"{where} returned no access_token", status=200)
        assert body is not None
        expires_in = body.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and expires_in > 0
            else DEFAULT_TOKEN_LIFETIME_S
        )
        self._token = token
        self._expires_at = started + lifetime


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _oauth_error(body: dict[str, Any] | None) -> str:
    """The standard OAuth `error` / `error_description` fields (RFC 6749 5.2), never more."""
    if body is None:
        return ""
    parts = [str(body[k])[:300] for k in ("error", "error_description") if body.get(k)]
    return ": " + " - ".join(parts) if parts else ""
