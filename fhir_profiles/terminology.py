"""Loads the project's CodeSystems from the package directory, once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from typing import Any

CANONICAL_BASE = "https://fhir.referral-adapter.org"


@dataclass(frozen=True, slots=True)
class MissingItem:
    """A missing-detail item: its code, display, the source to ask and the deciding element."""

    code: str
    display: str
    request_from: str
    expression: str


@dataclass(frozen=True, slots=True)
class AgingBand:
    """An aging band: code and the whole-day limits it covers (max None: open-ended)."""

    code: str
    display: str
    min_days: int
    max_days: int | None

    def contains(self, days: int) -> bool:
        return days >= self.min_days and (self.max_days is None or days <= self.max_days)


@dataclass(frozen=True, slots=True)
class Terminology:
    """The codes of the project's CodeSystems, in their defined order."""

    segments: tuple[str, ...]  # in precedence order
    segment_displays: dict[str, str]
    missing_items: tuple[MissingItem, ...]
    information_sources: tuple[str, ...]
    aging_bands: tuple[AgingBand, ...]
    states: tuple[str, ...]
    # Code system id -> {code: display}, for every CodeSystem file (the write-back's codes too).
    displays: dict[str, dict[str, str]]
    contact_outcomes: tuple[str, ...]
    reached_outcomes: frozenset[str]  # contact outcomes whose `reached` property is true
    contact_channels: tuple[str, ...]
    status_events: tuple[str, ...]
    task_business_statuses: tuple[str, ...]

    def display(self, code_system_id: str, code: str) -> str:
        """The display of a code of one of the project's CodeSystems (KeyError if unknown)."""
        return self.displays[code_system_id][code]

    def coding(self, code_system_id: str, code: str) -> dict[str, str]:
        """A FHIR Coding of one of the project's codes."""
        return {
            "system": self.system(code_system_id),
            "code": code,
            "display": self.display(code_system_id, code),
        }

    def system(self, code_system_id: str) -> str:
        """The canonical URL of one of the project's CodeSystems."""
        return f"{CANONICAL_BASE}/CodeSystem/{code_system_id}"

    def band_for(self, days: int) -> AgingBand:
        for band in self.aging_bands:
            if band.contains(days):
                return band
        raise ValueError(f"no aging band covers {days} days")

    def missing_item(self, code: str) -> MissingItem:
        for item in self.missing_items:
            if item.code == code:
                return item
        raise KeyError(code)


def _load(directory: Traversable, name: str) -> dict[str, Any]:
    text = directory.joinpath(name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    if data.get("resourceType") != "CodeSystem":
        raise ValueError(f"{name} is not a CodeSystem")
    if data.get("url") != f"{CANONICAL_BASE}/CodeSystem/{data.get('id')}":
        raise ValueError(f"{name} does not use the canonical base {CANONICAL_BASE}")
    return data


def _properties(concept: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for prop in concept.get("property", []):
        value = next(v for k, v in prop.items() if k.startswith("value"))
        values[prop["code"]] = value
    return values


@cache
def terminology() -> Terminology:
    """The project's codes, read from the CodeSystem files shipped in this package."""
    return load_terminology(resources.files("fhir_profiles"))


def load_terminology(directory: Traversable) -> Terminology:
    """The codes of the CodeSystem files in `directory`."""
    segment_cs = _load(directory, "CodeSystem-referral-segment.json")
    ranked = sorted(segment_cs["concept"], key=lambda c: _properties(c)["precedence"])
    missing_cs = _load(directory, "CodeSystem-missing-detail.json")
    sources_cs = _load(directory, "CodeSystem-information-source.json")
    sources = tuple(c["code"] for c in sources_cs["concept"])
    items = []
    for concept in missing_cs["concept"]:
        props = _properties(concept)
        if props["request-from"] not in sources:
            raise ValueError(f"missing-detail {concept['code']}: unknown request-from")
        items.append(
            MissingItem(
                concept["code"], concept["display"], props["request-from"], props["expression"]
            )
        )
    bands = []
    for concept in _load(directory, "CodeSystem-aging-band.json")["concept"]:
        props = _properties(concept)
        bands.append(
            AgingBand(concept["code"], concept["display"], props["min-days"], props.get("max-days"))
        )
    displays = {}
    for name in sorted(directory.iterdir(), key=lambda entry: entry.name):
        if name.name.startswith("CodeSystem-") and name.name.endswith(".json"):
            system = _load(directory, name.name)
            displays[system["id"]] = {c["code"]: c["display"] for c in system["concept"]}
    outcomes = _load(directory, "CodeSystem-contact-outcome.json")["concept"]
    return Terminology(
        displays=displays,
        contact_outcomes=tuple(c["code"] for c in outcomes),
        reached_outcomes=frozenset(c["code"] for c in outcomes if _properties(c)["reached"]),
        contact_channels=tuple(displays["contact-channel"]),
        status_events=tuple(displays["referral-status-event"]),
        task_business_statuses=tuple(displays["task-business-status"]),
        segments=tuple(c["code"] for c in ranked),
        segment_displays={c["code"]: c["display"] for c in ranked},
        missing_items=tuple(items),
        information_sources=sources,
        aging_bands=tuple(bands),
        states=tuple(
            c["code"] for c in _load(directory, "CodeSystem-referral-state.json")["concept"]
        ),
    )
