"""`referral-adapter load` into the real HAPI FHIR R4 server (session fixture)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.cli import main
from adapter.fhir_client import FhirClient
from adapter.http_policy import make_http_client
from adapter.personas import REFERRAL_NUMBER
from adapter.synth import synth_to_dir
from tests.integration.fhir_helpers import resources_of, write_folder

AS_OF = "2026-12-03T12:00:00Z"


@pytest.fixture
def client(hapi_base_url: str) -> Iterator[FhirClient]:
    with make_http_client(timeout=60.0) as http:
        yield FhirClient(hapi_base_url, http)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("load") / "export"
    synth_to_dir(25, 11, datetime(2026, 12, 3, tzinfo=UTC), folder)
    return folder


def fetch(client: FhirClient, resource_type: str, ids: list[str]) -> list[dict[str, Any]]:
    found = []
    for start in range(0, len(ids), 50):
        chunk = ",".join(ids[start : start + 50])
        for page in client.search(resource_type, {"_id": chunk, "_count": "100"}):
            found.extend(e["resource"] for e in page.get("entry", []))
    return found


def referral_total(client: FhirClient) -> int:
    page = next(
        client.search("ServiceRequest", {"identifier": f"{REFERRAL_NUMBER}|", "_summary": "count"})
    )
    return int(page["total"])


def test_load_writes_once_and_the_server_evaluates_like_the_files(
    export: Path,
    client: FhirClient,
    hapi_base_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = resources_of(export)
    patients = {r["id"] for r in files["Patient"]}
    # synth writes a few referrals whose patient the EHR does not hold; HAPI enforces
    # referential integrity, so it refuses them (and what points at them): reported, not fatal.
    orphans = {
        r["id"]
        for r in files["ServiceRequest"]
        if r["subject"]["reference"].removeprefix("Patient/") not in patients
    }
    assert (
        main(["load", "--fhir-base", hapi_base_url, "--input", str(export), "--batch-size", "40"])
        == 0
    )
    err = capsys.readouterr().err
    refused = set(re.findall(r"referral-adapter: (\w+/[\w.-]+) at \S+: refused by the server", err))
    assert {k.split("/")[1] for k in refused if k.startswith("ServiceRequest/")} == orphans
    total = sum(len(v) for v in files.values())
    assert f"wrote {total - len(refused)} resources to {hapi_base_url}" in err
    assert f"{len(refused)} refused by the server, 0 unreadable skipped" in err
    assert referral_total(client) == 25 - len(orphans)

    # A second load updates in place (PUT on the same ids): nothing is duplicated.
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(export)]) == 0
    capsys.readouterr()
    assert referral_total(client) == 25 - len(orphans)
    kept = {t: [r for r in rs if f"{t}/{r['id']}" not in refused] for t, rs in files.items()}
    served = {}
    for resource_type, resources in kept.items():
        found = fetch(client, resource_type, [r["id"] for r in resources])
        assert sorted(r["id"] for r in found) == sorted(r["id"] for r in resources)
        # HAPI makes no new version for a PUT that changes nothing: the second load was a no-op.
        assert {r["meta"]["versionId"] for r in found} == {"1"}
        served[resource_type] = found

    # What the server holds evaluates exactly as the same resources on disk.
    assert (
        main(["segment", "--input", str(write_folder(tmp_path / "kept", kept)), "--as-of", AS_OF])
        == 0
    )
    from_files = sorted(capsys.readouterr().out.splitlines())
    assert (
        main(
            ["segment", "--input", str(write_folder(tmp_path / "served", served)), "--as-of", AS_OF]
        )
        == 0
    )
    from_server = sorted(capsys.readouterr().out.splitlines())
    assert len(from_files) == 25 - len(orphans)
    assert from_server == from_files


def test_a_resource_the_server_refuses_is_reported_and_the_rest_loaded(
    client: FhirClient,
    hapi_base_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = {"resourceType": "Patient", "id": "load-good", "name": [{"family": "Quill"}]}
    # HAPI enforces referential integrity: a reference to a patient it does not hold is refused.
    orphan = {
        "resourceType": "Coverage",
        "id": "load-orphan",
        "status": "active",
        "beneficiary": {"reference": "Patient/no-such-patient"},
        "payor": [{"reference": "Patient/load-good"}],
    }
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps(orphan) + b"\n")
    assert main(["load", "--fhir-base", hapi_base_url, "--input", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"Coverage/load-orphan at {path}:2: refused by the server: " in err
    assert "no-such-patient" in err or "HAPI-" in err
    assert "1 refused by the server" in err
    assert client.read("Patient", "load-good")["name"][0]["family"] == "Quill"
