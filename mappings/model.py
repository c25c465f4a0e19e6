"""The records the referral model produces: one evaluation per referral, and its parts.

Frozen, slotted dataclasses: the model builds several per referral for hundreds of thousands
of referrals, and it builds them from values it has already checked, so a validating model
class would only add cost (about three times the construction time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["MissingDetail", "NextAction", "Reason", "ReferralEvaluation"]


@dataclass(frozen=True, slots=True)
class MissingDetail:
    """A detail that keeps the referral from being scheduled, and whom to ask for it."""

    item: str
    detail: str
    request_from: str

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "detail": self.detail, "request_from": self.request_from}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a segment, missing item or state applies, with the FHIRPath of the deciding element."""

    because: str
    expression: str
    segment: str | None = None
    item: str | None = None
    state: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("segment", "item", "state"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["because"] = self.because
        out["expression"] = self.expression
        return out


@dataclass(frozen=True, slots=True)
class NextAction:
    """The next step for the referral's primary segment, with its owner and follow-up standard."""

    segment: str
    action: str
    steps: tuple[str, ...]
    owner_role: str
    backup_owner_role: str
    documentation_rule: str
    follow_up_business_hours: int
    due: datetime | None
    overdue: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "action": self.action,
            "steps": list(self.steps),
            "owner_role": self.owner_role,
            "backup_owner_role": self.backup_owner_role,
            "documentation_rule": self.documentation_rule,
            "follow_up_business_hours": self.follow_up_business_hours,
            "due": _instant(self.due),
            "overdue": self.overdue,
        }


@dataclass(frozen=True, slots=True)
class ReferralEvaluation:
    """Everything the model decided about one referral at one instant."""

    referral: str
    patient: str | None
    state: str
    segments: tuple[str, ...]
    primary_segment: str | None
    missing: tuple[MissingDetail, ...]
    age_days: int | None
    aging_band: str | None
    source: str | None
    next_action: NextAction | None
    reasons: tuple[Reason, ...]
    # When the referral arrived (authoredOn, else meta.lastUpdated): what its age counts from.
    # Not part of the printed line; the store keeps it for the review lane.
    arrived: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The line the `segment` command prints (DESIGN.md's contract, keys in its order)."""
        return {
            "referral": self.referral,
            "patient": self.patient,
            "state": self.state,
            "segments": list(self.segments),
            "primary_segment": self.primary_segment,
            "missing": [m.to_json() for m in self.missing],
            "age_days": self.age_days,
            "aging_band": self.aging_band,
            "source": self.source,
            "next_action": self.next_action.to_json() if self.next_action else None,
            "reasons": [r.to_json() for r in self.reasons],
        }


def _instant(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
