"""What the adapter relies on from sekmet-fhir (the second, light FHIR server), shown against one.

Where sekmet answers differently from HAPI (tests/integration/test_hapi_smoke.py), the test asserts
what sekmet really does and says so. The differences that matter to the adapter:
- a stale If-Match gives 412 Precondition Failed (HAPI: 409 Conflict);
- every PUT makes a new version, even one that changes nothing (HAPI: no-op, same version);
- no referential integrity: references to absent resources are stored (HAPI refuses them);
- unknown search parameters, `_include`s and `_revinclude`s are ignored with a warning in a
  `search.mode = outcome` entry, unless `Prefer: handling=strict` (then 400); HAPI answers 400;
- it has no search parameter `ServiceRequest:insurance` nor `Communication:about`, and no search
  parameters at all for QuestionnaireResponse (read and write work); its CapabilityStatement says
  so, which is what the adapter's fallbacks go by;
- paging is by `_offset` in the next link (no server-side snapshot), with absolute links built
  from the configured base URL;
- deleting an absent resource answers 200 with an informational OperationOutcome.

Each test scopes its searches by an identifier system of its own, since all tests share one
server per session.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.cli import main
from tests.integration.fhir_helpers import (
    create,
    ids_of,
    patient,
    raw_client,
    resources_of,
    unique_system,
    write_folder,
)

AS_OF = "2026-12-03T12:00:00Z"


@pytest.fixture
def fhir(sekmet_base_url: str) -> Iterator[httpx.Client]:
    with raw_client(sekmet_base_url) as client:
        yield client


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)


def outcome_diagnostics(bundle: dict[str, Any]) -> list[str]:
    return [
        issue["diagnostics"]
        for entry in bundle.get("entry", [])
        if entry["search"]["mode"] == "outcome"
        for issue in entry["resource"]["issue"]
    ]


def capability_entry(fhir: httpx.Client, resource_type: str) -> dict[str, Any] | None:
    rest = fhir.get("/metadata").json()["rest"][0]
    return next((r for r in rest["resource"] if r["type"] == resource_type), None)


def test_metadata_is_r4_and_names_sekmet(fhir: httpx.Client, sekmet_base_url: str) -> None:
    response = fhir.get("/metadata")

    assert response.status_code == 200
    capabilities = response.json()
    assert capabilities["resourceType"] == "CapabilityStatement"
    assert capabilities["fhirVersion"] == "4.0.1"
    assert capabilities["software"]["name"] == "SEKMET FHIR R4 Tester"
    assert capabilities["implementation"]["url"] == sekmet_base_url
    rest = capabilities["rest"][0]
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}


def test_capability_statement_lists_what_the_sync_can_ask_and_omits_the_rest(
    fhir: httpx.Client,
) -> None:
    service_request = capability_entry(fhir, "ServiceRequest")
    assert service_request is not None
    interactions = {i["code"] for i in service_request["interaction"]}
    assert {"read", "create", "update", "delete", "search-type"} <= interactions
    assert service_request["versioning"] == "versioned-update"
    assert service_request["updateCreate"] is True
    assert service_request["conditionalCreate"] is True
    params = {p["name"] for p in service_request["searchParam"]}
    assert {"_id", "_lastUpdated", "identifier", "subject", "requester", "status"} <= params
    assert {"ServiceRequest:subject", "ServiceRequest:requester"} <= set(
        service_request["searchInclude"]
    )
    # Unlike HAPI: no `insurance` search parameter, so no `_include=ServiceRequest:insurance`.
    assert "insurance" not in params
    assert "ServiceRequest:insurance" not in service_request["searchInclude"]
    revincludes = set(service_request["searchRevInclude"])
    assert {
        "Communication:based-on",
        "Appointment:based-on",
        "DocumentReference:related",
        "Task:based-on",
        "Task:focus",
    } <= revincludes
    # Unlike HAPI: no Communication `about`, and QuestionnaireResponse has no search parameters.
    assert "Communication:about" not in revincludes
    assert "QuestionnaireResponse:based-on" not in revincludes
    assert capability_entry(fhir, "QuestionnaireResponse") is None
    communication = capability_entry(fhir, "Communication")
    assert communication is not None
    assert "about" not in {p["name"] for p in communication["searchParam"]}


def test_create_then_read(fhir: httpx.Client, sekmet_base_url: str) -> None:
    response = fhir.post("/Patient", json=patient(unique_system(), "p1", family="Okafor"))

    assert response.status_code == 201
    assert response.headers["ETag"] == 'W/"1"'
    location = response.headers["Location"]
    assert location.startswith(f"{sekmet_base_url}/Patient/")
    assert location.endswith("/_history/1")
    created = response.json()

    read = fhir.get(f"/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in read.headers
    body = read.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert body["name"][0]["family"] == "Okafor"

    missing = fhir.get("/Patient/no-such-patient")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_put_with_a_client_id_creates_then_updates(fhir: httpx.Client) -> None:
    rid = f"client-{uuid.uuid4().hex[:12]}"
    resource = {**patient(unique_system(), "p2"), "id": rid}

    first = fhir.put(f"/Patient/{rid}", json=resource)
    assert first.status_code == 201, first.text
    assert first.headers["ETag"] == 'W/"1"'
    assert first.json()["id"] == rid

    # Unlike HAPI, the same body PUT again is not a no-op: sekmet makes version 2.
    again = fhir.put(f"/Patient/{rid}", json=resource)
    assert again.status_code == 200
    assert again.headers["ETag"] == 'W/"2"'
    assert fhir.get(f"/Patient/{rid}").json()["meta"]["versionId"] == "2"

    mismatch = fhir.put(f"/Patient/{rid}", json={**resource, "id": "other-id"})
    assert mismatch.status_code == 400


def test_versioned_update_and_stale_if_match_gives_412(fhir: httpx.Client) -> None:
    created = create(fhir, patient(unique_system(), "p3"))
    path = f"/Patient/{created['id']}"

    first = {**created, "name": [{"family": "Second"}]}
    updated = fhir.put(path, json=first, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.headers["ETag"] == 'W/"2"'

    # A writer still holding version 1 loses: sekmet answers 412 (HAPI answers 409).
    stale = {**created, "name": [{"family": "Stale"}]}
    conflict = fhir.put(path, json=stale, headers={"If-Match": 'W/"1"'})
    assert conflict.status_code == 412
    outcome = conflict.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["code"] == "conflict"
    assert "Version conflict" in outcome["issue"][0]["diagnostics"]

    current = fhir.get(path).json()
    assert current["meta"]["versionId"] == "2"
    assert current["name"][0]["family"] == "Second"

    # If-Match on a resource that does not exist is refused too, not turned into a create.
    absent = f"absent-{uuid.uuid4().hex[:12]}"
    refused = fhir.put(
        f"/Patient/{absent}", json={**stale, "id": absent}, headers={"If-Match": 'W/"1"'}
    )
    assert refused.status_code == 412
    assert fhir.get(f"/Patient/{absent}").status_code == 404


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
    # Like HAPI: a matched conditional create answers 200 OK with the existing resource.
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    found = fhir.get("/Organization", params={"identifier": f"{system}|office-1"}).json()
    assert found["total"] == 1

    # Conditions are evaluated strictly: an unknown parameter is an error, not "no match".
    unknown = fhir.post("/Organization", json=organization, headers={"If-None-Exist": "nope=1"})
    assert unknown.status_code == 400
    assert "Unknown search parameter" in unknown.json()["issue"][0]["diagnostics"]


def test_transaction_resolves_urn_uuid_references_and_keeps_put_ids(
    fhir: httpx.Client, sekmet_base_url: str
) -> None:
    system = unique_system()
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    put_id = f"tx-{uuid.uuid4().hex[:12]}"
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_urn,
                "resource": patient(system, "p4"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "identifier": [{"system": system, "value": "sr-posted"}],
                    "subject": {"reference": patient_urn},
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": put_id,
                    "status": "active",
                    "intent": "order",
                    # Unlike HAPI, sekmet keeps no referential integrity: this is stored.
                    "subject": {"reference": "Patient/not-on-this-server"},
                },
                "request": {"method": "PUT", "url": f"ServiceRequest/{put_id}"},
            },
        ],
    }

    response = fhir.post("", json=transaction)

    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created"]
    patient_location = bundle["entry"][0]["response"]["location"]
    assert patient_location.startswith(f"{sekmet_base_url}/Patient/")
    patient_id = patient_location.split("/")[-3]
    posted = fhir.get("/ServiceRequest", params={"identifier": f"{system}|sr-posted"}).json()
    assert posted["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    kept = fhir.get(f"/ServiceRequest/{put_id}").json()
    assert kept["subject"]["reference"] == "Patient/not-on-this-server"


def test_a_transaction_with_an_invalid_entry_is_rolled_back_whole(fhir: httpx.Client) -> None:
    good_id = f"tx-good-{uuid.uuid4().hex[:12]}"
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": good_id},
                "request": {"method": "PUT", "url": f"Patient/{good_id}"},
            },
            {
                # Structurally invalid (sekmet validates inbound resources strictly by default).
                "resource": {"resourceType": "Patient", "id": "tx-bad", "birthDate": "soon"},
                "request": {"method": "PUT", "url": "Patient/tx-bad"},
            },
        ],
    }

    response = fhir.post("", json=transaction)

    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "rolled back" in outcome["issue"][0]["diagnostics"]
    assert "Patient.birthDate" in outcome["issue"][0]["diagnostics"]
    assert fhir.get(f"/Patient/{good_id}").status_code == 404


def test_last_updated_ge_gt_and_sort(fhir: httpx.Client) -> None:
    system = unique_system()
    created = []
    for n in range(4):
        created.append(create(fhir, patient(system, f"lu{n}")))
        time.sleep(0.01)  # lastUpdated has millisecond precision
    ids = [r["id"] for r in created]
    stamps = [r["meta"]["lastUpdated"] for r in created]
    assert stamps == sorted(stamps)

    def search(**params: str) -> dict[str, Any]:
        response = fhir.get("/Patient", params={"identifier": f"{system}|", **params})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    ge = search(_lastUpdated=f"ge{stamps[1]}", _sort="_lastUpdated")
    assert ids_of(ge, "Patient") == ids[1:]
    gt = search(_lastUpdated=f"gt{stamps[1]}", _sort="_lastUpdated")
    assert ids_of(gt, "Patient") == ids[2:]
    both = search(_lastUpdated=f"ge{stamps[1]}", _sort="-_lastUpdated")
    assert ids_of(both, "Patient") == ids[1:][::-1]
    # A bounded window (ge and lt together), as a cursor with an upper bound asks.
    window = (
        ("identifier", f"{system}|"),
        ("_lastUpdated", f"ge{stamps[1]}"),
        ("_lastUpdated", f"lt{stamps[3]}"),
        ("_sort", "_lastUpdated"),
    )
    assert ids_of(fhir.get("/Patient", params=window).json(), "Patient") == ids[1:3]
    # Precision counts, as the spec says: gt a whole second excludes everything in that second.
    second = stamps[0][:19] + "Z"
    assert search(_lastUpdated=f"ge{second}")["total"] >= 1
    assert ids_of(search(_lastUpdated=f"gt{stamps[-1][:19]}Z"), "Patient") == []


def test_count_pages_follow_next_links_on_the_same_origin(
    fhir: httpx.Client, sekmet_base_url: str
) -> None:
    system = unique_system()
    ids = [create(fhir, patient(system, f"page{n}"))["id"] for n in range(5)]

    first = fhir.get(
        "/Patient", params={"identifier": f"{system}|", "_count": "2", "_sort": "_lastUpdated"}
    ).json()
    assert first["total"] == 5
    seen = ids_of(first, "Patient")
    pages, bundle = 1, first
    while (url := link(bundle, "next")) is not None:
        # Absolute, on the configured base, paged by _offset, the query carried along.
        assert url.startswith(f"{sekmet_base_url}/Patient?")
        assert "_offset=" in url
        assert "_count=2" in url
        assert "_sort=_lastUpdated" in url
        bundle = fhir.get(url).json()
        seen += ids_of(bundle, "Patient")
        pages += 1
    assert pages == 3
    assert seen == ids
    assert link(bundle, "previous") is not None


def test_a_write_between_pages_shifts_the_offset_and_skips_a_resource(
    fhir: httpx.Client,
) -> None:
    # Unlike HAPI, which pages through a cached result list, sekmet runs the query again for
    # each page with `_offset`: a resource updated between pages moves to the end of a
    # `_sort=_lastUpdated` result, the rest move up one place, and one is never served. A sync
    # whose cursor advances past what it has seen would lose that resource until it changes.
    system = unique_system()
    created = []
    for n in range(4):
        created.append(create(fhir, patient(system, f"shift{n}")))
        time.sleep(0.01)
    ids = [r["id"] for r in created]

    first = fhir.get(
        "/Patient", params={"identifier": f"{system}|", "_count": "2", "_sort": "_lastUpdated"}
    ).json()
    assert ids_of(first, "Patient") == ids[:2]
    touched = {**created[0], "name": [{"family": "Moved"}]}
    assert fhir.put(f"/Patient/{ids[0]}", json=touched).status_code == 200
    url = link(first, "next")
    assert url is not None
    second = fhir.get(url).json()

    assert ids_of(second, "Patient") == [ids[3], ids[0]]
    assert link(second, "next") is None
    # ids[2] was never served.


def test_id_lists_and_summary_count(fhir: httpx.Client) -> None:
    system = unique_system()
    ids = [create(fhir, patient(system, f"id{n}"))["id"] for n in range(3)]

    listed = fhir.get("/Patient", params={"_id": f"{ids[0]},{ids[2]},no-such-id"}).json()
    assert sorted(ids_of(listed, "Patient")) == sorted([ids[0], ids[2]])
    assert listed["total"] == 2

    counted = fhir.get("/Patient", params={"identifier": f"{system}|", "_summary": "count"})
    assert counted.status_code == 200
    body = counted.json()
    assert body["total"] == 3
    assert "entry" not in body
    assert link(body, "next") is None


def referral_with_context(fhir: httpx.Client, system: str) -> dict[str, str]:
    """A referral with a requester role, a coverage and one resource of each pointing back."""
    subject = create(fhir, patient(system, "ctx"))["id"]
    org = create(fhir, {"resourceType": "Organization", "name": "Referring office"})["id"]
    practitioner = create(fhir, {"resourceType": "Practitioner", "name": [{"family": "Ng"}]})
    role = create(
        fhir,
        {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": f"Practitioner/{practitioner['id']}"},
            "organization": {"reference": f"Organization/{org}"},
        },
    )["id"]
    coverage = create(
        fhir,
        {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": {"reference": f"Patient/{subject}"},
            "payor": [{"reference": f"Organization/{org}"}],
        },
    )["id"]
    referral = create(
        fhir,
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": system, "value": "referral"}],
            "subject": {"reference": f"Patient/{subject}"},
            "requester": {"reference": f"PractitionerRole/{role}"},
            "insurance": [{"reference": f"Coverage/{coverage}"}],
        },
    )["id"]
    based_on = [{"reference": f"ServiceRequest/{referral}"}]
    ids = {"Patient": subject, "Organization": org, "PractitionerRole": role}
    ids |= {"Coverage": coverage, "ServiceRequest": referral}
    pointing: list[dict[str, Any]] = [
        {"resourceType": "Communication", "status": "completed", "basedOn": based_on},
        {
            "resourceType": "Appointment",
            "status": "booked",
            "basedOn": based_on,
            "participant": [{"actor": {"reference": f"Patient/{subject}"}, "status": "accepted"}],
        },
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain"}}],
            "context": {"related": based_on},
        },
        {"resourceType": "Task", "status": "requested", "intent": "order", "basedOn": based_on},
        {"resourceType": "QuestionnaireResponse", "status": "completed", "basedOn": based_on},
    ]
    for resource in pointing:
        ids[resource["resourceType"]] = create(fhir, resource)["id"]
    return ids


def test_include_and_revinclude_fetch_the_referral_context(fhir: httpx.Client) -> None:
    system = unique_system()
    ids = referral_with_context(fhir, system)
    params = (
        ("identifier", f"{system}|referral"),
        ("_include", "ServiceRequest:subject"),
        ("_include", "ServiceRequest:requester"),
        ("_include:iterate", "PractitionerRole:organization"),
        ("_revinclude", "Communication:based-on"),
        ("_revinclude", "Appointment:based-on"),
        ("_revinclude", "DocumentReference:related"),
        ("_revinclude", "Task:based-on"),
    )

    response = fhir.get("/ServiceRequest", params=params)

    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["total"] == 1  # total counts matches only
    assert ids_of(bundle, "ServiceRequest", "match") == [ids["ServiceRequest"]]
    for resource_type in (
        "Patient",
        "PractitionerRole",
        "Organization",
        "Communication",
        "Appointment",
        "DocumentReference",
        "Task",
    ):
        assert ids_of(bundle, resource_type, "include") == [ids[resource_type]], resource_type
    assert outcome_diagnostics(bundle) == []


def test_unsupported_includes_and_parameters_are_ignored_unless_strict(
    fhir: httpx.Client,
) -> None:
    system = unique_system()
    ids = referral_with_context(fhir, system)
    params = (
        ("identifier", f"{system}|referral"),
        ("_include", "ServiceRequest:insurance"),
        ("_revinclude", "QuestionnaireResponse:based-on"),
        ("_revinclude", "Communication:about"),
    )

    # Unlike HAPI (400): 200, nothing included, one warning each in an outcome entry.
    lenient = fhir.get("/ServiceRequest", params=params).json()
    assert ids_of(lenient, "ServiceRequest", "match") == [ids["ServiceRequest"]]
    assert ids_of(lenient, "Coverage") == []
    assert ids_of(lenient, "QuestionnaireResponse") == []
    warnings = outcome_diagnostics(lenient)
    assert len(warnings) == 3
    assert any("ServiceRequest:insurance" in w for w in warnings)

    # An unknown search parameter is dropped, so the search matches more than asked for: the
    # adapter must not send one (it checks the CapabilityStatement) or must send it strict.
    reference = f"ServiceRequest/{ids['ServiceRequest']}"
    loose = fhir.get("/QuestionnaireResponse", params={"based-on": reference}).json()
    assert "Unknown search parameter 'based-on'" in outcome_diagnostics(loose)[0]
    assert ids["QuestionnaireResponse"] in ids_of(loose, "QuestionnaireResponse")
    strict = fhir.get(
        "/QuestionnaireResponse",
        params={"based-on": reference},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["code"] == "not-supported"
    # Read works for QuestionnaireResponse; so does _id (handled for every type).
    assert fhir.get(f"/QuestionnaireResponse/{ids['QuestionnaireResponse']}").status_code == 200
    by_id = fhir.get("/QuestionnaireResponse", params={"_id": ids["QuestionnaireResponse"]})
    assert ids_of(by_id.json(), "QuestionnaireResponse") == [ids["QuestionnaireResponse"]]


def test_delete_then_read_is_gone_and_history_shows_it(fhir: httpx.Client) -> None:
    system = unique_system()
    created = create(fhir, patient(system, "del"))
    path = f"/Patient/{created['id']}"

    deleted = fhir.delete(path)
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"

    gone = fhir.get(path)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert fhir.get("/Patient", params={"identifier": f"{system}|"}).json()["total"] == 0
    # A search never shows a deletion; the instance history does (an entry without resource).
    history = fhir.get(f"{path}/_history").json()
    assert history["type"] == "history"
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]

    # Deleting again, or deleting what never existed, is not an error on sekmet.
    assert fhir.delete(path).status_code == 200
    assert fhir.delete("/Patient/never-existed").status_code == 200


def test_load_synth_data_into_sekmet(
    fhir: httpx.Client,
    sekmet_base_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from adapter.synth import synth_to_dir

    export = tmp_path / "export"
    synth_to_dir(20, 3, datetime(2026, 12, 3, tzinfo=UTC), export)
    files = resources_of(export)
    total = sum(len(v) for v in files.values())

    assert main(["load", "--fhir-base", sekmet_base_url, "--input", str(export)]) == 0
    err = capsys.readouterr().err
    # Unlike HAPI, sekmet refuses none: the referrals whose patient is absent are stored too.
    assert f"wrote {total} resources to {sekmet_base_url}" in err
    assert "0 refused by the server, 0 unreadable skipped" in err

    # A second load updates in place (PUT on the same ids): nothing duplicated, but unlike
    # HAPI every resource gets version 2, unchanged or not.
    assert main(["load", "--fhir-base", sekmet_base_url, "--input", str(export)]) == 0
    capsys.readouterr()
    served: dict[str, list[dict[str, Any]]] = {}
    for resource_type, resources in files.items():
        ids = [r["id"] for r in resources]
        bundle = fhir.get(
            f"/{resource_type}", params={"_id": ",".join(ids), "_count": str(len(ids) + 1)}
        ).json()
        found = [e["resource"] for e in bundle.get("entry", [])]
        assert sorted(r["id"] for r in found) == sorted(ids), resource_type
        assert {r["meta"]["versionId"] for r in found} == {"2"}, resource_type
        served[resource_type] = found

    # What the server holds evaluates exactly as the same resources on disk.
    assert main(["segment", "--input", str(export), "--as-of", AS_OF]) == 0
    from_files = sorted(capsys.readouterr().out.splitlines())
    assert (
        main(
            ["segment", "--input", str(write_folder(tmp_path / "served", served)), "--as-of", AS_OF]
        )
        == 0
    )
    from_server = sorted(capsys.readouterr().out.splitlines())
    assert len(from_files) == 20
    assert from_server == from_files
