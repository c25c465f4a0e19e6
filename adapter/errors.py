"""Errors of the adapter, named by what the caller should do next.

    AdapterError
     +-- InputError              the input cannot be read at all: fix the path or the file (exit 2)
     +-- ConfigError             the configuration or rules are wrong: fix them (exit 2)
     +-- WriteRefused            the server refuses our writes (401/403/405, or its
     |                           CapabilityStatement offers no create): fix its permissions;
     |                           the outbox keeps the work (exit 2)
     +-- FhirServerError         a FHIR server (or its authorization server) refused or failed
          +-- TemporaryServerError   retries exhausted on 408/429/5xx or the network: try later
          |    +-- InvalidResponse       the body was not the FHIR JSON expected (e.g. truncated)
          +-- AuthenticationFailed   credentials refused, or SMART discovery/token failed: fix them
          +-- FatalServerError       the request cannot succeed as sent: do not retry it
               +-- BadRequest            400/422 (or 403/405...): fix the request or the resource
               +-- ResourceNotFound      404/410: the resource is absent or deleted
               +-- VersionConflict       409/412: re-read the resource, then update again
               +-- UnsafeNextLink        a next link leaves the server's base URL: not followed
                    +-- RepeatedNextLink     a next link was seen before: paging would loop

Resources that cannot be read inside a readable input are not errors: they are reported and
skipped (see `adapter.sources`). `FhirServerError` messages name the method, the URL path (never
its query string, which may carry search values), the status code and the server's
OperationOutcome text; never a request or response body of any other kind.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdapterError",
    "AuthenticationFailed",
    "BadRequest",
    "ConfigError",
    "FatalServerError",
    "FhirServerError",
    "InputError",
    "InvalidResponse",
    "RepeatedNextLink",
    "ResourceNotFound",
    "TemporaryServerError",
    "UnsafeNextLink",
    "VersionConflict",
    "WriteRefused",
]


class AdapterError(Exception):
    """Base of the errors raised by `adapter`; the message never carries PHI."""


class InputError(AdapterError):
    """The input is unreadable as a whole (missing, not JSON, not FHIR, an empty directory)."""


class ConfigError(AdapterError):
    """A configuration value or the practice rules are invalid."""


class WriteRefused(AdapterError):
    """The server will not take the adapter's writes; nothing was lost (the outbox keeps them)."""


class FhirServerError(AdapterError):
    """A FHIR server interaction failed; carries the status and the OperationOutcome text.

    `status` is None when no response arrived (connection refused, reset, timeout).
    `outcome` is the server's OperationOutcome (parsed JSON) when the body was one, else None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        outcome_text: str | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome_text = outcome_text
        self.outcome = outcome


class TemporaryServerError(FhirServerError):
    """The server was busy or unreachable and the retries ran out: try again later."""


class InvalidResponse(TemporaryServerError):
    """The server answered with a body that is not the FHIR JSON expected (truncated, not JSON)."""


class AuthenticationFailed(FhirServerError):
    """The server refused our credentials (401 after one re-authentication) or SMART auth failed."""


class FatalServerError(FhirServerError):
    """The server refused the request; sending it again unchanged will not help."""


class BadRequest(FatalServerError):
    """The server rejected the request or resource (400, 422, 403, 405 ...)."""


class ResourceNotFound(FatalServerError):
    """The resource does not exist (404) or was deleted (410)."""


class VersionConflict(FatalServerError):
    """The resource changed since it was read (409 or 412 on If-Match): re-read, then retry."""


class UnsafeNextLink(FatalServerError):
    """A Bundle's next link points outside the server's own origin and base path."""


class RepeatedNextLink(UnsafeNextLink):
    """A Bundle's next link was already followed during this search: paging would never end."""
