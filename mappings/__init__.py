"""The pure referral model: FHIR resources in, referral evaluations out, no I/O.

Public API: `validate_resource` (FHIR R4 base validation), `extract` (facts of a resource),
`ReferralIndex`, `Evaluator` / `evaluate_all` (the referral model of DESIGN.md),
`PracticeRules` / `parse_rules`, the output records, and `render_summary`.
"""

from mappings.base_validation import BaseIssue, is_resource_type, validate_resource
from mappings.errors import MappingError, RulesError
from mappings.facts import extract
from mappings.index import ReferralIndex
from mappings.model import MissingDetail, NextAction, Reason, ReferralEvaluation
from mappings.referral import Evaluator, evaluate_all
from mappings.rules import PracticeRules, merge_rules, parse_rules
from mappings.summary import render_summary

__all__ = [
    "BaseIssue",
    "Evaluator",
    "MappingError",
    "MissingDetail",
    "NextAction",
    "PracticeRules",
    "Reason",
    "ReferralEvaluation",
    "ReferralIndex",
    "RulesError",
    "evaluate_all",
    "extract",
    "is_resource_type",
    "merge_rules",
    "parse_rules",
    "render_summary",
    "validate_resource",
]
