"""`load`: what it sends, in which order, and what it does with refusals (a recording server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter import personas as p
from adapter.errors import BadRequest, TemporaryServerError
from adapter.loading import load_input
from adapter.synth import synth_to_dir

JSON = dict[str, Any]


class RecordingServer:
    """Accepts transactions, except those holding a resource id it is told to refuse."""

    def __init__(self, refuse: set[str] | None = None, down: bool = False) -> None:
        self.bundles: list[JSON] = []
        self.refuse = refuse or set()
        self.down = down

    def transaction(self, bundle: JSON) -> JSON:
        if self.down:
            raise TemporaryServerError("POST /fhir: 503 after 5 attempts", status=503)
        ids = {e["resource"].get("id") for e in bundle["entry"]}
        if ids & self.refuse:
            raise BadRequest(
                "POST /fhir: 400 HAPI-1094: Resource Patient/ghost not found", status=400
            )
        self.bundles.append(bundle)
        return {"resourceType": "Bundle", "type": "transaction-response"}

    def sent(self) -> list[JSON]:
        return [e for b in self.bundles for e in b["entry"]]


def write_ndjson(path: Path, resources: list[Any]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in resources) + b"\n")
    return path


def test_types_load_in_dependency_order_with_put_on_their_ids(tmp_path: Path) -> None:
    packet = list(reversed(p.ada_packet()))  # the referral comes before its patient
    server = RecordingServer()
    problems: list[tuple[str, str]] = []
    result = load_input(
        write_ndjson(tmp_path / "mixed.ndjson", packet),
        server,
        lambda w, m: problems.append((w, m)),
        batch_size=3,
    )
    assert problems == []
    sent = server.sent()
    order = [e["resource"]["resourceType"] for e in sent]
    assert order.index("Organization") < order.index("Patient") < order.index("ServiceRequest")
    assert order.index("ServiceRequest") < order.index("DocumentReference")
    assert all(
        e["request"]
        == {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
        for e in sent
    )
    assert all(len(b["entry"]) <= 3 and b["type"] == "transaction" for b in server.bundles)
    assert (result.written, result.refused, result.stats.resources) == (len(packet), 0, len(packet))


def test_a_resource_without_id_is_posted_under_its_full_url(tmp_path: Path) -> None:
    patient = p.ada_quill()
    del patient["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:7d9d1c59-0000-4000-8000-000000000001", "resource": patient}
        ],
    }
    (tmp_path / "b.json").write_bytes(orjson.dumps(bundle))
    server = RecordingServer()
    load_input(tmp_path / "b.json", server, lambda w, m: None)
    assert server.sent() == [
        {
            "resource": patient,
            "request": {"method": "POST", "url": "Patient"},
            "fullUrl": "urn:uuid:7d9d1c59-0000-4000-8000-000000000001",
        }
    ]


def test_unreadable_resources_are_reported_and_the_rest_loaded(tmp_path: Path) -> None:
    bad = {**p.ada_quill(), "id": "bad-one", "birthDate": 1984}
    path = write_ndjson(tmp_path / "p.ndjson", [p.ada_quill(), bad])
    with path.open("ab") as handle:
        handle.write(b"{broken\n")
    problems: list[tuple[str, str]] = []
    server = RecordingServer()
    result = load_input(path, server, lambda w, m: problems.append((w, m)))
    assert [e["resource"]["id"] for e in server.sent()] == ["ada-quill"]
    assert problems[0][0].startswith("Patient/bad-one at ")
    assert "Patient.birthDate" in problems[0][1]
    assert problems[1] == (f"{path}:3", "not valid JSON")
    assert (result.written, result.stats.skipped) == (1, 2)


def test_a_refused_resource_is_isolated_and_the_others_still_load(tmp_path: Path) -> None:
    resources = p.ada_packet()
    server = RecordingServer(refuse={"ada-quill"})
    problems: list[tuple[str, str]] = []
    result = load_input(
        write_ndjson(tmp_path / "x.ndjson", resources),
        server,
        lambda w, m: problems.append((w, m)),
        batch_size=50,
    )
    assert result.refused == 1
    assert result.written == len(resources) - 1
    assert "ada-quill" not in {e["resource"]["id"] for e in server.sent()}
    assert len(problems) == 1
    where, message = problems[0]
    assert where.startswith("Patient/ada-quill at ")
    assert (
        message == "refused by the server: POST /fhir: 400 HAPI-1094: Resource Patient/ghost "
        "not found"
    )


def test_refused_resources_are_found_by_halves_not_one_request_each(tmp_path: Path) -> None:
    patients = [{**p.ada_quill(), "id": f"pat-{n:03d}"} for n in range(128)]
    server = RecordingServer(refuse={"pat-005", "pat-100"})
    result = load_input(write_ndjson(tmp_path / "many.ndjson", patients), server, lambda w, m: None)
    assert (result.written, result.refused) == (126, 2)
    # One batch of 128 refused, then halves down to the two refused ones: 1 + 2 * 2 * 7
    # transactions at most, against 129 when each resource is tried alone.
    assert result.transactions <= 1 + 2 * 2 * 7
    assert len(server.sent()) == 126


def test_a_server_that_is_down_stops_the_load(tmp_path: Path) -> None:
    with pytest.raises(TemporaryServerError):
        load_input(
            write_ndjson(tmp_path / "x.ndjson", p.ada_packet()),
            RecordingServer(down=True),
            lambda w, m: None,
        )


def test_a_bulk_directory_loads_file_by_file_in_type_order(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    counts = synth_to_dir(30, 2, datetime(2026, 12, 3, tzinfo=UTC), folder)
    server = RecordingServer()
    result = load_input(folder, server, lambda w, m: None)
    assert result.written == sum(counts.values())
    types = [e["resource"]["resourceType"] for e in server.sent()]
    first_seen = list(dict.fromkeys(types))
    assert first_seen.index("Patient") < first_seen.index("ServiceRequest")
    assert first_seen.index("PractitionerRole") < first_seen.index("ServiceRequest")
    assert first_seen.index("ServiceRequest") < first_seen.index("Communication")
