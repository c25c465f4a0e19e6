"""The store's tables (SQLAlchemy 2.0 declarative); the schema itself is made by the migrations.

Keep these in step with adapter/migrations/versions: a test compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AuditEvent",
    "Base",
    "ContactAttemptRow",
    "EvaluationMark",
    "NoteRow",
    "OutboxEntry",
    "OwnerRow",
    "PendingEvaluation",
    "Quarantined",
    "Referral",
    "ResourceTie",
    "ReviewRow",
    "SegmentChange",
    "StoredResource",
    "SyncCursor",
    "TaskRecord",
    "UTCDateTime",
    "WebSession",
    "WritebackState",
]

# JSONB on PostgreSQL: it has equality (the store compares bodies) and indexes; JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored as UTC; read back aware UTC (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store takes timezone-aware datetimes only")
        value = value.astimezone(UTC)
        # SQLite keeps text without an offset: store naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # The text SQLite's DATETIME would store for the naive UTC value, in one C call: a sync
        # binds a few datetimes per row, and the two-step conversion (process_bind_param, then
        # the dialect's %-format) was about 5% of its own time.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("the store takes timezone-aware datetimes only")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: Json,
        list[str]: Json,
    }


class StoredResource(Base):
    """The latest version seen of one FHIR resource, or its tombstone once deleted."""

    __tablename__ = "resource"
    __table_args__ = (Index("ix_resource_type_updated", "resource_type", "last_updated"),)

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str | None] = mapped_column(String(64))
    # versionId as a number when it is all digits (HAPI, sekmet): "10" is newer than "9".
    version_num: Mapped[int | None] = mapped_column(BigInteger)
    last_updated: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(Text)
    body: Mapped[dict[str, Any]]
    stored_at: Mapped[datetime]
    # A tombstone: deleted on the server at version_id / last_updated (body keeps type and id).
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)


class Referral(Base):
    """The latest evaluation of one referral (key "ServiceRequest/id"), with the parts the work
    queue filters and sorts by in columns of their own."""

    __tablename__ = "referral"
    __table_args__ = (
        Index("ix_referral_queue", "state", "primary_segment", "due_at"),
        Index("ix_referral_arrived", "state", "arrived_at"),
        Index("ix_referral_state_source", "state", "source"),
        Index("ix_referral_high_relationship", "state", "high_relationship", "due_at"),
    )

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    patient: Mapped[str | None] = mapped_column(String(160), index=True)
    state: Mapped[str] = mapped_column(String(32))
    primary_segment: Mapped[str | None] = mapped_column(String(32))
    segments: Mapped[list[str]]
    evaluation: Mapped[dict[str, Any]]
    evaluated_at: Mapped[datetime]
    arrived_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    age_days: Mapped[int | None] = mapped_column(Integer)
    aging_band: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(160), index=True)
    # In the high-relationship segment (never primary: the queue shows it as a lane of its own).
    high_relationship: Mapped[bool] = mapped_column(Boolean, default=False)
    # Until this instant the evaluation stays the same if the data does not change (the
    # model's `evaluate_until`); unknown (NULL) means at the next evaluation.
    stable_until: Mapped[datetime | None]


class ResourceTie(Base):
    """What a stored resource touches for the referral model (`store.evaluation_targets`: the
    patient, referral, coverage or identifier it ties to, and itself), so that the evaluation
    reads the resources of a few hundred patients at a time, not the whole store."""

    __tablename__ = "resource_tie"
    __table_args__ = (Index("ix_resource_tie_target", "target"),)

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(200), primary_key=True)


class PendingEvaluation(Base):
    """What changed in the stored resources since the referrals were last evaluated, as the
    references it touches (a patient, a referral, an identifier; "*" for anything that may
    move every referral): the next evaluation re-evaluates the referrals they reach."""

    __tablename__ = "pending_evaluation"

    target: Mapped[str] = mapped_column(String(200), primary_key=True)
    added_at: Mapped[datetime]


class EvaluationMark(Base):
    """The last evaluation of the stored referrals: at which instant, under which rules (a
    digest). Another rules file, or an instant before it, makes the next evaluation a full one."""

    __tablename__ = "evaluation_mark"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    as_of: Mapped[datetime]
    utc_offset_seconds: Mapped[int] = mapped_column(Integer)
    rules_digest: Mapped[str] = mapped_column(String(64))


class SegmentChange(Base):
    """One change of a referral's state or segment set: from, to, when (as_of) and why."""

    __tablename__ = "segment_history"
    __table_args__ = (Index("ix_segment_history_referral", "referral_key", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_key: Mapped[str] = mapped_column(String(160))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    from_segments: Mapped[list[str] | None]
    to_segments: Mapped[list[str]]
    from_primary: Mapped[str | None] = mapped_column(String(32))
    to_primary: Mapped[str | None] = mapped_column(String(32))
    as_of: Mapped[datetime] = mapped_column(index=True)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(Json)


class SyncCursor(Base):
    """The `_lastUpdated` high-water mark of one resource type on one server."""

    __tablename__ = "sync_cursor"

    base_url: Mapped[str] = mapped_column(String(512), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[datetime]
    updated_at: Mapped[datetime]


class Quarantined(Base):
    """A resource that could not be read: which (as far as known), why (element paths), when."""

    __tablename__ = "quarantine"

    # One row per (source, type, id) when both are known, else per (source, reason): a re-run
    # of the same sync refreshes `last_seen` instead of piling up rows.
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


# ---------------------------------------------------------------------------------------------
# Write-back (issue 5) and the actions staff record (the SMART view, the command line)


class OutboxEntry(Base):
    """One write the adapter intends, recorded in the transaction of the change that caused it.

    `key` is the idempotency key: the same intent planned twice is one entry. `status` is
    pending (to be written, from `next_attempt_at` on), done, dead (failed for good; kept with
    the server's OperationOutcome until retried by command) or superseded (a newer entry for the
    same referral's Task replaced it before it was written).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        # A new Task entry supersedes the referral's pending ones (`outbox.enqueue`).
        Index("ix_outbox_referral_task", "referral_key", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    referral_key: Mapped[str] = mapped_column(String(160), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # task | status | contact
    resource_type: Mapped[str] = mapped_column(String(64))
    identifier: Mapped[str] = mapped_column(String(255))  # our identifier value on the resource
    resource: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any] | None]
    written: Mapped[str | None] = mapped_column(String(255))  # Type/id/_history/version


class TaskRecord(Base):
    """The follow-up Task as last written to (or read from) one server: its id, version, body."""

    __tablename__ = "task_record"

    base_url: Mapped[str] = mapped_column(String(512), primary_key=True)
    referral_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class WritebackState(Base):
    """What the planning remembers of a referral: the last Task planned (sequence, digest) and
    what the status loop needs once the referral has no segments (scheduled, closed)."""

    __tablename__ = "writeback_state"

    referral_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    task_seq: Mapped[int] = mapped_column(Integer, default=0)
    task_digest: Mapped[str | None] = mapped_column(String(64))
    high_relationship: Mapped[bool] = mapped_column(Boolean, default=False)
    was_missing: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class ContactAttemptRow(Base):
    """One attempt to reach the patient: who made it, how, and what came of it."""

    __tablename__ = "contact_attempt"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_key: Mapped[str] = mapped_column(String(160), index=True)
    patient: Mapped[str] = mapped_column(String(160))
    at: Mapped[datetime]
    channel: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    by_reference: Mapped[str | None] = mapped_column(String(160))
    by_display: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime]


class NoteRow(Base):
    """A note for the next person, in its structured parts."""

    __tablename__ = "referral_note"
    __table_args__ = (Index("ix_referral_note_referral", "referral_key", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_key: Mapped[str] = mapped_column(String(160))
    written_at: Mapped[datetime]
    author_reference: Mapped[str | None] = mapped_column(String(160))
    author_display: Mapped[str | None] = mapped_column(String(200))
    contacted: Mapped[str | None] = mapped_column(Text)
    requested: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    still_missing: Mapped[list[str]]
    next_attempt_due: Mapped[datetime | None]


class OwnerRow(Base):
    """Who a referral is assigned to, and by whom."""

    __tablename__ = "referral_owner"

    referral_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    owner_reference: Mapped[str | None] = mapped_column(String(160))
    owner_display: Mapped[str | None] = mapped_column(String(200))
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str | None] = mapped_column(String(200))


class ReviewRow(Base):
    """The last time a referral was looked at in the same-day review lane, and by whom."""

    __tablename__ = "referral_review"

    referral_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    reviewed_at: Mapped[datetime]
    reviewed_by: Mapped[str | None] = mapped_column(String(200))


class WebSession(Base):
    """A browser session of the SMART view, kept on the server: the cookie holds only its id.
    `secret` is encrypted (tokens, PKCE verifiers); `data` holds the rest (user, scopes, CSRF
    token, pending launch states)."""

    __tablename__ = "web_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    data: Mapped[dict[str, Any]]
    secret: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Base):
    """Who saw which patient's referrals, and who did what: identifiers only, never PHI."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    referral_key: Mapped[str | None] = mapped_column(String(160), index=True)
    patient_key: Mapped[str | None] = mapped_column(String(160))
    detail: Mapped[dict[str, Any]]
