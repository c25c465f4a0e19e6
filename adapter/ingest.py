"""`referral-adapter import`: a Bundle, NDJSON file or Bulk Data export into the store, with no
FHIR server: the same validation, store and evaluation (and write-back planning) as a sync.

The demo uses it to put `synth` data through the real pipeline; an interface team can use it
for a Bulk Data export an EHR produced. Resources without an id cannot be kept (the store keys
resources by type and id): they are reported and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapter import store
from adapter.planning import PlanSummary
from adapter.sources import read_input
from adapter.sync import SYNC_TYPES, evaluate_store
from adapter.walker import LoadStats, ProblemSink, ResourceWalker, describe
from mappings.rules import PracticeRules

__all__ = ["IngestSummary", "ingest"]

JSON = dict[str, Any]
CHUNK = 1000


@dataclass(slots=True)
class IngestSummary:
    stats: LoadStats
    stored: int = 0
    referrals: int = 0
    moved: int = 0
    planned_tasks: int = 0
    planned_messages: int = 0


class _Keeper(ResourceWalker):
    """Readable resources of the types the model reads, stored a chunk at a time."""

    def __init__(
        self, engine: Engine, source: str, stats: LoadStats, on_problem: ProblemSink
    ) -> None:
        super().__init__(stats, on_problem, None)
        self.engine = engine
        self.source = source
        self.pending: list[JSON] = []
        self.stored = 0

    def accept(self, data: JSON, where: str, full_url: str | None) -> None:
        if data["resourceType"] not in SYNC_TYPES:
            return
        if not isinstance(data.get("id"), str):
            self.stats.skipped += 1
            self.on_problem(describe(data, where), "no id, so it cannot be kept; skipped")
            return
        self.pending.append(data)
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        with Session(self.engine) as session, session.begin():
            self.stored += store.put_resources(session, self.pending, self.source)
        self.pending = []


def ingest(
    path: Path,
    engine: Engine,
    rules: PracticeRules,
    as_of: datetime,
    on_problem: ProblemSink,
    *,
    source: str = "import",
) -> IngestSummary:
    """Store the input's readable resources, then evaluate every stored referral at `as_of`."""
    stats = LoadStats()
    keeper = _Keeper(engine, source, stats, on_problem)
    for raw in read_input(path, keeper.unreadable):
        keeper.take(raw.data, raw.where)
    keeper.flush()
    plan = PlanSummary()
    referrals, moved, _ = evaluate_store(engine, rules, as_of, on_problem, plan)
    return IngestSummary(
        stats=stats,
        stored=keeper.stored,
        referrals=referrals,
        moved=moved,
        planned_tasks=plan.tasks,
        planned_messages=plan.messages,
    )
