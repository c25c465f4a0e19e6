"""The outbox and the writer against a scripted server (respx): planning in the evaluation's
transaction, idempotent intents, leases, retries with backoff, dead letters and their retry,
refusals that keep the work, dry runs, and Tasks someone else ended. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import respx
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from adapter import outbox, store
from adapter import personas as p
from adapter.cli import main
from adapter.errors import TemporaryServerError, WriteRefused
from adapter.fhir_client import FhirClient
from adapter.http_policy import RetryPolicy, make_http_client
from adapter.practice_rules import default_rules
from adapter.store_models import OutboxEntry, Referral
from adapter.sync import evaluate_store
from adapter.writeback import WritebackSummary, run_writeback
from mappings.rules import PracticeRules
from tests.adapter.writefhir import BASE, WriteServer

AS_OF = p.PERSONA_AS_OF


def rules_listing_northside() -> PracticeRules:
    rules = default_rules()
    high = rules.high_relationship.model_copy(update={"sources": ("Organization/org-northside",)})
    writeback = rules.writeback.model_copy(update={"max_attempts": 3})
    return rules.model_copy(update={"high_relationship": high, "writeback": writeback})


RULES = rules_listing_northside()


def resources() -> list[dict[str, Any]]:
    """Ada's complete referral, and a second one of hers without records."""
    return [*p.ada_packet(), p.ada_referral(id="ref-2", supportingInfo=None)]


def problems(where: str, what: str) -> None:
    raise AssertionError((where, what))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    store.upgrade(db_url)
    made = store.make_engine(db_url)
    with Session(made) as session, session.begin():
        store.put_resources(session, resources(), "test")
    evaluate_store(made, RULES, AS_OF, problems)
    yield made
    made.dispose()


@pytest.fixture
def server() -> Iterator[WriteServer]:
    scripted = WriteServer()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.route().mock(side_effect=scripted.handle)
        yield scripted


def write(engine: Engine, **options: Any) -> WritebackSummary:
    policy = RetryPolicy(max_attempts=2, sleep=lambda seconds: None)
    with make_http_client() as http:
        return run_writeback(FhirClient(BASE, http, policy=policy), engine, RULES, **options)


def entries(engine: Engine) -> list[OutboxEntry]:
    with Session(engine) as session:
        rows = list(session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars())
        session.expunge_all()
    return rows


def make_due(engine: Engine) -> None:
    """Let time pass: every pending entry is due now."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.status == outbox.PENDING)
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_the_evaluation_queues_its_writes(engine: Engine) -> None:
    keys = [e.key for e in entries(engine)]
    assert keys == [
        "ServiceRequest/ref-2:task:1",
        "ServiceRequest/ref-ada-cardio:task:1",
        "ServiceRequest/ref-2:receipt-confirmed",
        "ServiceRequest/ref-2:information-requested:records",
        "ServiceRequest/ref-ada-cardio:receipt-confirmed",
    ]
    # The status updates name the patient for the referring office (the name and birth date
    # read with the rest of the referral's context).
    for entry in entries(engine):
        if entry.kind == "status":
            text = orjson.dumps(entry.resource).decode()
            assert "Ada Quill" in text, entry.key
            assert "1984-07-12" in text, entry.key
    # Evaluating again at the same instant queues nothing more.
    evaluate_store(engine, RULES, AS_OF, problems)
    assert [e.key for e in entries(engine)] == keys


def test_planning_shares_the_evaluation_transaction(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upgrade(db_url)
    made = store.make_engine(db_url)
    with Session(made) as session, session.begin():
        store.put_resources(session, resources(), "test")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the outbox failed")

    monkeypatch.setattr("adapter.outbox.save_writeback_states", broken)
    with pytest.raises(RuntimeError):
        evaluate_store(made, RULES, AS_OF, problems)
    with Session(made) as session:
        # Neither the evaluations nor the writes they called for were kept.
        assert session.execute(select(Referral)).first() is None
        assert session.execute(select(OutboxEntry)).first() is None
    made.dispose()


def test_a_later_task_intent_supersedes_an_unwritten_one(engine: Engine) -> None:
    now = datetime.now(UTC)
    task = entries(engine)[0]
    intent = outbox.Intent(
        "ServiceRequest/ref-2:task:2", task.referral_key, "task", "x", task.resource
    )
    with Session(engine) as session, session.begin():
        assert outbox.enqueue(session, [intent], now) == [intent.key]
        assert outbox.enqueue(session, [intent], now) == []  # the same intent is one entry
    statuses = {e.key: e.status for e in entries(engine)}
    assert statuses["ServiceRequest/ref-2:task:1"] == "superseded"
    assert statuses["ServiceRequest/ref-2:task:2"] == "pending"


def test_two_writers_do_not_claim_the_same_entries(engine: Engine) -> None:
    now = datetime.now(UTC)
    with Session(engine) as first, first.begin():
        mine = {e.id for e in outbox.claim(first, now, 3)}
    with Session(engine) as second, second.begin():
        theirs = {e.id for e in outbox.claim(second, now, 10)}
    assert len(mine) == 3
    assert len(theirs) == 2
    assert not mine & theirs
    # A lease that ran out (its writer died) is claimed again.
    with Session(engine) as third, third.begin():
        assert len(outbox.claim(third, now + outbox.LEASE + timedelta(seconds=1), 10)) == 5


@pytest.mark.parametrize("batch", [True, False])
def test_everything_is_written_once(engine: Engine, server: WriteServer, batch: bool) -> None:
    summary = write(engine, batch=batch)
    assert (summary.written, summary.dead, summary.pending) == (5, 0, 0)
    assert len(server.of_type("Task")) == 2
    assert len(server.of_type("Communication")) == 3
    assert {e.status for e in entries(engine)} == {"done"}
    assert all(e.written and e.written.count("/") == 3 for e in entries(engine))
    # Batched: one Bundle; else one request per resource.
    assert len(server.requests) == (1 if batch else 5)
    again = write(engine, batch=batch)
    assert again.entries == 0
    assert len(server.resources) == 5


def test_a_task_update_goes_by_if_match_and_rereads_on_a_conflict(
    engine: Engine, server: WriteServer
) -> None:
    write(engine)
    [task] = [t for t in server.of_type("Task") if t["focus"]["reference"].endswith("ref-2")]
    # Someone else adds a note on the server.
    server._store({**task, "note": [{"text": "theirs"}]}, task["id"], 2)
    # The records arrive: the referral is ready, its Task is to move.
    with Session(engine) as session, session.begin():
        store.put_resource(
            session,
            {
                **p.ada_record(),
                "id": "doc-2",
                "context": {"related": [{"reference": "ServiceRequest/ref-2"}]},
            },
            "test",
        )
    evaluate_store(engine, RULES, AS_OF + timedelta(minutes=1), problems)
    summary = write(engine)
    assert summary.conflicts >= 1
    assert summary.dead == 0
    current = server.resources[f"Task/{task['id']}"]
    assert current["status"] == "in-progress"
    assert current["note"] == [{"text": "theirs"}]
    assert current["meta"]["versionId"] == "3"


def test_a_server_that_refuses_writes_stops_the_run_and_keeps_the_outbox(
    engine: Engine, server: WriteServer
) -> None:
    server.fault = lambda method, path, resource: (403, "not allowed to write")
    with pytest.raises(WriteRefused, match=r"refuses our writes.*403.*keeps 5 pending"):
        write(engine)
    assert [(e.status, e.attempts, e.lease_until) for e in entries(engine)] == [
        ("pending", 0, None)
    ] * 5


def test_no_create_in_the_capability_statement_is_refused_before_any_write(
    engine: Engine,
) -> None:
    scripted = WriteServer(interactions=("read",))
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.route().mock(side_effect=scripted.handle)
        with pytest.raises(
            WriteRefused, match="offers no Task create, Task update, Communication create"
        ):
            write(engine)
    assert scripted.requests == []
    assert {e.status for e in entries(engine)} == {"pending"}


def test_temporary_failures_back_off_then_go_dead_with_the_outcome(
    engine: Engine, server: WriteServer
) -> None:
    server.fault = lambda method, path, resource: (503, "down for maintenance")
    with pytest.raises(TemporaryServerError):
        write(engine, batch=False)
    first = entries(engine)
    assert first[0].attempts == 1
    assert first[0].next_attempt_at > datetime.now(UTC) + timedelta(seconds=20)
    assert first[0].status == "pending"
    assert "down for maintenance" in (first[0].last_error or "")
    # The run stopped at the first failure. Not due yet, that entry is left alone by the next
    # run, which stops at the next entry.
    with pytest.raises(TemporaryServerError):
        write(engine, batch=False)
    assert [e.attempts for e in entries(engine)] == [1, 1, 0, 0, 0]
    for _ in range(2):
        make_due(engine)
        with pytest.raises(TemporaryServerError):
            write(engine, batch=False)
    dead = entries(engine)[0]
    assert (dead.status, dead.attempts) == ("dead", 3)
    assert dead.outcome is not None
    assert dead.outcome["issue"][0]["diagnostics"] == "down for maintenance"
    # Visible, and put back by command.
    server.fault = lambda method, path, resource: None
    assert (
        main(
            [
                "outbox",
                "--db",
                str(engine.url.render_as_string(hide_password=False)),
                "--status",
                "dead",
            ]
        )
        == 0
    )
    assert (
        main(["outbox", "--db", engine.url.render_as_string(hide_password=False), "--retry-dead"])
        == 0
    )
    make_due(engine)
    summary = write(engine)
    assert summary.dead == 0
    assert {e.status for e in entries(engine)} == {"done"}


def test_a_refused_resource_is_dead_at_once_and_the_rest_is_written(
    engine: Engine, server: WriteServer
) -> None:
    def refuse_requests(
        method: str, path: str, resource: dict[str, Any] | None
    ) -> tuple[int, str] | None:
        if resource and "information-requested" in orjson.dumps(resource).decode():
            return 422, "Communication.recipient: unknown office"
        return None

    server.fault = refuse_requests
    summary = write(engine)
    assert (summary.written, summary.dead) == (4, 1)
    dead = [e for e in entries(engine) if e.status == "dead"]
    assert [e.key for e in dead] == ["ServiceRequest/ref-2:information-requested:records"]
    assert "unknown office" in (dead[0].last_error or "")
    assert dead[0].attempts == 1


def test_an_ended_task_is_not_moved_back(engine: Engine, server: WriteServer) -> None:
    write(engine)
    [task] = [t for t in server.of_type("Task") if t["focus"]["reference"].endswith("ref-2")]
    server._store({**task, "status": "completed"}, task["id"], 2)  # someone closed it
    with Session(engine) as session, session.begin():
        store.put_resource(
            session,
            {
                **p.ada_record(),
                "id": "doc-2",
                "context": {"related": [{"reference": "ServiceRequest/ref-2"}]},
            },
            "test",
        )
    evaluate_store(engine, RULES, AS_OF + timedelta(minutes=1), problems)
    summary = write(engine)
    assert summary.dead == 1
    [dead] = [e for e in entries(engine) if e.status == "dead"]
    assert "completed on the server" in (dead.last_error or "")
    assert server.resources[f"Task/{task['id']}"]["status"] == "completed"


def test_dry_run_prints_the_writes_and_sends_nothing(
    engine: Engine, server: WriteServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    assert main(["writeback", "--db", url, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["key"] for line in lines] == [e.key for e in entries(engine)]
    assert lines[0]["resource"]["resourceType"] == "Task"
    assert "5 pending writes, nothing sent" in err
    assert server.requests == []
    assert {e.status for e in entries(engine)} == {"pending"}
