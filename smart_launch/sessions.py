"""Browser sessions kept on the server: the cookie carries an opaque random id, nothing else.

The EHR's tokens and the PKCE verifiers of launches under way are kept in `secret`, encrypted
with a key derived from the view's secret key, so a copy of the database does not hand out
access to the EHR. Everything else (who the user is, the granted scopes, the patient in
context, the CSRF token, pending launch states, a message to show once) is in `data`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from adapter.store import insert_for
from adapter.store_models import WebSession

__all__ = ["BrowserSession", "SessionStore"]


@dataclass
class BrowserSession:
    id: str
    expires_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    secret: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    new: bool = False

    @property
    def csrf_token(self) -> str:
        token = self.data.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            self.data["csrf"] = token
            self.changed = True
        return token

    @property
    def user(self) -> dict[str, Any] | None:
        user = self.data.get("user")
        return user if isinstance(user, dict) else None

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.changed = True

    def set_secret(self, key: str, value: Any) -> None:
        self.secret[key] = value
        self.changed = True

    def flash(self, message: str) -> None:
        self.set("flash", message)

    def pop_flash(self) -> str | None:
        message = self.data.pop("flash", None)
        if message is not None:
            self.changed = True
        return message if isinstance(message, str) else None

    def sign_out(self) -> None:
        """Forget the user and the tokens (the id is replaced, as at sign-in)."""
        self.data = {}
        self.secret = {}
        self.changed = True


class SessionStore:
    def __init__(self, engine: Engine, secret_key: str, lifetime: timedelta) -> None:
        self.engine = engine
        digest = hashlib.sha256(b"referral-adapter session secrets\x00" + secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(digest.digest()))
        self.lifetime = lifetime

    def new(self) -> BrowserSession:
        return BrowserSession(
            id=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + self.lifetime,
            changed=True,
            new=True,
        )

    def load(self, session_id: str | None) -> BrowserSession | None:
        if not session_id or len(session_id) > 64:
            return None
        with Session(self.engine) as session:
            row = session.get(WebSession, session_id)
            if row is None or row.expires_at <= datetime.now(UTC):
                return None
            secret: dict[str, Any] = {}
            if row.secret:
                try:
                    secret = orjson.loads(self._fernet.decrypt(row.secret.encode()))
                except InvalidToken:
                    secret = {}  # the secret key changed: the tokens are gone, not the session
            return BrowserSession(
                id=row.id, expires_at=row.expires_at, data=dict(row.data), secret=secret
            )

    def save(self, browser: BrowserSession) -> None:
        now = datetime.now(UTC)
        encrypted = (
            self._fernet.encrypt(orjson.dumps(browser.secret)).decode() if browser.secret else None
        )
        with Session(self.engine) as session, session.begin():
            stmt = insert_for(session)(WebSession).values(
                id=browser.id,
                created_at=now,
                expires_at=browser.expires_at,
                data=browser.data,
                secret=encrypted,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={
                    "expires_at": stmt.excluded.expires_at,
                    "data": stmt.excluded.data,
                    "secret": stmt.excluded.secret,
                },
            )
            session.execute(stmt)
        browser.changed = False
        browser.new = False

    def rotate(self, browser: BrowserSession) -> BrowserSession:
        """A new id for the same session (at sign-in: a fixated id is worth nothing)."""
        self.delete(browser.id)
        rotated = self.new()
        rotated.data, rotated.secret = dict(browser.data), dict(browser.secret)
        return rotated

    def delete(self, session_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(WebSession).where(WebSession.id == session_id))

    def purge_expired(self) -> int:
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                delete(WebSession).where(WebSession.expires_at <= datetime.now(UTC))
            )
        return int(getattr(result, "rowcount", 0) or 0)
