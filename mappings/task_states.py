"""Where a referral stands, as the status of its follow-up Task, and the moves allowed between.

The state table (referral state x primary segment -> Task.status / businessStatus) is the one in
the README. Task statuses change only along the FHIR Task state machine
(https://hl7.org/fhir/R4/task.html#statemachine): a task in progress may be suspended (on-hold)
and resumed, it ends as completed or failed, any task not yet ended may be cancelled, and
entered-in-error corrects any of them. A change the machine has no direct move for goes through
the shortest chain of allowed moves (on-hold -> in-progress -> completed), one update each.
Creating a Task is no transition: it starts in the status of the table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

__all__ = [
    "STATE_TABLE",
    "TASK_TRANSITIONS",
    "TERMINAL",
    "TaskState",
    "task_state",
    "transition_path",
]

TaskState = tuple[str, str]  # (Task.status, businessStatus code)

# The FHIR Task state machine: status -> the statuses one update may move it to.
TASK_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "draft": frozenset({"requested", "on-hold", "cancelled", "entered-in-error"}),
    "requested": frozenset(
        {"received", "accepted", "rejected", "on-hold", "cancelled", "entered-in-error"}
    ),
    "received": frozenset({"accepted", "rejected", "on-hold", "cancelled", "entered-in-error"}),
    "accepted": frozenset({"ready", "in-progress", "on-hold", "cancelled", "entered-in-error"}),
    "ready": frozenset({"in-progress", "on-hold", "failed", "cancelled", "entered-in-error"}),
    # "Stopped" returns an in-progress task to ready.
    "in-progress": frozenset(
        {"completed", "failed", "ready", "on-hold", "cancelled", "entered-in-error"}
    ),
    # A suspended task resumes in the state it was suspended in, or is cancelled.
    "on-hold": frozenset(
        {
            "draft",
            "requested",
            "received",
            "accepted",
            "ready",
            "in-progress",
            "cancelled",
            "entered-in-error",
        }
    ),
    "completed": frozenset({"entered-in-error"}),
    "failed": frozenset({"entered-in-error"}),
    "cancelled": frozenset({"entered-in-error"}),
    "rejected": frozenset({"entered-in-error"}),
    "entered-in-error": frozenset(),
}
TERMINAL = frozenset({"completed", "failed", "cancelled", "rejected", "entered-in-error"})

# Open referrals by primary segment; high-relationship is never primary (every open referral
# is ready-to-schedule or missing-detail, both ranked above it).
STATE_TABLE: Mapping[tuple[str, str | None], TaskState] = {
    ("open", "time-sensitive"): ("in-progress", "time-sensitive-review"),
    ("open", "patient-active"): ("in-progress", "patient-active"),
    ("open", "ready-to-schedule"): ("in-progress", "ready-to-schedule"),
    ("open", "missing-detail"): ("on-hold", "awaiting-information"),
    ("scheduled", None): ("in-progress", "scheduled"),
}
# Closed referrals by the ServiceRequest's status.
CLOSED: Mapping[str, TaskState] = {
    "completed": ("completed", "completed"),
    "revoked": ("cancelled", "revoked"),
    "entered-in-error": ("entered-in-error", "entered-in-error"),
}


def task_state(state: str, primary_segment: str | None, request_status: str | None) -> TaskState:
    """The follow-up Task's (status, businessStatus) for a referral's evaluation."""
    if state == "closed":
        if request_status is None or request_status not in CLOSED:
            raise ValueError(f"a closed referral has ServiceRequest status {request_status!r}")
        return CLOSED[request_status]
    key = (state, primary_segment if state == "open" else None)
    if key not in STATE_TABLE:
        raise ValueError(f"no Task state for a {state} referral with segment {primary_segment!r}")
    return STATE_TABLE[key]


def transition_path(current: str, wanted: str) -> list[str] | None:
    """The statuses to move through from `current` to `wanted`, ending with `wanted` ([] when
    they are equal); None when the state machine allows no way there (e.g. out of completed)."""
    if current == wanted:
        return []
    if current not in TASK_TRANSITIONS:
        return None
    came_from: dict[str, str] = {}
    queue = deque([current])
    while queue:
        status = queue.popleft()
        for following in sorted(TASK_TRANSITIONS[status]):
            if following in came_from or following == current:
                continue
            came_from[following] = status
            if following == wanted:
                path = [following]
                while path[-1] != current and came_from[path[-1]] != current:
                    path.append(came_from[path[-1]])
                return path[::-1]
            queue.append(following)
    return None
