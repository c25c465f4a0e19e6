"""Benchmark: `referral-adapter sync` from a real HAPI server, against a plain httpx floor.

For each size: start the test HAPI server (tests/hapi/hapi.sh), load `synth` data into it with
`referral-adapter load`, then, alternating so machine noise hits both alike:
- floor: a fresh Python process GETs the same searches (every synced type, `_count=200`, sorted
  by `_lastUpdated`, next links followed) with a plain httpx loop, parsing each page;
- sync: a fresh `referral-adapter sync` into an empty SQLite store.
Reported: wall times and their ratio (target at most 1.25), the adapter's own CPU seconds per
1,000 resources (user+sys of the sync process; HAPI's time is not the adapter's), HTTP requests
per referral, peak memory (Pss of the process tree), and an incremental sync after 1% of the
referrals changed, as a share of the full sync's time (target at most 10%).

    .venv/bin/python bench/sync_bench.py [--sizes 2000 10000] [--repeat 3]

Loading takes a while (HAPI stores about 400 resources a second here); data stays in bench/out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from segment_bench import WRAPPER, adapter_command, dataset  # noqa: E402

AS_OF = "2026-12-03T12:00:00Z"
# Everything was loaded moments ago; with the default 5-minute overlap every sync would re-read
# it all. One second keeps the incremental measurement about the changes.
SHORT = ("--overlap-seconds", "1")
FLOOR = """
import sys, httpx, orjson
base = sys.argv[1]
types = sys.argv[2].split(",")
requests = 0
with httpx.Client(timeout=120) as http:
    for resource_type in types:
        url = f"{base}/{resource_type}?_count=200&_sort=_lastUpdated"
        while url:
            page = orjson.loads(http.get(url).content)
            requests += 1
            url = next((l["url"] for l in page.get("link", []) if l["relation"] == "next"), None)
print(requests, file=sys.stderr)
"""
CPU = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime)
"""


def run_wrapped(command: list[str]) -> tuple[float, int]:
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], check=True, capture_output=True, text=True
    )
    wall, peak = done.stdout.split()
    return float(wall), int(peak)


def cpu_seconds(command: list[str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CPU, *command], check=True, capture_output=True, text=True
    )
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from adapter.sync import SYNC_TYPES

    adapter = adapter_command()
    results = []
    for size in args.sizes:
        state = Path(tempfile.mkdtemp(prefix="sync-bench-"))
        env = {**os.environ, "HAPI_STATE_DIR": str(state)}
        hapi = ROOT / "tests" / "hapi" / "hapi.sh"
        base = subprocess.run(
            [str(hapi), "start"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            data = dataset(size, 1)
            clock = time.perf_counter()
            subprocess.run(
                [*adapter, "load", "--fhir-base", base, "--input", str(data)],
                check=True,
                capture_output=True,
            )
            load_s = time.perf_counter() - clock
            floor_times, sync_times, peaks = [], [], []
            requests = 0
            for n in range(args.repeat):
                wall, _ = run_wrapped([sys.executable, "-c", FLOOR, base, ",".join(SYNC_TYPES)])
                floor_times.append(wall)
                db = f"sqlite:///{state / f'full-{n}.db'}"
                wall, peak = run_wrapped(
                    [*adapter, "sync", "--fhir-base", base, "--db", db, "--as-of", AS_OF, *SHORT]
                )
                sync_times.append(wall)
                peaks.append(peak)
            done = subprocess.run(
                [sys.executable, "-c", FLOOR, base, ",".join(SYNC_TYPES)],
                check=True,
                capture_output=True,
                text=True,
            )
            requests = int(done.stderr.strip().splitlines()[-1])
            db = f"sqlite:///{state / 'cpu.db'}"
            cpu = cpu_seconds([*adapter, "sync", "--fhir-base", base, "--db", db, "--as-of", AS_OF])
            resources = sum(1 for f in data.glob("*.ndjson") for _ in f.open("rb"))
            # 1% of the referrals change on the server, then the store of the full sync syncs.
            changed = data.parent / f"changed-{size}.ndjson"
            lines = (data / "ServiceRequest.ndjson").read_bytes().splitlines()[: size // 100]
            bumped = [json.loads(x) | {"priority": "urgent"} for x in lines]
            changed.write_text("".join(json.dumps(r) + "\n" for r in bumped))
            # Past the short overlap the syncs above used, so only the changes are re-read.
            time.sleep(2)
            subprocess.run(
                [*adapter, "load", "--fhir-base", base, "--input", str(changed)],
                check=True,
                capture_output=True,
            )
            incremental, _ = run_wrapped(
                [
                    *adapter,
                    "sync",
                    "--fhir-base",
                    base,
                    "--db",
                    f"sqlite:///{state / 'full-0.db'}",
                    "--as-of",
                    AS_OF,
                    *SHORT,
                ]
            )
        finally:
            subprocess.run([str(hapi), "stop"], env=env, check=False, capture_output=True)
        floor_s, sync_s = statistics.median(floor_times), statistics.median(sync_times)
        row = {
            "referrals": size,
            "resources": resources,
            "load_s": round(load_s, 1),
            "floor_s": round(floor_s, 2),
            "sync_s": round(sync_s, 2),
            "ratio": round(sync_s / floor_s, 2),
            "adapter_cpu_s_per_1000": round(cpu / resources * 1000, 3),
            "requests_per_referral": round(requests / size, 3),
            "peak_mib": round(max(peaks) / 2**20, 1),
            "incremental_s": round(incremental, 2),
            "incremental_share": round(incremental / sync_s, 3),
            "floor_times": [round(t, 2) for t in floor_times],
            "sync_times": [round(t, 2) for t in sync_times],
        }
        results.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
