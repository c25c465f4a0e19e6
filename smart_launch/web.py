"""What every request of the view goes through: the server-side session and its cookie, the
CSRF check on every form, and the security headers of a page that lives in an EHR's iframe.

- The cookie `ra_session` holds the session id only; it is `HttpOnly; Secure; SameSite=None;
  Partitioned`, so it is sent inside the EHR's iframe (a third-party context) from a
  partitioned jar, and never readable by script.
- Every POST must carry the session's CSRF token (`csrf_token`), compared in constant time.
- Content-Security-Policy: scripts and styles from the view itself only (no inline script, no
  inline style), `frame-ancestors` from the configuration, no plugins, no base-URI changes.
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, abort, current_app, g, request

from smart_launch.sessions import BrowserSession, SessionStore

__all__ = ["COOKIE", "browser", "install"]

COOKIE = "ra_session"


def browser() -> BrowserSession:
    """This request's session."""
    found: BrowserSession = g.browser
    return found


def _store() -> SessionStore:
    store: SessionStore = current_app.extensions["ra_sessions"]
    return store


def _load() -> None:
    if request.endpoint in ("static", "health"):
        return
    store = _store()
    g.browser = store.load(request.cookies.get(COOKIE)) or store.new()
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = g.browser.data.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
            abort(
                400,
                description="This form is stale or was not sent from this page (its "
                "CSRF token is missing or wrong). Reload the page and try again.",
            )


def _finish(response: Response) -> Response:
    config = current_app.config["RA_CONFIG"]
    ancestors = " ".join(["'self'", *config.frame_ancestors])
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; "
        f"frame-ancestors {ancestors}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint not in ("static",):
        response.headers["Cache-Control"] = "no-store"
    current: BrowserSession | None = g.get("browser")
    if current is not None and current.changed:
        _store().save(current)
        secure = config.secure_cookies
        response.set_cookie(
            COOKIE,
            current.id,
            max_age=int(config.session_hours * 3600),
            path="/",
            secure=secure,
            httponly=True,
            samesite="None" if secure else "Lax",
            partitioned=secure,
        )
    return response


def install(app: Flask, store: SessionStore) -> None:
    app.extensions["ra_sessions"] = store
    app.before_request(_load)
    app.after_request(_finish)
