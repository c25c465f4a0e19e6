"""Errors of the pure referral model, named by what the caller should do next.

MappingError
 +-- RulesError      the practice rules are wrong: fix the rules file and run again
"""

from __future__ import annotations

__all__ = ["MappingError", "RulesError"]


class MappingError(Exception):
    """Base of the errors raised by `mappings`."""


class RulesError(MappingError):
    """The practice rules are invalid; the message names the key and the problem."""
