"""Reading FHIR input from disk: a Bundle (any type), an NDJSON file, or a Bulk Data directory.

`read_input` yields each top-level JSON object with where it came from; a line or file that is
not JSON is reported through `on_problem` and skipped. Input that cannot be read at all (no
such path, a file that is neither JSON nor NDJSON, a JSON document that is no FHIR resource, a
directory without data files) raises InputError. Messages name files, lines and entries, never
values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from adapter.errors import InputError

__all__ = ["RawResource", "data_files", "read_directory_file", "read_input"]

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json",)
ProblemSink = Callable[[str, str], None]
BOM = b"\xef\xbb\xbf"  # some Windows tools start UTF-8 files with it; JSON parsers refuse it


@dataclass(frozen=True, slots=True)
class RawResource:
    """A parsed JSON object and where it was read (`file:line` or `file`)."""

    where: str
    data: Any


def data_files(directory: Path) -> list[Path]:
    """The NDJSON and JSON files of a Bulk Data directory, in name order."""
    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (*NDJSON_SUFFIXES, *JSON_SUFFIXES)
    ]
    return sorted(files)


def read_input(path: Path, on_problem: ProblemSink) -> Iterator[RawResource]:
    """Every top-level JSON object of the input, in order."""
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise InputError(f"{path}: the directory holds no .ndjson or .json files")
        for file in files:
            yield from _read_file(file, on_problem, in_directory=True)
    elif path.is_file():
        yield from _read_file(path, on_problem, in_directory=False)
    elif path.exists():
        raise InputError(f"{path}: not a file or directory")
    else:
        raise InputError(f"{path}: no such file or directory")


def read_directory_file(path: Path, on_problem: ProblemSink) -> Iterator[RawResource]:
    """The objects of one file of a Bulk Data directory (a bad file is reported, not raised)."""
    return _read_file(path, on_problem, in_directory=True)


def _read_file(path: Path, on_problem: ProblemSink, *, in_directory: bool) -> Iterator[RawResource]:
    if path.suffix in NDJSON_SUFFIXES:
        yield from _read_ndjson(path, on_problem)
        return
    try:
        with path.open("rb") as handle:
            content = handle.read()
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    content = content.removeprefix(BOM)
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        if path.suffix not in JSON_SUFFIXES and _looks_like_ndjson(content):
            yield from _read_ndjson(path, on_problem)
            return
        if in_directory:
            on_problem(str(path), "not valid JSON; file skipped")
            return
        raise InputError(f"{path}: not valid JSON or NDJSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        message = "not a FHIR resource or Bundle (no resourceType)"
        if in_directory:
            on_problem(str(path), f"{message}; file skipped")
            return
        raise InputError(f"{path}: {message}")
    if document["resourceType"] == "Bundle" and not isinstance(document.get("entry", []), list):
        message = "a Bundle whose entry is not a list"
        if in_directory:
            on_problem(str(path), f"{message}; file skipped")
            return
        raise InputError(f"{path}: {message}")
    yield RawResource(str(path), document)


def _looks_like_ndjson(content: bytes) -> bool:
    for line in content.splitlines():
        if line.strip():
            try:
                return isinstance(orjson.loads(line), dict)
            except orjson.JSONDecodeError:
                return False
    return False


def _read_ndjson(path: Path, on_problem: ProblemSink) -> Iterator[RawResource]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    name = str(path)
    loads = orjson.loads
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.removeprefix(BOM) if number == 1 else raw
            if not line.strip():
                continue
            try:
                data = loads(line)
            except orjson.JSONDecodeError:
                on_problem(f"{name}:{number}", "not valid JSON")
                continue
            yield RawResource(f"{name}:{number}", data)
