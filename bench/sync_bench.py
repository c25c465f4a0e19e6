"""Benchmark: `referral-adapter sync` from a real HAPI server, against a plain httpx floor.

For each size: start the test HAPI server (tests/hapi/hapi.sh), load `synth` data into it with
`referral-adapter load`, run one sync with the request log on (REFERRAL_ADAPTER_HTTP_LOG) to learn
which pages a sync GETs, then, alternating so machine noise hits both alike, each run just after
the floor's requests were run once more unmeasured (HAPI keeps its look-ups for about a minute):
- floor: a fresh Python process runs the same searches with a plain httpx loop, following their
  next links and parsing each page (the same GETs, and the same work for the server);
- sync: a fresh `referral-adapter sync` into an empty SQLite store.
Reported: wall times and their ratio (target at most 1.25), the adapter's own CPU seconds per
1,000 resources (user+sys of the sync process; HAPI's time is not the adapter's), HTTP requests
per referral, peak memory (Pss of the process tree), an incremental sync after 1% of the
referrals changed, as a share of the full sync's time (target at most 10%), and a peer: fhirpy
(pip install -e .[bench]) fetching the same referral query with its includes and the same
per-patient Coverage and Communication queries, fetch only (no store, no evaluation).

    .venv/bin/python bench/sync_bench.py [--sizes 2000 10000] [--repeat 3]

Loading takes a while (about 100 resources a second at 2k, 50 at 10k, here); the synth data stays
in bench/out, and with `--hapi-data DIR` HAPI keeps its database in files so each size is loaded
only once.
"""

from __future__ import annotations

import argparse
import importlib.util
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
# The floor runs the searches the sync ran (the first pages in its request log) and follows
# their next links itself, parsing every page: the server does the same work for both. (A
# replay of the logged next links would be cheaper than any real client: HAPI serves them from
# the search it already ran for the logging sync.)
FLOOR = """
import sys, httpx, orjson
urls = [line.split()[1] for line in open(sys.argv[1]) if line.startswith("GET ")]
with httpx.Client(timeout=120, headers={"Accept": "application/fhir+json"}) as http:
    for url in urls:
        if "_getpages=" in url:
            continue
        while url:
            page = orjson.loads(http.get(url).content)
            links = page.get("link") or []
            url = next((x["url"] for x in links if x.get("relation") == "next"), None)
"""
PEER = """
import sys
from fhirpy import SyncFHIRClient
base = sys.argv[1]
client = SyncFHIRClient(base)
search = (
    client.resources("ServiceRequest")
    .search(_count=100, _sort="_lastUpdated")
    .include("ServiceRequest", "subject")
    .include("ServiceRequest", "requester")
)
for kind in ("Communication", "Appointment", "QuestionnaireResponse"):
    search = search.revinclude(kind, "based-on")
search = search.revinclude("DocumentReference", "related")
found = search.fetch_all()
patients = sorted({r["subject"]["reference"] for r in found
                   if r.resource_type == "ServiceRequest" and "subject" in r})
for start in range(0, len(patients), 100):
    batch = ",".join(patients[start:start + 100])
    found += client.resources("Coverage").search(beneficiary=batch, _count=100).fetch_all()
    found += client.resources("Communication").search(sender=batch, _count=100).fetch_all()
print(len(found), file=sys.stderr)
"""
CPU = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime)
"""


def measured(script: str, command: list[str]) -> str:
    """What `script` (WRAPPER or CPU) prints about running `command`; a failed command stops
    the bench with the end of what it wrote to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, *command], check=False, capture_output=True, text=True
    )
    if done.returncode:
        name = " ".join(Path(part).name for part in command[:2])
        sys.exit(f"bench: {name} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def run_wrapped(command: list[str]) -> tuple[float, int]:
    wall, peak = measured(WRAPPER, command).split()
    return float(wall), int(peak)


def cpu_seconds(command: list[str]) -> float:
    return float(measured(CPU, command).strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--no-peer", dest="peer", action="store_false", help="skip fhirpy (the peer)"
    )
    parser.add_argument(
        "--no-prime",
        dest="prime",
        action="store_false",
        help="do not run the floor's requests once, unmeasured, before each measured run",
    )
    parser.add_argument(
        "--hapi-data",
        type=Path,
        metavar="DIR",
        help="keep HAPI's database in files under DIR (one per size) and load each size only "
        "once: loading 50k referrals takes over an hour here",
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="with --hapi-data: load each size not loaded yet, then stop (measure later, on a "
        "quiet machine)",
    )
    args = parser.parse_args()
    if args.load_only and args.hapi_data is None:
        parser.error("--load-only needs --hapi-data")
    if args.peer and not args.load_only and importlib.util.find_spec("fhirpy") is None:
        parser.error("the peer needs fhirpy: .venv/bin/pip install -e '.[bench]' (or --no-peer)")

    adapter = adapter_command()
    results = []
    for size in args.sizes:
        state = Path(tempfile.mkdtemp(prefix="sync-bench-"))
        env = {**os.environ, "HAPI_STATE_DIR": str(state)}
        loaded = None
        if args.hapi_data is not None:
            args.hapi_data.mkdir(parents=True, exist_ok=True)
            files = args.hapi_data.resolve() / f"hapi-{size}"
            loaded = files.with_suffix(".loaded")
            # For long runs on large data: the full JIT (the launcher's default stops at C1 for
            # a fast start), a larger heap and H2 page cache, and an H2 file database instead
            # of memory. (The 50k data set, 234,002 resources, loaded in 88 minutes with these;
            # 10k with the launcher's defaults had taken 18 minutes.)
            env["HAPI_JAVA_OPTS"] = (
                "-Xms512m -Xmx4g -XX:+UseParallelGC "
                f"-Dhapi.launcher.jdbc-url=jdbc:h2:file:{files};CACHE_SIZE=524288"
            )
        hapi = ROOT / "tests" / "hapi" / "hapi.sh"
        base = subprocess.run(
            [str(hapi), "start"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            data = dataset(size, 1)
            load_s = None
            if loaded is None or not loaded.exists():
                clock = time.perf_counter()
                subprocess.run(
                    [*adapter, "load", "--fhir-base", base, "--input", str(data)],
                    check=True,
                    capture_output=True,
                )
                load_s = round(time.perf_counter() - clock, 1)
                if loaded is not None:
                    loaded.write_text(f"{load_s}\n")
            if args.load_only:
                print(f"{size}: loaded" + (f" in {load_s} s" if load_s else " before"))
                continue
            log = state / "requests.log"
            logged = f"sqlite:///{state / 'log.db'}"
            subprocess.run(
                [*adapter, "sync", "--fhir-base", base, "--db", logged, "--as-of", AS_OF, *SHORT],
                env={**os.environ, "REFERRAL_ADAPTER_HTTP_LOG": str(log)},
                check=True,
                capture_output=True,
            )
            requests = sum(1 for line in log.open() if not line.split()[1].endswith("/metadata"))
            floor_times, sync_times, peer_times, peaks = [], [], [], []

            # HAPI keeps what it looked up for a search for about a minute: the same per-page
            # queries take about 10 ms with it and about 55 ms without, and a run that starts
            # after it lapsed takes twice as long. The same requests, just before each measured
            # run, give floor and sync the same start.
            prime = [sys.executable, "-c", FLOOR, str(log)] if args.prime else None
            for n in range(args.repeat):
                if prime:
                    run_wrapped(prime)
                wall, _ = run_wrapped([sys.executable, "-c", FLOOR, str(log)])
                floor_times.append(wall)
                db = f"sqlite:///{state / f'full-{n}.db'}"
                if prime:
                    run_wrapped(prime)
                wall, peak = run_wrapped(
                    [*adapter, "sync", "--fhir-base", base, "--db", db, "--as-of", AS_OF, *SHORT]
                )
                sync_times.append(wall)
                peaks.append(peak)
                if args.peer:
                    wall, _ = run_wrapped([sys.executable, "-c", PEER, base])
                    peer_times.append(wall)
            db = f"sqlite:///{state / 'cpu.db'}"
            cpu = cpu_seconds([*adapter, "sync", "--fhir-base", base, "--db", db, "--as-of", AS_OF])
            resources = sum(1 for f in data.glob("*.ndjson") for _ in f.open("rb"))
            # 1% of the referrals change on the server, then the store of the full sync syncs.
            changed = data.parent / f"changed-{size}.ndjson"
            lines = (data / "ServiceRequest.ndjson").read_bytes().splitlines()[: size // 100]
            # A note stamped with this run: a change even when the data persists across runs.
            stamp = [{"text": f"bench run {time.time():.0f}"}]
            bumped = [json.loads(x) | {"priority": "urgent", "note": stamp} for x in lines]
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
            "load_s": load_s,  # None: loaded by an earlier run (--hapi-data)
            "floor_s": round(floor_s, 2),
            "sync_s": round(sync_s, 2),
            "ratio": round(sync_s / floor_s, 2),
            # HAPI's own speed wanders between runs: the ratio of each sync to the floor run
            # just before it, and their median.
            "pair_ratios": [round(s / f, 2) for f, s in zip(floor_times, sync_times, strict=True)],
            "pair_ratio_median": round(
                statistics.median(s / f for f, s in zip(floor_times, sync_times, strict=True)), 2
            ),
            "adapter_cpu_s_per_1000": round(cpu / resources * 1000, 3),
            "requests_per_referral": round(requests / size, 3),
            "peak_mib": round(max(peaks) / 2**20, 1),
            "incremental_s": round(incremental, 2),
            "incremental_share": round(incremental / sync_s, 3),
            "peer_fhirpy_s": round(statistics.median(peer_times), 2) if peer_times else None,
            "floor_times": [round(t, 2) for t in floor_times],
            "sync_times": [round(t, 2) for t in sync_times],
        }
        results.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
