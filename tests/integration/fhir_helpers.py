"""Small helpers the integration tests share: raw FHIR calls and Bulk Data folders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

FHIR_JSON = "application/fhir+json"
JSON = dict[str, Any]


@contextmanager
def raw_client(base_url: str) -> Iterator[httpx.Client]:
    """A plain httpx client on a FHIR base, speaking FHIR JSON."""
    headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        yield client


def unique_system() -> str:
    """An identifier system of one test's own, so tests sharing a server do not meet."""
    return f"urn:test:{uuid.uuid4().hex}"


def create(fhir: httpx.Client, resource: JSON) -> JSON:
    response = fhir.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: JSON = response.json()
    return created


def patient(system: str, value: str, family: str = "Rivera") -> JSON:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family, "given": ["Sam"]}],
        "birthDate": "1980-02-03",
    }


def ids_of(bundle: JSON, resource_type: str, mode: str | None = None) -> list[str]:
    return [
        entry["resource"]["id"]
        for entry in bundle.get("entry", [])
        if entry["resource"]["resourceType"] == resource_type
        and (mode is None or entry["search"]["mode"] == mode)
    ]


def resources_of(folder: Path) -> dict[str, list[JSON]]:
    """A Bulk Data folder's resources by type."""
    return {
        f.stem: [orjson.loads(line) for line in f.read_bytes().splitlines()]
        for f in sorted(folder.glob("*.ndjson"))
    }


def write_folder(folder: Path, by_type: dict[str, list[JSON]]) -> Path:
    """Resources by type written as a Bulk Data folder."""
    folder.mkdir()
    for resource_type, resources in by_type.items():
        (folder / f"{resource_type}.ndjson").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in resources)
        )
    return folder
