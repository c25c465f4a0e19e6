"""Practice rules files: the shipped defaults, a practice's partial file laid over them, and the
one-line refusal of a wrong file, naming the key and the problem."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter import personas as p
from adapter.cli import main
from adapter.errors import ConfigError
from adapter.practice_rules import default_rules, load_rules
from fhir_profiles import terminology


def rules_file(tmp_path: Path, text: str, name: str = "practice.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    """The message of the ConfigError that loading `path` raises."""
    with pytest.raises(ConfigError) as raised:
        load_rules(path)
    return str(raised.value)


def dump(rules: Any) -> dict[str, Any]:
    data: dict[str, Any] = rules.model_dump(mode="json")
    return data


# --- the defaults -----------------------------------------------------------------------------


def test_the_defaults_load_with_the_values_of_design_md() -> None:
    rules = load_rules(None)
    assert rules == default_rules()
    assert rules.referrals.categories == ()
    assert rules.time_sensitive.priorities == ("urgent", "asap", "stat")
    assert rules.time_sensitive.occurrence_within_days == 14
    assert rules.time_sensitive.service_codes == ()
    assert rules.patient_active.window_days == 14
    assert rules.high_relationship.window_days == 90
    assert rules.high_relationship.min_referrals == 3
    assert rules.high_relationship.sources == ()
    assert rules.records.waived_service_codes == ()
    hours = rules.business_hours
    assert (hours.timezone, hours.start, hours.end) == ("UTC", time(8, 0), time(17, 0))
    assert hours.days == ("mon", "tue", "wed", "thu", "fri")


def test_the_defaults_hold_a_full_standard_for_every_segment() -> None:
    rules = load_rules(None)
    assert set(rules.segments) == set(terminology().segments)
    for standard in rules.segments.values():
        assert standard.next_action
        assert standard.owner_role
        assert standard.backup_owner_role
        assert standard.documentation_rule
        assert standard.follow_up_business_hours > 0


@pytest.mark.parametrize("text", ["", "# nothing changed\n", "{}\n"])
def test_an_empty_practice_file_means_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_rules(rules_file(tmp_path, text)) == default_rules()


# --- a practice's file over the defaults ------------------------------------------------------


def test_a_partial_file_overrides_only_its_keys(tmp_path: Path) -> None:
    path = rules_file(
        tmp_path,
        "patient_active:\n"
        "  window_days: 7\n"
        "segments:\n"
        "  missing-detail:\n"
        "    owner_role: intake-nurse\n"
        "business_hours:\n"
        "  timezone: America/Chicago\n"
        "  start: '07:30'\n",
    )
    rules = load_rules(path)
    assert rules.patient_active.window_days == 7
    assert rules.segments["missing-detail"].owner_role == "intake-nurse"
    assert rules.business_hours.timezone == "America/Chicago"
    assert rules.business_hours.start == time(7, 30)

    expected = dump(default_rules())
    expected["patient_active"]["window_days"] = 7
    expected["segments"]["missing-detail"]["owner_role"] = "intake-nurse"
    expected["business_hours"]["timezone"] = "America/Chicago"
    expected["business_hours"]["start"] = "07:30:00"
    assert dump(rules) == expected


def test_lists_replace_the_default_list(tmp_path: Path) -> None:
    path = rules_file(
        tmp_path,
        "time_sensitive:\n"
        "  priorities: [stat]\n"
        "  service_codes:\n"
        "    - {system: 'http://snomed.info/sct', code: '183519002'}\n"
        "business_hours:\n"
        "  days: [mon, wed]\n",
    )
    rules = load_rules(path)
    assert rules.time_sensitive.priorities == ("stat",)
    assert [(c.system, c.code) for c in rules.time_sensitive.service_codes] == [
        ("http://snomed.info/sct", "183519002")
    ]
    assert rules.business_hours.days == ("mon", "wed")
    assert rules.time_sensitive.occurrence_within_days == 14


def test_an_empty_list_replaces_too(tmp_path: Path) -> None:
    rules = load_rules(rules_file(tmp_path, "time_sensitive:\n  priorities: []\n"))
    assert rules.time_sensitive.priorities == ()


def test_times_with_a_leading_zero_need_no_quotes(tmp_path: Path) -> None:
    # YAML 1.1 reads 9:00 as the integer 540 but 07:30 (leading zero) as the string '07:30'.
    rules = load_rules(rules_file(tmp_path, "business_hours:\n  start: 07:30\n  end: '16:00'\n"))
    assert (rules.business_hours.start, rules.business_hours.end) == (time(7, 30), time(16, 0))


def test_the_defaults_are_not_changed_by_loading_a_practice_file(tmp_path: Path) -> None:
    before = dump(default_rules())
    load_rules(rules_file(tmp_path, "patient_active:\n  window_days: 3\n"))
    assert dump(default_rules()) == before
    assert load_rules(None).patient_active.window_days == 14


# --- wrong files: one line naming the key and the problem -------------------------------------

FULL_STANDARD = (
    "    next_action: Call them\n"
    "    owner_role: scheduler\n"
    "    backup_owner_role: front-desk\n"
    "    documentation_rule: Write it down\n"
    "    follow_up_business_hours: 2\n"
)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        pytest.param(
            "time_sensitive:\n  priorites: [urgent]\n",
            "time_sensitive.priorites",
            "unknown key",
            id="unknown-key",
        ),
        pytest.param("frobnicate: 1\n", "frobnicate", "unknown key", id="unknown-top-level-key"),
        pytest.param(
            "patient_active:\n  window_days: soon\n",
            "patient_active.window_days",
            "valid integer",
            id="wrong-type-text-for-number",
        ),
        pytest.param(
            "patient_active:\n  window_days: 1.5\n",
            "patient_active.window_days",
            "valid integer",
            id="wrong-type-fraction",
        ),
        pytest.param(
            "high_relationship:\n  sources: Organization/org-northside\n",
            "high_relationship.sources",
            "valid tuple",
            id="wrong-type-text-for-list",
        ),
        pytest.param(
            "segments: [time-sensitive]\n",
            "segments",
            "valid dictionary",
            id="wrong-type-list-for-mapping",
        ),
        pytest.param(
            "time_sensitive:\n  service_codes: ['183519002']\n",
            "time_sensitive.service_codes.0",
            "valid dictionary",
            id="wrong-type-code-as-text",
        ),
        pytest.param(
            "time_sensitive:\n  service_codes: [{system: x}]\n",
            "time_sensitive.service_codes.0.code",
            "required key is missing",
            id="code-without-code",
        ),
        pytest.param(
            "patient_active:\n  window_days: -1\n",
            "patient_active.window_days",
            "greater than or equal to 0",
            id="negative-window",
        ),
        pytest.param(
            "time_sensitive:\n  occurrence_within_days: -14\n",
            "time_sensitive.occurrence_within_days",
            "greater than or equal to 0",
            id="negative-horizon",
        ),
        pytest.param(
            "high_relationship:\n  window_days: 0\n",
            "high_relationship.window_days",
            "greater than or equal to 1",
            id="zero-window",
        ),
        pytest.param(
            "high_relationship:\n  min_referrals: 0\n",
            "high_relationship.min_referrals",
            "greater than or equal to 1",
            id="zero-count",
        ),
        pytest.param(
            "segments:\n  ready-to-schedule:\n    follow_up_business_hours: -8\n",
            "segments.ready-to-schedule.follow_up_business_hours",
            "greater than 0",
            id="negative-follow-up",
        ),
        pytest.param(
            "segments:\n  ready-to-schedule:\n    owner_role: ''\n",
            "segments.ready-to-schedule.owner_role",
            "at least 1 character",
            id="empty-owner",
        ),
        pytest.param(
            "segments:\n  urgent:\n" + FULL_STANDARD,
            "segments",
            "unknown segment 'urgent'",
            id="unknown-segment",
        ),
        pytest.param(
            # A typo in a segment name, changing one key as a practice file does.
            "segments:\n  missing-details:\n    owner_role: intake-nurse\n",
            "segments",
            "unknown segment 'missing-details'",
            id="unknown-segment-partial",
        ),
        pytest.param(
            "time_sensitive:\n  priorities: [urgent, critical]\n",
            "time_sensitive.priorities.1",
            "'stat'",
            id="unknown-priority",
        ),
        pytest.param(
            "business_hours:\n  timezone: Mars/Olympus_Mons\n",
            "business_hours.timezone",
            "unknown time zone",
            id="bad-timezone",
        ),
        pytest.param(
            "business_hours:\n  timezone: ../../etc/passwd\n",
            "business_hours.timezone",
            "unknown time zone",
            id="timezone-path",
        ),
        pytest.param(
            "business_hours:\n  start: 9:00\n",
            "business_hours.start",
            "quoted string",
            id="unquoted-start",
        ),
        pytest.param(
            "business_hours:\n  end: 17:30\n",
            "business_hours.end",
            "quoted string",
            id="unquoted-end",
        ),
        pytest.param(
            "business_hours:\n  start: 'nine'\n",
            "business_hours.start",
            "not a time of day",
            id="not-a-time",
        ),
        pytest.param(
            "business_hours:\n  start: '18:00'\n  end: '09:00'\n",
            "business_hours",
            "start must be before end",
            id="start-after-end",
        ),
        pytest.param(
            "business_hours:\n  start: '09:00'\n  end: '09:00'\n",
            "business_hours",
            "start must be before end",
            id="start-equals-end",
        ),
        pytest.param(
            "business_hours:\n  days: [monday]\n",
            "business_hours.days.0",
            "'mon'",
            id="unknown-weekday",
        ),
        pytest.param(
            "business_hours:\n  days: []\n",
            "business_hours.days",
            "at least 1 item",
            id="no-weekdays",
        ),
        pytest.param(
            "messages:\n  office:\n    scheduled: 'Booked for $apointment'\n",
            "messages.office",
            "scheduled: unknown placeholder $apointment",
            id="misspelt-placeholder",
        ),
        pytest.param(
            "messages:\n  patient:\n    in-review: 'Costs $ 5'\n",
            "messages.patient",
            "in-review: a '$' that starts no placeholder",
            id="stray-dollar",
        ),
        pytest.param(
            "messages:\n  office:\n    thanks: 'Thank you'\n",
            "messages.office",
            "unknown template 'thanks'",
            id="unknown-template",
        ),
        pytest.param(
            "messages:\n  how_to_provide:\n    records: ''\n",
            "messages.how_to_provide",
            "records: the text must be a non-empty string",
            id="empty-text",
        ),
        pytest.param(
            "status_loop:\n  receipt_confirmed: sometimes\n",
            "status_loop.receipt_confirmed",
            "'high-relationship'",
            id="unknown-audience",
        ),
        pytest.param(
            "status_loop:\n  patient_contacted_outcomes: [voicemail]\n",
            "status_loop.patient_contacted_outcomes",
            "unknown contact outcome 'voicemail'",
            id="unknown-outcome",
        ),
        pytest.param(
            "writeback:\n  practice:\n    reference: 'http://elsewhere/Organization/1'\n",
            "writeback.practice.reference",
            "match pattern",
            id="practice-not-a-reference",
        ),
        pytest.param(
            "writeback:\n  max_attempts: 0\n",
            "writeback.max_attempts",
            "greater than or equal to 1",
            id="no-attempts",
        ),
        pytest.param(
            # YAML 1.1 reads yes/no/on/off as booleans: `no` must not become a 0-day window.
            "patient_active:\n  window_days: no\n",
            "patient_active.window_days",
            "integer",
            id="boolean-for-number",
        ),
    ],
)
def test_a_wrong_file_is_refused_in_one_line_naming_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = rules_file(tmp_path, text)
    message = refusal(path)
    assert "\n" not in message
    assert message.startswith(f"rules file {path}: {key}"), message
    assert problem in message, message


def test_the_readme_example_message(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "segments:\n  missing-detail:\n    follow_up_business_hours: 0\n")
    assert refusal(path) == (
        f"rules file {path}: segments.missing-detail.follow_up_business_hours: "
        "Input should be greater than 0"
    )


def test_several_problems_are_still_one_line_naming_the_first(tmp_path: Path) -> None:
    path = rules_file(
        tmp_path, "patient_active:\n  window_days: soon\nhigh_relationship:\n  min_referrals: 0\n"
    )
    message = refusal(path)
    assert "\n" not in message
    assert message.startswith(f"rules file {path}: ")
    assert "(and 1 more problem)" in message


@pytest.mark.parametrize("text", ["- time_sensitive\n- patient_active\n", "just text\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = rules_file(tmp_path, text)
    assert refusal(path) == f"rules file {path}: the rules must be a mapping of keys to values"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("patient_active:\n  window_days: 7\ntime_sensitive:\n  priorities: [urgent\n", 5),
        ("patient_active:\n  window_days: 7\n    extra: 1\n", 3),
        ("segments:\n\tready-to-schedule: {}\n", 2),
    ],
)
def test_invalid_yaml_is_refused_naming_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = rules_file(tmp_path, text)
    assert refusal(path) == f"rules file {path}: not valid YAML at line {line}"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert refusal(path) == f"rules file {path}: cannot be read (No such file or directory)"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path) == f"rules file {tmp_path}: cannot be read (Is a directory)"


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("segments:\n  time-sensitive:\n    owner_role: m\xe9decin\n".encode("latin-1"))
    assert refusal(path) == f"rules file {path}: not UTF-8 text"


# --- through the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("unknown.yaml", "time_sensitive:\n  priorites: [urgent]\n", "time_sensitive.priorites"),
        ("syntax.yaml", "segments: [\n", "not valid YAML at line"),
        ("list.yaml", "- a\n", "must be a mapping"),
        ("hours.yaml", "business_hours:\n  start: 9:00\n", "business_hours.start"),
        ("absent.yaml", None, "cannot be read"),
    ],
)
def test_segment_with_a_bad_rules_file_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    text: str | None,
    expected: str,
) -> None:
    data = tmp_path / "b.json"
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}
    bundle["entry"] = [{"resource": r} for r in p.ada_packet()]
    data.write_bytes(orjson.dumps(bundle))
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    code = main(["segment", "--input", str(data), "--rules", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"referral-adapter: rules file {path}: "), err
    assert expected in err
    assert "Traceback" not in err
