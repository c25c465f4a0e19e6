"""`adapter.sources.read_input`: which files are read, in which order, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.errors import InputError
from adapter.sources import data_files, read_input

SECRET = "Zanzibarovich"


class Problems(list[tuple[str, str]]):
    """The `on_problem` sink: (where, message) pairs."""

    def __call__(self, where: str, message: str) -> None:
        self.append((where, message))


def read(path: Path) -> tuple[list[tuple[str, Any]], Problems]:
    problems = Problems()
    found = [(raw.where, raw.data) for raw in read_input(path, problems)]
    return found, problems


def resource(rtype: str, rid: str) -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid}


def ndjson(*items: Any) -> bytes:
    return b"".join(orjson.dumps(i) + b"\n" for i in items)


def ids(found: list[tuple[str, Any]]) -> list[str]:
    return [data["id"] for _, data in found]


# --- single files -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl"])
def test_an_ndjson_file_yields_each_line_with_its_line_number(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"Patient{suffix}"
    path.write_bytes(ndjson(resource("Patient", "a"), resource("Patient", "b")))
    found, problems = read(path)
    assert found == [
        (f"{path}:1", resource("Patient", "a")),
        (f"{path}:2", resource("Patient", "b")),
    ]
    assert problems == []


def test_blank_lines_are_ignored_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    a, b = orjson.dumps(resource("Patient", "a")), orjson.dumps(resource("Patient", "b"))
    path.write_bytes(b"\n" + a + b"\n   \n\t\n" + b + b"\n\n")
    found, problems = read(path)
    assert [where for where, _ in found] == [f"{path}:2", f"{path}:5"]
    assert ids(found) == ["a", "b"]
    assert problems == []


def test_crlf_line_endings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(
        ndjson(resource("Patient", "a"), resource("Patient", "b")).replace(b"\n", b"\r\n")
    )
    found, problems = read(path)
    assert ids(found) == ["a", "b"]
    assert problems == []


def test_a_broken_ndjson_line_is_reported_by_line_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(
        ndjson(resource("Patient", "a"))
        + b'{"resourceType": "Patient", "name": [{"family": "'
        + SECRET.encode()
        + b'"\n'
        + ndjson(resource("Patient", "c"))
    )
    found, problems = read(path)
    assert ids(found) == ["a", "c"]
    assert problems == [(f"{path}:2", "not valid JSON")]


def test_ndjson_lines_that_are_json_but_not_objects_are_passed_on(tmp_path: Path) -> None:
    # Reading is not validation: a JSON line that is no object is yielded for the validator,
    # which reports it as a resource that cannot be read.
    path = tmp_path / "odd.ndjson"
    path.write_bytes(b'[1, 2]\n"text"\n' + ndjson(resource("Patient", "a")))
    found, problems = read(path)
    assert found == [
        (f"{path}:1", [1, 2]),
        (f"{path}:2", "text"),
        (f"{path}:3", resource("Patient", "a")),
    ]
    assert problems == []


def test_a_json_file_is_one_document(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource("Patient", "a")}, {"resource": resource("Patient", "b")}],
    }
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    found, problems = read(path)
    assert found == [(str(path), bundle)]
    assert problems == []


def test_a_txt_file_holding_ndjson_is_sniffed_as_ndjson(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    path.write_bytes(ndjson(resource("Patient", "a"), resource("Coverage", "c")))
    found, problems = read(path)
    assert found == [
        (f"{path}:1", resource("Patient", "a")),
        (f"{path}:2", resource("Coverage", "c")),
    ]
    assert problems == []


def test_a_file_without_a_known_suffix_holding_one_resource_is_read(tmp_path: Path) -> None:
    path = tmp_path / "referral"
    path.write_bytes(orjson.dumps(resource("ServiceRequest", "r1")))
    found, _ = read(path)
    assert found == [(str(path), resource("ServiceRequest", "r1"))]


def test_a_json_file_holding_ndjson_is_refused(tmp_path: Path) -> None:
    # `.json` means one document; NDJSON belongs in `.ndjson` (README).
    path = tmp_path / "two.json"
    path.write_bytes(ndjson(resource("Patient", "a"), resource("Patient", "b")))
    with pytest.raises(InputError, match="not valid JSON or NDJSON"):
        read(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.json", b"Ada " + SECRET.encode() + b" called", "not valid JSON or NDJSON"),
        ("notes.txt", b"first line\nsecond " + SECRET.encode() + b"\n", "not valid JSON or NDJSON"),
        ("empty.json", b"", "not valid JSON or NDJSON"),
        ("array.json", orjson.dumps([resource("Patient", "a")]), "no resourceType"),
        ("plain.json", orjson.dumps({"family": SECRET}), "no resourceType"),
        ("typed.json", orjson.dumps({"resourceType": 3}), "no resourceType"),
        ("scalar.json", b"42", "no resourceType"),
        (
            "entry.json",
            orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": {"x": SECRET}}),
            "a Bundle whose entry is not a list",
        ),
    ],
)
def test_a_single_file_that_cannot_be_read_raises_input_error(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        read(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text
    assert SECRET not in text


def test_no_such_path_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        read(tmp_path / "missing.ndjson")


def test_a_path_that_is_neither_file_nor_directory_raises_input_error() -> None:
    with pytest.raises(InputError, match="not a file or directory"):
        read(Path("/dev/null"))


def test_reading_is_lazy(tmp_path: Path) -> None:
    # The error comes when the input is read, not when the reader is made.
    reader = read_input(tmp_path / "missing", Problems())
    with pytest.raises(InputError):
        next(reader)


# --- directories ------------------------------------------------------------------------------


def test_a_directory_is_read_file_by_file_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "ServiceRequest.ndjson").write_bytes(ndjson(resource("ServiceRequest", "s1")))
    (tmp_path / "Coverage.jsonl").write_bytes(ndjson(resource("Coverage", "c1")))
    (tmp_path / "Patient.ndjson").write_bytes(
        ndjson(resource("Patient", "p1"), resource("Patient", "p2"))
    )
    (tmp_path / "Organization.json").write_bytes(orjson.dumps(resource("Organization", "o1")))
    (tmp_path / "manifest.txt").write_text("not data", encoding="utf-8")
    (tmp_path / "README.md").write_text("# export", encoding="utf-8")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "Patient.ndjson").write_bytes(ndjson(resource("Patient", "deep")))
    found, problems = read(tmp_path)
    assert found == [
        (f"{tmp_path / 'Coverage.jsonl'}:1", resource("Coverage", "c1")),
        (str(tmp_path / "Organization.json"), resource("Organization", "o1")),
        (f"{tmp_path / 'Patient.ndjson'}:1", resource("Patient", "p1")),
        (f"{tmp_path / 'Patient.ndjson'}:2", resource("Patient", "p2")),
        (f"{tmp_path / 'ServiceRequest.ndjson'}:1", resource("ServiceRequest", "s1")),
    ]
    assert problems == []
    assert [p.name for p in data_files(tmp_path)] == [
        "Coverage.jsonl",
        "Organization.json",
        "Patient.ndjson",
        "ServiceRequest.ndjson",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("b-notes.json", b"Ada " + SECRET.encode(), "not valid JSON; file skipped"),
        ("b-array.json", orjson.dumps([resource("Patient", "x")]), "no resourceType"),
        (
            "b-bundle.json",
            orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": {"x": 1}}),
            "a Bundle whose entry is not a list; file skipped",
        ),
    ],
)
def test_a_bad_file_in_a_directory_is_reported_and_the_rest_read(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / "a.ndjson").write_bytes(ndjson(resource("Patient", "a")))
    (tmp_path / name).write_bytes(content)
    (tmp_path / "c.ndjson").write_bytes(ndjson(resource("Patient", "c")))
    found, problems = read(tmp_path)
    assert ids(found) == ["a", "c"]
    assert len(problems) == 1
    where, what = problems[0]
    assert where == str(tmp_path / name)
    assert message in what
    assert SECRET not in what


def test_broken_lines_in_a_directory_file_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(
        ndjson(resource("Patient", "a")) + b"{oops\n" + ndjson(resource("Patient", "b"))
    )
    found, problems = read(tmp_path)
    assert ids(found) == ["a", "b"]
    assert problems == [(f"{tmp_path / 'Patient.ndjson'}:2", "not valid JSON")]


def test_an_empty_ndjson_file_in_a_directory_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "Appointment.ndjson").write_bytes(b"")
    (tmp_path / "Patient.ndjson").write_bytes(ndjson(resource("Patient", "a")))
    found, problems = read(tmp_path)
    assert ids(found) == ["a"]
    assert problems == []


def test_an_empty_directory_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no \.ndjson or \.json files"):
        read(tmp_path)


def test_a_directory_without_data_files_raises_input_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(ndjson(resource("Patient", "a")))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Patient.ndjson").write_bytes(ndjson(resource("Patient", "a")))
    with pytest.raises(InputError, match=r"holds no \.ndjson or \.json files"):
        read(tmp_path)


def test_a_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}
    json_file = tmp_path / "bundle.json"
    json_file.write_bytes(b"\xef\xbb\xbf" + json.dumps(bundle).encode())
    ndjson_file = tmp_path / "Patient.ndjson"
    ndjson_file.write_bytes(b"\xef\xbb\xbf" + json.dumps({"resourceType": "Patient"}).encode())
    problems: list[tuple[str, str]] = []
    found = [r.data for r in read_input(json_file, lambda w, m: problems.append((w, m)))]
    found += [r.data for r in read_input(ndjson_file, lambda w, m: problems.append((w, m)))]
    assert found == [bundle, {"resourceType": "Patient"}]
    assert problems == []
