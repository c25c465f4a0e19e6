"""A table of open referrals, primary segment by aging band, for a person at a terminal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from fhir_profiles import terminology
from mappings.model import ReferralEvaluation

__all__ = ["render_summary"]

UNDATED = "undated"


def render_summary(
    evaluations: Iterable[ReferralEvaluation],
    as_of: datetime,
    resources_read: int,
    resources_skipped: int,
) -> str:
    """The summary text: counts per primary segment and band, segment membership, missing
    items, states, and what was read."""
    terms = terminology()
    bands = [b.code for b in terms.aging_bands]
    grid: Counter[tuple[str, str]] = Counter()
    overdue: Counter[str] = Counter()
    membership: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for evaluation in evaluations:
        states[evaluation.state] += 1
        if evaluation.state != "open" or evaluation.primary_segment is None:
            continue
        primary = evaluation.primary_segment
        band = evaluation.aging_band or UNDATED
        for row in (primary, "total"):
            grid[(row, band)] += 1
            grid[(row, "total")] += 1
        if evaluation.next_action is not None and evaluation.next_action.overdue:
            overdue[primary] += 1
            overdue["total"] += 1
        membership.update(evaluation.segments)
        missing.update(m.item for m in evaluation.missing)

    # A referral with neither authoredOn nor meta.lastUpdated has no age; it still counts.
    if grid[("total", UNDATED)]:
        bands.append(UNDATED)
    columns = [*bands, "total", "overdue"]
    rows = [*terms.segments, "total"]
    width = max(len(r) for r in rows) + 2
    lines = [
        f"Open referrals as of {as_of.strftime('%Y-%m-%d %H:%M %Z')}, "
        "by primary segment and aging band (days)",
        "",
        "segment".ljust(width) + "".join(c.rjust(8) for c in columns),
    ]
    for row in rows:
        if row == "total":
            lines.append("-" * (width + 8 * len(columns)))
        cells = [grid[(row, c)] for c in (*bands, "total")] + [overdue[row]]
        lines.append(row.ljust(width) + "".join(str(n).rjust(8) for n in cells))
    lines.append("")
    lines.append(
        "In each segment (a referral can be in several): "
        + ", ".join(f"{s} {membership[s]}" for s in terms.segments)
    )
    asks = []
    for item in terms.missing_items:
        whom = "patient" if item.request_from == "patient" else "referring office"
        asks.append(f"{item.code} {missing[item.code]} (ask the {whom})")
    lines.append("Missing details: " + ", ".join(asks))
    total = sum(states.values())
    lines.append(
        f"Referrals: {total} ("
        + ", ".join(f"{s} {states[s]}" for s in terms.states)
        + f"). Resources read: {resources_read}, skipped as unreadable: {resources_skipped}."
    )
    return "\n".join(lines) + "\n"
