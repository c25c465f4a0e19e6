"""The `segment` job: read FHIR input, skip what is unreadable, evaluate every referral."""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from adapter.sources import data_files, read_directory_file, read_input
from adapter.walker import LoadStats, ProblemSink, ProgressSink, ResourceWalker
from mappings.facts import RELEVANT_TYPES, Facts, ReferralFacts, extract, from_row, to_row
from mappings.index import ReferralIndex
from mappings.references import reference_key, resource_key
from mappings.referral import Evaluator
from mappings.rules import PracticeRules

__all__ = [
    "LoadStats",
    "bulk_allocation",
    "evaluate_input",
    "index_resources",
    "load_index",
    "write_lines",
]

# Below this much data, starting a helper process costs more than it saves.
PARALLEL_MIN_BYTES = 8 * 2**20
MAX_WORKERS = 3
PARALLEL_MIN_REFERRALS = 4_000
PARALLEL_EVALUATION_MAX_RSS = 256 * 2**20
LINES_CHUNK = 1_000


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many long-lived, acyclic records.

    Reading a practice's history allocates millions of small objects that all stay alive; the
    collector would walk them again and again for nothing (half the run time at 100k referrals).
    Nothing built here forms reference cycles, and collection resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Collected:
    """What reading one file found, kept in order until it is merged into the index."""

    def __init__(self) -> None:
        self.facts: list[Facts] = []
        self.aliases: list[tuple[str, str]] = []
        self.problems: list[tuple[str, str]] = []
        self.stats = LoadStats()

    def add(self, facts: Facts) -> None:
        self.facts.append(facts)

    def add_alias(self, name: str, key: str) -> None:
        self.aliases.append((name, key))

    def report(self, where: str, message: str) -> None:
        self.problems.append((where, message))

    def merge_into(self, index: ReferralIndex, stats: LoadStats, on_problem: ProblemSink) -> None:
        for where, message in self.problems:
            on_problem(where, message)
        for name, key in self.aliases:
            index.add_alias(name, key)
        for facts in self.facts:
            index.add(facts)
        stats.resources += self.stats.resources
        stats.skipped += self.stats.skipped
        for rtype, count in self.stats.by_type.items():
            stats.by_type[rtype] = stats.by_type.get(rtype, 0) + count

    def packed(self) -> tuple[Any, ...]:
        """For the trip back from a worker process: facts as rows (see `to_row`)."""
        rows = [to_row(f) for f in self.facts]
        return rows, self.aliases, self.problems, self.stats

    @classmethod
    def unpacked(cls, packed: tuple[Any, ...]) -> _Collected:
        rows, aliases, problems, stats = packed
        collected = cls()
        collected.facts = [from_row(r) for r in rows]
        collected.aliases, collected.problems, collected.stats = aliases, problems, stats
        return collected


class _Loader(ResourceWalker):
    """Hands the facts of each readable resource to `target` (the index, or a file's
    collection)."""

    def __init__(
        self,
        target: ReferralIndex | _Collected,
        stats: LoadStats,
        on_problem: ProblemSink,
        on_progress: ProgressSink | None,
        *,
        validated: bool = False,
    ) -> None:
        super().__init__(stats, on_problem, on_progress, validated=validated)
        self.index = target

    def accept(self, data: dict[str, Any], where: str, full_url: str | None) -> None:
        rtype = data["resourceType"]
        if rtype not in RELEVANT_TYPES:
            return
        key = resource_key(data, full_url) or f"{rtype}/({where})"
        if full_url:
            alias = reference_key({"reference": full_url})
            if alias:
                self.index.add_alias(full_url, key)
                self.index.add_alias(alias, key)
        for facts in extract(data, key):
            self.index.add(facts)


def _read_files(files: list[Path], on_progress: ProgressSink | None) -> list[_Collected]:
    """Read some files of a directory, each into its own collection, in order."""
    found: list[_Collected] = []
    done = 0  # resources of the files before this one, so progress counts on across files

    def progress(count: int) -> None:
        if on_progress is not None:
            on_progress(done + count)

    for file in files:
        collected = _Collected()
        loader = _Loader(collected, collected.stats, collected.report, progress)
        for raw in read_directory_file(file, loader.unreadable):
            loader.take(raw.data, raw.where)
        found.append(collected)
        done += collected.stats.resources
    return found


def _read_files_packed(files: list[Path]) -> list[tuple[Any, ...]]:
    """A worker process's share of the files, packed for the trip back."""
    with bulk_allocation():
        return [c.packed() for c in _read_files(files, None)]


def _shares(files: list[Path], count: int) -> list[list[Path]]:
    """Files dealt into `count` shares of about equal size, biggest first."""
    shares: list[list[Path]] = [[] for _ in range(count)]
    sizes = [0] * count
    for file in sorted(files, key=lambda f: f.stat().st_size, reverse=True):
        smallest = sizes.index(min(sizes))
        shares[smallest].append(file)
        sizes[smallest] += file.stat().st_size
    return shares


def _workers_for(path: Path) -> tuple[list[Path], int]:
    """The directory's data files and how many extra processes should help read them."""
    if not path.is_dir():
        return [], 0
    files = data_files(path)
    cores = os.cpu_count() or 1
    if (
        cores < 2
        or len(files) < 2
        or "fork" not in multiprocessing.get_all_start_methods()
        or sum(f.stat().st_size for f in files) < PARALLEL_MIN_BYTES
    ):
        return files, 0
    return files, min(cores - 1, len(files) - 1, MAX_WORKERS)


def load_index(
    path: Path,
    on_problem: ProblemSink,
    on_progress: ProgressSink | None = None,
) -> tuple[ReferralIndex, LoadStats]:
    """Read the input into a built index; unreadable resources go to `on_problem`.

    A large Bulk Data directory is read by this process and forked helpers at once, a share
    of the files each; what each file holds is merged in file order, so the result (and the
    order of problem reports) is the same as reading alone.
    """
    files, workers = _workers_for(path)
    index, stats = ReferralIndex(), LoadStats()
    if workers == 0:
        loader = _Loader(index, stats, on_problem, on_progress)
        for raw in read_input(path, loader.unreadable):
            loader.take(raw.data, raw.where)
        return index.build(), stats

    shares = _shares(files, workers + 1)
    by_file: dict[Path, _Collected] = {}
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = [(share, pool.submit(_read_files_packed, share)) for share in shares[1:]]
        by_file.update(zip(shares[0], _read_files(shares[0], on_progress), strict=True))
        for share, future in pending:
            unpacked = [_Collected.unpacked(p) for p in future.result()]
            by_file.update(zip(share, unpacked, strict=True))
    for file in files:
        by_file[file].merge_into(index, stats, on_problem)
    return index.build(), stats


def index_resources(
    resources: Iterable[Any], on_problem: ProblemSink, *, validated: bool = False
) -> tuple[ReferralIndex, LoadStats]:
    """Index resources (or Bundles) already parsed, as the input reader would; `validated`
    skips the base validation of resources that passed it before they were kept."""
    index, stats = ReferralIndex(), LoadStats()
    loader = _Loader(index, stats, on_problem, None, validated=validated)
    for number, item in enumerate(resources):
        loader.take(item, f"resource[{number}]")
    return index.build(), stats


def evaluate_input(
    path: Path,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: ProblemSink,
    on_progress: ProgressSink | None = None,
) -> tuple[Evaluator, LoadStats]:
    """An evaluator over every referral of the input (iterate it for the evaluations), and
    what reading found."""
    index, stats = load_index(path, on_problem, on_progress)
    return Evaluator(index, rules, as_of), stats


def _lines(evaluator: Evaluator, referrals: Iterable[ReferralFacts]) -> bytes:
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    return b"".join(dumps(evaluator.evaluate(r).to_json(), option=newline) for r in referrals)


# The evaluator a forked helper inherits: set just before the fork, so it is never pickled.
_FORKED: dict[str, Evaluator] = {}


def _forked_lines(start: int, stop: int) -> bytes:
    evaluator = _FORKED["evaluator"]
    with bulk_allocation():
        return _lines(evaluator, evaluator.referrals[start:stop])


def _resident_bytes() -> int:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def write_lines(evaluator: Evaluator, out: BinaryIO) -> None:
    """One JSON line per referral, in input order.

    With many referrals, a forked helper evaluates the second half while this process writes
    the first; its lines follow, so the output is the same as evaluating alone. The helper
    touches the index it inherits (reference counts), which copies its pages: memory doubles,
    so this is done only while the index is small (see PARALLEL_EVALUATION_MAX_RSS).
    """
    referrals = evaluator.referrals
    if (
        len(referrals) < PARALLEL_MIN_REFERRALS
        or _resident_bytes() > PARALLEL_EVALUATION_MAX_RSS
        or (os.cpu_count() or 1) < 2
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        for start in range(0, len(referrals), LINES_CHUNK):
            out.write(_lines(evaluator, referrals[start : start + LINES_CHUNK]))
        return
    half = len(referrals) // 2
    _FORKED["evaluator"] = evaluator
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            second = pool.submit(_forked_lines, half, len(referrals))
            for start in range(0, half, LINES_CHUNK):
                out.write(_lines(evaluator, referrals[start : min(start + LINES_CHUNK, half)]))
            out.write(second.result())
    finally:
        _FORKED.clear()
