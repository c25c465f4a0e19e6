"""Fixtures that start the real Java components once per session.

- `hapi_base_url`: a HAPI FHIR R4 JPA server (tests/hapi/hapi.sh), H2 in memory.
- `fhir_validator`: the offline HAPI validator (tests/fhir_validator/validate.sh --stdin), loaded
  with fhir_profiles/ and the test profiles, kept running so each check costs no JVM start.
- `sekmet_base_url`: a sekmet-fhir server (PyPI `sekmet-fhir`, Python, SQLite in a temp dir,
  simulator off; tests/sekmet/server.py), the second, light FHIR server.

None skips: without Java or Maven, or without sekmet-fhir installed, the fixtures fail, so a CI
machine missing them goes red.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.java_tools import (
    BUILD_AND_START_TIMEOUT_S,
    FHIR_PROFILES,
    HAPI_SH,
    VALIDATE_SH,
    VALIDATOR_TESTDATA,
    Validator,
    require_java_toolchain,
)
from tests.sekmet.server import SekmetServer, SekmetStartError


@pytest.fixture(scope="session")
def hapi_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT/fhir) of a HAPI server started for this session, or of
    the one a developer started by hand and named in REFERRAL_ADAPTER_TEST_HAPI (quicker runs
    while working; CI starts its own)."""
    given = os.environ.get("REFERRAL_ADAPTER_TEST_HAPI")
    if given:
        yield given
        return
    require_java_toolchain()
    # Own state directory: a server a developer started by hand is left alone.
    env = {**os.environ, "HAPI_STATE_DIR": str(tmp_path_factory.mktemp("hapi-state"))}
    started = subprocess.run(
        [str(HAPI_SH), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_AND_START_TIMEOUT_S,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"HAPI did not start (exit {started.returncode}):\n{started.stderr}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [str(HAPI_SH), "stop"], env=env, capture_output=True, timeout=120, check=False
        )


@pytest.fixture(scope="session")
def fhir_validator() -> Iterator[Validator]:
    """The offline validator with fhir_profiles/ and the validator's test profiles loaded."""
    require_java_toolchain()
    built = subprocess.run(
        [str(VALIDATE_SH), "build"],
        capture_output=True,
        text=True,
        timeout=BUILD_AND_START_TIMEOUT_S,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"the validator did not build (exit {built.returncode}):\n{built.stderr}")
    process = subprocess.Popen(
        [
            str(VALIDATE_SH),
            "--ig",
            str(FHIR_PROFILES),
            "--ig",
            str(VALIDATOR_TESTDATA / "profiles"),
            "--stdin",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    validator = Validator(process)
    try:
        yield validator
    finally:
        validator.close()


@pytest.fixture(scope="session")
def sekmet_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT/fhir) of a sekmet-fhir server started for this session."""
    server = SekmetServer(tmp_path_factory.mktemp("sekmet-state"))
    try:
        base_url = server.start()
    except SekmetStartError as error:
        pytest.fail(f"sekmet did not start: {error}")
    try:
        yield base_url
    finally:
        server.stop()
