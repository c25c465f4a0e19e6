"""Reading and evaluating with forked helpers gives exactly what one process gives."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter import segmenting
from adapter.cli import main
from adapter.synth import synth_to_dir

AS_OF = "2026-12-03T12:00:00Z"


@pytest.fixture
def practice(tmp_path: Path) -> Path:
    """A small synthetic month plus a file of trouble: a broken line, an invalid resource, a
    newer copy of a referral (a later file wins), and a Bundle line with urn:uuid references."""
    folder = tmp_path / "export"
    synth_to_dir(120, 5, datetime(2026, 12, 3, tzinfo=UTC), folder)
    first = orjson.loads((folder / "ServiceRequest.ndjson").read_bytes().splitlines()[0])
    newer = {**first, "status": "revoked"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b7e6a52-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "Patient",
                    "birthDate": "1990-01-01",
                    "name": [{"family": "Example"}],
                    "telecom": [{"system": "phone", "value": "555-555-0100"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": "urn:uuid:0b7e6a52-0000-4000-8000-000000000001"},
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    lines = [
        b"{not json",
        orjson.dumps({"resourceType": "Patient", "birthDate": 1990}),
        orjson.dumps(newer),
        orjson.dumps(bundle),
    ]
    (folder / "ZZ-extra.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def run(capsys: pytest.CaptureFixture[str], folder: Path) -> tuple[int, str, str]:
    code = main(["segment", "--input", str(folder), "--as-of", AS_OF])
    out, err = capsys.readouterr()
    return code, out, err


def test_helpers_change_nothing_but_the_time(
    practice: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[Any] = []

    class CountingPool(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(segmenting, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(segmenting, "PARALLEL_MIN_BYTES", 2**40)
    monkeypatch.setattr(segmenting, "PARALLEL_MIN_REFERRALS", 2**40)
    alone = run(capsys, practice)
    assert pools == []

    monkeypatch.setattr(segmenting, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(segmenting, "PARALLEL_MIN_REFERRALS", 1)
    helped = run(capsys, practice)
    assert len(pools) == 2  # one to read, one to evaluate

    assert helped == alone
    code, out, err = alone
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 121  # 120 generated (one replaced by its newer copy) + the Bundle's
    first = lines[0]
    assert first["state"] == "closed"  # the newer copy in the later file won
    assert any(e["patient"] == "urn:uuid:0b7e6a52-0000-4000-8000-000000000001" for e in lines)
    reports = err.splitlines()
    assert reports[0].endswith("ZZ-extra.ndjson:1: not valid JSON")
    assert "ZZ-extra.ndjson:2: Patient.birthDate" in reports[1]
    assert reports[-1] == "referral-adapter: 2 unreadable resources skipped"


def test_no_helper_evaluates_once_the_index_is_large(
    practice: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[Any] = []
    monkeypatch.setattr(
        segmenting,
        "ProcessPoolExecutor",
        lambda *a, **k: pools.append(k) or ProcessPoolExecutor(*a, **k),
    )
    monkeypatch.setattr(segmenting, "PARALLEL_MIN_BYTES", 2**40)
    monkeypatch.setattr(segmenting, "PARALLEL_MIN_REFERRALS", 1)
    monkeypatch.setattr(segmenting, "PARALLEL_EVALUATION_MAX_RSS", 0)
    code, out, _ = run(capsys, practice)
    assert code == 0
    assert len(out.splitlines()) == 121
    assert pools == []
