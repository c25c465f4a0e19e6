"""Validation of FHIR R4 JSON resources against the base definition of their type.

The element tables (names, data types, cardinality, required elements, choice groups, required
code bindings) come from the fhir.resources R4B models, the closest published Python models to
the R4 that EHRs speak (see `fhir_tables`). Validating through those models themselves costs
about twenty-five times a `json.loads` of the same resource, too slow for a practice's whole
referral history, so the tables are compiled into a pydantic-core validator that runs in Rust:
one shared by the referral model's own types, one per other type on first use. Only the few
checks that a core schema cannot express (required primitives, which may be carried by their
`_element` extension alone, and at most one member of each choice group) run in Python.

What counts as invalid is what DESIGN.md calls unreadable: wrong data types (a string where an
object belongs, a malformed date, an unknown element), missing required elements, codes outside a
required binding, and an unknown or missing resourceType. Issues name the element by its path and
never repeat the value, so they are safe to log.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError, SchemaValidator, ValidationError, core_schema

from mappings.fhir_tables import Element, elements, is_resource_type

__all__ = ["BaseIssue", "is_resource_type", "preload", "validate_resource"]

CoreSchema = core_schema.CoreSchema
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
# uri, url and canonical share a pattern: a mismatch is reported as the most general, uri.
_PATTERN_NAMES: dict[str, str] = {}
for _name, _pattern in _PATTERNS.items():
    _PATTERN_NAMES.setdefault(_pattern, _name)


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


# --- compilation into pydantic-core schemas ---------------------------------------------------

_ELEMENT_EXTENSION = "__primitive_element"


class _Compiler:
    """Builds one core schema for a resource type, with a definition per complex type.

    `companions` adds the `_name` element of every primitive (its id and extensions) and the
    legacy `fhir_comments`. They are rare in practice, but declaring them doubles the fields a
    typed dict checks, so validation first runs a schema without them (see `_Validator`).
    """

    def __init__(self, validate_nested: Callable[[Any], Any], *, companions: bool) -> None:
        self.definitions: dict[str, CoreSchema] = {}
        self.validate_nested = validate_nested
        self.companions = companions

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

    def value_schema(self, element: Element) -> CoreSchema:
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
        members = elements(type_name)
        fields: dict[str, core_schema.TypedDictField] = {}
        for element in members:
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
            if element.kind == "primitive" and self.companions:
                companion = self.primitive_element()
                if element.is_list:
                    companion = core_schema.list_schema(
                        core_schema.nullable_schema(companion), strict=True
                    )
                fields["_" + element.name] = core_schema.typed_dict_field(companion, required=False)
        if self.companions:
            fields["fhir_comments"] = core_schema.typed_dict_field(
                core_schema.any_schema(), required=False
            )
        if root:
            fields["resourceType"] = core_schema.typed_dict_field(
                core_schema.literal_schema([type_name]), required=True
            )
        schema: CoreSchema = core_schema.typed_dict_schema(fields, extra_behavior="forbid")
        check = _post_check(members)
        if check is None or root:  # a resource's own check runs in Python, without a callback
            return schema if root else {**schema, "ref": ref}
        return core_schema.no_info_after_validator_function(_raising(check), schema, ref=ref)


Check = Callable[[dict[str, Any]], str | None]


def _raising(check: Check) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def validate(value: dict[str, Any]) -> dict[str, Any]:
        problem = check(value)
        if problem is not None:
            raise PydanticCustomError("fhir_element", problem)
        return value

    return validate


def _post_check(elements: tuple[Element, ...]) -> Check | None:
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

    def check(value: dict[str, Any]) -> str | None:
        for name in required:
            if name not in value and "_" + name not in value:
                return f"required element {name} is missing"
        if not members:
            return None
        found: dict[str, set[str]] = {}
        for name in members.intersection(value.keys()):
            found.setdefault(group_of[name], set()).add(name.lstrip("_"))
        for group, names in found.items():
            if len(names) > 1:
                return f"only one of {group}[x] may be present, found {', '.join(sorted(names))}"
        for group in required_groups:
            if group not in found:
                return f"required element {group}[x] is missing"
        return None

    return check


class _Validator:
    """The compiled validators for one or more resource types, and their resource-level checks.

    `fast` leaves out the primitives' `_name` companions; anything it refuses is validated again
    by `full`, built on first need, whose verdict stands. Both accept exactly the same resources
    when no companion is present, so the fast path changes nothing but the time.
    """

    def __init__(self, resource_types: tuple[str, ...]) -> None:
        self.resource_types = resource_types
        self.tagged = len(resource_types) > 1  # error locations then start with the type
        self.checks = {t: _post_check(elements(t)) for t in resource_types}
        self.fast = _compile(resource_types, companions=False)
        self._full: SchemaValidator | None = None

    @property
    def full(self) -> SchemaValidator:
        if self._full is None:
            self._full = _compile(self.resource_types, companions=True)
        return self._full


def _compile(resource_types: tuple[str, ...], *, companions: bool) -> SchemaValidator:
    compiler = _Compiler(_validate_contained, companions=companions)
    roots = {t: compiler.object_schema(t, t, root=True) for t in resource_types}
    if len(roots) == 1:
        root = next(iter(roots.values()))
    else:
        # One validator for several types shares the datatypes' definitions, compiled once.
        root = core_schema.tagged_union_schema(roots, discriminator="resourceType")
    schema = core_schema.definitions_schema(root, list(compiler.definitions.values()))
    return SchemaValidator(schema)


class _Registry:
    """Compiled validators: one shared by the preloaded types, one per other type on first use."""

    def __init__(self) -> None:
        self.compiled: dict[str, _Validator] = {}
        self._lock = threading.Lock()

    def preload(self, resource_types: Iterable[str]) -> None:
        wanted = tuple(sorted(t for t in set(resource_types) if is_resource_type(t)))
        with self._lock:
            if all(t in self.compiled for t in wanted):
                return
            shared = _Validator(wanted)
            for resource_type in wanted:
                self.compiled[resource_type] = shared

    def validator(self, resource_type: str) -> _Validator:
        found = self.compiled.get(resource_type)
        if found is not None:
            return found
        with self._lock:
            found = self.compiled.get(resource_type)
            if found is None:
                found = _Validator((resource_type,))
                self.compiled[resource_type] = found
        return found


_REGISTRY = _Registry()


def preload(resource_types: Iterable[str]) -> None:
    """Compile one validator shared by these types (faster than one per type when all appear)."""
    _REGISTRY.preload(resource_types)


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
    validator = _REGISTRY.compiled.get(resource_type)  # the common case: one dict lookup
    if validator is None:
        if not is_resource_type(resource_type):
            # The unknown name comes from the input and could be anything: it is not echoed.
            return [BaseIssue("resourceType", "unknown resource type")]
        validator = _REGISTRY.validator(resource_type)
    try:
        validator.fast.validate_python(data)
    except ValidationError:
        try:
            validator.full.validate_python(data)
        except ValidationError as error:
            skip = 1 if validator.tagged else 0
            return [
                _issue(resource_type, detail, skip) for detail in error.errors(include_input=False)
            ]
    check = validator.checks[resource_type]
    problem = check(data) if check is not None else None
    return [BaseIssue(resource_type, problem)] if problem else []


def _issue(resource_type: str, detail: Mapping[str, Any], skip: int) -> BaseIssue:
    path = resource_type
    for part in detail["loc"][skip:]:
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
    elif kind == "fhir_element":
        message = str(detail["msg"])
    elif kind == "literal_error":
        message = f"code not allowed here (expected {context.get('expected', 'another code')})"
    else:
        message = str(detail["msg"])
    return BaseIssue(path, message)
