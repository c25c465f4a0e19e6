"""`adapter.fhir_client.FhirClient` under faults (respx): retries, Retry-After, 401, paging, errors.

Behaviour against a real server is in tests/integration/test_fhir_client_hapi.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from adapter.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    FhirServerError,
    InvalidResponse,
    RepeatedNextLink,
    ResourceNotFound,
    TemporaryServerError,
    UnsafeNextLink,
    VersionConflict,
)
from adapter.fhir_capabilities import Capabilities, Vendor, detect_vendor
from adapter.fhir_client import FhirClient
from adapter.http_policy import RETRYABLE_STATUSES, RetryPolicy, make_http_client, parse_retry_after

BASE = "https://ehr.example.org/fhir/r4"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
# A search value that would be PHI on a real server: it must never reach an error message.
PATIENT_NAME = "Zanzibarovich"


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def policy(sleeps: Sleeps) -> RetryPolicy:
    return RetryPolicy(max_attempts=4, sleep=sleeps, random=lambda: 0.5, now=lambda: NOW)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def client(policy: RetryPolicy, mock: respx.MockRouter) -> Iterator[FhirClient]:
    with make_http_client(timeout=5.0) as http:
        yield FhirClient(BASE, http, policy=policy)


def patient(pid: str = "ana-1", version: str = "1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"versionId": version}}


def outcome(diagnostics: str, code: str = "processing") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def searchset(entries: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Patient"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r} for r in entries],
    }


# -- retry policy as data -------------------------------------------------------------------


def test_the_retryable_statuses_are_written_down() -> None:
    assert frozenset({408, 429, 500, 502, 503, 504}) == RETRYABLE_STATUSES


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    low = RetryPolicy(random=lambda: 0.0, backoff_base_s=1.0, backoff_max_s=8.0)
    high = RetryPolicy(random=lambda: 0.999999, backoff_base_s=1.0, backoff_max_s=8.0)
    assert [low.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [round(high.backoff(n), 3) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7", now=lambda: NOW) == 7.0
    later = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(later, now=lambda: NOW) == 42.0
    earlier = format_datetime(NOW - timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(earlier, now=lambda: NOW) == 0.0
    assert parse_retry_after("soon", now=lambda: NOW) is None


# -- retries --------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_waits_that_long_capped(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json=patient()),
        ]
    )
    assert client.read("Patient", "ana-1")["id"] == "ana-1"
    assert sleeps == [3.0, 60.0]


def test_429_with_retry_after_http_date_waits_until_then_capped(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    soon = format_datetime(NOW + timedelta(seconds=12), usegmt=True)
    much_later = format_datetime(NOW + timedelta(hours=2), usegmt=True)
    mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": soon}),
            httpx.Response(429, headers={"Retry-After": much_later}),
            httpx.Response(200, json=patient()),
        ]
    )
    client.read("Patient", "ana-1")
    assert sleeps == [12.0, 60.0]


def test_a_503_burst_then_success_backs_off_exponentially(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[httpx.Response(503)] * 3 + [httpx.Response(200, json=patient())]
    )
    assert client.read("Patient", "ana-1")["resourceType"] == "Patient"
    assert route.call_count == 4
    assert sleeps == [0.75, 1.5, 3.0]  # equal jitter at random() == 0.5


def test_retries_exhausted_is_temporary_and_carries_the_outcome_text(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = mock.get(f"{BASE}/Patient/ana-1").mock(
        return_value=httpx.Response(503, json=outcome("database is restarting", "transient"))
    )
    with pytest.raises(TemporaryServerError) as raised:
        client.read("Patient", "ana-1")
    assert route.call_count == 4
    assert len(sleeps) == 3
    assert raised.value.status == 503
    assert raised.value.outcome_text == "error transient: database is restarting"
    assert "database is restarting" in str(raised.value)
    assert "/fhir/r4/Patient/ana-1" in str(raised.value)


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_timeouts_and_connection_resets_are_retried(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps, fault: Exception
) -> None:
    mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[fault, fault, httpx.Response(200, json=patient())]
    )
    assert client.read("Patient", "ana-1")["id"] == "ana-1"
    assert len(sleeps) == 2


def test_a_network_that_stays_down_is_temporary(client: FhirClient, mock: respx.MockRouter) -> None:
    mock.get(f"{BASE}/Patient/ana-1").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TemporaryServerError, match="ConnectError") as raised:
        client.read("Patient", "ana-1")
    assert raised.value.status is None


def test_a_plain_create_is_not_resent_after_it_may_have_arrived(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = mock.post(f"{BASE}/Patient").mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(TemporaryServerError):
        client.create(patient())
    assert route.call_count == 1
    assert sleeps == []


def test_a_plain_create_is_resent_after_429(client: FhirClient, mock: respx.MockRouter) -> None:
    mock.post(f"{BASE}/Patient").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(
                201,
                json=patient("ana-1", "1"),
                headers={"Location": f"{BASE}/Patient/ana-1/_history/1"},
            ),
        ]
    )
    result = client.create(patient())
    assert (result.created, result.id, result.version_id) == (True, "ana-1", "1")


# -- bodies ---------------------------------------------------------------------------------


def test_truncated_json_is_retried_then_a_clear_error(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    route = mock.get(f"{BASE}/Patient/ana-1").mock(
        return_value=httpx.Response(
            200, content=b'{"resourceType": "Patient", "id": "ana-1", "name": [{"fam'
        )
    )
    with pytest.raises(InvalidResponse, match="not a JSON object") as raised:
        client.read("Patient", "ana-1")
    assert route.call_count == 4
    assert "fam" not in str(raised.value)


def test_truncated_json_once_then_whole_succeeds(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[
            httpx.Response(200, content=b'{"resourceType": "Pat'),
            httpx.Response(200, json=patient()),
        ]
    )
    assert client.read("Patient", "ana-1")["id"] == "ana-1"


def test_a_read_answering_another_type_is_refused(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    mock.get(f"{BASE}/Patient/ana-1").mock(
        return_value=httpx.Response(200, json={"resourceType": "Observation", "id": "x"})
    )
    with pytest.raises(InvalidResponse, match="expected a Patient, got Observation"):
        client.read("Patient", "ana-1")


def test_a_400_outcome_is_carried_but_never_the_request_body(
    client: FhirClient, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    mock.post(f"{BASE}/Patient").mock(
        return_value=httpx.Response(
            400, json=outcome("Patient.birthDate: invalid date format", "invalid")
        )
    )
    resource = {"resourceType": "Patient", "name": [{"family": PATIENT_NAME}]}
    with pytest.raises(BadRequest) as raised:
        client.create(resource)
    message = str(raised.value)
    assert "Patient.birthDate: invalid date format" in message
    assert "HTTP 400" in message
    assert PATIENT_NAME not in message
    assert raised.value.outcome is not None
    assert sleeps == []


def test_an_error_body_that_is_not_an_outcome_is_not_quoted(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    mock.get(f"{BASE}/Patient").mock(
        return_value=httpx.Response(400, text=f"<html>bad search name={PATIENT_NAME}</html>")
    )
    with pytest.raises(BadRequest) as raised:
        list(client.search("Patient", {"name": PATIENT_NAME}))
    assert PATIENT_NAME not in str(raised.value)
    assert raised.value.outcome_text is None
    assert str(raised.value) == "GET /fhir/r4/Patient: HTTP 400"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, ResourceNotFound),
        (410, ResourceNotFound),
        (409, VersionConflict),
        (412, VersionConflict),
        (422, BadRequest),
        (403, BadRequest),
    ],
)
def test_statuses_map_to_what_the_caller_should_do(
    client: FhirClient, mock: respx.MockRouter, status: int, error: type[FhirServerError]
) -> None:
    mock.put(f"{BASE}/Patient/ana-1").mock(return_value=httpx.Response(status))
    with pytest.raises(error):
        client.update(patient(), if_match="1")


def test_update_sends_if_match_and_reads_the_new_version(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    route = mock.put(f"{BASE}/Patient/ana-1").mock(
        return_value=httpx.Response(200, json=patient("ana-1", "3"), headers={"ETag": 'W/"3"'})
    )
    result = client.update(patient("ana-1", "2"), if_match="2")
    assert route.calls.last.request.headers["If-Match"] == 'W/"2"'
    assert (result.created, result.version_id) == (False, "3")


def test_conditional_create_sends_if_none_exist(client: FhirClient, mock: respx.MockRouter) -> None:
    route = mock.post(f"{BASE}/Patient").mock(return_value=httpx.Response(200, json=patient()))
    result = client.conditional_create(patient(), {"identifier": "urn:mrn|123"})
    assert route.calls.last.request.headers["If-None-Exist"] == "identifier=urn%3Amrn%7C123"
    assert not result.created


# -- authentication -------------------------------------------------------------------------


class CountingAuth:
    """An Auth whose tokens are numbered; each refresh issues the next one."""

    def __init__(self) -> None:
        self.token = 1
        self.refreshes = 0

    def headers(self, http: httpx.Client) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{self.token}"}

    def refresh(self, http: httpx.Client) -> bool:
        self.refreshes += 1
        self.token += 1
        return True


def test_a_401_reauthenticates_once_without_spending_an_attempt(
    policy: RetryPolicy, mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    auth = CountingAuth()
    route = mock.get(f"{BASE}/Patient/ana-1").mock(
        side_effect=[httpx.Response(503)] * 3
        + [httpx.Response(401), httpx.Response(200, json=patient())]
    )
    with make_http_client() as http:
        client = FhirClient(BASE, http, auth, policy)
        assert client.read("Patient", "ana-1")["id"] == "ana-1"
    assert auth.refreshes == 1
    assert route.call_count == 5  # 4 attempts + the re-authenticated one
    assert route.calls.last.request.headers["Authorization"] == "Bearer token-2"


def test_a_401_twice_is_authentication_failed(policy: RetryPolicy, mock: respx.MockRouter) -> None:
    auth = CountingAuth()
    mock.get(f"{BASE}/Patient/ana-1").mock(
        return_value=httpx.Response(401, json=outcome("token expired", "login"))
    )
    with make_http_client() as http, pytest.raises(AuthenticationFailed, match="token expired"):
        FhirClient(BASE, http, auth, policy).read("Patient", "ana-1")
    assert auth.refreshes == 1


def test_a_401_without_auth_fails_at_once(client: FhirClient, mock: respx.MockRouter) -> None:
    route = mock.get(f"{BASE}/Patient/ana-1").mock(return_value=httpx.Response(401))
    with pytest.raises(AuthenticationFailed):
        client.read("Patient", "ana-1")
    assert route.call_count == 1


# -- paging ---------------------------------------------------------------------------------


def test_search_follows_next_links_over_three_pages(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    first = mock.get(f"{BASE}/Patient", params={"_count": "2"}).mock(
        return_value=httpx.Response(
            200, json=searchset([patient("a"), patient("b")], f"{BASE}?_getpages=x&_offset=2")
        )
    )
    mock.get(BASE, params={"_getpages": "x", "_offset": "2"}).mock(
        return_value=httpx.Response(
            200, json=searchset([patient("c"), patient("d")], f"{BASE}?_getpages=x&_offset=4")
        )
    )
    mock.get(BASE, params={"_getpages": "x", "_offset": "4"}).mock(
        return_value=httpx.Response(200, json=searchset([patient("e")]))
    )
    pages = list(client.search("Patient", {"_count": "2"}))
    ids = [e["resource"]["id"] for page in pages for e in page["entry"]]
    assert ids == ["a", "b", "c", "d", "e"]
    assert first.call_count == 1


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://attacker.example.net/fhir/r4?page=2",
        "http://ehr.example.org/fhir/r4?page=2",  # same host, other scheme
        "https://ehr.example.org:8443/fhir/r4?page=2",  # other port
        "https://ehr.example.org/other-tenant/fhir/r4?page=2",  # outside the base path
        "https://ehr.example.org/fhir/r4-evil?page=2",  # a prefix, not the base path
    ],
)
def test_a_next_link_outside_the_base_is_refused(
    client: FhirClient, mock: respx.MockRouter, elsewhere: str
) -> None:
    mock.get(f"{BASE}/Patient").mock(
        return_value=httpx.Response(200, json=searchset([patient()], elsewhere))
    )
    outside = mock.route(host="attacker.example.net")
    pages = client.search("Patient", {"name": PATIENT_NAME})
    assert next(pages)["type"] == "searchset"
    with pytest.raises(UnsafeNextLink, match="not followed") as raised:
        next(pages)
    assert not outside.called
    assert "page=2" not in str(raised.value)
    assert PATIENT_NAME not in str(raised.value)


def test_a_repeated_next_link_is_an_error_not_a_loop(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    mock.get(f"{BASE}/Patient", params={"_count": "1"}).mock(
        return_value=httpx.Response(200, json=searchset([patient("a")], f"{BASE}?page=2"))
    )
    mock.get(BASE, params={"page": "2"}).mock(
        return_value=httpx.Response(200, json=searchset([patient("b")], f"{BASE}?page=2"))
    )
    pages = client.search("Patient", {"_count": "1"})
    assert len([next(pages), next(pages)]) == 2
    with pytest.raises(RepeatedNextLink, match="repeats"):
        next(pages)


def test_a_next_link_back_to_the_first_page_is_an_error(
    client: FhirClient, mock: respx.MockRouter
) -> None:
    first = f"{BASE}/Patient?_count=1"
    mock.get(first).mock(return_value=httpx.Response(200, json=searchset([patient("a")], first)))
    with pytest.raises(RepeatedNextLink):
        list(client.search("Patient", [("_count", "1")]))


# -- configuration --------------------------------------------------------------------------


def test_a_client_without_timeouts_is_refused() -> None:
    with httpx.Client(timeout=None) as http, pytest.raises(ConfigError, match="timeout"):
        FhirClient(BASE, http)
    with httpx.Client(timeout=None) as http:
        FhirClient(BASE, http, timeout=httpx.Timeout(10.0))


# -- capabilities ---------------------------------------------------------------------------

# Small synthetic CapabilityStatements, shaped like each vendor's public metadata.
EPIC_STATEMENT: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "publisher": "Epic",
    "software": {"name": "Epic", "version": "February 2026"},
    "implementation": {"description": "Example Clinic production"},
    "rest": [
        {
            "mode": "server",
            "resource": [
                {
                    "type": "ServiceRequest",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [
                        {"name": "patient", "type": "reference"},
                        {"name": "category", "type": "token"},
                        {"name": "_id", "type": "token"},
                    ],
                    "searchInclude": ["ServiceRequest:requester"],
                },
                {"type": "Patient", "interaction": [{"code": "read"}]},
            ],
        }
    ],
}
ORACLE_STATEMENT: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "publisher": "Oracle Health",
    "software": {"name": "Millennium", "version": "2025.1"},
    "implementation": {"url": "https://fhir-ehr.cerner.com/r4/tenant-x"},
    "rest": [
        {
            "mode": "server",
            "resource": [
                {
                    "type": "ServiceRequest",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [{"name": "patient"}, {"name": "_id"}],
                }
            ],
        }
    ],
}
HAPI_STATEMENT: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "publisher": "Not provided",
    "software": {"name": "HAPI FHIR Server", "version": "8.8.0"},
    "implementation": {"description": "HAPI FHIR", "url": "http://127.0.0.1:8080/fhir"},
    "rest": [
        {
            "mode": "server",
            "searchParam": [{"name": "_lastUpdated", "type": "date"}],
            "resource": [
                {
                    "type": "ServiceRequest",
                    "interaction": [
                        {"code": "read"},
                        {"code": "search-type"},
                        {"code": "create"},
                        {"code": "update"},
                    ],
                    "searchParam": [
                        {"name": "patient"},
                        {"name": "subject"},
                        {"name": "requester"},
                        {"name": "_id"},
                    ],
                    "searchInclude": ["*", "ServiceRequest:subject"],
                    "searchRevInclude": ["Appointment:based-on", "Communication:based-on"],
                }
            ],
        }
    ],
}
MEDPLUM_STATEMENT: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "publisher": "Medplum",
    "software": {"name": "Medplum", "version": "4.0.0"},
}


@pytest.mark.parametrize(
    ("statement", "vendor"),
    [
        (EPIC_STATEMENT, Vendor.EPIC),
        (ORACLE_STATEMENT, Vendor.ORACLE_HEALTH),
        ({**ORACLE_STATEMENT, "publisher": "Cerner"}, Vendor.ORACLE_HEALTH),
        (HAPI_STATEMENT, Vendor.HAPI),
        (MEDPLUM_STATEMENT, Vendor.MEDPLUM),
        ({"resourceType": "CapabilityStatement", "software": {"name": "sekmet"}}, Vendor.OTHER),
        ({"resourceType": "CapabilityStatement"}, Vendor.OTHER),
    ],
)
def test_vendor_detection(statement: dict[str, Any], vendor: Vendor) -> None:
    assert detect_vendor(statement) is vendor


def test_capabilities_list_what_each_type_supports() -> None:
    hapi = Capabilities.from_statement(HAPI_STATEMENT)
    assert hapi.software_version == "8.8.0"
    assert hapi.supports_interaction("ServiceRequest", "update")
    assert hapi.supports_search("ServiceRequest", "subject:Patient")
    assert hapi.supports_search("ServiceRequest", "_lastUpdated")  # rest-level parameter
    assert hapi.supports_search("ServiceRequest", "_count")  # a result parameter
    assert hapi.supports_include("ServiceRequest", "ServiceRequest:requester")  # "*"
    # "*" covers the includes a search parameter exists for; R4 has no ServiceRequest insurance.
    assert not hapi.supports_include("ServiceRequest", "ServiceRequest:insurance")
    assert hapi.supports_revinclude("ServiceRequest", "Appointment:based-on")
    assert not hapi.supports_revinclude("ServiceRequest", "Task:based-on")
    assert not hapi.supports_search("Patient", "_id")  # type not listed


def test_unsupported_search_names_each_missing_piece_so_the_sync_can_fall_back() -> None:
    epic = Capabilities.from_statement(EPIC_STATEMENT)
    planned = [
        ("patient", "Patient/1"),
        ("_lastUpdated", "gt2026-01-01"),
        ("_include", "ServiceRequest:requester"),
        ("_include", "ServiceRequest:subject"),
        ("_revinclude", "Appointment:based-on"),
        ("_count", "100"),
    ]
    assert epic.unsupported_search("ServiceRequest", planned) == [
        "ServiceRequest: search parameter _lastUpdated is not offered",
        "ServiceRequest: _include=ServiceRequest:subject is not offered",
        "ServiceRequest: _revinclude=Appointment:based-on is not offered",
    ]
    assert epic.unsupported_search("Patient", []) == ["Patient: search is not offered"]


def test_capabilities_are_read_once(client: FhirClient, mock: respx.MockRouter) -> None:
    route = mock.get(f"{BASE}/metadata").mock(return_value=httpx.Response(200, json=EPIC_STATEMENT))
    assert client.capabilities().vendor is Vendor.EPIC
    assert client.capabilities().supports_search("ServiceRequest", "category")
    assert route.call_count == 1


def test_malformed_capability_parts_count_as_absent() -> None:
    odd = {
        "resourceType": "CapabilityStatement",
        "software": "Epic",
        "rest": [{"resource": [{"type": 7}, {"type": "Task", "searchParam": "all"}]}, "x"],
    }
    caps = Capabilities.from_statement(odd)
    assert caps.vendor is Vendor.OTHER
    assert not caps.supports_search("Task", "status")


def test_the_request_log_names_each_request_and_its_status(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapter.http_policy import HTTP_LOG_VARIABLE

    log = tmp_path / "requests.log"
    monkeypatch.setenv(HTTP_LOG_VARIABLE, str(log))
    with respx.mock(base_url=BASE) as router, make_http_client() as http:
        router.get("/Patient").mock(return_value=httpx.Response(200, json=searchset([])))
        router.get("/Patient/gone").mock(return_value=httpx.Response(410))
        client = FhirClient(BASE, http)
        list(client.search("Patient", {"_id": "a,b"}))
        with pytest.raises(ResourceNotFound):
            client.read("Patient", "gone")
    assert log.read_text().splitlines() == [
        f"GET {BASE}/Patient?_id=a%2Cb 200",
        f"GET {BASE}/Patient/gone 410",
    ]
