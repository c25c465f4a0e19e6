"""Shared test helpers: run the real pipeline (validate, extract, index, evaluate) on personas."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapter.personas import PERSONA_AS_OF
from adapter.practice_rules import default_rules
from adapter.segmenting import index_resources
from mappings.model import ReferralEvaluation
from mappings.referral import Evaluator
from mappings.rules import PracticeRules

# The `db_url` fixture (SQLite and a real PostgreSQL started once per session).
pytest_plugins = ["tests.store_fixtures"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALWORLD = SHARED / "realworld"
# The keys of one `segment` output line, in the order DESIGN.md's contract gives them.
CONTRACT_KEYS = [
    "referral",
    "patient",
    "state",
    "segments",
    "primary_segment",
    "missing",
    "age_days",
    "aging_band",
    "source",
    "next_action",
    "reasons",
]


def evaluate(
    resources: Iterable[Any],
    as_of: datetime = PERSONA_AS_OF,
    rules: PracticeRules | None = None,
) -> dict[str, ReferralEvaluation]:
    """Evaluations by referral key; fails the test if any resource is reported unreadable."""
    problems: list[tuple[str, str]] = []
    index, _ = index_resources(resources, lambda where, what: problems.append((where, what)))
    assert not problems, problems
    evaluator = Evaluator(index, rules or default_rules(), as_of)
    return {e.referral: e for e in evaluator}


def only(resources: Iterable[Any], **kwargs: Any) -> ReferralEvaluation:
    """The single referral's evaluation."""
    found = evaluate(resources, **kwargs)
    assert len(found) == 1, sorted(found)
    return next(iter(found.values()))


@pytest.fixture(scope="session")
def realworld() -> Path:
    assert REALWORLD.is_dir(), f"the shared real-world corpus is missing at {REALWORLD}"
    return REALWORLD
