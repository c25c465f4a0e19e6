"""`adapter.fhir_client.FhirClient` against a real HAPI FHIR R4 server (session fixture).

Each test scopes its searches by an identifier system of its own: the server is shared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter.errors import ResourceNotFound, TemporaryServerError, VersionConflict
from adapter.fhir_capabilities import Vendor
from adapter.fhir_client import FhirClient
from adapter.http_policy import RetryPolicy, make_http_client


@pytest.fixture
def client(hapi_base_url: str) -> Iterator[FhirClient]:
    with make_http_client(timeout=60.0) as http:
        yield FhirClient(hapi_base_url, http, policy=RetryPolicy(max_attempts=3))


def unique_system() -> str:
    return f"urn:test:{uuid.uuid4().hex}"


def patient(system: str, value: str, family: str = "Okafor") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family, "given": ["Ada"]}],
        "birthDate": "1975-06-01",
    }


def test_create_then_read(client: FhirClient) -> None:
    created = client.create(patient(unique_system(), "1"))
    assert created.created
    assert created.id is not None
    assert created.version_id == "1"
    read = client.read("Patient", created.id)
    assert read["name"][0]["family"] == "Okafor"
    with pytest.raises(ResourceNotFound):
        client.read("Patient", f"absent-{uuid.uuid4().hex[:12]}")


def test_search_pages_through_real_next_links(client: FhirClient) -> None:
    system = unique_system()
    for n in range(7):
        client.create(patient(system, str(n)))
    pages = list(client.search("Patient", {"identifier": f"{system}|", "_count": "3"}))
    assert len(pages) == 3
    values = sorted(
        e["resource"]["identifier"][0]["value"] for page in pages for e in page.get("entry", [])
    )
    assert values == [str(n) for n in range(7)]


def test_conditional_create_does_not_duplicate(client: FhirClient) -> None:
    system = unique_system()
    query = {"identifier": f"{system}|mrn-1"}
    first = client.conditional_create(patient(system, "mrn-1"), query)
    again = client.conditional_create(patient(system, "mrn-1"), query)
    assert first.created
    assert not again.created
    assert again.id == first.id
    pages = list(client.search("Patient", {"identifier": f"{system}|"}))
    assert sum(len(p.get("entry", [])) for p in pages) == 1


def test_update_with_a_stale_version_is_a_version_conflict(client: FhirClient) -> None:
    created = client.create(patient(unique_system(), "1"))
    assert created.resource is not None
    current = created.resource
    updated = client.update({**current, "birthDate": "1975-06-02"}, if_match="1")
    assert updated.version_id == "2"
    with pytest.raises(VersionConflict) as raised:
        client.update({**current, "birthDate": "1975-06-03"}, if_match="1")
    assert raised.value.status in (409, 412)
    assert raised.value.outcome_text  # HAPI explains the conflict in an OperationOutcome
    assert "1975-06-03" not in str(raised.value)


def test_transaction_with_puts(client: FhirClient) -> None:
    system = unique_system()
    pid = f"tx-{uuid.uuid4().hex[:16]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**patient(system, "tx"), "id": pid},
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            }
        ],
    }
    result = client.transaction(bundle)
    assert result["type"] == "transaction-response"
    assert client.read("Patient", pid)["id"] == pid


def test_capabilities_find_hapi_and_revinclude_on_service_request(client: FhirClient) -> None:
    caps = client.capabilities()
    assert caps.vendor is Vendor.HAPI
    assert caps is client.capabilities()
    assert caps.supports_interaction("ServiceRequest", "search-type")
    assert caps.supports_search("ServiceRequest", "_lastUpdated")
    assert caps.supports_include("ServiceRequest", "ServiceRequest:subject")
    for rev in ("Appointment:based-on", "Communication:based-on", "Task:based-on"):
        assert caps.supports_revinclude("ServiceRequest", rev), rev
    planned = [("_revinclude", "Appointment:based-on"), ("_include", "ServiceRequest:requester")]
    assert caps.unsupported_search("ServiceRequest", planned) == []


def test_unreachable_port_is_temporary() -> None:
    # A closed port on loopback: refused at once, retried, then reported as temporary.
    sleeps: list[float] = []
    with make_http_client(timeout=httpx.Timeout(5.0)) as http:
        client = FhirClient(
            "http://127.0.0.1:9/fhir", http, policy=RetryPolicy(max_attempts=2, sleep=sleeps.append)
        )
        with pytest.raises(TemporaryServerError):
            client.read("Patient", "x")
    assert len(sleeps) == 1
