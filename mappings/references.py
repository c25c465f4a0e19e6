"""FHIR references reduced to comparable keys.

A resource's key is `Type/id`; one without an id (in a transaction Bundle) is known by its
fullUrl. References are reduced the same way: an absolute URL or a versioned reference to
`Type/id`, a contained reference `#x` to `<container key>#x`, `urn:uuid:`/`urn:oid:` kept as
they are (the index maps them to keys through the Bundle's fullUrls). A reference by identifier
alone becomes `identifier:system|value`, which the index maps to the resource carrying it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "identifier_keys",
    "reference_key",
    "reference_type",
    "references_at",
    "resource_key",
]


def resource_key(resource: dict[str, Any], full_url: str | None = None) -> str | None:
    """The key of a resource: `Type/id`, else its fullUrl, else None."""
    resource_id = resource.get("id")
    if isinstance(resource_id, str):
        return f"{resource['resourceType']}/{resource_id}"
    if full_url:
        return reference_key({"reference": full_url})
    return None


def reference_key(reference: object, container: str | None = None) -> str | None:
    """The key a Reference datatype points at, or None when it points nowhere usable."""
    if not isinstance(reference, dict):
        return None
    literal = reference.get("reference")
    if isinstance(literal, str) and literal:
        if literal.count("/") == 1 and not literal.startswith(("#", "urn:")):
            return literal  # the common case, `Type/id`: nothing to reduce
        if literal.startswith("#"):
            return f"{container}{literal}" if container and len(literal) > 1 else None
        if literal.startswith("urn:"):
            return literal
        path = literal.split("?", 1)[0].rstrip("/")
        parts = path.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2:
            return f"{parts[-2]}/{parts[-1]}"
        return literal
    identifier = reference.get("identifier")
    if isinstance(identifier, dict):
        value = identifier.get("value")
        if isinstance(value, str):
            return f"identifier:{identifier.get('system') or ''}|{value}"
    return None


def reference_type(key: str | None) -> str | None:
    """The resource type a key names (`Organization/x` -> Organization), None if unknown."""
    if not key or key.startswith(("urn:", "identifier:", "#")):
        return None
    head = key.split("/", 1)[0]
    return head if head[:1].isupper() else None


def identifier_keys(resource: dict[str, Any]) -> list[str]:
    """`identifier:system|value` for each identifier of a resource."""
    keys = []
    for identifier in resource.get("identifier") or ():
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if isinstance(value, str):
            keys.append(f"identifier:{identifier.get('system') or ''}|{value}")
    return keys


def references_at(resource: dict[str, Any], path: str) -> list[str]:
    """The `Type/id` keys of the literal references at a dotted element path (e.g.
    `context.related`), lists flattened; contained, urn: and identifier-only references left
    out (they name nothing a server can be asked for by id)."""
    values: list[Any] = [resource]
    for name in path.split("."):
        found: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                item = value.get(name)
                found.extend(item if isinstance(item, list) else [item])
        values = found
    keys = []
    for value in values:
        key = reference_key(value)
        if key is not None and key.count("/") == 1 and not key.startswith(("urn:", "identifier:")):
            keys.append(key)
    return keys
