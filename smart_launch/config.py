"""The SMART view's configuration: a YAML file, with environment variables over it.

```yaml
database: postgresql+psycopg://adapter@db/referrals   # REFERRAL_ADAPTER_DB
rules: /etc/referral-adapter/practice.yaml            # REFERRAL_ADAPTER_RULES
secret_key: ...                  # REFERRAL_ADAPTER_SECRET_KEY: encrypts tokens at rest
base_url: https://referrals.example.org              # REFERRAL_ADAPTER_BASE_URL
frame_ancestors: [https://ehr.example.org]           # REFERRAL_ADAPTER_FRAME_ANCESTORS
issuers:                         # only these EHRs may launch the view
  - iss: https://ehr.example.org/fhir
    client_id: referral-adapter
    private_key: /etc/referral-adapter/smart-key.pem   # confidential client (private_key_jwt)
    key_id: key-1                                      # leave both out for a public client
session_hours: 8
queue_cache_seconds: 5           # the queue's lanes shared between requests; 0: never
```

`base_url` is the view's own address as the browser sees it (the redirect URI is
`{base_url}/launch/callback`, registered with each EHR).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapter.errors import ConfigError
from adapter.smart_auth import PrivateKey, load_private_key, signing_algorithm

__all__ = ["DEFAULT_SCOPES", "STANDALONE_SCOPES", "Issuer", "ViewConfig", "load_config"]

# What the view asks an EHR for: who the user is, the referrals (and patients) to read, and the
# Task and Communication writes its actions queue. A patient in the launch context narrows the
# view to that patient's referrals.
DEFAULT_SCOPES = (
    "launch openid fhirUser offline_access user/ServiceRequest.rs user/Patient.rs "
    "user/Task.cu user/Communication.c"
)
STANDALONE_SCOPES = (
    "launch/patient openid fhirUser offline_access patient/ServiceRequest.rs "
    "patient/Patient.rs patient/Task.cu patient/Communication.c"
)


@dataclass(frozen=True)
class Issuer:
    """An EHR allowed to launch the view, and how the view is registered with it."""

    iss: str
    client_id: str
    private_key: PrivateKey | None = None  # None: a public client
    key_id: str | None = None
    scopes: str = DEFAULT_SCOPES
    standalone_scopes: str = STANDALONE_SCOPES

    @property
    def confidential(self) -> bool:
        return self.private_key is not None


@dataclass(frozen=True)
class ViewConfig:
    database: str = "sqlite:///referral-adapter.db"
    rules: Path | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    base_url: str | None = None
    frame_ancestors: tuple[str, ...] = ()
    issuers: tuple[Issuer, ...] = ()
    session_hours: float = 8.0
    # The demo's sign-in (synthetic data, no EHR): never on in production.
    demo: bool = False
    # Cookies marked Secure (SameSite=None needs it; browsers count http://localhost as secure).
    secure_cookies: bool = True
    http_timeout_s: float = 10.0
    refresh_margin_s: float = 60.0
    queue_page_size: int = 25
    # How long the queue's lanes are shared between requests (actions clear them at once).
    queue_cache_seconds: float = 5.0

    def issuer(self, iss: str) -> Issuer | None:
        wanted = iss.rstrip("/")
        return next((i for i in self.issuers if i.iss.rstrip("/") == wanted), None)


def _issuer(entry: Any, where: str) -> Issuer:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: each issuer is a mapping with iss and client_id")
    unknown = sorted(
        set(entry) - {"iss", "client_id", "private_key", "key_id", "scopes", "standalone_scopes"}
    )
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    iss, client_id = entry.get("iss"), entry.get("client_id")
    if not isinstance(iss, str) or not iss.startswith(("https://", "http://")):
        raise ConfigError(f"{where}.iss: the EHR's FHIR base URL (https://...)")
    if not isinstance(client_id, str) or not client_id:
        raise ConfigError(f"{where}.client_id: required")
    key = None
    key_path = entry.get("private_key")
    if key_path is not None:
        if not entry.get("key_id"):
            raise ConfigError(f"{where}.key_id: required with private_key")
        try:
            key = load_private_key(Path(str(key_path)).read_bytes())
        except OSError as error:
            raise ConfigError(f"{where}.private_key: cannot read ({error.strerror})") from None
        signing_algorithm(key)  # refuses a weak or unsupported key now, not at launch
    return Issuer(
        iss=iss.rstrip("/"),
        client_id=client_id,
        private_key=key,
        key_id=str(entry["key_id"]) if entry.get("key_id") else None,
        scopes=str(entry.get("scopes") or DEFAULT_SCOPES),
        standalone_scopes=str(entry.get("standalone_scopes") or STANDALONE_SCOPES),
    )


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> ViewConfig:
    """The configuration file (if any) with the environment laid over it."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"config {path}: cannot be read ({error.strerror})") from None
        except yaml.YAMLError:
            raise ConfigError(f"config {path}: not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path}: a mapping of keys to values")
        data = loaded or {}
    known = {
        "database",
        "rules",
        "secret_key",
        "base_url",
        "frame_ancestors",
        "issuers",
        "session_hours",
        "secure_cookies",
        "queue_cache_seconds",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config {path}: unknown key {unknown[0]!r}")
    for key, variable in (
        ("database", "REFERRAL_ADAPTER_DB"),
        ("rules", "REFERRAL_ADAPTER_RULES"),
        ("secret_key", "REFERRAL_ADAPTER_SECRET_KEY"),
        ("base_url", "REFERRAL_ADAPTER_BASE_URL"),
    ):
        if env.get(variable):
            data[key] = env[variable]
    if env.get("REFERRAL_ADAPTER_FRAME_ANCESTORS"):
        data["frame_ancestors"] = env["REFERRAL_ADAPTER_FRAME_ANCESTORS"].split()
    if not data.get("secret_key"):
        raise ConfigError(
            "the view needs a secret key (secret_key, or REFERRAL_ADAPTER_SECRET_KEY): it "
            "encrypts the EHR tokens kept on the server"
        )
    issuers = data.get("issuers") or []
    if not isinstance(issuers, list):
        raise ConfigError("issuers: a list")
    ancestors = data.get("frame_ancestors") or []
    if isinstance(ancestors, str):
        ancestors = ancestors.split()
    for origin in ancestors:
        if not isinstance(origin, str) or any(c in origin for c in " ;,'\""):
            raise ConfigError("frame_ancestors: origins such as https://ehr.example.org")
    return ViewConfig(
        database=str(data.get("database") or "sqlite:///referral-adapter.db"),
        rules=Path(str(data["rules"])) if data.get("rules") else None,
        secret_key=str(data["secret_key"]),
        base_url=str(data["base_url"]).rstrip("/") if data.get("base_url") else None,
        frame_ancestors=tuple(ancestors),
        issuers=tuple(_issuer(e, f"issuers[{n}]") for n, e in enumerate(issuers)),
        session_hours=float(data.get("session_hours") or 8.0),
        secure_cookies=bool(data.get("secure_cookies", True)),
        queue_cache_seconds=_seconds(data.get("queue_cache_seconds", 5.0)),
    )


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError("queue_cache_seconds: a number of seconds, 0 or more")
    return float(value)
