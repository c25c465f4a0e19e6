"""A sync killed with SIGKILL at a random point, then run again, ends exactly where an
uninterrupted sync ends: nothing lost, nothing doubled (a real subprocess, several trials).

The kill points are chosen by the sync's own progress (its `--json` page events), not by the
clock: a timed kill lands somewhere else on a faster or busier machine."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
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
PAGE = "5"  # small pages: many points to be killed at


def sync_command(url: str, db: str) -> list[str]:
    script = Path(sys.executable).with_name("referral-adapter")
    return [
        str(script),
        "sync",
        "--fhir-base",
        url,
        "--db",
        db,
        "--as-of",
        AS_OF,
        "--json",
        "--page-size",
        PAGE,
    ]


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
    done = subprocess.run(
        sync_command(hapi_base_url, reference_db), check=True, capture_output=True, text=True
    )
    pages = sum(json.loads(line)["event"] == "page" for line in done.stdout.splitlines())
    expected = snapshot(reference_db)
    assert len(expected["referrals"]) >= 55
    assert pages >= 10
    assert set(expected["history"].values()) == {1}  # one first sighting each

    chooser = random.Random(7)
    # Killed right after page k was stored: early, in the middle, and after the last page
    # (while evaluating); the others anywhere.
    kill_after = [1, pages // 2, pages] + [chooser.randint(1, pages) for _ in range(TRIALS - 3)]
    partial = 0  # trials killed with some, but not all, resources stored
    for trial, k in enumerate(kill_after):
        db = f"sqlite:///{tmp_path / f'trial-{trial}.db'}"
        process = subprocess.Popen(
            sync_command(hapi_base_url, db),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        seen = 0
        for line in process.stdout:
            seen += json.loads(line)["event"] == "page"
            if seen == k:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait()  # after the last page it may have finished before the kill: fine
        stored = len(snapshot(db)["resources"])
        partial += 0 < stored < len(expected["resources"])
        finished = subprocess.run(
            sync_command(hapi_base_url, db), check=False, capture_output=True, text=True
        )
        assert finished.returncode == 0, finished.stderr
        got = snapshot(db)
        assert got == expected, (
            f"trial {trial} (killed after page {k})",
            set(got["resources"]) ^ set(expected["resources"]),
            {r for r in got["referrals"] if got["referrals"][r] != expected["referrals"].get(r)},
        )
    assert partial >= 2, "no trial was killed in the middle of storing"
