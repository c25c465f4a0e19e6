"""Reading practice rules: the shipped defaults with a practice's own file laid over them."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adapter.errors import ConfigError
from mappings.errors import RulesError
from mappings.rules import PracticeRules, merge_rules, parse_rules

__all__ = ["default_rules", "load_rules"]

DEFAULT_RULES_FILE = "default_rules.yaml"


@cache
def _default_mapping() -> dict[str, Any]:
    text = resources.files("adapter").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def default_rules() -> PracticeRules:
    """The rules shipped with the adapter."""
    return parse_rules(_default_mapping(), DEFAULT_RULES_FILE)


def load_rules(path: Path | None) -> PracticeRules:
    """The defaults, with the practice's rules file (if given) laid over them."""
    if path is None:
        return default_rules()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"rules file {path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"rules file {path}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"rules file {path}: not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"rules file {path}: the rules must be a mapping of keys to values")
    try:
        return parse_rules(merge_rules(_default_mapping(), data), f"rules file {path}")
    except RulesError as error:
        raise ConfigError(str(error)) from None
