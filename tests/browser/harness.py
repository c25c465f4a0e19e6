"""The pieces the browser tests run on: the view under waitress in a thread, a client key pair,
and a small cookie-keeping HTTP agent for the refusals that are checked below the browser.

The agent keeps cookies itself (by host and port, ignoring paths and attributes) because
Python's cookie jar never sends a `Secure` cookie over plain http, while Chromium does on
http://localhost, where the view runs in these tests.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import waitress
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CHROMIUM = Path("/usr/bin/chromium")
# What works for Debian's Chromium as root in a container: no sandbox, no GPU, and none of the
# background traffic (updates, sync, field trials) a test has no use for.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def artifacts_folder() -> Path:
    """Where screenshots and rendered pages go: $REFERRAL_ADAPTER_ARTIFACTS, else
    test-artifacts/ at the repository's root."""
    root = Path(__file__).resolve().parents[2]
    folder = Path(os.environ.get("REFERRAL_ADAPTER_ARTIFACTS") or root / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class ClientKey:
    """The view's private_key_jwt key: the PEM file the view reads, the JWKS the EHR holds."""

    pem_file: Path
    key_id: str
    jwks: dict[str, Any]

    @classmethod
    def create(cls, folder: Path, key_id: str = "referral-view-test-key") -> ClientKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem_file = folder / "client-key.pem"
        pem_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        public.update(kid=key_id, alg="RS384", use="sig")
        return cls(pem_file=pem_file, key_id=key_id, jwks={"keys": [public]})


class LateApp:
    """A WSGI app whose real app is set after the server is bound (the view's configuration
    names the EHR, whose configuration names the view's port)."""

    def __init__(self) -> None:
        self.app: WSGIApp | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "the view was not set up"
        return self.app(environ, start_response)


class ViewServer:
    """waitress serving a WSGI app on 127.0.0.1 (a free port) from a daemon thread."""

    def __init__(self, app: WSGIApp) -> None:
        self.server: Any = waitress.create_server(  # type: ignore[attr-defined]
            app, host="127.0.0.1", port=0, threads=4, ident=None
        )
        self.port: int = int(self.server.effective_port)
        self.thread = threading.Thread(target=self.server.run, name="view-server", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


def with_query(url: str, **changes: str | None) -> str:
    """`url` with query parameters replaced (a None value drops the parameter)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


@dataclass
class Agent:
    """A browser stand-in: cookies per host:port, redirects followed by hand."""

    jar: dict[str, dict[str, str]] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        host = urlsplit(url).netloc
        cookies = self.jar.setdefault(host, {})
        headers = dict(kwargs.pop("headers", {}) or {})
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        response = self.http.request(method, url, headers=headers, **kwargs)
        for line in response.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            attributes = rest.lower()
            if not value or "max-age=0" in attributes or "expires=thu, 01 jan 1970" in attributes:
                cookies.pop(name.strip(), None)
            else:
                cookies[name.strip()] = value
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def follow(
        self, url: str, until: Callable[[str], bool], limit: int = 12
    ) -> tuple[httpx.Response, str]:
        """GET `url` and follow redirects until the next location satisfies `until` (that one
        is returned, not requested) or a response is no redirect; (last response, location)."""
        response = self.get(url)
        for _ in range(limit):
            if not response.is_redirect:
                return response, str(response.url)
            location = str(response.url.join(response.headers["location"]))
            if until(location):
                return response, location
            response = self.get(location)
        raise AssertionError(f"more than {limit} redirects from {url}")

    def close(self) -> None:
        self.http.close()
