"""Fixtures of the view's tests: a store holding a small synthetic practice (through the real
`import` pipeline), and the view over it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from adapter import store
from adapter.ingest import ingest
from adapter.practice_rules import default_rules
from adapter.synth import synth_to_dir
from smart_launch import ViewConfig, create_app

NOW = datetime.now(UTC)
HOSTILE = "<img src=x onerror=alert(1)>"


def problems(where: str, what: str) -> None:
    raise AssertionError((where, what))


@pytest.fixture
def practice(tmp_path: Path) -> Path:
    """A synthetic month of 40 referrals, one patient of which is named to break HTML."""
    folder = tmp_path / "data"
    synth_to_dir(40, 5, NOW.replace(hour=0, minute=0, second=0, microsecond=0), folder)
    patients = folder / "Patient.ndjson"
    rows = [orjson.loads(line) for line in patients.read_bytes().splitlines()]
    rows[0]["name"] = [{"family": HOSTILE, "given": ["Eve"]}]
    patients.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return folder


@pytest.fixture
def engine(practice: Path, db_url: str) -> Iterator[Engine]:
    store.upgrade(db_url)
    made = store.make_engine(db_url)
    ingest(practice, made, default_rules(), NOW, problems)
    yield made
    made.dispose()


def view(engine: Engine, **options: Any) -> Flask:
    config = ViewConfig(
        database=str(engine.url.render_as_string(hide_password=False)),
        secret_key="test-secret",
        **{"demo": True, "secure_cookies": False, **options},
    )
    app = create_app(config, engine)
    app.testing = True
    return app


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has a form with a CSRF token"
    return found.group(1)


def signed_in(app: Flask, user: str = "sam") -> FlaskClient:
    client = app.test_client()
    token = csrf_of(client.get("/demo").text)
    response = client.post("/demo", data={"csrf_token": token, "user": user})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/queue")
    return client
