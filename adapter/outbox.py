"""The transactional outbox: the writes the adapter intends, kept in the store until written.

An entry is added in the same transaction as the change that caused it (a referral's new
evaluation, a contact attempt, a note), under an idempotency key, so planning the same intent
twice adds nothing and a crash loses nothing. The writer (`adapter.writeback`) claims due
entries under a lease, so two writers at once do not both work on one, and marks each done,
failed (retried later, with backoff) or dead (kept, with the server's OperationOutcome, until
`referral-adapter outbox --retry`). Every function takes the session; the caller owns the
transaction.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from adapter.store import insert_for
from adapter.store_models import OutboxEntry, TaskRecord, WritebackState

__all__ = [
    "DEAD",
    "DONE",
    "PENDING",
    "SUPERSEDED",
    "Intent",
    "claim",
    "counts",
    "drop_task_record",
    "enqueue",
    "existing_keys",
    "fail",
    "finish",
    "list_entries",
    "release",
    "retry",
    "save_task_record",
    "save_writeback_states",
    "task_record",
    "writeback_states",
]

PENDING = "pending"
DONE = "done"
DEAD = "dead"
SUPERSEDED = "superseded"
LEASE = timedelta(minutes=5)  # a writer that died holding entries gives them up after this


@dataclass(frozen=True, slots=True)
class Intent:
    """A write to make: which resource, for which referral, under which idempotency key."""

    key: str
    referral_key: str
    kind: str  # task | status | contact
    identifier: str  # the value of our identifier on the resource
    resource: dict[str, Any]

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the outbox takes timezone-aware datetimes only")
    return moment.astimezone(UTC)


def enqueue(session: Session, intents: Sequence[Intent], now: datetime) -> list[str]:
    """Add the intents not yet in the outbox (by key); the keys that were new. A new Task
    intent supersedes the referral's older Task intents that are still pending."""
    now = _aware(now)
    if not intents:
        return []
    rows = [
        {
            "key": intent.key,
            "referral_key": intent.referral_key,
            "kind": intent.kind,
            "resource_type": intent.resource_type,
            "identifier": intent.identifier,
            "resource": intent.resource,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_until": None,
            "created_at": now,
            "updated_at": now,
            "last_error": None,
            "outcome": None,
            "written": None,
        }
        for intent in intents
    ]
    table = OutboxEntry.__table__
    stmt = insert_for(session)(table).on_conflict_do_nothing(index_elements=["key"])
    added = list(session.execute(stmt.returning(table.c.key), rows).scalars())
    new = set(added)
    # The newest new Task intent of each referral supersedes the referral's other pending
    # ones: one statement per chunk of referrals, not one per intent (a statement per intent
    # made queueing 10k referrals take minutes).
    latest = {i.referral_key: i.key for i in intents if i.kind == "task" and i.key in new}
    referrals = list(latest)
    for start in range(0, len(referrals), 500):
        chunk = referrals[start : start + 500]
        session.execute(
            update(OutboxEntry)
            .where(
                OutboxEntry.referral_key.in_(chunk),
                OutboxEntry.kind == "task",
                OutboxEntry.status == PENDING,
                OutboxEntry.key.not_in([latest[r] for r in chunk]),
            )
            .values(status=SUPERSEDED, updated_at=now, lease_until=None)
        )
    return added


def existing_keys(session: Session, keys: Iterable[str]) -> set[str]:
    """Which of the keys the outbox holds already (in any status)."""
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            session.execute(select(OutboxEntry.key).where(OutboxEntry.key.in_(chunk))).scalars()
        )
    return found


def claim(
    session: Session, now: datetime, limit: int, kinds: Sequence[str] | None = None
) -> list[OutboxEntry]:
    """Up to `limit` due pending entries, oldest first, leased to the caller for `LEASE`."""
    now = _aware(now)
    stmt = (
        select(OutboxEntry)
        .where(
            OutboxEntry.status == PENDING,
            OutboxEntry.next_attempt_at <= now,
            or_(OutboxEntry.lease_until.is_(None), OutboxEntry.lease_until < now),
        )
        .order_by(OutboxEntry.id)
        .limit(limit)
    )
    if kinds is not None:
        stmt = stmt.where(OutboxEntry.kind.in_(list(kinds)))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    entries = list(session.execute(stmt).scalars())
    if entries:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_([e.id for e in entries]))
            .values(lease_until=now + LEASE)
        )
    return entries


def finish(session: Session, entry_id: int, written: str | None, now: datetime) -> None:
    """The entry's write is on the server (`written`: Type/id/_history/version)."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.id == entry_id)
        .values(status=DONE, written=written, lease_until=None, updated_at=_aware(now))
    )


def fail(
    session: Session,
    entry: OutboxEntry,
    error: str,
    outcome: dict[str, Any] | None,
    now: datetime,
    *,
    max_attempts: int,
    retry_seconds: int,
    fatal: bool,
) -> str:
    """Record a failed attempt; the entry's new status (pending again, or dead when the error
    is fatal or the attempts are used up)."""
    now = _aware(now)
    attempts = entry.attempts + 1
    dead = fatal or attempts >= max_attempts
    # Exponential backoff with jitter, so that retries after an outage do not arrive at once.
    delay = retry_seconds * 2 ** (attempts - 1) * random.uniform(0.5, 1.0)
    status = DEAD if dead else PENDING
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.id == entry.id)
        .values(
            status=status,
            attempts=attempts,
            last_error=error[:2000],
            outcome=outcome,
            lease_until=None,
            next_attempt_at=now if dead else now + timedelta(seconds=delay),
            updated_at=now,
        )
    )
    return status


def release(session: Session, entry_ids: Iterable[int]) -> None:
    """Give up the lease of entries not worked on (the run stopped early)."""
    ids = list(entry_ids)
    if ids:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_(ids), OutboxEntry.status == PENDING)
            .values(lease_until=None)
        )


def retry(session: Session, now: datetime, keys: Sequence[str] | None = None) -> int:
    """Put dead entries back to pending (all of them, or those with the given keys), their
    attempts counted afresh; how many."""
    now = _aware(now)
    stmt = update(OutboxEntry).where(OutboxEntry.status == DEAD)
    if keys is not None:
        stmt = stmt.where(OutboxEntry.key.in_(list(keys)))
    result = session.execute(
        stmt.values(status=PENDING, attempts=0, next_attempt_at=now, updated_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def counts(session: Session) -> dict[str, int]:
    """How many entries there are in each status."""
    rows = session.execute(select(OutboxEntry.status, func.count()).group_by(OutboxEntry.status))
    return {status: int(number) for status, number in rows}


def list_entries(
    session: Session, status: str | None = None, referral_key: str | None = None, limit: int = 100
) -> list[OutboxEntry]:
    """Entries, newest first, optionally of one status or one referral."""
    stmt = select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(limit)
    conditions = []
    if status is not None:
        conditions.append(OutboxEntry.status == status)
    if referral_key is not None:
        conditions.append(OutboxEntry.referral_key == referral_key)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    return list(session.execute(stmt).scalars())


# --- the Task as last written, and what planning remembers -----------------------------------


def task_record(session: Session, base_url: str, referral_key: str) -> TaskRecord | None:
    found: TaskRecord | None = session.get(TaskRecord, (base_url, referral_key))
    return found


def save_task_record(
    session: Session,
    *,
    base_url: str,
    referral_key: str,
    task_id: str,
    version_id: str | None,
    body: dict[str, Any],
    now: datetime,
) -> None:
    values = {
        "base_url": base_url,
        "referral_key": referral_key,
        "task_id": task_id,
        "version_id": version_id,
        "body": body,
        "updated_at": _aware(now),
    }
    stmt = insert_for(session)(TaskRecord).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["base_url", "referral_key"],
        set_={k: stmt.excluded[k] for k in ("task_id", "version_id", "body", "updated_at")},
    )
    session.execute(stmt)


def drop_task_record(session: Session, base_url: str, referral_key: str) -> None:
    record = task_record(session, base_url, referral_key)
    if record is not None:
        session.delete(record)


def writeback_states(session: Session, keys: Iterable[str]) -> dict[str, WritebackState]:
    wanted = list(keys)
    found: dict[str, WritebackState] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(WritebackState).where(WritebackState.referral_key.in_(chunk))
        ).scalars()
        found.update((row.referral_key, row) for row in rows)
    return found


def save_writeback_states(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    table = WritebackState.__table__
    stmt = insert_for(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["referral_key"],
        set_={
            k: stmt.excluded[k]
            for k in ("task_seq", "task_digest", "high_relationship", "was_missing", "updated_at")
        },
    )
    session.execute(stmt, list(rows))
