"""What the adapter relies on from a real HAPI FHIR R4 server, shown against one.

Each test scopes its searches by an identifier system or tag of its own, since all tests share
one server per session.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.fhir_helpers import create, ids_of, patient, raw_client, unique_system

HAPI_VERSION = "8.8.0"


@pytest.fixture
def fhir(hapi_base_url: str) -> Iterator[httpx.Client]:
    with raw_client(hapi_base_url) as client:
        yield client


def next_link(bundle: dict[str, Any]) -> str | None:
    return next(
        (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None
    )


def test_metadata_names_r4_and_the_pinned_hapi_version(fhir: httpx.Client) -> None:
    response = fhir.get("/metadata")

    assert response.status_code == 200
    capabilities = response.json()
    assert capabilities["fhirVersion"] == "4.0.1"
    assert capabilities["software"]["version"] == HAPI_VERSION


def test_create_then_read(fhir: httpx.Client) -> None:
    response = fhir.post("/Patient", json=patient(unique_system(), "p1", family="Okafor"))

    assert response.status_code == 201
    assert response.headers["ETag"] == 'W/"1"'
    location = response.headers["Location"]
    assert "/Patient/" in location
    assert location.endswith("/_history/1")
    created = response.json()

    read = fhir.get(f"/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.headers["ETag"] == 'W/"1"'
    body = read.json()
    assert body["meta"]["versionId"] == "1"
    assert body["name"][0]["family"] == "Okafor"


def test_versioned_update_and_stale_if_match_gives_409(fhir: httpx.Client) -> None:
    created = create(fhir, patient(unique_system(), "p2"))
    path = f"/Patient/{created['id']}"

    first = {**created, "name": [{"family": "Second"}]}
    updated = fhir.put(path, json=first, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.headers["ETag"] == 'W/"2"'

    # A writer still holding version 1 loses: HAPI answers 409 Conflict (not 412).
    stale = {**created, "name": [{"family": "Stale"}]}
    conflict = fhir.put(path, json=stale, headers={"If-Match": 'W/"1"'})
    assert conflict.status_code == 409
    outcome = conflict.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert "not the current version" in outcome["issue"][0]["diagnostics"]

    current = fhir.get(path).json()
    assert current["meta"]["versionId"] == "2"
    assert current["name"][0]["family"] == "Second"


def test_conditional_create_with_if_none_exist_does_not_duplicate(fhir: httpx.Client) -> None:
    system = unique_system()
    organization = {
        "resourceType": "Organization",
        "identifier": [{"system": system, "value": "office-1"}],
        "name": "Referring office",
    }
    condition = {"If-None-Exist": f"identifier={system}|office-1"}

    first = fhir.post("/Organization", json=organization, headers=condition)
    second = fhir.post("/Organization", json=organization, headers=condition)

    assert first.status_code == 201
    # HAPI answers a matched conditional create with 200 OK and the existing resource.
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    found = fhir.get("/Organization", params={"identifier": f"{system}|office-1"}).json()
    assert found["total"] == 1


def test_transaction_resolves_urn_uuid_references(fhir: httpx.Client) -> None:
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    request_urn = f"urn:uuid:{uuid.uuid4()}"
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_urn,
                "resource": patient(unique_system(), "p3"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": request_urn,
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": patient_urn},
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }

    response = fhir.post("/", json=transaction)

    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in reply["entry"]]
    assert all(status.startswith("201") for status in statuses)
    patient_id = reply["entry"][0]["response"]["location"].split("/")[1]
    request_location = reply["entry"][1]["response"]["location"]
    request_id = request_location.split("/")[1]
    service_request = fhir.get(f"/ServiceRequest/{request_id}").json()
    assert service_request["subject"]["reference"] == f"Patient/{patient_id}"


def test_search_by_last_updated(fhir: httpx.Client) -> None:
    system = unique_system()
    older = create(fhir, patient(system, "older"))
    time.sleep(0.05)  # meta.lastUpdated has millisecond precision
    newer = create(fhir, patient(system, "newer"))
    cursor = older["meta"]["lastUpdated"]

    since = fhir.get("/Patient", params={"identifier": f"{system}|", "_lastUpdated": f"gt{cursor}"})
    upto = fhir.get("/Patient", params={"identifier": f"{system}|", "_lastUpdated": f"le{cursor}"})

    assert since.status_code == 200
    assert ids_of(since.json(), "Patient") == [newer["id"]]
    assert ids_of(upto.json(), "Patient") == [older["id"]]


def test_identical_search_sees_new_data(fhir: httpx.Client) -> None:
    """The launcher turns HAPI's 60 s reuse of identical searches off; this proves it."""
    system = unique_system()
    params = {"identifier": f"{system}|"}
    create(fhir, patient(system, "first"))
    assert len(ids_of(fhir.get("/Patient", params=params).json(), "Patient")) == 1

    create(fhir, patient(system, "second"))

    assert len(ids_of(fhir.get("/Patient", params=params).json(), "Patient")) == 2


def test_include_and_revinclude(fhir: httpx.Client) -> None:
    subject = create(fhir, patient(unique_system(), "p4"))
    office = create(fhir, {"resourceType": "Organization", "name": "Northside Cardiology"})
    referral = create(
        fhir,
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": f"Patient/{subject['id']}"},
            "requester": {"reference": f"Organization/{office['id']}"},
        },
    )

    included = fhir.get(
        "/ServiceRequest",
        params={
            "_id": referral["id"],
            "_include": ["ServiceRequest:subject", "ServiceRequest:requester"],
        },
    ).json()
    revincluded = fhir.get(
        "/Patient", params={"_id": subject["id"], "_revinclude": "ServiceRequest:subject"}
    ).json()

    assert ids_of(included, "ServiceRequest", "match") == [referral["id"]]
    assert ids_of(included, "Patient", "include") == [subject["id"]]
    assert ids_of(included, "Organization", "include") == [office["id"]]
    assert ids_of(revincluded, "Patient", "match") == [subject["id"]]
    assert ids_of(revincluded, "ServiceRequest", "include") == [referral["id"]]


def test_count_paging_through_next_links(fhir: httpx.Client, hapi_base_url: str) -> None:
    tag = {"system": unique_system(), "code": "paging"}
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "meta": {"tag": [tag]},
                    "name": [{"family": f"Page{n}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
            for n in range(7)
        ],
    }
    assert fhir.post("/", json=batch).status_code == 200

    seen: list[str] = []
    pages = 0
    url: str | None = "/Patient"
    params: dict[str, str] | None = {"_tag": f"{tag['system']}|paging", "_count": "3"}
    while url is not None:
        page = fhir.get(url, params=params).json()
        pages += 1
        seen.extend(ids_of(page, "Patient"))
        url = next_link(page)
        params = None  # a next link carries its own query
        if url is not None:
            assert url.startswith(hapi_base_url), url  # next links stay on the server
        assert pages <= 10, "next links do not end"

    assert pages == 3
    assert len(seen) == 7
    assert len(set(seen)) == 7


def test_delete_then_read_gives_410(fhir: httpx.Client) -> None:
    created = create(fhir, patient(unique_system(), "p5"))
    path = f"/Patient/{created['id']}"

    deleted = fhir.delete(path)

    assert deleted.status_code in (200, 204)
    assert fhir.get(path).status_code == 410
