"""A sync killed with SIGKILL at a random point, then run again, ends exactly where an
uninterrupted sync ends: nothing lost, nothing doubled (a real subprocess, several trials)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter import store
from adapter.cli import main
from adapter.store_models import Referral, SegmentChange, StoredResource
from adapter.synth import synth_to_dir

AS_OF = "2026-12-03T12:00:00Z"
TRIALS = 4


def sync_command(url: str, db: str) -> list[str]:
    script = Path(sys.executable).with_name("referral-adapter")
    return [str(script), "sync", "--fhir-base", url, "--db", db, "--as-of", AS_OF]


def snapshot(db: str) -> dict[str, Any]:
    engine = store.make_engine(db)
    with Session(engine) as session:
        resources = sorted(
            session.execute(
                select(StoredResource.resource_type, StoredResource.id, StoredResource.version_id)
            ).all()
        )
        referrals = dict(session.execute(select(Referral.key, Referral.evaluation)).all())
        history = dict(
            session.execute(
                select(SegmentChange.referral_key, func.count()).group_by(
                    SegmentChange.referral_key
                )
            ).all()
        )
    engine.dispose()
    return {"resources": resources, "referrals": referrals, "history": history}


def test_a_killed_sync_resumes_to_the_same_store(
    hapi_base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export"
    synth_to_dir(60, 31, datetime(2026, 12, 3, tzinfo=UTC), export)
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
    capsys.readouterr()

    reference_db = f"sqlite:///{tmp_path / 'reference.db'}"
    clock = time.perf_counter()
    subprocess.run(sync_command(hapi_base_url, reference_db), check=True, capture_output=True)
    duration = time.perf_counter() - clock
    expected = snapshot(reference_db)
    assert len(expected["referrals"]) >= 55
    assert set(expected["history"].values()) == {1}  # one first sighting each

    chooser = random.Random(7)
    partial = 0  # trials killed with some, but not all, resources stored
    for trial in range(TRIALS):
        db = f"sqlite:///{tmp_path / f'trial-{trial}.db'}"
        process = subprocess.Popen(
            sync_command(hapi_base_url, db),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Somewhere between start-up and the end of an uninterrupted run.
        time.sleep(chooser.uniform(0.25, 0.9) * duration)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if Path(db.removeprefix("sqlite:///")).exists():
            try:
                stored = len(snapshot(db)["resources"])
            except Exception:  # killed before the schema existed
                stored = 0
            partial += 0 < stored < len(expected["resources"])
        finished = subprocess.run(
            sync_command(hapi_base_url, db), check=False, capture_output=True, text=True
        )
        assert finished.returncode == 0, finished.stderr
        assert snapshot(db) == expected, f"trial {trial}"
    assert partial >= 1, "no trial was killed in the middle of storing"
