"""The name to show for a Patient, Practitioner or Organization resource (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def display_name(body: Mapping[str, Any]) -> str | None:
    """The first HumanName's text, else its given and family names; an Organization's `name`
    string; None when the resource names no one."""
    names = body.get("name")
    if isinstance(names, str):  # an Organization's name
        return names if names.strip() else None
    for name in names or ():
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str) and name["text"].strip():
            return str(name["text"])
        given = [g for g in name.get("given") or () if isinstance(g, str)]
        family = name.get("family") if isinstance(name.get("family"), str) else None
        parts = [*given, *([family] if family else [])]
        if parts:
            return " ".join(parts)
    return None
