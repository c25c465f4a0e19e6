"""Practice rules: every threshold, window, list and per-segment standard of the referral model.

The shipped defaults live in `adapter/default_rules.yaml`; a practice's own file is laid over
them key by key. `parse_rules` validates the merged mapping and names the offending key.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fhir_profiles import terminology
from mappings.errors import RulesError
from mappings.messages import OFFICE_TEMPLATES, PATIENT_TEMPLATES, check_template

__all__ = [
    "BusinessHours",
    "CodeRule",
    "MessageRules",
    "PracticeParty",
    "PracticeRules",
    "SegmentStandard",
    "StatusLoopRules",
    "WritebackRules",
    "merge_rules",
    "parse_rules",
]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeRule(_Rules):
    """A code the rules refer to: a coding system and code (system may be omitted: any)."""

    system: str | None = None
    code: str = Field(min_length=1)

    def matches(self, codings: tuple[tuple[str | None, str | None], ...]) -> bool:
        return any(
            code == self.code and (self.system is None or system == self.system)
            for system, code in codings
        )


# Numbers are strict: YAML reads `no` as False, which lax validation would take for 0.


class ReferralSelection(_Rules):
    categories: tuple[CodeRule, ...] = Field(
        description="ServiceRequest categories that make a referral; empty: every ServiceRequest"
    )


class TimeSensitiveRules(_Rules):
    priorities: tuple[Literal["routine", "urgent", "asap", "stat"], ...]
    occurrence_within_days: int = Field(ge=0, strict=True)
    service_codes: tuple[CodeRule, ...]


class PatientActiveRules(_Rules):
    window_days: int = Field(ge=0, strict=True)


class HighRelationshipRules(_Rules):
    window_days: int = Field(ge=1, strict=True)
    min_referrals: int = Field(ge=1, strict=True)
    sources: tuple[str, ...] = Field(
        description="Source references (Organization/x) or identifiers (system|value)"
    )


class RecordsRules(_Rules):
    waived_service_codes: tuple[CodeRule, ...]


class BusinessHours(_Rules):
    timezone: str
    days: tuple[Weekday, ...] = Field(min_length=1)
    start: time
    end: time

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted_time(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 9:00 as the base-60 integer 540; refuse it, don't misread it.
        if isinstance(value, str):
            try:
                return time.fromisoformat(value)
            except ValueError:
                raise ValueError("not a time of day such as '08:00'") from None
        if not isinstance(value, time):
            raise ValueError("write the time as a quoted string, such as '08:00'")
        return value

    @model_validator(mode="after")
    def _open_before_close(self) -> BusinessHours:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(d) for d in self.days)


class SegmentStandard(_Rules):
    """What a segment asks of staff: the action, who owns it, how to document it, how fast."""

    next_action: str = Field(min_length=1)
    owner_role: str = Field(min_length=1)
    backup_owner_role: str = Field(min_length=1)
    documentation_rule: str = Field(min_length=1)
    follow_up_business_hours: int = Field(gt=0, strict=True)


# Which referring offices get a status update: every source, only high-relationship ones, none.
Audience = Literal["all", "high-relationship", "none"]
_REFERENCE = r"^(Organization|Practitioner|PractitionerRole|CareTeam)/[A-Za-z0-9\-.]{1,64}$"


class StatusLoopRules(_Rules):
    """Which events send a status update (a Communication) to which referring offices."""

    receipt_confirmed: Audience
    information_requested: Audience
    details_complete: Audience
    patient_contacted: Audience
    scheduled: Audience
    closed: Audience
    patient_contacted_outcomes: tuple[str, ...] = Field(
        description="contact outcomes that count as having contacted the patient"
    )

    @field_validator("patient_contacted_outcomes")
    @classmethod
    def _known_outcomes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = terminology().contact_outcomes
        for code in value:
            if code not in known:
                raise ValueError(f"unknown contact outcome {code!r} (known: {', '.join(known)})")
        return value

    def audience(self, event: str) -> Audience:
        value: Audience = getattr(self, event.replace("-", "_"))
        return value


class PracticeParty(_Rules):
    """The practice as the adapter names it in what it writes."""

    reference: str | None = Field(default=None, pattern=_REFERENCE)
    display: str = Field(min_length=1)


class WritebackRules(_Rules):
    practice: PracticeParty
    max_attempts: int = Field(ge=1, strict=True)
    retry_seconds: int = Field(ge=1, strict=True)


class ReviewRules(_Rules):
    """The same-day review lane: the times of day (in the business-hours time zone) at which
    someone looks at what has arrived."""

    times: tuple[time, ...] = Field(min_length=1)

    @field_validator("times", mode="before")
    @classmethod
    def _quoted_times(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            return value
        parsed = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError("write each time as a quoted string, such as '09:00'")
            try:
                parsed.append(time.fromisoformat(item))
            except ValueError:
                raise ValueError(f"{item!r} is not a time of day such as '09:00'") from None
        return tuple(sorted(set(parsed)))


class MessageRules(_Rules):
    """Approved texts: for the patient by referral state, for the office by event."""

    practice_phone: str = Field(min_length=1)
    update_window: str = Field(min_length=1)
    patient: dict[str, str]
    office: dict[str, str]
    how_to_provide: dict[str, str]

    @field_validator("patient", "office", "how_to_provide", mode="before")
    @classmethod
    def _all_templates(cls, value: object, info: Any) -> object:
        if not isinstance(value, Mapping):
            return value
        wanted: tuple[str, ...] = {
            "patient": PATIENT_TEMPLATES,
            "office": OFFICE_TEMPLATES,
            "how_to_provide": tuple(item.code for item in terminology().missing_items),
        }[info.field_name]
        unknown = sorted(str(k) for k in value if k not in wanted)
        if unknown:
            raise ValueError(f"unknown template {unknown[0]!r} (known: {', '.join(wanted)})")
        missing = [k for k in wanted if k not in value]
        if missing:
            raise ValueError(f"no text for {missing[0]!r}")
        for key, text in value.items():
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{key}: the text must be a non-empty string")
            try:
                check_template(text)
            except ValueError as error:
                raise ValueError(f"{key}: {error}") from None
        return value


class PracticeRules(_Rules):
    referrals: ReferralSelection
    time_sensitive: TimeSensitiveRules
    patient_active: PatientActiveRules
    high_relationship: HighRelationshipRules
    records: RecordsRules
    business_hours: BusinessHours
    segments: dict[str, SegmentStandard]
    status_loop: StatusLoopRules
    writeback: WritebackRules
    messages: MessageRules
    review: ReviewRules

    @field_validator("segments", mode="before")
    @classmethod
    def _every_segment(cls, value: object) -> object:
        # Names first: a misspelt segment is one clear problem, not four missing keys under it.
        if not isinstance(value, Mapping):
            return value
        known = terminology().segments
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ValueError(f"unknown segment {unknown[0]!r} (known: {', '.join(known)})")
        missing = [s for s in known if s not in value]
        if missing:
            raise ValueError(f"no standard for segment {missing[0]!r}")
        return value

    def is_referral(self, categories: tuple[tuple[str | None, str | None], ...]) -> bool:
        wanted = self.referrals.categories
        return not wanted or any(rule.matches(categories) for rule in wanted)


def merge_rules(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_rules(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_rules(data: object, origin: str) -> PracticeRules:
    """Validated rules from a parsed YAML mapping; RulesError names the key and the problem."""
    if not isinstance(data, Mapping):
        raise RulesError(f"{origin}: the rules must be a mapping of keys to values")
    try:
        return PracticeRules.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "required key is missing"
        more = len(error.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise RulesError(f"{origin}: {where}: {message}{suffix}") from None
