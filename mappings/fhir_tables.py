"""Element tables of the FHIR R4 base definitions: every type's elements, with their data type,
cardinality, required flag, choice group and (fully listed) required codes.

The tables are read from the fhir.resources R4B models. Importing those models costs a third of
a second per run, so the tables of every type are kept in `fhir_r4b_elements.json` beside this
module, written by `scripts/generate-fhir-tables` from the installed fhir.resources; the test
suite checks that the file matches the models, so the models stay the one source.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import typing
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["Element", "build_tables", "elements", "is_resource_type"]

TABLES_FILE = "fhir_r4b_elements.json"

# fhir.resources marks each primitive element with a metadata class named after the FHIR type.
_PRIMITIVE_BY_MARKER = {
    "String": "string",
    "Markdown": "markdown",
    "Xhtml": "xhtml",
    "Code": "code",
    "Id": "id",
    "Uri": "uri",
    "Url": "url",
    "Canonical": "canonical",
    "Oid": "oid",
    "UuidVersion": "uuid",
    "Base64Binary": "base64Binary",
    "Date": "date",
    "DateTime": "dateTime",
    "Instant": "instant",
    "Time": "time",
    "Decimal": "decimal",
    "Integer": "integer",
    "UnsignedInt": "unsignedInt",
    "PositiveInt": "positiveInt",
}


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a type, as the base definition describes it."""

    name: str  # JSON name
    kind: str  # "primitive", "complex" or "resource"
    fhir_type: str  # primitive type name, or complex type / backbone class name
    is_list: bool
    required: bool
    choice_group: str | None
    choice_required: bool
    codes: tuple[str, ...] | None  # a required binding's codes, when listed in full


# --- reading the models ----------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional and List from a model annotation: (inner annotation, is_list)."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            is_list = True
            annotation = args[0]
        elif args and origin is not typing.Annotated:
            members = [a for a in args if a is not type(None)]
            if len(members) != 1:
                raise TypeError(f"unexpected union in model annotation: {annotation!r}")
            annotation = members[0]
        else:
            return annotation, is_list


def _classify(annotation: Any) -> tuple[str, str]:
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            marker_name = marker.__name__ if isinstance(marker, type) else type(marker).__name__
            if marker_name in _PRIMITIVE_BY_MARKER:
                return "primitive", _PRIMITIVE_BY_MARKER[marker_name]
        raise TypeError(f"unknown primitive marker in {annotation!r}")
    if annotation is bool:
        return "primitive", "boolean"
    name = getattr(annotation, "__name__", "")
    if name == "ResourceType":
        return "resource", "Resource"
    if name.endswith("Type"):
        return "complex", name[: -len("Type")]
    raise TypeError(f"unknown element type {annotation!r}")


def _complete_codes(codes: object) -> tuple[str, ...] | None:
    """A required binding's codes, when the models list them all.

    The models abbreviate long bindings with a trailing "+" (Task.status lists four codes and
    "+"); such a list cannot tell a wrong code from an unlisted right one, so it is not enforced.
    """
    if not isinstance(codes, list) or not codes or "+" in codes:
        return None
    return tuple(str(c) for c in codes)


@cache
def _model_class(name: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class  # heavy: only to build the tables

    return get_fhir_model_class(name)


def _introspect(type_name: str) -> tuple[Element, ...]:
    found = []
    for field in _model_class(type_name).model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        inner, is_list = _unwrap(field.annotation)
        kind, fhir_type = _classify(inner)
        group = extra.get("one_of_many")
        found.append(
            Element(
                name=str(field.alias),
                kind=kind,
                fhir_type=fhir_type,
                is_list=is_list,
                required=bool(extra.get("element_required")) or field.is_required(),
                choice_group=str(group) if group else None,
                choice_required=bool(extra.get("one_of_many_required")),
                codes=_complete_codes(extra.get("enum_values")),
            )
        )
    return tuple(found)


def _is_model_name(name: str) -> bool:
    """Whether the package knows `name` as a FHIR type (not a helper base class)."""
    try:
        _model_class(name)
    except ValueError:
        return False
    return True


def _is_resource_class(name: str) -> bool:
    try:
        cls = _model_class(name)
    except ValueError:
        return False
    return any(base.__name__ == "Resource" for base in cls.__mro__) and (
        getattr(cls, "__resource_type__", None) == name
    )


def build_tables() -> dict[str, Any]:
    """The tables of every R4B model, as written to the tables file (imports all models)."""
    import fhir.resources
    import fhir.resources.R4B as r4b
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    names: set[str] = set()
    for module in pkgutil.iter_modules(r4b.__path__):
        if module.name in ("fhirtypes", "fhirtypesvalidators") or module.name.startswith("test"):
            continue
        loaded = importlib.import_module(f"{r4b.__name__}.{module.name}")
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, FHIRAbstractModel)
                and value.__module__ == loaded.__name__
            ):
                names.add(value.__name__)
    types = {}
    names = {n for n in names if _is_model_name(n)}
    for name in sorted(names):
        types[name] = [
            [
                e.name,
                e.kind,
                e.fhir_type,
                e.is_list,
                e.required,
                e.choice_group,
                e.choice_required,
                list(e.codes) if e.codes else None,
            ]
            for e in _introspect(name)
        ]
    return {
        "source": f"fhir.resources {fhir.resources.__version__} (R4B models)",
        "resources": sorted(
            n for n in names if n not in ("Resource", "DomainResource") and _is_resource_class(n)
        ),
        "types": types,
    }


# --- the shipped tables ----------------------------------------------------------------------


@cache
def _shipped() -> dict[str, Any]:
    text = resources.files("mappings").joinpath(TABLES_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def _resource_names() -> frozenset[str]:
    return frozenset(_shipped()["resources"])


@cache
def elements(type_name: str) -> tuple[Element, ...]:
    """The elements of a type (a resource, datatype or backbone element class name)."""
    rows = _shipped()["types"][type_name]
    return tuple(
        Element(
            name,
            kind,
            fhir_type,
            is_list,
            required,
            group,
            group_required,
            tuple(codes) if codes else None,
        )
        for name, kind, fhir_type, is_list, required, group, group_required, codes in rows
    )


def is_resource_type(name: str) -> bool:
    """Whether `name` is a resource type of FHIR R4 (as modelled by R4B)."""
    return name in _resource_names()
