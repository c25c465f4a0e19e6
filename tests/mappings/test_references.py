"""`mappings.references.references_at`: the references at a dotted element path."""

from __future__ import annotations

from mappings.references import references_at


def test_references_at_a_path_flatten_lists_and_reduce_urls() -> None:
    record = {
        "resourceType": "DocumentReference",
        "context": {
            "related": [
                {"reference": "ServiceRequest/sr-1"},
                {"reference": "https://ehr.example.org/fhir/ServiceRequest/sr-2/_history/3"},
                {"reference": "#contained"},
                {"reference": "urn:uuid:0c3a1f4e-2b7d-4f5e-9a61-3f2c8d7b9e10"},
                {"identifier": {"system": "urn:x", "value": "1"}},
                {"display": "no reference at all"},
            ]
        },
    }
    assert references_at(record, "context.related") == [
        "ServiceRequest/sr-1",
        "ServiceRequest/sr-2",
    ]
    assert references_at({"basedOn": {"reference": "ServiceRequest/a"}}, "basedOn") == [
        "ServiceRequest/a"
    ]
    assert references_at(record, "subject") == []
    assert references_at({"context": "not an object"}, "context.related") == []
