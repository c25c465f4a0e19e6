"""Approved message texts: templates from the practice rules, filled in with a referral's facts.

Templates use `$name` placeholders (`string.Template`: no attribute access, no format specs, so a
template cannot reach into the objects behind the facts). `render` gives plain text, for a
Communication's `payload.contentString` or a terminal; a caller that puts the text somewhere
else escapes it for that place: `xhtml` for a resource's narrative, Jinja autoescaping for the
SMART view.

What a message may say is limited to what identifies the referral (its number, the date it came,
the patient's name and birth date) and what is needed from the reader: never a diagnosis, a
reason, or the service's clinical detail.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "OFFICE_TEMPLATES",
    "PATIENT_TEMPLATES",
    "PLACEHOLDERS",
    "MessageFacts",
    "check_template",
    "placeholders_in",
    "render",
    "xhtml",
]

# Every placeholder a template may use, with what it becomes.
PLACEHOLDERS: Mapping[str, str] = {
    "practice": "the practice's name (writeback.practice.display)",
    "practice_phone": "the practice's phone number (messages.practice_phone)",
    "referral": "the referral's number: its ServiceRequest identifier, else its id",
    "received": "the day the referral was written (authoredOn), e.g. 2026-11-30",
    "patient": "the patient's name, as the referral identifies them",
    "birth_date": "the patient's birth date",
    "missing": "the missing items the reader must supply, each with what exactly is missing",
    "how_to_provide": "for the patient: how to provide each missing item (messages.how_to_provide)",
    "update_window": "when the practice will give an update (messages.update_window)",
    "appointment": "the booked appointment's start, e.g. 2026-12-09 10:30 UTC",
    "outcome": "how the referral was closed (completed, revoked, entered in error)",
    "contact": "how the patient was reached (channel and day)",
}
# The templates the rules must hold: for the patient by referral state, for the office by event.
PATIENT_TEMPLATES = ("ready-to-schedule", "missing-detail", "in-review", "scheduled", "closed")
OFFICE_TEMPLATES = (
    "receipt-confirmed",
    "information-requested",
    "details-complete",
    "patient-contacted",
    "scheduled",
    "closed",
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE = re.compile(r"[ \t\r\n]+")


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """The facts a message can carry; None where the referral does not say."""

    practice: str
    practice_phone: str
    referral: str
    received: str | None = None
    patient: str | None = None
    birth_date: str | None = None
    missing: tuple[str, ...] = ()
    how_to_provide: tuple[str, ...] = ()
    update_window: str = ""
    appointment: str | None = None
    outcome: str | None = None
    contact: str | None = None

    def values(self) -> dict[str, str]:
        """The placeholder values as plain, single-line text."""
        unknown = "not given"
        return {
            "practice": _clean(self.practice),
            "practice_phone": _clean(self.practice_phone),
            "referral": _clean(self.referral),
            "received": _clean(self.received or unknown),
            "patient": _clean(self.patient or "the patient"),
            "birth_date": _clean(self.birth_date or unknown),
            "missing": "; ".join(_clean(m) for m in self.missing) or "nothing",
            "how_to_provide": " ".join(_clean(h) for h in self.how_to_provide),
            "update_window": _clean(self.update_window),
            "appointment": _clean(self.appointment or unknown),
            "outcome": _clean(self.outcome or unknown),
            "contact": _clean(self.contact or unknown),
        }


def _clean(text: str) -> str:
    """One line of text: control characters dropped, runs of white space made one space."""
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


def placeholders_in(template: str) -> list[str]:
    """The placeholders a template uses; ValueError when it is malformed (a stray `$`)."""
    parsed = string.Template(template)
    if not parsed.is_valid():
        raise ValueError("a '$' that starts no placeholder (write '$$' for a dollar sign)")
    return parsed.get_identifiers()


def check_template(template: str, allowed: Iterable[str] | None = None) -> None:
    """ValueError naming the first unknown placeholder (or a malformed template)."""
    known = set(PLACEHOLDERS if allowed is None else allowed)
    for name in placeholders_in(template):
        if name not in known:
            raise ValueError(f"unknown placeholder ${name} (known: {', '.join(sorted(known))})")


def render(template: str, facts: MessageFacts) -> str:
    """The template filled in with the facts, as plain text."""
    return _SPACE.sub(" ", string.Template(template).substitute(facts.values())).strip()


def xhtml(text: str) -> str:
    """Plain text as a FHIR narrative div (XHTML), escaped."""
    return (
        f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(text, quote=False)}</p></div>'
    )
