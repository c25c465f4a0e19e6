"""Two `referral-adapter sync` processes at once into the same store (SQLite and PostgreSQL),
against the real HAPI server, end exactly where one sync ends: every resource once at its newest
version, every referral evaluated once, one first-sighting history row each, cursors at the
newest values."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import store
from adapter.cli import main
from adapter.store_models import SyncCursor
from adapter.synth import synth_to_dir

from .test_sync_killed import snapshot, sync_command


def command(url: str, db: str) -> list[str]:
    """The killed test's sync command with pages of 50: this test is about the race, not about
    many pages (the shared server holds the other tests' referrals too)."""
    argv = sync_command(url, db)
    argv[argv.index("--page-size") + 1] = "50"
    return argv


def cursors(db: str) -> dict[str, datetime]:
    engine = store.make_engine(db)
    with Session(engine) as session:
        rows = dict(session.execute(select(SyncCursor.resource_type, SyncCursor.value)).all())
    engine.dispose()
    return rows


def test_two_syncs_at_once_store_what_one_sync_stores(
    hapi_base_url: str, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export"
    synth_to_dir(30, 47, datetime(2026, 12, 3, tzinfo=UTC), export, id_prefix="cc")
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
    capsys.readouterr()

    reference_db = f"sqlite:///{tmp_path / 'reference.db'}"
    subprocess.run(command(hapi_base_url, reference_db), check=True, capture_output=True)
    expected = snapshot(reference_db)
    assert len(expected["referrals"]) >= 28

    # Create the schema first, as a deployment does, so both runs race on the data, not on
    # the migration (two migrations at once are tested in test_store.py).
    store.upgrade(db_url)
    runs = [
        subprocess.Popen(
            command(hapi_base_url, db_url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err

    got = snapshot(db_url)
    assert got["resources"] == expected["resources"]
    assert got["referrals"] == expected["referrals"]
    # Both runs saw every referral for the first time, yet each has one first sighting.
    assert got["history"] == expected["history"]
    assert set(got["history"].values()) == {1}
    assert cursors(db_url).keys() == cursors(reference_db).keys()
