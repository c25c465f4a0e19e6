"""Benchmark: the work queue page under 16 concurrent clients, on PostgreSQL and on SQLite,
beside a static page of the same server in the same run.

For each backend: a store holding `--referrals` synthetic referrals put through the real
pipeline (`import`: validation, store, evaluation, write-back planning; kept under bench/out/ and
reused), the view served by waitress (16 threads) in a process of its own, a demo sign-in, then
`--rounds` rounds alternating two phases of `--seconds` each, so machine noise hits both alike:
- static: 16 client threads GET /static/app.css as fast as they can;
- queue: 16 client threads GET /queue (every lane's first page: about 150 referral cards).
Reported per backend: open referrals, requests, p50 and p95 latency of each page, and the ratio
of the queue's p95 to the static page's. Target (issue 6): queue p95 under 150 ms on PostgreSQL.

    .venv/bin/python bench/view_bench.py [--referrals 80000] [--backends postgresql sqlite]
        [--rounds 3] [--seconds 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))
from segment_bench import adapter_command, dataset  # noqa: E402

SERVER = """
import sys, waitress
from adapter import store
from smart_launch import ViewConfig, create_app
url, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = ViewConfig(database=url, secret_key="bench", demo=True, secure_cookies=False)
pooled = not url.startswith("sqlite")
engine = store.make_engine(url, pool_size=threads, max_overflow=4) if pooled else None
app = create_app(config, engine)
waitress.serve(app, host="127.0.0.1", port=port, threads=threads, ident=None, _quiet=True)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stored(url: str, data: Path, referrals: int) -> None:
    """Import the data set into the store at `url` unless an earlier run did."""
    marker = OUT / f"view-{referrals}-{url.split(':', maxsplit=1)[0]}.imported"
    if marker.exists():
        return
    backend = url.split(":", maxsplit=1)[0]
    print(f"bench: importing {referrals} referrals into {backend}", file=sys.stderr)
    clock = time.perf_counter()
    subprocess.run(
        [*adapter_command(), "import", "--input", str(data), "--db", url],
        check=True,
        capture_output=True,
    )
    marker.write_text(f"{time.perf_counter() - clock:.0f} s\n")


def open_referrals(url: str) -> int:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            found = connection.execute("SELECT count(*) FROM referral WHERE state = 'open'")
            return int(found.fetchone()[0])
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM referral WHERE state = 'open'")
        ).scalar_one()
    engine.dispose()
    return int(count)


def sign_in(base: str) -> dict[str, str]:
    with httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/demo")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found is not None
        answer = http.post("/demo", data={"csrf_token": found.group(1), "user": "sam"})
        assert answer.status_code == 302, answer.text
        return dict(http.cookies)


def hammer(
    base: str, path: str, cookies: dict[str, str], clients: int, seconds: float
) -> list[float]:
    """Latencies (s) of GET `path` from `clients` threads for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        mine = []
        with httpx.Client(base_url=base, cookies=cookies, timeout=60) as http:
            while time.perf_counter() < stop:
                clock = time.perf_counter()
                response = http.get(path)
                mine.append(time.perf_counter() - clock)
                if response.status_code != 200:
                    raise SystemExit(f"bench: {path} answered {response.status_code}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(url: str, args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, url, str(port), str(args.clients)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        cookies = sign_in(base)
        hammer(base, "/queue", cookies, 2, 2.0)  # warm: templates compiled, pools filled
        static: list[float] = []
        queue: list[float] = []
        for _ in range(args.rounds):
            static += hammer(base, "/static/app.css", cookies, args.clients, args.seconds)
            queue += hammer(base, "/queue", cookies, args.clients, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "backend": url.split(":", maxsplit=1)[0].split("+", maxsplit=1)[0],
        "open_referrals": open_referrals(url),
        "clients": args.clients,
        "queue_requests": len(queue),
        "queue_p50_ms": round(statistics.median(queue) * 1000, 1),
        "queue_p95_ms": round(percentile(queue, 0.95) * 1000, 1),
        "static_requests": len(static),
        "static_p50_ms": round(statistics.median(static) * 1000, 1),
        "static_p95_ms": round(percentile(static, 0.95) * 1000, 1),
        "p95_ratio": round(percentile(queue, 0.95) / percentile(static, 0.95), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=80000)
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    data = dataset(args.referrals, 1)
    results = []
    pg_dir = OUT / "view-postgres"
    started_pg = False
    try:
        for backend in args.backends:
            if backend == "sqlite":
                url = f"sqlite:///{OUT / f'view-{args.referrals}.db'}"
            else:
                pg_dir.mkdir(exist_ok=True)
                pg_dir.chmod(0o755)
                admin = subprocess.run(
                    [str(ROOT / "scripts" / "postgres"), "start", str(pg_dir)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                started_pg = True
                name = f"view_{args.referrals}"
                subprocess.run(
                    [sys.executable, "-c", CREATE_DB, admin, name], check=True, capture_output=True
                )
                url = admin.rsplit("/", 1)[0] + f"/{name}"
            stored(url, data, args.referrals)
            row = run(url, args)
            results.append(row)
            print(json.dumps(row))
    finally:
        if started_pg:
            subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", str(pg_dir)], check=False)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


CREATE_DB = """
import sys, sqlalchemy
engine = sqlalchemy.create_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
with engine.connect() as c:
    query = sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n")
    if not c.execute(query, {"n": sys.argv[2]}).first():
        c.execute(sqlalchemy.text(f"CREATE DATABASE {sys.argv[2]}"))
"""


if __name__ == "__main__":
    main()
