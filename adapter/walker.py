"""Walking parsed input: Bundles opened entry by entry, every resource validated, the unreadable
reported and skipped, the readable handed to `accept`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mappings.base_validation import is_resource_type, preload, validate_resource
from mappings.facts import RELEVANT_TYPES

__all__ = ["LoadStats", "ProblemSink", "ProgressSink", "ResourceWalker", "describe"]

ProblemSink = Callable[[str, str], None]
ProgressSink = Callable[[int], None]
PROGRESS_EVERY = 50_000
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


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


class ResourceWalker:
    """Validates what it is given and hands each readable resource to `accept`.

    Problems go to `on_problem` (naming the resource and the element, never a value); counts
    go to `stats`. A Bundle is checked without its entries' resources, which are checked (and
    skipped) one by one, so one bad entry does not cost the others; nested Bundles are opened.
    """

    def __init__(
        self,
        stats: LoadStats,
        on_problem: ProblemSink,
        on_progress: ProgressSink | None,
        *,
        validated: bool = False,
    ) -> None:
        # The referral model's own types appear in every practice's data: one shared validator.
        preload(RELEVANT_TYPES)
        self.stats = stats
        self.on_problem = on_problem
        self.on_progress = on_progress
        # Resources that were validated before they were kept (the store's) are not checked again.
        self.validated = validated

    def unreadable(self, where: str, message: str) -> None:
        """A line or file that is not JSON: an unreadable resource too (for the input reader)."""
        self.stats.skipped += 1
        self.on_problem(where, message)

    def accept(self, data: dict[str, Any], where: str, full_url: str | None) -> None:
        """A readable resource (not a Bundle), where it was read, and its Bundle fullUrl."""
        raise NotImplementedError

    def take(self, data: Any, where: str, full_url: str | None = None) -> None:
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            self._take_bundle(data, where)
            return
        self.stats.resources += 1
        if self.on_progress is not None and self.stats.resources % PROGRESS_EVERY == 0:
            self.on_progress(self.stats.resources)
        issues = [] if self.validated else validate_resource(data)
        if issues:
            self.stats.skipped += 1
            shown = "; ".join(str(i) for i in issues[:3])
            more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
            self.on_problem(describe(data, where), f"{shown}{more}; skipped")
            return
        rtype = data["resourceType"]
        by_type = self.stats.by_type
        by_type[rtype] = by_type.get(rtype, 0) + 1
        self.accept(data, where, full_url)

    def _take_bundle(self, bundle: dict[str, Any], where: str) -> None:
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            self.stats.skipped += 1
            self.on_problem(describe(bundle, where), "Bundle.entry is not a list; skipped")
            return
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
