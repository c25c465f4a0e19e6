"""`referral-adapter load`: upload FHIR input to a server as transaction Bundles, keeping ids.

Interface teams seed test servers with it; the tests and benchmarks load `synth` data with it.
Resources that cannot be read are reported and skipped, as by `segment`. Resources with an id
are written with PUT (so a second load updates, never duplicates); ones without an id are
created with POST under their fullUrl. Servers that enforce referential integrity (HAPI does)
refuse a reference to a resource they do not hold yet, so types are loaded in dependency order:
organizations and practitioners, then patients and coverage, then referrals, then what points at
referrals. A transaction the server refuses is split in halves and retried, down to single
resources, so each bad resource is reported (with the server's OperationOutcome text) and the
others still load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapter.errors import FatalServerError
from adapter.sources import data_files, read_directory_file, read_input
from adapter.walker import LoadStats, ProblemSink, ProgressSink, ResourceWalker, describe

__all__ = ["LoadResult", "TransactionPoster", "load_input", "type_rank"]

JSON = dict[str, Any]
BATCH_SIZE = 200
# The server refused the content (400, 404, 409, 422 ...): report it and go on. Temporary
# failures (retries exhausted, the server down) are not refusals: they stop the load.
REFUSALS: tuple[type[Exception], ...] = (FatalServerError,)

# Referenced before referencing: a type's resources only point at types earlier in the list
# (for the references the adapter's data uses). Types not listed load last, in name order.
TYPE_ORDER = (
    "Organization",
    "Location",
    "HealthcareService",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "RelatedPerson",
    "Coverage",
    "Encounter",
    "Condition",
    "Observation",
    "ServiceRequest",
    "DocumentReference",
    "QuestionnaireResponse",
    "Communication",
    "Appointment",
    "Task",
)


def type_rank(resource_type: str) -> tuple[int, str]:
    """Where a type comes in the load order."""
    try:
        return TYPE_ORDER.index(resource_type), resource_type
    except ValueError:
        return len(TYPE_ORDER), resource_type


class TransactionPoster(Protocol):
    """What `load` needs of a FHIR client: post a transaction Bundle, get the response Bundle
    (raising an exception whose message carries the server's OperationOutcome text)."""

    def transaction(self, bundle: JSON) -> JSON: ...


@dataclass(slots=True)
class LoadResult:
    """What a load did."""

    stats: LoadStats
    written: int = 0
    refused: int = 0
    transactions: int = 0


class _Gather(ResourceWalker):
    """Readable resources of one file, grouped by type."""

    def __init__(self, stats: LoadStats, on_problem: ProblemSink) -> None:
        super().__init__(stats, on_problem, None)
        self.by_type: dict[str, list[tuple[JSON, str, str | None]]] = {}

    def accept(self, data: JSON, where: str, full_url: str | None) -> None:
        self.by_type.setdefault(data["resourceType"], []).append((data, where, full_url))


def _entry(resource: JSON, full_url: str | None) -> JSON:
    rtype, rid = resource["resourceType"], resource.get("id")
    if isinstance(rid, str):
        return {
            "fullUrl": f"{rtype}/{rid}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
        }
    entry: JSON = {"resource": resource, "request": {"method": "POST", "url": rtype}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _files(path: Path) -> list[Path] | None:
    """A Bulk Data directory's files in load order (by the type each is named after)."""
    if not path.is_dir():
        return None
    return sorted(data_files(path), key=lambda f: (type_rank(f.name.split(".")[0]), f.name))


def load_input(
    path: Path,
    server: TransactionPoster,
    on_problem: ProblemSink,
    on_progress: ProgressSink | None = None,
    batch_size: int = BATCH_SIZE,
) -> LoadResult:
    """Upload every readable resource of the input; problems (ours and the server's) are
    reported and skipped."""
    uploader = _Uploader(server, on_problem, on_progress, batch_size)
    stats = uploader.result.stats
    files = _files(path)
    if files is None:
        gather = _Gather(stats, on_problem)
        for raw in read_input(path, gather.unreadable):
            gather.take(raw.data, raw.where)
        uploader.send(gather)
        return uploader.result
    if not files:
        list(read_input(path, on_problem))  # raises the usual "no data files" error
    for file in files:  # one type per file in a Bulk Data export: memory holds one file
        gather = _Gather(stats, on_problem)
        for raw in read_directory_file(file, gather.unreadable):
            gather.take(raw.data, raw.where)
        uploader.send(gather)
    return uploader.result


class _Uploader:
    def __init__(
        self,
        server: TransactionPoster,
        on_problem: ProblemSink,
        on_progress: ProgressSink | None,
        batch_size: int,
    ) -> None:
        self.server = server
        self.on_problem = on_problem
        self.on_progress = on_progress
        self.batch_size = batch_size
        self.result = LoadResult(LoadStats())

    def send(self, gather: _Gather) -> None:
        for rtype in sorted(gather.by_type, key=type_rank):
            items = gather.by_type[rtype]
            for start in range(0, len(items), self.batch_size):
                self.post(items[start : start + self.batch_size])
                if self.on_progress is not None:
                    self.on_progress(self.result.written)

    def post(self, items: list[tuple[JSON, str, str | None]]) -> None:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [_entry(resource, full_url) for resource, _, full_url in items],
        }
        self.result.transactions += 1
        try:
            self.server.transaction(bundle)
        except REFUSALS as error:  # the server refused the whole transaction
            if len(items) == 1:
                resource, where, _ = items[0]
                self.result.refused += 1
                self.on_problem(describe(resource, where), f"refused by the server: {error}")
                return
            # Find the resources the server refuses by halves: a few refusals in a batch of 200
            # cost a few dozen transactions, not 200.
            half = len(items) // 2
            self.post(items[:half])
            self.post(items[half:])
            return
        self.result.written += len(items)
