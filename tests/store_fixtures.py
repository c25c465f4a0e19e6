"""`db_url`: an empty store database per test, on SQLite and on a real PostgreSQL; `engine`: an
engine on it, migrated (test modules that need a filled store define their own `engine`).

PostgreSQL (the Debian package) is started once per session by scripts/postgres in a throwaway
directory and stopped at the end. When it cannot start, the tests that use it fail: they do
not skip, since a skipped backend would pass CI unseen.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from adapter import store

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres"
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the `postgres` database of a cluster started for this session."""
    # Under /tmp, not pytest's tmp_path: that one is private to us, and the server runs as the
    # `postgres` user when we are root.
    where = Path(tempfile.mkdtemp(prefix="referral-pg-"))
    where.chmod(0o755)
    started = subprocess.run(
        [str(SCRIPT), "start", str(where)], check=False, capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        shutil.rmtree(where, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start:\n{started.stderr[-3000:]}", pytrace=False)
    engine = create_engine(started.stdout.strip(), isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()
        subprocess.run([str(SCRIPT), "stop", str(where)], check=False, timeout=120)
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'store.db'}"
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    name = f"test_{next(_numbers)}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} STRATEGY FILE_COPY"))
    yield make_url(admin.url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the empty store at `db_url`, migrated."""
    store.upgrade(db_url)
    made = store.make_engine(db_url)
    yield made
    made.dispose()
