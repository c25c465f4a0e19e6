"""Benchmark: `referral-adapter segment` over `synth` data, against a `json.loads` floor.

For each size, in one run and alternating so machine noise hits both alike:
- floor: a fresh Python process reads every NDJSON line of the same directory and `json.loads`
  it (nothing kept);
- segment: a fresh `referral-adapter segment --input DIR --as-of ...` process, stdout discarded.
Wall time and peak memory (proportional set size summed over the process tree, sampled every
50 ms) are reported; the verdict uses the medians. Targets (issue 2): segment at most 4x the
floor's time, peak memory under 1 GiB at 100k referrals, cost growing linearly with size.

    .venv/bin/python bench/segment_bench.py [--sizes 10000 100000] [--repeat 3]

Data is generated once per size and seed into bench/out/ (kept between runs; not committed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
AS_OF = "2026-12-03T12:00:00Z"
FLOOR = """
import json, pathlib, sys
loads = json.loads
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.ndjson")):
    with f.open("rb") as h:
        for line in h:
            loads(line)
"""


def adapter_command() -> list[str]:
    script = Path(sys.executable).with_name("referral-adapter")
    if not script.exists():
        raise SystemExit(f"bench: {script} not found; run scripts/setup first")
    return [str(script)]


def dataset(size: int, seed: int) -> Path:
    target = OUT / f"synth-{size}-seed{seed}"
    if not (target / "ServiceRequest.ndjson").exists():
        print(f"bench: generating {size} referrals into {target}", file=sys.stderr)
        subprocess.run(
            [
                *adapter_command(),
                "synth",
                "--referrals",
                str(size),
                "--seed",
                str(seed),
                "--out",
                str(target),
                "--as-of",
                AS_OF[:10],
            ],
            check=True,
        )
    return target


# Each command runs under a small wrapper process of its own, which samples the memory of the
# command's whole process tree (segment forks helpers) every 50 ms. It sums the proportional
# set size (Pss): a page shared by a parent and its forked child counts half in each, so the
# sum is the memory the tree really holds, where summed RSS would count shared pages twice.
WRAPPER = """
import os, subprocess, sys, time

def tree_rss(root):
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total

start = time.perf_counter()
with open(os.devnull, "wb") as sink:
    child = subprocess.Popen(sys.argv[1:], stdout=sink)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(child.pid))
        time.sleep(0.05)
wall = time.perf_counter() - start
if child.returncode:
    sys.exit(child.returncode)
print(wall, peak)
"""


def measure(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak memory (bytes of Pss, whole process tree) of one run."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], check=True, capture_output=True, text=True
    )
    wall, peak = done.stdout.split()
    return float(wall), int(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    results = []
    for size in args.sizes:
        data = dataset(size, args.seed)
        lines = sum(1 for f in data.glob("*.ndjson") for _ in f.open("rb"))
        megabytes = sum(f.stat().st_size for f in data.glob("*.ndjson")) / 2**20
        floor_times, segment_times, floor_peaks, segment_peaks = [], [], [], []
        for _ in range(args.repeat):
            wall, peak = measure([sys.executable, "-c", FLOOR, str(data)])
            floor_times.append(wall)
            floor_peaks.append(peak)
            wall, peak = measure(
                [*adapter_command(), "segment", "--input", str(data), "--as-of", AS_OF]
            )
            segment_times.append(wall)
            segment_peaks.append(peak)
        floor_s = statistics.median(floor_times)
        segment_s = statistics.median(segment_times)
        row = {
            "referrals": size,
            "resources": lines,
            "megabytes": round(megabytes, 1),
            "floor_s": round(floor_s, 3),
            "segment_s": round(segment_s, 3),
            "ratio": round(segment_s / floor_s, 2),
            "segment_peak_mib": round(max(segment_peaks) / 2**20, 1),
            "floor_peak_mib": round(max(floor_peaks) / 2**20, 1),
            "floor_times": [round(t, 3) for t in floor_times],
            "segment_times": [round(t, 3) for t in segment_times],
        }
        results.append(row)
        print(
            f"{size:>7} referrals, {lines:>7} resources, {megabytes:6.1f} MB: "
            f"floor {floor_s:6.2f} s, segment {segment_s:6.2f} s, ratio {row['ratio']:.2f}x, "
            f"segment peak {row['segment_peak_mib']:.0f} MiB"
        )
    if len(results) > 1:
        small, large = results[0], results[-1]
        scale = large["resources"] / small["resources"]
        growth = large["segment_s"] / small["segment_s"]
        print(f"size x{scale:.1f} -> segment time x{growth:.1f} (linear would be x{scale:.1f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
