"""The state table and the FHIR Task state machine it must keep to."""

from __future__ import annotations

import itertools

import pytest

from fhir_profiles import terminology
from mappings.task_states import (
    CLOSED,
    STATE_TABLE,
    TASK_TRANSITIONS,
    TERMINAL,
    task_state,
    transition_path,
)

# Every (state, primary segment, ServiceRequest status) an evaluation can give.
OPEN_PRIMARIES = ("time-sensitive", "patient-active", "ready-to-schedule", "missing-detail")
EVALUATIONS = (
    [("open", segment, "active") for segment in OPEN_PRIMARIES]
    + [("scheduled", None, "active")]
    + [("closed", None, status) for status in ("completed", "revoked", "entered-in-error")]
)


def test_every_evaluation_has_a_task_state_from_our_value_sets() -> None:
    terms = terminology()
    written = {"in-progress", "on-hold", "completed", "cancelled", "entered-in-error"}
    for state, segment, status in EVALUATIONS:
        task_status, business = task_state(state, segment, status)
        assert task_status in written
        assert business in terms.task_business_statuses


def test_high_relationship_is_never_primary_so_it_has_no_row() -> None:
    # Every open referral is ready-to-schedule or missing-detail, both ranked above it.
    segments = terminology().segments
    assert segments.index("high-relationship") > segments.index("missing-detail")
    assert segments.index("high-relationship") > segments.index("ready-to-schedule")
    with pytest.raises(ValueError, match="no Task state"):
        task_state("open", "high-relationship", "active")


def test_the_table_as_the_readme_writes_it() -> None:
    assert task_state("open", "missing-detail", "active") == ("on-hold", "awaiting-information")
    assert task_state("open", "ready-to-schedule", "active") == ("in-progress", "ready-to-schedule")
    assert task_state("open", "time-sensitive", "active") == (
        "in-progress",
        "time-sensitive-review",
    )
    assert task_state("scheduled", None, "active") == ("in-progress", "scheduled")
    assert task_state("closed", None, "completed") == ("completed", "completed")
    assert task_state("closed", None, "revoked") == ("cancelled", "revoked")
    assert len(STATE_TABLE) + len(CLOSED) == len(EVALUATIONS)


def test_a_closed_referral_needs_a_closing_status() -> None:
    with pytest.raises(ValueError, match="closed referral"):
        task_state("closed", None, "active")


@pytest.mark.parametrize(("before", "after"), list(itertools.permutations(EVALUATIONS, 2)))
def test_every_move_between_evaluations_keeps_to_the_state_machine(
    before: tuple[str, str | None, str], after: tuple[str, str | None, str]
) -> None:
    start, _ = task_state(*before)
    goal, _ = task_state(*after)
    path = transition_path(start, goal)
    if start in TERMINAL and start != goal:
        # An ended Task is not brought back; only entered-in-error corrects it.
        assert path == (["entered-in-error"] if goal == "entered-in-error" else None)
        return
    assert path is not None
    previous = start
    for status in path:
        assert status in TASK_TRANSITIONS[previous], (previous, status)
        previous = status
    assert previous == goal


def test_shortest_paths() -> None:
    assert transition_path("on-hold", "in-progress") == ["in-progress"]
    assert transition_path("in-progress", "on-hold") == ["on-hold"]
    # A suspended Task is resumed before it completes.
    assert transition_path("on-hold", "completed") == ["in-progress", "completed"]
    assert transition_path("on-hold", "cancelled") == ["cancelled"]
    assert transition_path("requested", "in-progress") == ["accepted", "in-progress"]
    assert transition_path("in-progress", "in-progress") == []
    assert transition_path("completed", "in-progress") is None
    assert transition_path("cancelled", "on-hold") is None
    assert transition_path("unknown-status", "completed") is None


def test_terminal_statuses_lead_nowhere_but_entered_in_error() -> None:
    for status in TERMINAL:
        assert TASK_TRANSITIONS[status] <= {"entered-in-error"}
    # Every status of the FHIR Task status code system is in the machine.
    assert set(TASK_TRANSITIONS) == {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
