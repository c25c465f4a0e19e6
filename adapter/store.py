"""The store: resources, evaluated referrals, segment history, sync cursors, quarantine.

SQLite (the embedded default) or PostgreSQL. Every function takes the session and leaves the
transaction to the caller. Writes are single-row upserts (INSERT ... ON CONFLICT) whose
conditions keep the newer data, so a re-run is harmless and two syncs may run at once.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import (
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from adapter.store_models import (
    Base,
    EvaluationMark,
    PendingEvaluation,
    Quarantined,
    Referral,
    ResourceTie,
    SegmentChange,
    StoredResource,
    SyncCursor,
)
from mappings.facts import (
    RELEVANT_TYPES,
    AppointmentFacts,
    CoverageFacts,
    FormFacts,
    MessageFacts,
    PatientFacts,
    RecordFacts,
    ReferralFacts,
    extract,
)
from mappings.fhirtime import parse_instant
from mappings.model import ReferralEvaluation
from mappings.references import identifier_keys

__all__ = [
    "EVERYTHING",
    "HEAD",
    "MIGRATIONS",
    "Base",
    "Quarantined",
    "SegmentChange",
    "StoredResource",
    "advance_cursor",
    "bodies_by_id",
    "clear_pending",
    "evaluation_mark",
    "evaluation_targets",
    "existing_keys",
    "get_cursor",
    "get_resource",
    "history",
    "insert_for",
    "iter_resources",
    "list_quarantine",
    "make_engine",
    "mark_deleted",
    "note_pending",
    "pending",
    "put_resource",
    "put_resources",
    "quarantine",
    "release_quarantine",
    "remove_referrals",
    "save_evaluation",
    "save_evaluations",
    "set_evaluation_mark",
    "stored_bodies",
    "stored_evaluation",
    "stored_evaluations",
    "stored_keys",
    "tie_key",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant: the key of the PostgreSQL advisory lock that serialises concurrent upgrades.
_MIGRATION_LOCK = 0x5EF3_1A1


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for the store; SQLite gets WAL, a busy timeout and write-locking transactions."""
    url = make_url(url)
    # orjson for the JSON columns: the stdlib encoder was a good share of a sync's own time.
    kwargs.setdefault("json_serializer", _json_text)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", 30)
    # pysqlite keeps 128 prepared statements per connection, and a page's multi-row upsert is
    # a statement of its own for each row count: a sync's memory grew by about 45 MiB per 10k
    # referrals until the cache was full. A few cover the statements that repeat.
    connect_args.setdefault("cached_statements", 16)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below start transactions, not pysqlite's implicit BEGIN.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=30000")
        if url.database not in (None, "", ":memory:"):
            _wal(dbapi_connection)
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a killed process
            # loses nothing it committed; a power cut may lose the last commits, whole, each
            # page with its cursor, so the next sync reads them again.
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads, then
        # writes, fails at once (no busy wait) when another writer got there in between.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(dbapi_connection: Any, wait: float = 30.0) -> None:
    """Switch a SQLite file to WAL. The switch needs the file to itself and SQLite does not
    wait for it (no busy handler), so a second process opening a brand-new store while the
    first creates its schema retries here instead of failing with "database is locked"."""
    deadline = time.monotonic() + wait
    while True:
        try:
            mode = dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# The newest migration; a test keeps it equal to the head of adapter/migrations/versions.
HEAD = "0008"


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Run the migrations up to `revision` (no alembic.ini needed); safe to run concurrently.

    A store already at the head is left alone without loading Alembic (it costs every command
    a few tenths of a second)."""
    if revision == "head" and _revision(url) == HEAD:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _revision(url: str | URL) -> str | None:
    """The store's migration revision, or None (no store yet, or not ours)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            found = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    finally:
        engine.dispose()
    return str(found[0][0]) if len(found) == 1 else None


def insert_for(session: Session) -> Any:
    """The dialect's INSERT, which has on_conflict_do_update / on_conflict_do_nothing."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {name}")


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the store takes timezone-aware datetimes only")
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Resources


def put_resource(session: Session, resource: dict[str, Any], source: str) -> bool:
    """Store a resource unless the stored one is as new or newer; True if stored or changed.

    Newer means a higher versionId when both are numbers, else a later meta.lastUpdated. When
    neither can be compared (no versions), a different body replaces the stored one.
    """
    return put_resources(session, [resource], source) == 1


def _row(resource: dict[str, Any], source: str, now: datetime) -> dict[str, Any]:
    if not resource.get("resourceType") or not resource.get("id"):
        raise ValueError("the store keeps resources with a resourceType and an id only")
    meta = resource.get("meta") or {}
    version = meta.get("versionId")
    version_id = str(version) if version is not None else None
    return {
        "resource_type": resource["resourceType"],
        "id": resource["id"],
        "version_id": version_id,
        "version_num": int(version_id) if version_id and version_id.isdigit() else None,
        "last_updated": parse_instant(meta.get("lastUpdated")),
        "source": source,
        "body": resource,
        "stored_at": now,
        "deleted": False,
    }


def put_resources(
    session: Session,
    resources: list[dict[str, Any]],
    source: str,
    *,
    touched: set[str] | None = None,
    written: set[tuple[str, str]] | None = None,
) -> int:
    """`put_resource` for many resources in one statement; how many were stored or changed.

    A page of a sync is one statement instead of one per resource (a row at a time costs most
    of a sync's own time). The same resource twice in one call keeps its newest copy.
    `touched` collects what the changes touch, as the pending notes would (`_touched_by`),
    also while changes are not noted (a sync evaluating page by page keeps them itself), and
    `written` the (type, id) of the resources written.
    """
    now = _now()
    rows = [_row(resource, source, now) for resource in resources]
    return _upsert(session, rows, touched, written)


def mark_deleted(
    session: Session,
    deletions: Iterable[tuple[str, str, str | None, datetime | None]],
    source: str,
    *,
    touched: set[str] | None = None,
) -> int:
    """Tombstones for resources deleted on the server: (type, id, versionId, when deleted).

    A tombstone replaces the stored copy under the same rule as a new version (a higher
    versionId, else a later time), so that an older copy read afterwards cannot bring the
    resource back, and the resource no longer counts (`iter_resources` skips it). How many
    stored resources it removed.
    """
    now = _now()
    rows = []
    for resource_type, resource_id, version_id, when in deletions:
        rows.append(
            {
                "resource_type": resource_type,
                "id": resource_id,
                "version_id": version_id,
                "version_num": int(version_id) if version_id and version_id.isdigit() else None,
                "last_updated": _aware(when) if when is not None else None,
                "source": source,
                "body": {"resourceType": resource_type, "id": resource_id},
                "stored_at": now,
                "deleted": True,
            }
        )
    return _upsert(session, rows, touched)


def _upsert(
    session: Session,
    all_rows: list[dict[str, Any]],
    touched: set[str] | None = None,
    written: set[tuple[str, str]] | None = None,
) -> int:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in all_rows:
        key = (row["resource_type"], row["id"])
        if key not in rows or _newer(row, rows[key]):
            rows[key] = row
    if not rows:
        return 0
    # One statement executed with many parameter sets: SQLAlchemy batches them into multi-row
    # INSERTs ("insertmanyvalues") with a cached compilation, instead of compiling one
    # statement with thousands of bind parameters per page.
    # The Core table, not the mapped class: the ORM's bulk path costs more than the SQL.
    stmt = insert_for(session)(StoredResource.__table__)
    new, old = stmt.excluded, StoredResource.__table__.c
    both_numbered = and_(new.version_num.is_not(None), old.version_num.is_not(None))
    both_dated = and_(new.last_updated.is_not(None), old.last_updated.is_not(None))
    newer = or_(
        and_(both_numbered, new.version_num > old.version_num),
        and_(~both_numbered, both_dated, new.last_updated > old.last_updated),
        and_(~both_numbered, ~both_dated, new.body != old.body),
    )
    columns = (
        "version_id",
        "version_num",
        "last_updated",
        "source",
        "body",
        "stored_at",
        "deleted",
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["resource_type", "id"],
        set_={key: stmt.excluded[key] for key in columns},
        where=newer,
    ).returning(old.resource_type, old.id)
    tracked = _tracking(session)
    relevant = [key for key in rows if key[0] in RELEVANT_TYPES]
    before = stored_bodies(session, relevant) if tracked or touched is not None else {}
    stored = session.execute(stmt, list(rows.values())).all()
    if written is not None:
        written.update((t, i) for t, i in stored)
    changed = [(t, i) for t, i in stored if t in RELEVANT_TYPES]
    # What each changed resource touches now (a tombstone: nothing), worked out once for its
    # ties and for the notes.
    now_touches: dict[tuple[str, str], set[str]] = {
        key: set() if rows[key]["deleted"] else evaluation_targets(rows[key]["body"])
        for key in changed
    }
    # A resource without a live stored body (new, or back from a tombstone) has no ties to
    # replace: known when the bodies before were read.
    tieless = {k for k in changed if k not in before} if tracked or touched is not None else set()
    _retie(session, now_touches, tieless)
    if changed and tracked:
        note_pending(session, _touched_by(changed, rows, before, now_touches))
    if changed and touched is not None:
        touched |= _touched_by(changed, rows, before, now_touches, referral_itself=True)
    return len(stored)


def _touched_by(
    changed: list[tuple[str, str]],
    rows: dict[tuple[str, str], dict[str, Any]],
    before: dict[tuple[str, str], Any],
    now_touches: dict[tuple[str, str], set[str]],
    *,
    referral_itself: bool = False,
) -> set[str]:
    """What the changed resources touch, before and after their change. `referral_itself`:
    a changed ServiceRequest touches itself only (no other referral's evaluation reads it,
    only the count of its source, which `PageEvaluation` follows itself)."""
    targets: set[str] = set()
    for resource_type, resource_id in changed:
        targets.add(f"{resource_type}/{resource_id}")
        if referral_itself and resource_type == "ServiceRequest":
            continue
        old_body = before.get((resource_type, resource_id))
        if old_body is not None:  # what it touched before it changed (or was deleted)
            targets |= now_touches[(resource_type, resource_id)]
            targets |= evaluation_targets(old_body)
        elif (
            resource_type in _EVERYTHING_TYPES and not rows[(resource_type, resource_id)]["deleted"]
        ):
            # A party new to the store moves only the referrals that name it, as requester
            # or as a requesting role's organization, by reference or identifier (which did
            # not resolve until now): a new referring office must not evaluate everything.
            targets |= new_party_targets(rows[(resource_type, resource_id)]["body"])
        else:
            targets |= now_touches[(resource_type, resource_id)]
    return targets


# ---------------------------------------------------------------------------------------------
# What the evaluation reads together, and what it must look at again (adapter.store_evaluation)

EVERYTHING = "*"
MARK = "referrals"
# A changed party can move a referral's source, and with it every referral of two sources (a
# new one only the referrals naming it: `new_party_targets`).
_EVERYTHING_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole"})


def tie_key(target: str) -> str:
    """A target as the store keeps it: as written, or a digest of one too long for the column
    (an identifier of a few hundred characters)."""
    if len(target) <= 200:
        return target
    return "sha256:" + hashlib.sha256(target.encode()).hexdigest()


def new_party_targets(body: dict[str, Any]) -> set[str]:
    """What a party new to the store touches: its reference and its identifiers."""
    return {f"{body.get('resourceType')}/{body.get('id')}", *identifier_keys(body)}


def evaluation_targets(body: dict[str, Any]) -> set[str]:
    """The references a stored resource touches for the referral model: itself, the patient,
    referral, coverage or identifier it ties to. `{"*"}` for a party (Organization,
    Practitioner, PractitionerRole) and for anything that cannot be read. Types the model does
    not read touch nothing."""
    resource_type, resource_id = body.get("resourceType"), body.get("id")
    if resource_type in _EVERYTHING_TYPES:
        return {EVERYTHING}
    if resource_type not in RELEVANT_TYPES:
        return set()
    key = f"{resource_type}/{resource_id}"
    try:
        facts = extract(body, key)
    except Exception:
        return {EVERYTHING}
    found = {key}
    for fact in facts:
        found.add(fact.key)
        match fact:
            case ReferralFacts():
                found.update(r for r in (fact.subject, *fact.insurance) if r)
            case PatientFacts():
                found.update(fact.identifiers)  # references by identifier resolve to it
            case CoverageFacts():
                found.update(r for r in (fact.beneficiary,) if r)
            case MessageFacts():
                found.update(r for r in (fact.sender, *fact.refers_to) if r)
            case FormFacts():
                found.update((*fact.based_on, *fact.authors))
            case RecordFacts():
                found.update(fact.related)
            case AppointmentFacts():
                found.update(fact.based_on)
            case _:
                return {EVERYTHING}
    return found


def _retie(
    session: Session,
    touches: dict[tuple[str, str], set[str]],
    tieless: set[tuple[str, str]] | None = None,
) -> None:
    """Replace the ties of the resources just stored by what each touches now (`tieless`:
    those known to have none yet)."""
    if not touches:
        return
    table = cast(Table, ResourceTie.__table__)
    old = [key for key in touches if not tieless or key not in tieless]
    if old:
        session.execute(
            delete(table).where(
                table.c.resource_type == bindparam("t"), table.c.id == bindparam("i")
            ),
            [{"t": resource_type, "i": resource_id} for resource_type, resource_id in old],
        )
    ties = [
        (resource_type, resource_id, tie_key(target))
        for (resource_type, resource_id), targets in touches.items()
        for target in targets - {EVERYTHING}
    ]
    if ties:
        # A first sync writes about three ties per resource: the driver's executemany of one
        # plain statement, without SQLAlchemy building a parameter dict per row (that took
        # half of the re-tying).
        connection = session.connection()
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        connection.exec_driver_sql(
            f"INSERT INTO {table.name} (resource_type, id, target) "
            f"VALUES ({mark}, {mark}, {mark}) ON CONFLICT DO NOTHING",
            ties,
        )


def _tracking(session: Session) -> bool:
    """Whether changes are noted: once the referrals were evaluated, and until something sent
    the next evaluation back to evaluating everything."""
    if session.get(EvaluationMark, MARK) is None:
        return False
    return session.get(PendingEvaluation, EVERYTHING) is None


def bodies_by_id(session: Session, resource_type: str, ids: Iterable[str]) -> dict[str, Any]:
    """The stored bodies (tombstones left out) of one type's resources, by id."""
    wanted = sorted(set(ids))
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), 500):
        rows = session.execute(
            select(StoredResource.id, StoredResource.body).where(
                StoredResource.resource_type == resource_type,
                StoredResource.id.in_(wanted[start : start + 500]),
                StoredResource.deleted.is_(False),
            )
        )
        found.update((rid, body) for rid, body in rows)
    return found


def stored_bodies(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The stored bodies (tombstones left out) of the given (type, id) keys."""
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    return {
        (resource_type, rid): body
        for resource_type, ids in by_type.items()
        for rid, body in bodies_by_id(session, resource_type, ids).items()
    }


def note_pending(session: Session, targets: Iterable[str]) -> None:
    """Note references for the next evaluation to look at again."""
    wanted = {tie_key(t) for t in targets}
    if EVERYTHING in wanted:
        wanted = {EVERYTHING}
    if not wanted:
        return
    now = _now()
    stmt = insert_for(session)(PendingEvaluation.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["target"], set_={"added_at": stmt.excluded.added_at}
    )
    session.execute(stmt, [{"target": t, "added_at": now} for t in sorted(wanted)])


def pending(session: Session) -> list[tuple[str, datetime]]:
    """The noted references, with when each was noted."""
    rows = session.execute(select(PendingEvaluation.target, PendingEvaluation.added_at))
    return [(target, added) for target, added in rows]


def clear_pending(session: Session, seen: list[tuple[str, datetime]]) -> None:
    """Forget the noted references an evaluation looked at (not one noted again since)."""
    table = cast(Table, PendingEvaluation.__table__)
    for start in range(0, len(seen), 500):
        session.execute(
            delete(table).where(
                table.c.target == bindparam("t"), table.c.added_at == bindparam("a")
            ),
            [{"t": target, "a": added} for target, added in seen[start : start + 500]],
        )


def evaluation_mark(session: Session) -> EvaluationMark | None:
    """The last evaluation's instant and rules digest, if the referrals were evaluated."""
    return session.get(EvaluationMark, MARK)


def set_evaluation_mark(session: Session, as_of: datetime, rules_digest: str) -> None:
    offset = as_of.utcoffset()
    values = {
        "name": MARK,
        "as_of": _aware(as_of),
        "utc_offset_seconds": int(offset.total_seconds()) if offset is not None else 0,
        "rules_digest": rules_digest,
    }
    stmt = insert_for(session)(EvaluationMark.__table__).values(values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"], set_={k: v for k, v in values.items() if k != "name"}
        )
    )


def _newer(row: dict[str, Any], than: dict[str, Any]) -> bool:
    """The same ordering as the upsert's WHERE, for two copies within one call."""
    if row["version_num"] is not None and than["version_num"] is not None:
        return bool(row["version_num"] > than["version_num"])
    if row["last_updated"] is not None and than["last_updated"] is not None:
        return bool(row["last_updated"] > than["last_updated"])
    return True  # neither comparable: the later copy, as a later call would store it


def get_resource(session: Session, resource_type: str, resource_id: str) -> dict[str, Any] | None:
    """The stored body of one resource, or None."""
    body: dict[str, Any] | None = session.execute(
        select(StoredResource.body).where(
            StoredResource.resource_type == resource_type,
            StoredResource.id == resource_id,
            StoredResource.deleted.is_(False),
        )
    ).scalar_one_or_none()
    return body


def iter_resources(
    session: Session, types: Iterable[str] | None = None, batch: int = 1000
) -> Iterator[dict[str, Any]]:
    """The stored bodies (tombstones left out), by type and id, optionally of the given types
    only; streamed."""
    stmt = (
        select(StoredResource.body)
        .where(StoredResource.deleted.is_(False))
        .order_by(StoredResource.resource_type, StoredResource.id)
    )
    if types is not None:
        stmt = stmt.where(StoredResource.resource_type.in_(list(types)))
    yield from session.execute(stmt.execution_options(yield_per=batch)).scalars()


def stored_keys(session: Session, types: Iterable[str]) -> set[str]:
    """`Type/id` of every stored (not deleted) resource of the given types."""
    rows = session.execute(
        select(StoredResource.resource_type, StoredResource.id).where(
            StoredResource.resource_type.in_(list(types)), StoredResource.deleted.is_(False)
        )
    )
    return {f"{resource_type}/{resource_id}" for resource_type, resource_id in rows}


def existing_keys(session: Session, keys: Iterable[str]) -> set[str]:
    """Which of the given `Type/id` keys the store holds (not deleted)."""
    by_type: dict[str, list[str]] = {}
    for key in keys:
        resource_type, _, resource_id = key.partition("/")
        by_type.setdefault(resource_type, []).append(resource_id)
    found: set[str] = set()
    for resource_type, ids in by_type.items():
        rows = session.execute(
            select(StoredResource.id).where(
                StoredResource.resource_type == resource_type,
                StoredResource.id.in_(ids),
                StoredResource.deleted.is_(False),
            )
        ).scalars()
        found.update(f"{resource_type}/{resource_id}" for resource_id in rows)
    return found


# ---------------------------------------------------------------------------------------------
# Referrals and segment history


def save_evaluation(session: Session, evaluation: ReferralEvaluation, as_of: datetime) -> bool:
    """Upsert a referral's evaluation; True (and a history row) when state or segments changed.

    An evaluation at an earlier as_of than the stored one is ignored: a slow concurrent sync
    must not put back an older picture.
    """
    return save_evaluations(session, [evaluation], as_of) == 1


# Up to this many evaluations, the stored rows are read by key; above it, all of them (a sync
# evaluates every referral, and one read beats thousands of bind parameters).
_BY_KEY = 500


def save_evaluations(
    session: Session,
    evaluations: Iterable[ReferralEvaluation],
    as_of: datetime,
    until: Mapping[str, datetime] | None = None,
) -> int:
    """`save_evaluation` for many referrals in a few statements; how many changed state or
    segments (each with a history row). `until`: by referral, the instant before which its
    evaluation stays the same (see `Referral.stable_until`; without it, unknown)."""
    as_of = _aware(as_of)
    until = until or {}
    values = {
        e.referral: {
            "key": e.referral,
            "patient": e.patient,
            "state": e.state,
            "primary_segment": e.primary_segment,
            "segments": list(e.segments),
            "evaluation": e.to_json(),
            "evaluated_at": as_of,
            "arrived_at": e.arrived,
            "due_at": e.next_action.due if e.next_action else None,
            "age_days": e.age_days,
            "aging_band": e.aging_band,
            "source": e.source[:160] if e.source else None,
            "high_relationship": "high-relationship" in e.segments,
            "stable_until": until.get(e.referral),
        }
        for e in evaluations
    }
    if not values:
        return 0
    by_key = {e["key"]: e for e in values.values()}
    # The rows that exist, locked (PostgreSQL; SQLite's transaction holds the write lock already)
    # so that two writers cannot both see the old segments and both record the change.
    columns = select(
        Referral.key,
        Referral.state,
        Referral.segments,
        Referral.primary_segment,
        Referral.evaluated_at,
    )
    if len(values) <= _BY_KEY:
        columns = columns.where(Referral.key.in_(list(values)))
    stored = {row.key: row for row in session.execute(columns.with_for_update())}
    fresh = [v for key, v in values.items() if key not in stored]
    created: set[str] = set()
    if fresh:
        table = Referral.__table__
        insert = insert_for(session)(table).on_conflict_do_nothing(index_elements=["key"])
        created = set(session.execute(insert.returning(table.c.key), fresh).scalars())
        if len(created) < len(fresh):  # another writer created some in between
            late = [v["key"] for v in fresh if v["key"] not in created]
            stored |= {
                row.key: row
                for row in session.execute(columns.where(Referral.key.in_(late)).with_for_update())
            }
    changes: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, row in stored.items():
        value = by_key.get(key)
        if value is None or as_of < row.evaluated_at:
            continue
        updates.append(value)
        if row.state != value["state"] or list(row.segments) != value["segments"]:
            changes.append(_change(value, row.state, row.segments, row.primary_segment, as_of))
    changes.extend(_change(by_key[key], None, None, None, as_of) for key in created)
    if updates:
        table = cast(Table, Referral.__table__)
        session.execute(
            update(table).where(table.c.key == bindparam("old_key")),
            [{**value, "old_key": value["key"]} for value in updates],
        )
    if changes:
        session.execute(insert_for(session)(SegmentChange.__table__), changes)
    return len(changes)


def _change(
    value: dict[str, Any],
    from_state: str | None,
    from_segments: list[str] | None,
    from_primary: str | None,
    as_of: datetime,
) -> dict[str, Any]:
    return {
        "referral_key": value["key"],
        "from_state": from_state,
        "to_state": value["state"],
        "from_segments": from_segments,
        "to_segments": value["segments"],
        "from_primary": from_primary,
        "to_primary": value["primary_segment"],
        "as_of": as_of,
        "reasons": value["evaluation"]["reasons"],
    }


REMOVED = "removed"  # the to_state of a history row whose referral left the store


def remove_referrals(session: Session, present: set[str], as_of: datetime) -> int:
    """Drop the stored referrals whose key is not in `present` (their ServiceRequest was
    deleted on the server, or the practice rules no longer count it), each with a history row
    to the state "removed"; how many."""
    as_of = _aware(as_of)
    rows = session.execute(
        select(Referral.key, Referral.state, Referral.segments, Referral.primary_segment)
    ).all()
    gone = [row for row in rows if row.key not in present]
    for row in gone:
        session.execute(
            insert_for(session)(SegmentChange).values(
                referral_key=row.key,
                from_state=row.state,
                to_state=REMOVED,
                from_segments=row.segments,
                to_segments=[],
                from_primary=row.primary_segment,
                to_primary=None,
                as_of=as_of,
                reasons=[
                    {
                        "state": REMOVED,
                        "because": "the ServiceRequest is gone from the server (deleted), or "
                        "the practice rules no longer count it as a referral",
                        "expression": "ServiceRequest",
                    }
                ],
            )
        )
    if gone:
        session.execute(delete(Referral).where(Referral.key.in_([row.key for row in gone])))
    return len(gone)


def stored_evaluation(session: Session, referral_key: str) -> dict[str, Any] | None:
    """The stored evaluation (the `segment` line) of one referral, or None."""
    found: dict[str, Any] | None = session.execute(
        select(Referral.evaluation).where(Referral.key == referral_key)
    ).scalar_one_or_none()
    return found


def stored_evaluations(session: Session, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every stored evaluation (the `segment` lines), by referral key; streamed."""
    stmt = select(Referral.evaluation).order_by(Referral.key)
    yield from session.execute(stmt.execution_options(yield_per=batch)).scalars()


def history(session: Session, referral_key: str) -> list[SegmentChange]:
    """A referral's segment history, oldest first."""
    stmt = (
        select(SegmentChange)
        .where(SegmentChange.referral_key == referral_key)
        .order_by(SegmentChange.as_of, SegmentChange.id)
    )
    return list(session.execute(stmt).scalars())


# ---------------------------------------------------------------------------------------------
# Sync cursors


def get_cursor(session: Session, base_url: str, resource_type: str) -> datetime | None:
    """The `_lastUpdated` high-water mark for one resource type on one server, or None."""
    value: datetime | None = session.execute(
        select(SyncCursor.value).where(
            SyncCursor.base_url == base_url, SyncCursor.resource_type == resource_type
        )
    ).scalar_one_or_none()
    return value


def advance_cursor(session: Session, base_url: str, resource_type: str, value: datetime) -> bool:
    """Move the cursor forward to `value`; never backwards. True if it moved."""
    stmt = insert_for(session)(SyncCursor).values(
        base_url=base_url, resource_type=resource_type, value=_aware(value), updated_at=_now()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["base_url", "resource_type"],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        where=SyncCursor.__table__.c.value < stmt.excluded.value,
    ).returning(SyncCursor.base_url)
    return session.execute(stmt).first() is not None


# ---------------------------------------------------------------------------------------------
# Quarantine


def _fingerprint(source: str, resource_type: str | None, resource_id: str | None, why: str) -> str:
    parts = [source, resource_type or "", resource_id or ""]
    if not (resource_type and resource_id):
        parts.append(why)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def quarantine(
    session: Session,
    source: str,
    resource_type: str | None,
    resource_id: str | None,
    reason: str,
) -> None:
    """Record a resource that could not be read. `reason` names element paths, never values."""
    now = _now()
    stmt = insert_for(session)(Quarantined).values(
        fingerprint=_fingerprint(source, resource_type, resource_id, reason),
        source=source,
        resource_type=resource_type,
        resource_id=resource_id,
        reason=reason,
        first_seen=now,
        last_seen=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["fingerprint"],
        set_={"reason": stmt.excluded.reason, "last_seen": stmt.excluded.last_seen},
    )
    session.execute(stmt)


def release_quarantine(session: Session, source: str, resource_type: str, resource_id: str) -> bool:
    """Forget a quarantined resource (it has since been read); True if it was there."""
    result = session.execute(
        delete(Quarantined).where(
            Quarantined.fingerprint == _fingerprint(source, resource_type, resource_id, "")
        )
    )
    return bool(getattr(result, "rowcount", 0))


def list_quarantine(session: Session, source: str | None = None) -> list[Quarantined]:
    """Quarantined resources, most recently seen first, optionally from one source only."""
    stmt = select(Quarantined).order_by(Quarantined.last_seen.desc(), Quarantined.fingerprint)
    if source is not None:
        stmt = stmt.where(Quarantined.source == source)
    return list(session.execute(stmt).scalars())
