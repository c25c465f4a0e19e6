"""`referral-adapter writeback`: write the outbox's Tasks and Communications to the FHIR server.

Exactly once, whatever happens in between:
- every resource carries an identifier of ours, and a new one is written with a conditional
  create (`If-None-Exist: identifier=...`): written twice (a retry, a run killed after the
  server took it but before the outbox heard), it is still one resource;
- a Task is updated with `If-Match` on the version we last saw. When someone else changed it
  since (409 or 412), it is read again, our part laid over their version (`merge_task`: their
  notes and fields stay), and written again: no lost update, no blind overwrite;
- a Task whose server copy already says what we want is not written again, so a second run
  changes nothing;
- Task statuses move only along the FHIR Task state machine (`mappings.task_states`), one
  update per step; a Task someone ended (completed, cancelled) is not moved back: that entry is
  dead-lettered with the reason.

By default the entries go in batch Bundles (independent entries: one refused entry does not
hold up the others); `batch=False` sends one request per resource. Failures are retried with
backoff up to the practice rules' `writeback.max_attempts`, then dead-lettered with the server's
OperationOutcome; a refused request (400, 422, a missing reference) is dead at once. A server
that refuses writes altogether (401, 403, 405, or no create in its CapabilityStatement) stops
the run with `WriteRefused`; the outbox keeps the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapter import outbox
from adapter.errors import (
    AuthenticationFailed,
    FatalServerError,
    FhirServerError,
    ResourceNotFound,
    TemporaryServerError,
    VersionConflict,
    WriteRefused,
)
from adapter.fhir_client import FhirClient, WriteResult, outcome_text
from adapter.store_models import OutboxEntry
from mappings.rules import PracticeRules
from mappings.task_states import transition_path
from mappings.writeback import (
    COMMUNICATION_SYSTEM,
    TASK_SYSTEM,
    identifier_query,
    identifier_token,
    managed_part,
    merge_task,
)

__all__ = ["WritebackSummary", "planned", "run_writeback"]

JSON = dict[str, Any]
OnEvent = Callable[[dict[str, Any]], None]
# Called after the writer read a Task from the server, before it writes: tests use it to change
# the Task in between, as another user would.
OnRead = Callable[[JSON], None]
BATCH_SIZE = 100
# How often one entry may meet a concurrent change (409/412) in one run before it waits for
# the next run.
MAX_CONFLICTS = 5
REFUSING = frozenset({401, 403, 405})


@dataclass(slots=True)
class WritebackSummary:
    written: int = 0  # resources created or updated
    already: int = 0  # found already on the server as wanted (a conditional create matched ...)
    conflicts: int = 0  # 409/412 met and resolved by reading again
    failed: int = 0  # attempts that failed and will be retried
    dead: int = 0  # entries dead-lettered in this run
    requests: int = 0
    entries: int = 0
    seconds: float = 0.0
    pending: int = 0  # entries left pending (due later) at the end
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.entries} entries: {self.written} written, {self.already} already there, "
            f"{self.conflicts} conflicts resolved, {self.failed} to retry, {self.dead} dead; "
            f"{self.pending} pending; {self.requests} requests, {self.seconds:.1f} s"
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _system(entry: OutboxEntry) -> str:
    return TASK_SYSTEM if entry.kind == "task" else COMMUNICATION_SYSTEM


def _version(resource: JSON | None) -> str | None:
    meta = resource.get("meta") if resource else None
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def planned(engine: Engine, limit: int | None = None) -> Iterator[OutboxEntry]:
    """The pending entries, oldest first (what `--dry-run` shows)."""
    with Session(engine) as session:
        for entry in outbox.list_entries(session, outbox.PENDING, limit=limit or 10**9)[::-1]:
            session.expunge(entry)
            yield entry


class _Refused(Exception):
    """The server refuses writes altogether: stop, keep the outbox."""


class _Writer:
    def __init__(
        self,
        client: FhirClient,
        *,
        engine: Engine,
        rules: PracticeRules,
        summary: WritebackSummary,
        on_event: OnEvent | None,
        on_read: OnRead | None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.rules = rules
        self.base_url = client.base_url
        self.summary = summary
        self.on_event = on_event
        self.on_read = on_read

    # -- recording outcomes ----------------------------------------------------------------

    def _done(
        self,
        entry: OutboxEntry,
        written: str | None,
        record: tuple[str, str | None, JSON] | None = None,
    ) -> None:
        now = _now()
        with Session(self.engine) as session, session.begin():
            if record is not None:
                task_id, version, body = record
                outbox.save_task_record(
                    session,
                    base_url=self.base_url,
                    referral_key=entry.referral_key,
                    task_id=task_id,
                    version_id=version,
                    body=body,
                    now=now,
                )
            outbox.finish(session, entry.id, written, now)

    def _failed(self, entry: OutboxEntry, error: FhirServerError | str, fatal: bool) -> None:
        if isinstance(error, FhirServerError):
            status = error.status
            if status in REFUSING or isinstance(error, AuthenticationFailed):
                raise _Refused(str(error)) from error
            message, found = str(error), error.outcome
        else:
            message, found = error, None
        policy = self.rules.writeback
        with Session(self.engine) as session, session.begin():
            status_now = outbox.fail(
                session,
                entry,
                message,
                found,
                _now(),
                max_attempts=policy.max_attempts,
                retry_seconds=policy.retry_seconds,
                fatal=fatal,
            )
        if status_now == outbox.DEAD:
            self.summary.dead += 1
        else:
            self.summary.failed += 1

    # -- one request per resource ------------------------------------------------------------

    def single(self, entry: OutboxEntry) -> None:
        try:
            if entry.kind == "task":
                self._task(entry)
            else:
                self._communication(entry)
        except TemporaryServerError as error:
            # The server is struggling: this entry is retried later, and the run stops rather
            # than spend every remaining entry's retries on it.
            self._failed(entry, error, fatal=False)
            raise
        except FatalServerError as error:
            self._failed(entry, error, fatal=True)
        except AuthenticationFailed as error:
            raise _Refused(str(error)) from error

    def _communication(self, entry: OutboxEntry) -> None:
        self.summary.requests += 1
        result = self.client.conditional_create(
            entry.resource, identifier_query(_system(entry), entry.identifier)
        )
        self._count(result)
        self._done(entry, _written(result))

    def _count(self, result: WriteResult) -> None:
        if result.created:
            self.summary.written += 1
        else:
            self.summary.already += 1

    def _read(self, task_id: str) -> JSON:
        self.summary.requests += 1
        current = self.client.read("Task", task_id)
        if self.on_read is not None:
            self.on_read(current)
        return current

    def _find(self, entry: OutboxEntry) -> JSON | None:
        """Our Task for the referral on the server, found by its identifier."""
        self.summary.requests += 1
        token = identifier_token(TASK_SYSTEM, entry.identifier)
        for page in self.client.search("Task", [("identifier", token)]):
            for item in page.get("entry") or ():
                resource = item.get("resource") if isinstance(item, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") == "Task":
                    if self.on_read is not None:
                        self.on_read(resource)
                    return resource
            break
        return None

    def _task(self, entry: OutboxEntry) -> None:
        desired = _stamped(entry.resource)
        with Session(self.engine) as session:
            record = outbox.task_record(session, self.base_url, entry.referral_key)
            current = None
            if record is not None:
                current = {**record.body, "id": record.task_id}
                if record.version_id:
                    current["meta"] = {
                        **(current.get("meta") or {}),
                        "versionId": record.version_id,
                    }
        if current is None:
            self.summary.requests += 1
            result = self.client.conditional_create(
                desired, identifier_query(TASK_SYSTEM, entry.identifier)
            )
            if result.created and result.id:
                self.summary.written += 1
                body = result.resource or {**desired, "id": result.id}
                self._done(entry, _written(result), (result.id, result.version_id, body))
                return
            # It was there already (an earlier run was cut off after writing it).
            current = result.resource if result.resource and result.resource.get("id") else None
            if current is None:
                current = self._find(entry) if result.id is None else self._read(result.id)
            if current is None:
                self._failed(
                    entry, "the conditional create matched a Task that cannot be read", fatal=False
                )
                return
        self._update(entry, desired, current)

    def _update(self, entry: OutboxEntry, desired: JSON, current: JSON) -> None:
        for _ in range(MAX_CONFLICTS):
            steps = _steps(current, desired)
            if steps is None:
                self._failed(
                    entry,
                    f"Task/{current.get('id')} is {current.get('status')} on the server; the Task "
                    f"state machine allows no move to {desired['status']}, so it is left as it is",
                    fatal=True,
                )
                return
            if not steps:
                self.summary.already += 1
                self._done(entry, _reference(current), _record(current))
                return
            try:
                for body in steps:
                    self.summary.requests += 1
                    result = self.client.update(body, if_match=_version(current))
                    current = {**(result.resource or body)}
                    if result.version_id:
                        current["meta"] = {
                            **(current.get("meta") or {}),
                            "versionId": result.version_id,
                        }
                    self.summary.written += 1
            except VersionConflict:
                self.summary.conflicts += 1
                current = self._read(str(current["id"]))
                continue
            except ResourceNotFound:
                # Deleted on the server since we wrote it: write it afresh.
                with Session(self.engine) as session, session.begin():
                    outbox.drop_task_record(session, self.base_url, entry.referral_key)
                self._task(entry)
                return
            self._done(entry, _reference(current), _record(current))
            return
        self._failed(
            entry,
            f"Task/{current.get('id')} kept changing under us; tried again later",
            fatal=False,
        )

    # -- batches ---------------------------------------------------------------------------

    def batch(self, entries: Sequence[OutboxEntry]) -> None:
        """Write what needs one request each in one batch Bundle; the rest one by one."""
        bundled: list[tuple[OutboxEntry, JSON, JSON | None]] = []  # entry, request entry, current
        alone: list[OutboxEntry] = []
        with Session(self.engine) as session:
            records = {
                e.referral_key: outbox.task_record(session, self.base_url, e.referral_key)
                for e in entries
                if e.kind == "task"
            }
        for entry in entries:
            if entry.kind != "task":
                bundled.append((entry, _create_entry(entry, entry.resource), None))
                continue
            record = records.get(entry.referral_key)
            desired = _stamped(entry.resource)
            if record is None:
                bundled.append((entry, _create_entry(entry, desired), None))
                continue
            current = {**record.body, "id": record.task_id}
            if record.version_id:
                current["meta"] = {**(current.get("meta") or {}), "versionId": record.version_id}
            steps = _steps(current, desired)
            if steps is not None and len(steps) == 1:
                bundled.append((entry, _update_entry(steps[0], record.version_id), current))
            elif steps == []:
                self.summary.already += 1
                self._done(entry, _reference(current), _record(current))
            else:
                alone.append(entry)
        if bundled:
            self._send(bundled, alone)
        for entry in alone:
            self.single(entry)

    def _send(
        self, bundled: list[tuple[OutboxEntry, JSON, JSON | None]], alone: list[OutboxEntry]
    ) -> None:
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [request for _, request, _ in bundled],
        }
        self.summary.requests += 1
        try:
            response = self.client.transaction(bundle)
        except TemporaryServerError as error:
            for entry, _, _ in bundled:
                self._failed(entry, error, fatal=False)
            raise
        except FatalServerError as error:
            if error.status in REFUSING:
                raise _Refused(str(error)) from error
            # The Bundle as a whole was refused: find out entry by entry.
            alone.extend(entry for entry, _, _ in bundled)
            return
        except AuthenticationFailed as error:
            raise _Refused(str(error)) from error
        answers = response.get("entry") or []
        if len(answers) != len(bundled):
            alone.extend(entry for entry, _, _ in bundled)
            return
        for (entry, request, current), answer in zip(bundled, answers, strict=True):
            self._answer(entry, request, current, answer, alone)

    def _answer(
        self,
        entry: OutboxEntry,
        request: JSON,
        current: JSON | None,
        answer: Any,
        alone: list[OutboxEntry],
    ) -> None:
        reply = answer.get("response") if isinstance(answer, dict) else None
        reply = reply if isinstance(reply, dict) else {}
        status = _status_code(reply.get("status"))
        location = reply.get("location") if isinstance(reply.get("location"), str) else None
        resource_id, version = _from_location(location, entry.resource_type)
        etag = reply.get("etag")
        if version is None and isinstance(etag, str):
            version = etag.removeprefix("W/").strip('"') or None
        body = request["resource"]
        if resource_id is not None:  # the location as Type/id/_history/version, whatever its base
            location = f"{entry.resource_type}/{resource_id}"
            location += f"/_history/{version}" if version else ""
        if status in (200, 201) and request["request"]["method"] == "POST":
            if status == 201 or entry.kind != "task":
                self.summary.written += status == 201
                self.summary.already += status == 200
                record = (
                    (resource_id, version, {**body, "id": resource_id})
                    if entry.kind == "task" and resource_id
                    else None
                )
                self._done(entry, location, record)
            else:
                alone.append(entry)  # the Task was there already: read it, then update it
            return
        if status == 200:  # an update
            self.summary.written += 1
            rid = resource_id or (str(current["id"]) if current else None)
            if rid is None:
                alone.append(entry)  # no location to learn the version from: read it again
                return
            self._done(entry, location, (rid, version, {**body, "id": rid}))
            return
        outcome = reply.get("outcome") if isinstance(reply.get("outcome"), dict) else None
        text = outcome_text(outcome) if outcome else None
        message = f"{request['request']['method']} {entry.resource_type}: HTTP {status}"
        if text:
            message += f": {text}"
        if status in (409, 412) or status is None:
            self.summary.conflicts += status in (409, 412)
            alone.append(entry)  # re-read and merge, one by one
        elif status in REFUSING:
            raise _Refused(message)
        elif status in (408, 429) or status >= 500:
            self._failed(
                entry, FhirServerError(message, status=status, outcome=outcome), fatal=False
            )
        else:
            self._failed(
                entry, FhirServerError(message, status=status, outcome=outcome), fatal=True
            )


def _stamped(resource: JSON) -> JSON:
    """The planned resource as written now (its lastModified is the moment of writing)."""
    if resource.get("resourceType") != "Task":
        return resource
    return {**resource, "lastModified": _instant(_now())}


def _steps(current: JSON, desired: JSON) -> list[JSON] | None:
    """The updates that take the server's Task to the desired one, one status move each: []
    when it says what we want already; None when the state machine allows no way there."""
    merged = merge_task(current, desired)
    if managed_part(current) == managed_part(merged):
        return []
    path = transition_path(str(current.get("status")), str(desired["status"]))
    if path is None:
        return None
    if not path:
        return [merged]
    return [{**merged, "status": status} for status in path[:-1]] + [merged]


def _record(current: JSON) -> tuple[str, str | None, JSON]:
    return str(current["id"]), _version(current), current


def _reference(resource: JSON) -> str:
    version = _version(resource)
    base = f"{resource.get('resourceType')}/{resource.get('id')}"
    return f"{base}/_history/{version}" if version else base


def _written(result: WriteResult) -> str:
    base = f"{result.resource_type}/{result.id}"
    return f"{base}/_history/{result.version_id}" if result.version_id else base


def _create_entry(entry: OutboxEntry, resource: JSON) -> JSON:
    return {
        "resource": resource,
        "request": {
            "method": "POST",
            "url": entry.resource_type,
            "ifNoneExist": identifier_query(_system(entry), entry.identifier),
        },
    }


def _update_entry(resource: JSON, version: str | None) -> JSON:
    request: JSON = {"method": "PUT", "url": f"Task/{resource['id']}"}
    if version:
        request["ifMatch"] = f'W/"{version}"'
    return {"resource": dict(resource), "request": request}


def _status_code(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    head = text.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _from_location(location: str | None, resource_type: str) -> tuple[str | None, str | None]:
    """(id, version) from a location such as `Task/12/_history/3` (absolute or relative)."""
    if not location:
        return None, None
    parts = httpx.URL(location).path.strip("/").split("/")
    if resource_type not in parts:
        return None, None
    tail = parts[len(parts) - 1 - parts[::-1].index(resource_type) + 1 :]
    rid = tail[0] if tail else None
    version = tail[2] if len(tail) >= 3 and tail[1] == "_history" else None
    return rid, version


def check_capabilities(client: FhirClient) -> None:
    """WriteRefused unless the server's CapabilityStatement offers the writes we make."""
    capabilities = client.capabilities()
    missing = [
        f"{rtype} {interaction}"
        for rtype, interaction in (
            ("Task", "create"),
            ("Task", "update"),
            ("Communication", "create"),
        )
        if not capabilities.supports_interaction(rtype, interaction)
    ]
    if missing:
        raise WriteRefused(
            f"{client.base_url}: the server's CapabilityStatement offers no "
            f"{', '.join(missing)}; nothing was written and the outbox keeps its entries"
        )


def run_writeback(
    client: FhirClient,
    engine: Engine,
    rules: PracticeRules,
    *,
    batch: bool = True,
    batch_size: int = BATCH_SIZE,
    on_event: OnEvent | None = None,
    on_read: OnRead | None = None,
    limit: int | None = None,
) -> WritebackSummary:
    """Write the due outbox entries to the server; what happened."""
    clock = time.perf_counter()
    summary = WritebackSummary()
    check_capabilities(client)
    writer = _Writer(
        client, engine=engine, rules=rules, summary=summary, on_event=on_event, on_read=on_read
    )
    claimed: list[OutboxEntry] = []
    try:
        while limit is None or summary.entries < limit:
            size = batch_size if limit is None else min(batch_size, limit - summary.entries)
            with Session(engine) as session, session.begin():
                claimed = outbox.claim(session, _now(), size)
                for entry in claimed:
                    session.expunge(entry)
            if not claimed:
                break
            summary.entries += len(claimed)
            if batch:
                writer.batch(claimed)
            else:
                for entry in claimed:
                    writer.single(entry)
            claimed = []
            if on_event is not None:
                on_event(
                    {
                        "event": "written",
                        "entries": summary.entries,
                        "written": summary.written,
                        "already": summary.already,
                        "dead": summary.dead,
                    }
                )
    except _Refused as refusal:
        with Session(engine) as session, session.begin():
            outbox.release(session, [e.id for e in claimed])
            left = outbox.counts(session).get(outbox.PENDING, 0)
        raise WriteRefused(
            f"the server refuses our writes ({refusal}); the outbox keeps {left} pending entries"
        ) from None
    except TemporaryServerError:
        with Session(engine) as session, session.begin():
            outbox.release(session, [e.id for e in claimed])
        raise
    with Session(engine) as session:
        summary.pending = outbox.counts(session).get(outbox.PENDING, 0)
    summary.seconds = time.perf_counter() - clock
    return summary
