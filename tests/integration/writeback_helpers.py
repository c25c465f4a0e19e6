"""Helpers of the write-back tests: a synth data set of a test's own on a shared server, the
rules that count only its referrals, and searches for what was written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import store
from adapter.store_models import OutboxEntry
from adapter.synth import synth_to_dir
from mappings.writeback import COMMUNICATION_SYSTEM, TASK_SYSTEM

JSON = dict[str, Any]
AS_OF = "2026-12-03T12:00:00Z"
CATEGORY_SYSTEM = "urn:test:referral-set"


def own_data_set(tmp_path: Path, referrals: int, seed: int) -> tuple[str, Path, Path]:
    """(prefix, export folder, rules file): a synth set whose ids start with a prefix of its own
    and whose referrals carry a category of their own, and practice rules that count only
    those as referrals (other tests' referrals on the same server are left alone)."""
    prefix = f"w{uuid.uuid4().hex[:6]}-"
    export = tmp_path / f"export-{prefix}"
    synth_to_dir(referrals, seed, datetime(2026, 12, 3, tzinfo=UTC), export, id_prefix=prefix)
    requests = export / "ServiceRequest.ndjson"
    lines = []
    for line in requests.read_bytes().splitlines():
        referral = orjson.loads(line)
        referral["category"] = [{"coding": [{"system": CATEGORY_SYSTEM, "code": prefix}]}]
        lines.append(orjson.dumps(referral))
    requests.write_bytes(b"".join(x + b"\n" for x in lines))
    rules = tmp_path / f"rules-{prefix}.yaml"
    rules.write_text(
        "referrals:\n"
        f"  categories: [{{system: '{CATEGORY_SYSTEM}', code: '{prefix}'}}]\n"
        "status_loop:\n"
        "  receipt_confirmed: all\n"
        "  details_complete: all\n"
        "  patient_contacted: all\n"
        "  closed: all\n"
    )
    return prefix, export, rules


def search_all(fhir: httpx.Client, path: str, params: dict[str, str]) -> list[JSON]:
    """Every resource a search finds, following next links."""
    found: list[JSON] = []
    response = fhir.get(path, params={**params, "_count": "200"})
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(e["resource"] for e in page.get("entry", []) if "resource" in e)
        following = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not following:
            return found
        response = fhir.get(following[0])


def tasks_for(fhir: httpx.Client, referral: str) -> list[JSON]:
    return search_all(fhir, "/Task", {"focus": referral})


def our_communications(fhir: httpx.Client, value: str) -> list[JSON]:
    escaped = value.replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")
    return search_all(fhir, "/Communication", {"identifier": f"{COMMUNICATION_SYSTEM}|{escaped}"})


def our_task(task: JSON) -> str | None:
    """The referral key our identifier on a Task names."""
    for identifier in task.get("identifier", []):
        if identifier.get("system") == TASK_SYSTEM:
            return str(identifier["value"])
    return None


def outbox_rows(db: str) -> list[OutboxEntry]:
    """The store's outbox entries, oldest first (detached from their session)."""
    engine = store.make_engine(db)
    with Session(engine) as session:
        rows = list(session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars())
        session.expunge_all()
    engine.dispose()
    return rows
