"""Benchmark: `referral-adapter report` over a year of referral history, SQLite and PostgreSQL.

Two stores per database, with the same per-day arrivals (seeded by the day, so the smaller
history is exactly the last `--short-days` of the longer one): a year of history
(`--referrals` in `--days` days) and only its last quarter. The reported week (the last week
before `--end`) therefore has the same activity in both; the aggregation runs in the database
and reads the history since the week's start and the open referrals, so report time should
stay flat from the short history to the long one, while the store grows about fourfold.

The stores are filled with rows of the store's own tables (referral, segment_history,
contact_attempt, and ServiceRequest and Communication resources) in the shapes the pipeline
writes, generated here at bulk-insert speed: the referral model is not run (the tests show that
the report matches the model; this measures the SQL). Each report runs as
`referral-adapter report --format json` in a fresh process; wall time (median of
`--repeat`) and the peak memory of that process (Pss, sampled every 50 ms) are reported.

    .venv/bin/python bench/report_bench.py [--referrals 200000] [--days 365] [--short-days 91]
        [--postgres URL] [--repeat 3]

Without --postgres, a throwaway cluster is started with scripts/postgres (and stopped).
Stores go under bench/out/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapter import store  # noqa: E402
from adapter.practice_rules import default_rules  # noqa: E402
from adapter.report import Period, compute_report  # noqa: E402
from adapter.store_models import (  # noqa: E402
    ContactAttemptRow,
    Referral,
    SegmentChange,
    StoredResource,
)
from bench.segment_bench import measure  # noqa: E402

OUT = ROOT / "bench" / "out"
END = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday: the reported week is 2026-W48
WEEK = "2026-W48"
DAY = timedelta(days=1)
SHAPES = (
    ["ready-to-schedule"],
    ["missing-detail"],
    ["patient-active", "ready-to-schedule"],
    ["patient-active", "missing-detail"],
    ["time-sensitive", "missing-detail"],
    ["time-sensitive", "ready-to-schedule", "high-relationship"],
    ["missing-detail", "high-relationship"],
    ["ready-to-schedule", "high-relationship"],
)


def _primary(segments: list[str]) -> str | None:
    return segments[0] if segments else None


def _day_rows(k: int, per_day: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The referrals that arrived `k` days before END, with their whole history."""
    rng = Random(f"{seed}-{k}")
    rows: dict[str, list[dict[str, Any]]] = {
        "referral": [],
        "history": [],
        "contact": [],
        "resource": [],
    }
    day = END - k * DAY
    for n in range(per_day):
        sid = f"sr-{k:03d}-{n:05d}"
        key = f"ServiceRequest/{sid}"
        source = f"Organization/org-{rng.randrange(300):03d}"
        arrived = day + timedelta(seconds=rng.randrange(86_400))
        # (as_of, state, segments): arrival, maybe details completed, then scheduled/closed.
        steps: list[tuple[datetime, str, list[str]]] = []
        shape = list(rng.choice(SHAPES))
        at = arrived.replace(hour=0, minute=0, second=0) + DAY
        steps.append((at, "open", shape))
        if "missing-detail" in shape and rng.random() < 0.6:
            at += rng.randrange(2, 10) * DAY
            steps.append((at, "open", [s if s != "missing-detail" else "ready-to-schedule"
                                      for s in shape]))  # fmt: skip
        fate = rng.random()
        if fate < 0.6:
            at += rng.randrange(2, 25) * DAY
            steps.append((at, "scheduled", []))
            if rng.random() < 0.8:
                at += rng.randrange(5, 30) * DAY
                steps.append((at, "closed", []))
        elif fate < 0.85:
            at += rng.randrange(5, 40) * DAY
            steps.append((at, "closed", []))
        else:
            # Left open a long time, then closed: the open inventory stays bounded, so both
            # histories end with the same referrals open and only the closed past differs.
            at += rng.randrange(40, 80) * DAY
            steps.append((at, "closed", []))
        steps = [s for s in steps if s[0] < END]
        if not steps:
            continue
        before: tuple[str | None, list[str] | None] = (None, None)
        for as_of, state, segments in steps:
            rows["history"].append(
                {
                    "referral_key": key,
                    "from_state": before[0],
                    "to_state": state,
                    "from_segments": before[1],
                    "to_segments": segments,
                    "from_primary": _primary(before[1] or []),
                    "to_primary": _primary(segments),
                    "as_of": as_of,
                    "reasons": [{"item": "records", "segment": "missing-detail"}]
                    if "missing-detail" in segments
                    else [],
                }
            )
            before = (state, segments)
        state, segments = before
        rows["referral"].append(
            {
                "key": key,
                "patient": f"Patient/p-{k:03d}-{n:05d}",
                "state": state,
                "primary_segment": _primary(segments or []),
                "segments": segments,
                "evaluation": {"referral": key},
                "evaluated_at": END - DAY,
                "arrived_at": arrived,
                "due_at": None,
                "age_days": None,
                "aging_band": None,
                "source": source,
                "high_relationship": "high-relationship" in (segments or []),
            }
        )
        status = "revoked" if state == "closed" and rng.random() < 0.2 else "active"
        rows["resource"].append(_resource("ServiceRequest", sid, arrived, status, source))
        if rng.random() < 0.1:
            asked = arrived + rng.randrange(1, 20) * DAY
            if asked < END:
                rows["resource"].append(
                    _resource("Communication", f"msg-{sid}", asked, "completed", source, about=key)
                )
        for a in range(rng.choice((0, 0, 1, 2))):
            rows["contact"].append(
                {
                    "id": f"c-{sid}-{a}",
                    "referral_key": key,
                    "patient": f"Patient/p-{k:03d}-{n:05d}",
                    "at": arrived + rng.randrange(1, 15) * DAY,
                    "channel": "phone",
                    "outcome": "no-answer",
                    "by_reference": None,
                    "by_display": "bench",
                    "note": None,
                    "recorded_at": END,
                }
            )
    return rows


def _resource(
    rtype: str, rid: str, at: datetime, status: str, source: str, *, about: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": rtype, "id": rid, "status": status}
    if about is None:
        body["requester"] = {"reference": source}
    else:
        body["basedOn"] = [{"reference": about}]
        body["sender"] = {"reference": source}
    return {
        "resource_type": rtype,
        "id": rid,
        "version_id": "1",
        "version_num": 1,
        "last_updated": at,
        "source": "bench",
        "body": body,
        "stored_at": END,
        "deleted": False,
    }


def fill(url: str, days: int, per_day: int, seed: int) -> dict[str, int]:
    store.upgrade(url)
    engine = store.make_engine(url)
    tables = {
        "referral": Referral.__table__,
        "history": SegmentChange.__table__,
        "contact": ContactAttemptRow.__table__,
        "resource": StoredResource.__table__,
    }
    try:
        with engine.begin() as conn:
            for k in range(days, 0, -1):
                rows = _day_rows(k, per_day, seed)
                for name, table in tables.items():
                    if rows[name]:
                        conn.execute(insert(table), rows[name])
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE"))
            else:
                conn.exec_driver_sql("ANALYZE")
            return {
                "referrals": conn.execute(select(func.count()).select_from(Referral)).scalar_one(),
                "history_rows": conn.execute(
                    select(func.count()).select_from(SegmentChange)
                ).scalar_one(),
            }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=200_000, help="in the long history")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--short-days", type=int, default=91)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", help="a server URL (without database); default: start one")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    per_day = max(1, args.referrals // args.days)
    OUT.mkdir(parents=True, exist_ok=True)
    cluster = None
    server = args.postgres
    if server is None:
        cluster = Path(tempfile.mkdtemp(prefix="report-bench-pg-"))
        cluster.chmod(0o755)
        started = subprocess.run(
            [str(ROOT / "scripts" / "postgres"), "start", str(cluster)],
            check=True,
            capture_output=True,
            text=True,
        )
        server = started.stdout.strip().rsplit("/", 1)[0]
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    adapter = str(Path(sys.executable).with_name("referral-adapter"))
    rules = default_rules()
    results = []
    try:
        for days in (args.short_days, args.days):
            name = f"report_bench_{per_day}_{days}"
            sqlite_path = OUT / f"{name}.db"
            sqlite_path.unlink(missing_ok=True)
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
                conn.execute(text(f"CREATE DATABASE {name}"))
            for backend, url in (
                ("sqlite", f"sqlite:///{sqlite_path}"),
                ("postgresql", f"{server}/{name}"),
            ):
                clock = time.perf_counter()
                counts = fill(url, days, per_day, args.seed)
                filled = time.perf_counter() - clock
                walls, peaks = [], []
                for _ in range(args.repeat):
                    command = [adapter, "report", "--week", WEEK, "--db", url, "--format", "json"]
                    wall, peak = measure(command)
                    walls.append(wall)
                    peaks.append(peak)
                compute = []
                for _ in range(args.repeat):
                    engine = store.make_engine(url)
                    with Session(engine) as session:
                        clock = time.perf_counter()
                        compute_report(session, Period.week(WEEK), rules)
                        compute.append(time.perf_counter() - clock)
                    engine.dispose()
                row = {
                    "backend": backend,
                    "history_days": days,
                    **counts,
                    "fill_seconds": round(filled, 1),
                    "report_seconds": round(statistics.median(walls), 3),
                    "compute_seconds": round(statistics.median(compute), 3),
                    "peak_mib": round(max(peaks) / 2**20, 1),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            sqlite_path.unlink(missing_ok=True)
    finally:
        admin.dispose()
        if cluster is not None:
            subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", str(cluster)], check=False)
            shutil.rmtree(cluster, ignore_errors=True)
    for backend in ("sqlite", "postgresql"):
        short, long = (r for r in results if r["backend"] == backend)
        print(
            f"{backend}: {short['history_rows']} -> {long['history_rows']} history rows, "
            f"report {short['report_seconds']} s -> {long['report_seconds']} s "
            f"(x{long['report_seconds'] / short['report_seconds']:.2f}; in-process "
            f"{short['compute_seconds']} s -> {long['compute_seconds']} s), "
            f"peak {max(short['peak_mib'], long['peak_mib'])} MiB"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
