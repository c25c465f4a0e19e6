"""What a FHIR server says it can do (its CapabilityStatement), and which vendor it is.

The sync asks here before it relies on a search parameter, an `_include` or a `_revinclude`, and
falls back (separate queries) when the server does not list it.

Vendor differences we know of, each with its public documentation and what we do about it.
Unsupported search parameters, includes and revincludes are never hard-coded per vendor: they
are read from each server's own CapabilityStatement at run time, because they differ between
releases and customer configurations. "Unverified" marks a claim not checked against the docs.

- Epic (https://fhir.epic.com/Documentation):
  * Backend Services: the assertion's `exp` must be at most 5 minutes out, signed RS384 or
    ES384 (https://fhir.epic.com/Documentation?docId=oauth2&section=BackendOAuth2Guide); whether
    `kid` is required or optional there: unverified, we always send it. Handled by
    `adapter.smart_auth` for every server.
  * Non-OAuth calls identify the app with an `Epic-Client-ID` header
    (https://fhir.epic.com/Documentation?docId=oauth2&section=NonOauth_Epic-Client-ID-Header).
    Handled: `FhirClient(extra_headers=...)` sends it; not added automatically.
  * Most searches are patient-scoped (a `patient` parameter required), and `_revinclude` is not
    offered on ServiceRequest: unverified for every Epic version; we rely on the
    CapabilityStatement's `searchParam` / `searchRevInclude` lists and fall back when absent.
  * Page sizes: Epic pages search results itself and may ignore `_count`: unverified; we only
    follow the server's next links, whatever their size.
- Oracle Health / Cerner Millennium
  (https://docs.oracle.com/en/industries/health/millennium-platform-apis/):
  * Many searches require `patient` or `_id` (documented per resource in the R4 API reference);
    `Capabilities.supports_search` tells when a parameter is not listed.
  * A 500 may be given for faults that retrying cannot cure (seen in practice by the SMART
    cumulus project; unverified in Oracle's docs); we retry it a bounded number of times only.
  * `_count` caps per resource: unverified; we follow next links, whatever their size.
- HAPI FHIR (https://hapifhir.io/hapi-fhir/docs/): stale If-Match answers 409, not 412
  (asserted in tests/integration/test_hapi_smoke.py); `VersionConflict` covers both.
- Medplum (https://www.medplum.com/docs): no quirk handled.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Capabilities", "ResourceCapability", "Vendor", "detect_vendor"]

# Parameters that shape the result rather than filter it (FHIR R4 3.1.1.5.x): a server handles
# them without listing them as searchParam.
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_format"}
)


class Vendor(enum.StrEnum):
    EPIC = "epic"
    ORACLE_HEALTH = "oracle-health"  # formerly Cerner
    HAPI = "hapi"
    MEDPLUM = "medplum"
    OTHER = "other"


@dataclass(frozen=True)
class ResourceCapability:
    """One `rest.resource` entry: interactions, search parameters, includes, revincludes."""

    type: str
    interactions: frozenset[str] = frozenset()
    search_params: frozenset[str] = frozenset()
    includes: frozenset[str] = frozenset()
    revincludes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Capabilities:
    """The parts of a CapabilityStatement the adapter decides on."""

    vendor: Vendor
    fhir_version: str | None
    software_name: str | None
    software_version: str | None
    resources: Mapping[str, ResourceCapability] = field(default_factory=dict)

    @classmethod
    def from_statement(cls, statement: Mapping[str, Any]) -> Capabilities:
        """Read a CapabilityStatement (parsed JSON); unknown or malformed parts count as absent."""
        software = _obj(statement.get("software"))
        resources: dict[str, ResourceCapability] = {}
        for rest in _objs(statement.get("rest")):
            if rest.get("mode") not in (None, "server"):
                continue
            # rest.searchParam applies to every resource type (e.g. _id, _lastUpdated).
            common = _names(rest.get("searchParam"))
            for entry in _objs(rest.get("resource")):
                rtype = entry.get("type")
                if not isinstance(rtype, str):
                    continue
                resources[rtype] = ResourceCapability(
                    type=rtype,
                    interactions=frozenset(
                        i["code"]
                        for i in _objs(entry.get("interaction"))
                        if isinstance(i.get("code"), str)
                    ),
                    search_params=_names(entry.get("searchParam")) | common,
                    includes=_strings(entry.get("searchInclude")),
                    revincludes=_strings(entry.get("searchRevInclude")),
                )
        return cls(
            vendor=detect_vendor(statement),
            fhir_version=_str(statement.get("fhirVersion")),
            software_name=_str(software.get("name")),
            software_version=_str(software.get("version")),
            resources=resources,
        )

    def resource(self, resource_type: str) -> ResourceCapability | None:
        return self.resources.get(resource_type)

    def supports_interaction(self, resource_type: str, interaction: str) -> bool:
        """Whether `interaction` (read, search-type, create, update, ...) is listed for the type."""
        found = self.resources.get(resource_type)
        return found is not None and interaction in found.interactions

    def supports_search(self, resource_type: str, param: str) -> bool:
        """Whether a search parameter may be relied on; `subject:Patient` checks `subject`."""
        name = param.split(":", 1)[0]
        if name in RESULT_PARAMETERS:
            return True
        found = self.resources.get(resource_type)
        return found is not None and name in found.search_params

    def supports_include(self, resource_type: str, include: str) -> bool:
        """Whether `_include=<include>` (e.g. `ServiceRequest:subject`) is offered on the type."""
        found = self.resources.get(resource_type)
        if found is None:
            return False
        if include in found.includes:
            return True
        # `*` offers every include a search parameter exists for: ServiceRequest:insurance,
        # for one, is no R4 search parameter, so a server listing `*` still refuses it.
        source, _, param = include.partition(":")
        return "*" in found.includes and self.supports_search(source, param.split(":")[0])

    def supports_revinclude(self, resource_type: str, revinclude: str) -> bool:
        """Whether `_revinclude=<revinclude>` (e.g. `Appointment:based-on`) is offered."""
        found = self.resources.get(resource_type)
        return found is not None and (revinclude in found.revincludes or "*" in found.revincludes)

    def unsupported_search(
        self, resource_type: str, params: Iterable[tuple[str, str]]
    ) -> list[str]:
        """Readable reasons why a planned search would not be honoured; empty if all is offered.

        The sync calls this before a search and, for each reason, uses its fallback (e.g. a
        separate query per revinclude) instead of trusting a server that may ignore the parameter.
        """
        reasons: list[str] = []
        if not self.supports_interaction(resource_type, "search-type"):
            reasons.append(f"{resource_type}: search is not offered")
        for name, value in params:
            if name == "_include":
                if not self.supports_include(resource_type, value):
                    reasons.append(f"{resource_type}: _include={value} is not offered")
            elif name == "_revinclude":
                if not self.supports_revinclude(resource_type, value):
                    reasons.append(f"{resource_type}: _revinclude={value} is not offered")
            elif not self.supports_search(resource_type, name):
                reasons.append(f"{resource_type}: search parameter {name} is not offered")
        return reasons


def detect_vendor(statement: Mapping[str, Any]) -> Vendor:
    """The server's vendor from software.name, publisher and implementation (url/description)."""
    software = _obj(statement.get("software"))
    implementation = _obj(statement.get("implementation"))
    name = (_str(software.get("name")) or "").casefold()
    publisher = (_str(statement.get("publisher")) or "").casefold()
    impl = " ".join(
        s.casefold()
        for s in (_str(implementation.get("url")), _str(implementation.get("description")))
        if s
    )
    # Epic's own statement names the software "Epic"
    # (https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4/metadata).
    if name == "epic" or publisher.startswith("epic") or "epic.com" in impl:
        return Vendor.EPIC
    # Oracle Health publishes as "Cerner" (older) or "Oracle Health"; sandbox hosts on cerner.com.
    if "cerner" in publisher or "oracle" in publisher or "cerner" in name or "cerner.com" in impl:
        return Vendor.ORACLE_HEALTH
    if "hapi" in name:
        return Vendor.HAPI
    if "medplum" in name or "medplum" in publisher or "medplum" in impl:
        return Vendor.MEDPLUM
    return Vendor.OTHER


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objs(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> frozenset[str]:
    return (
        frozenset(v for v in value if isinstance(v, str))
        if isinstance(value, list)
        else frozenset()
    )


def _names(value: Any) -> frozenset[str]:
    return frozenset(p["name"] for p in _objs(value) if isinstance(p.get("name"), str))
