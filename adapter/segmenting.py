"""The `segment` job: read FHIR input, skip what is unreadable, evaluate every referral."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from adapter.sources import read_input
from mappings.base_validation import is_resource_type, preload, validate_resource
from mappings.facts import RELEVANT_TYPES, extract
from mappings.index import ReferralIndex
from mappings.model import ReferralEvaluation
from mappings.references import reference_key, resource_key
from mappings.referral import Evaluator
from mappings.rules import PracticeRules

__all__ = ["LoadStats", "bulk_allocation", "evaluate_input", "index_resources", "load_index"]

ProblemSink = Callable[[str, str], None]
ProgressSink = Callable[[int], None]
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
PROGRESS_EVERY = 50_000


@dataclass(slots=True)
class LoadStats:
    """What reading the input found."""

    resources: int = 0
    skipped: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def describe(data: Any, where: str) -> str:
    """How a problem report names a resource: `Type/id at where`, without any value.

    The type and id are echoed only when they are a known type and a well-formed id, so a
    report never carries free text from the input.
    """
    if isinstance(data, dict):
        rtype, rid = data.get("resourceType"), data.get("id")
        if isinstance(rtype, str) and is_resource_type(rtype):
            if isinstance(rid, str) and _ID.match(rid):
                return f"{rtype}/{rid} at {where}"
            return f"{rtype} at {where}"
    return where


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


class _Loader:
    def __init__(self, on_problem: ProblemSink, on_progress: ProgressSink | None) -> None:
        # The referral model's own types appear in every practice's data: one shared validator.
        preload(RELEVANT_TYPES)
        self.index = ReferralIndex()
        self.stats = LoadStats()
        self.on_problem = on_problem
        self.on_progress = on_progress

    def take(self, data: Any, where: str, full_url: str | None = None) -> None:
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            self._take_bundle(data, where)
            return
        self.stats.resources += 1
        if self.on_progress is not None and self.stats.resources % PROGRESS_EVERY == 0:
            self.on_progress(self.stats.resources)
        issues = validate_resource(data)
        if issues:
            self.stats.skipped += 1
            shown = "; ".join(str(i) for i in issues[:3])
            more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
            self.on_problem(describe(data, where), f"{shown}{more}; skipped")
            return
        rtype = data["resourceType"]
        by_type = self.stats.by_type
        by_type[rtype] = by_type.get(rtype, 0) + 1
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

    def _take_bundle(self, bundle: dict[str, Any], where: str) -> None:
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            self.stats.skipped += 1
            self.on_problem(describe(bundle, where), "Bundle.entry is not a list; skipped")
            return
        # The Bundle itself is checked without its entries' resources, which are checked (and
        # skipped) one by one, so one bad entry does not cost the others.
        shell = dict(bundle)
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in entries
        ]
        if not shell["entry"]:
            del shell["entry"]
        issues = validate_resource(shell)
        if issues:
            shown = "; ".join(str(i) for i in issues[:3])
            self.on_problem(describe(bundle, where), f"{shown}; its entries are still read")
        for number, entry in enumerate(entries):
            if isinstance(entry, dict) and "resource" in entry:
                full_url = entry.get("fullUrl")
                self.take(
                    entry["resource"],
                    f"{where} entry[{number}]",
                    full_url if isinstance(full_url, str) else None,
                )


def load_index(
    path: Path,
    on_problem: ProblemSink,
    on_progress: ProgressSink | None = None,
) -> tuple[ReferralIndex, LoadStats]:
    """Read the input into a built index; unreadable resources go to `on_problem`."""
    loader = _Loader(on_problem, on_progress)

    def unreadable(where: str, message: str) -> None:
        # A line or file that is not JSON is an unreadable resource too.
        loader.stats.skipped += 1
        on_problem(where, message)

    for raw in read_input(path, unreadable):
        loader.take(raw.data, raw.where)
    return loader.index.build(), loader.stats


def index_resources(
    resources: Iterable[Any], on_problem: ProblemSink
) -> tuple[ReferralIndex, LoadStats]:
    """Index resources (or Bundles) already parsed, as the input reader would."""
    loader = _Loader(on_problem, None)
    for number, resource in enumerate(resources):
        loader.take(resource, f"resource[{number}]")
    return loader.index.build(), loader.stats


def evaluate_input(
    path: Path,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: ProblemSink,
    on_progress: ProgressSink | None = None,
) -> tuple[Iterator[ReferralEvaluation], LoadStats]:
    """Evaluations of every referral in the input (lazily), and what reading found."""
    index, stats = load_index(path, on_problem, on_progress)
    return iter(Evaluator(index, rules, as_of)), stats
