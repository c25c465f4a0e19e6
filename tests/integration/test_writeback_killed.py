"""A write-back killed with SIGKILL at random points, then run again, leaves exactly one Task per
referral and one Communication per event on the server (a real subprocess, several trials)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from adapter import store
from adapter.cli import main
from adapter.store_models import OutboxEntry
from tests.integration.fhir_helpers import raw_client
from tests.integration.writeback_helpers import (
    AS_OF,
    our_communications,
    outbox_rows,
    own_data_set,
    tasks_for,
)

TRIALS = 4


def command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("referral-adapter")), *args]


def test_a_killed_write_back_leaves_one_task_per_referral_and_one_message_per_event(
    hapi_base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chooser = random.Random(11)
    partial = 0  # trials killed with some, but not all, entries written
    for trial in range(TRIALS):
        _, export, rules = own_data_set(tmp_path, 14, 60 + trial)
        assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
        db = f"sqlite:///{tmp_path / f'trial-{trial}.db'}"
        sync = ["sync", "--fhir-base", hapi_base_url, "--db", db, "--rules", str(rules)]
        assert main([*sync, "--as-of", AS_OF]) == 0
        capsys.readouterr()
        # Small batches, and one request per resource in every other trial: many places to
        # be killed at, between a write reaching the server and the outbox hearing of it.
        write = ["writeback", "--fhir-base", hapi_base_url, "--db", db, "--rules", str(rules)]
        write += ["--json", "--batch-size", "3"] + (["--no-batch"] if trial % 2 else [])
        entries = len(outbox_rows(db))
        events = -(-entries // 3)
        kill_after = [1, events // 2, chooser.randint(1, max(1, events - 1)), 2][trial]
        process = subprocess.Popen(
            command(*write), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert process.stdout is not None
        seen = 0
        for line in process.stdout:
            seen += json.loads(line)["event"] == "written"
            if seen == kill_after:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait()
        done = sum(row.status == "done" for row in outbox_rows(db))
        partial += 0 < done < entries
        # The killed writer may have claimed its next batch: those entries stay leased to it
        # (outbox.LEASE) so that no live writer is raced; let that time pass.
        leased = expire_leases(db)
        assert leased <= 3, "a writer holds at most one batch"
        finished = subprocess.run(command(*write), capture_output=True, text=True, check=False)
        assert finished.returncode == 0, finished.stderr
        rows = outbox_rows(db)
        assert {row.status for row in rows} == {"done"}, trial
        with raw_client(hapi_base_url) as fhir:
            check_exactly_once(fhir, rows)
    assert partial >= 2, "no trial was killed in the middle of writing"


def expire_leases(db: str) -> int:
    """Move the leases still held back past their end, as `outbox.LEASE` after a crash does;
    how many entries were leased."""
    engine = store.make_engine(db)
    past = datetime.now(UTC) - timedelta(seconds=1)
    with Session(engine) as session, session.begin():
        held = session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.status == "pending", OutboxEntry.lease_until.is_not(None))
            .values(lease_until=past)
        )
        count = held.rowcount
    engine.dispose()
    return int(count)


def check_exactly_once(fhir: httpx.Client, rows: list[OutboxEntry]) -> None:
    for row in rows:
        if row.kind == "task":
            assert len(tasks_for(fhir, row.referral_key)) == 1, row.referral_key
        else:
            assert len(our_communications(fhir, row.identifier)) == 1, row.identifier
