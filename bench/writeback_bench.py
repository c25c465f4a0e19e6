"""Benchmark: `referral-adapter writeback` to a real HAPI server, batched against one request per
resource, in the same run.

Starts the test HAPI server (tests/hapi/hapi.sh), loads `synth` data into it (or reuses an H2
file database loaded before, `--hapi-data`), syncs it once into a template store (which plans
the Tasks and status updates into the outbox), then, alternating so machine noise hits both
alike, for each repeat:
- batched: a copy of the template store, `writeback` (batch Bundles of `--batch-size`);
- one by one: a copy of the template store, `writeback --no-batch`;
and after each run deletes what it wrote (by the outbox's `written` references), so every run
creates the same resources afresh. Reported: entries written, seconds, entries per second of
each mode, and the batched/one-by-one rate ratio.

    .venv/bin/python bench/writeback_bench.py [--referrals 10000] [--repeat 2]
        [--hapi-data DIR] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from segment_bench import adapter_command, dataset  # noqa: E402

AS_OF = "2026-12-03T12:00:00Z"


def written_references(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT written FROM outbox WHERE written IS NOT NULL").fetchall()
    return ["/".join(str(row[0]).split("/")[:2]) for row in rows]


def delete_all(base: str, references: list[str]) -> float:
    """Delete the resources (batch Bundles of DELETE); seconds taken."""
    clock = time.perf_counter()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    with httpx.Client(timeout=600, headers=headers) as http:
        for start in range(0, len(references), 500):
            chunk = references[start : start + 500]
            bundle = {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in chunk],
            }
            http.post(base, content=json.dumps(bundle)).raise_for_status()
    return time.perf_counter() - clock


def run_writeback(adapter: list[str], base: str, db: Path, extra: list[str]) -> dict[str, float]:
    clock = time.perf_counter()
    done = subprocess.run(
        [*adapter, "writeback", "--fhir-base", base, "--db", f"sqlite:///{db}", "--json", *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - clock
    summary = [json.loads(line) for line in done.stdout.splitlines()][-1]
    assert summary["event"] == "writeback", summary
    if summary["dead"] or summary["failed"]:
        raise SystemExit(f"bench: write-back failed entries: {summary}")
    return {
        "seconds": seconds,
        "written": summary["written"],
        "entries": summary["entries"],
        "requests": summary["requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--hapi-data",
        type=Path,
        metavar="DIR",
        help="keep HAPI's database in an H2 file under DIR and load the data only once",
    )
    args = parser.parse_args()
    adapter = adapter_command()
    state = Path(tempfile.mkdtemp(prefix="writeback-bench-"))
    env = {**os.environ, "HAPI_STATE_DIR": str(state)}
    loaded = None
    if args.hapi_data is not None:
        args.hapi_data.mkdir(parents=True, exist_ok=True)
        files = args.hapi_data.resolve() / f"writeback-{args.referrals}"
        loaded = files.with_suffix(".loaded")
        env["HAPI_JAVA_OPTS"] = (
            "-Xms256m -Xmx2g -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "
            f"-Dhapi.launcher.jdbc-url=jdbc:h2:file:{files}"
        )
    hapi = ROOT / "tests" / "hapi" / "hapi.sh"
    base = subprocess.run(
        [str(hapi), "start"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        data = dataset(args.referrals, 1)
        if loaded is None or not loaded.exists():
            print(f"bench: loading {args.referrals} referrals into HAPI", file=sys.stderr)
            subprocess.run(
                [*adapter, "load", "--fhir-base", base, "--input", str(data)],
                check=True,
                capture_output=True,
            )
            if loaded is not None:
                loaded.write_text("loaded\n")
        template = state / "template.db"
        sync = [*adapter, "sync", "--fhir-base", base, "--db", f"sqlite:///{template}"]
        subprocess.run(
            [*sync, "--as-of", AS_OF],
            check=True,
            capture_output=True,
        )
        runs: dict[str, list[dict[str, float]]] = {"batched": [], "one_by_one": []}
        modes = {"batched": ["--batch-size", str(args.batch_size)], "one_by_one": ["--no-batch"]}
        for n in range(args.repeat):
            for mode, extra in modes.items():
                db = state / f"{mode}-{n}.db"
                shutil.copy(template, db)
                result = run_writeback(adapter, base, db, extra)
                result["delete_s"] = delete_all(base, written_references(db))
                runs[mode].append(result)
                print(f"bench: {mode} run {n}: {result}", file=sys.stderr)
    finally:
        subprocess.run([str(hapi), "stop"], env=env, check=False, capture_output=True)
    rates = {
        mode: statistics.median(r["written"] / r["seconds"] for r in results)
        for mode, results in runs.items()
    }
    row = {
        "referrals": args.referrals,
        "entries": runs["batched"][0]["entries"],
        "batch_size": args.batch_size,
        "batched_s": [round(r["seconds"], 1) for r in runs["batched"]],
        "one_by_one_s": [round(r["seconds"], 1) for r in runs["one_by_one"]],
        "batched_requests": runs["batched"][0]["requests"],
        "one_by_one_requests": runs["one_by_one"][0]["requests"],
        "batched_per_s": round(rates["batched"], 1),
        "one_by_one_per_s": round(rates["one_by_one"], 1),
        "ratio": round(rates["batched"] / rates["one_by_one"], 2),
    }
    print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
