"""Errors of the adapter, named by what the caller should do next.

    AdapterError
     +-- InputError      the input cannot be read at all: fix the path or the file (exit 2)
     +-- ConfigError     the configuration or rules are wrong: fix them (exit 2)

Resources that cannot be read inside a readable input are not errors: they are reported and
skipped (see `adapter.sources`).
"""

from __future__ import annotations

__all__ = ["AdapterError", "ConfigError", "InputError"]


class AdapterError(Exception):
    """Base of the errors raised by `adapter`; the message never carries PHI."""


class InputError(AdapterError):
    """The input is unreadable as a whole (missing, not JSON, not FHIR, an empty directory)."""


class ConfigError(AdapterError):
    """A configuration value or the practice rules are invalid."""
