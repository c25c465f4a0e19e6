"""Paths, timeouts and the validator client shared by the integration fixtures and tests."""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAPI_SH = ROOT / "tests" / "hapi" / "hapi.sh"
VALIDATE_SH = ROOT / "tests" / "fhir_validator" / "validate.sh"
FHIR_PROFILES = ROOT / "fhir_profiles"
VALIDATOR_TESTDATA = ROOT / "tests" / "fhir_validator" / "testdata"

# A cold ~/.m2 downloads a few hundred MB before the first start; CI should run
# `tests/hapi/hapi.sh build` and `tests/fhir_validator/validate.sh build` beforehand.
BUILD_AND_START_TIMEOUT_S = 1200
# The first validation loads the R4 core definitions (several seconds on a busy machine).
VALIDATION_TIMEOUT_S = 180


def require_java_toolchain() -> None:
    """Fail (never skip) when the tools the Java components need are missing."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"integration tests need {' and '.join(missing)} on PATH (Java 17+, Maven 3.8+)"
        )


class Validator:
    """A running `validate.sh --stdin`: one request line in, one JSON result line out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._selector = selectors.DefaultSelector()
        assert process.stdout is not None
        self._selector.register(process.stdout, selectors.EVENT_READ)

    def validate(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Validate a resource given as parsed JSON; returns the result object."""
        return self._ask(json.dumps(resource, separators=(",", ":")))

    def validate_file(self, path: Path) -> dict[str, Any]:
        """Validate the resource in a JSON file; returns the result object."""
        return self._ask(str(path))

    def _ask(self, line: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        if self._process.poll() is not None:
            pytest.fail(f"the validator exited with status {self._process.returncode}")
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        deadline = time.monotonic() + VALIDATION_TIMEOUT_S
        # The answer is one flushed line, so a ready pipe means readline() will not block long.
        while not self._selector.select(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"the validator gave no answer within {VALIDATION_TIMEOUT_S} s")
        answer = self._process.stdout.readline()
        if not answer:
            pytest.fail(f"the validator closed its output (exit {self._process.wait(timeout=10)})")
        result: dict[str, Any] = json.loads(answer)
        return result

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._selector.close()
