"""Validation of FHIR R4 JSON resources against the base definition of their type.

The element tables (names, data types, cardinality, required elements, choice groups, required
code bindings) are read from the fhir.resources R4B models, the closest published Python models
to the R4 that EHRs speak. Validating through those models costs about twenty-five times a
`json.loads` of the same resource, which is too slow for a practice's whole referral history, so
the tables are compiled once per resource type into a pydantic-core validator that runs in Rust.
Only the few checks that a core schema cannot express (required primitives, which may be carried
by their `_element` extension alone, and at most one member of each choice group) run in Python.

What counts as invalid is what DESIGN.md calls unreadable: wrong data types (a string where an
object belongs, a malformed date, an unknown element), missing required elements, codes outside a
required binding, and an unknown or missing resourceType. Issues name the element by its path and
never repeat the value, so they are safe to log.
"""

from __future__ import annotations

import re
import threading
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from pydantic_core import PydanticCustomError, SchemaValidator, ValidationError, core_schema

__all__ = ["BaseIssue", "is_resource_type", "validate_resource"]

CoreSchema = core_schema.CoreSchema
_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
_ELEMENT_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class BaseIssue:
    """One reason a resource is not valid: the element path and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --- FHIR primitive types -------------------------------------------------------------------
# Regular expressions follow the R4 datatypes page; dates additionally refuse impossible
# calendar days (30 February), as a parser downstream would.

_YEAR = r"(?:[0-9](?:[0-9](?:[0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)"
)
_FULL_DATE = rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
_ZONE = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

_PATTERNS: dict[str, str] = {
    "code": r"^[^\s]+(?:\s[^\s]+)*$",
    "id": r"^[A-Za-z0-9\-.]{1,64}$",
    "uri": r"^\S*$",
    "url": r"^\S*$",
    "canonical": r"^\S*$",
    "oid": r"^urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+$",
    "uuid": r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "base64Binary": r"^(?:\s*[0-9a-zA-Z+/=]{4}\s*)+$",
    "date": rf"^(?:{_FULL_DATE}|{_YEAR}-(?:0[1-9]|1[0-2])|{_YEAR})$",
    "dateTime": rf"^(?:{_FULL_DATE}(?:T{_TIME}{_ZONE})?|{_YEAR}-(?:0[1-9]|1[0-2])|{_YEAR})$",
    "instant": rf"^{_FULL_DATE}T{_TIME}{_ZONE}$",
    "time": rf"^{_TIME}$",
}
_PATTERN_NAMES = {pattern: name for name, pattern in _PATTERNS.items()}

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


def _primitive_schema(fhir_type: str) -> CoreSchema:
    if fhir_type == "boolean":
        return core_schema.bool_schema(strict=True)
    if fhir_type in ("integer", "unsignedInt", "positiveInt"):
        low = {"integer": -(2**31), "unsignedInt": 0, "positiveInt": 1}[fhir_type]
        return core_schema.int_schema(strict=True, ge=low, le=2**31 - 1)
    if fhir_type == "decimal":
        return core_schema.union_schema(
            [core_schema.int_schema(strict=True), core_schema.float_schema(strict=True)],
            custom_error_type="fhir_decimal",
            custom_error_message="not a valid decimal",
        )
    pattern = _PATTERNS.get(fhir_type)
    if pattern is None:  # string, markdown, xhtml
        return core_schema.str_schema(strict=True)
    return core_schema.str_schema(strict=True, pattern=pattern)


# --- element tables from the fhir.resources models -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Element:
    name: str  # JSON name
    kind: str  # "primitive", "complex" or "resource"
    fhir_type: str  # primitive type name, or complex type / backbone class name
    is_list: bool
    required: bool
    choice_group: str | None
    choice_required: bool
    codes: tuple[str, ...] | None


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


@cache
def _model_class(name: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class  # heavy import, done on first use

    return get_fhir_model_class(name)


def _complete_codes(codes: object) -> tuple[str, ...] | None:
    """A required binding's codes, when the models list them all.

    The models abbreviate long bindings with a trailing "+" (Task.status lists four codes and
    "+"); such a list cannot tell a wrong code from an unlisted right one, so it is not enforced.
    """
    if not isinstance(codes, list) or not codes or "+" in codes:
        return None
    return tuple(str(c) for c in codes)


@cache
def _elements(type_name: str) -> tuple[_Element, ...]:
    elements = []
    for field in _model_class(type_name).model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        inner, is_list = _unwrap(field.annotation)
        kind, fhir_type = _classify(inner)
        codes = extra.get("enum_values")
        group = extra.get("one_of_many")
        elements.append(
            _Element(
                name=str(field.alias),
                kind=kind,
                fhir_type=fhir_type,
                is_list=is_list,
                required=bool(extra.get("element_required")) or field.is_required(),
                choice_group=str(group) if group else None,
                choice_required=bool(extra.get("one_of_many_required")),
                codes=_complete_codes(codes),
            )
        )
    return tuple(elements)


@lru_cache(maxsize=1024)
def is_resource_type(name: str) -> bool:
    """Whether `name` is a resource type of FHIR R4 (as modelled by R4B)."""
    if not _SAFE_NAME.match(name) or name in ("Resource", "DomainResource"):
        return False
    try:
        cls = _model_class(name)
    except ValueError:
        return False
    return any(base.__name__ == "Resource" for base in cls.__mro__) and (
        getattr(cls, "__resource_type__", None) == name
    )


# --- compilation into pydantic-core schemas ---------------------------------------------------

_ELEMENT_EXTENSION = "__primitive_element"


class _Compiler:
    """Builds one core schema for a resource type, with a definition per complex type."""

    def __init__(self, validate_nested: Callable[[Any], Any]) -> None:
        self.definitions: dict[str, CoreSchema] = {}
        self.validate_nested = validate_nested

    def ref(self, type_name: str) -> CoreSchema:
        if type_name not in self.definitions:
            self.definitions[type_name] = core_schema.any_schema()  # placeholder: recursion
            self.definitions[type_name] = self.object_schema(type_name, type_name, root=False)
        return core_schema.definition_reference_schema(type_name)

    def primitive_element(self) -> CoreSchema:
        """The `_name` companion of a primitive: an Element (id and extensions) or null."""
        if _ELEMENT_EXTENSION not in self.definitions:
            self.definitions[_ELEMENT_EXTENSION] = core_schema.any_schema()
            fields = {
                "id": core_schema.typed_dict_field(_primitive_schema("string"), required=False),
                "extension": core_schema.typed_dict_field(
                    core_schema.list_schema(self.ref("Extension"), strict=True), required=False
                ),
                "fhir_comments": core_schema.typed_dict_field(
                    core_schema.any_schema(), required=False
                ),
            }
            self.definitions[_ELEMENT_EXTENSION] = core_schema.typed_dict_schema(
                fields, extra_behavior="forbid", ref=_ELEMENT_EXTENSION
            )
        return core_schema.definition_reference_schema(_ELEMENT_EXTENSION)

    def value_schema(self, element: _Element) -> CoreSchema:
        if element.kind == "primitive":
            if element.codes:
                return core_schema.literal_schema(list(element.codes))
            return _primitive_schema(element.fhir_type)
        if element.kind == "resource":
            return core_schema.no_info_after_validator_function(
                self.validate_nested, core_schema.dict_schema(strict=True)
            )
        return self.ref(element.fhir_type)

    def object_schema(self, type_name: str, ref: str, *, root: bool) -> CoreSchema:
        elements = _elements(type_name)
        fields: dict[str, core_schema.TypedDictField] = {}
        for element in elements:
            value = self.value_schema(element)
            if element.is_list:
                value = core_schema.list_schema(
                    core_schema.nullable_schema(value) if element.kind == "primitive" else value,
                    strict=True,
                )
            # Required complex elements are enforced here; required primitives may be present
            # through their `_name` extension alone, so they are checked after the fact.
            must = element.required and element.kind != "primitive" and not element.choice_group
            fields[element.name] = core_schema.typed_dict_field(value, required=must)
            if element.kind == "primitive":
                companion = self.primitive_element()
                if element.is_list:
                    companion = core_schema.list_schema(
                        core_schema.nullable_schema(companion), strict=True
                    )
                fields["_" + element.name] = core_schema.typed_dict_field(companion, required=False)
        fields["fhir_comments"] = core_schema.typed_dict_field(
            core_schema.any_schema(), required=False
        )
        if root:
            fields["resourceType"] = core_schema.typed_dict_field(
                core_schema.literal_schema([type_name]), required=True
            )
        schema: CoreSchema = core_schema.typed_dict_schema(fields, extra_behavior="forbid")
        check = _post_check(elements)
        if check is not None:
            schema = core_schema.no_info_after_validator_function(check, schema)
        return {**schema, "ref": ref} if not root else schema


def _post_check(elements: tuple[_Element, ...]) -> Callable[[Any], Any] | None:
    """The checks a typed dict cannot express: required primitives and choice groups."""
    required = tuple(
        e.name for e in elements if e.required and e.kind == "primitive" and not e.choice_group
    )
    groups: dict[str, list[str]] = {}
    required_groups: set[str] = set()
    for e in elements:
        if e.choice_group:
            groups.setdefault(e.choice_group, []).append(e.name)
            if e.choice_required:
                required_groups.add(e.choice_group)
    if not required and not groups:
        return None
    # Every name, with its `_name` companion, that belongs to a choice group, for one set
    # intersection per object instead of a loop over the groups.
    group_of = {n: g for g, names in groups.items() for n in names}
    group_of.update({"_" + n: g for n, g in list(group_of.items())})
    members = frozenset(group_of)

    def check(value: dict[str, Any]) -> dict[str, Any]:
        for name in required:
            if name not in value and "_" + name not in value:
                raise PydanticCustomError(
                    "fhir_required", "required element {name} is missing", {"name": name}
                )
        present = members.intersection(value.keys()) if members else ()
        found: dict[str, set[str]] = {}
        for name in present:
            found.setdefault(group_of[name], set()).add(name.lstrip("_"))
        for group, names in found.items():
            if len(names) > 1:
                raise PydanticCustomError(
                    "fhir_choice",
                    "only one of {group}[x] may be present, found {found}",
                    {"group": group, "found": ", ".join(sorted(names))},
                )
        for group in required_groups:
            if group not in found:
                raise PydanticCustomError(
                    "fhir_required", "required element {name}[x] is missing", {"name": group}
                )
        return value

    return check


class _Registry:
    """Compiled validators, one per resource type, built on first use."""

    def __init__(self) -> None:
        self._validators: dict[str, SchemaValidator] = {}
        self._lock = threading.Lock()

    def validator(self, resource_type: str) -> SchemaValidator:
        found = self._validators.get(resource_type)
        if found is not None:
            return found
        with self._lock:
            found = self._validators.get(resource_type)
            if found is None:
                compiler = _Compiler(_validate_contained)
                root = compiler.object_schema(resource_type, resource_type, root=True)
                schema = core_schema.definitions_schema(root, list(compiler.definitions.values()))
                found = SchemaValidator(schema)
                self._validators[resource_type] = found
        return found


_REGISTRY = _Registry()


def _validate_contained(value: dict[str, Any]) -> dict[str, Any]:
    issues = validate_resource(value)
    if issues:
        raise PydanticCustomError(
            "fhir_resource", "{detail}", {"detail": "; ".join(str(i) for i in issues[:3])}
        )
    return value


# --- public entry point -----------------------------------------------------------------------


def validate_resource(data: object) -> list[BaseIssue]:
    """Problems that make `data` unreadable as a FHIR R4 resource; empty when it is valid."""
    if not isinstance(data, dict):
        return [BaseIssue("(resource)", "not a JSON object")]
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [BaseIssue("(resource)", "no resourceType")]
    if not is_resource_type(resource_type):
        # The unknown name comes from the input and could be anything: it is not echoed.
        return [BaseIssue("resourceType", "unknown resource type")]
    try:
        _REGISTRY.validator(resource_type).validate_python(data)
    except ValidationError as error:
        return [_issue(resource_type, detail) for detail in error.errors(include_input=False)]
    return []


def _issue(resource_type: str, detail: Mapping[str, Any]) -> BaseIssue:
    path = resource_type
    for part in detail["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # An unknown element's name comes from the input: echo only name-shaped text.
            path += f".{part}" if _ELEMENT_NAME.match(part) else ".(element)"
    kind = detail["type"]
    context = detail.get("ctx") or {}
    if kind == "extra_forbidden":
        message = "unknown element"
    elif kind == "missing":
        message = "required element is missing"
    elif kind == "string_pattern_mismatch":
        message = f"not a valid {_PATTERN_NAMES.get(str(context.get('pattern')), 'value')}"
    elif kind == "literal_error":
        message = f"code not allowed here (expected {context.get('expected', 'another code')})"
    else:
        message = str(detail["msg"])
    return BaseIssue(path, message)
