"""The `referral-adapter` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from adapter.errors import AdapterError, ConfigError
from adapter.practice_rules import load_rules
from adapter.segmenting import bulk_allocation, evaluate_input, write_lines
from fhir_profiles import terminology
from mappings.fhirtime import as_utc
from mappings.summary import render_summary

__all__ = ["main"]

PROG = "referral-adapter"
EXIT_UNREADABLE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE
TOKEN_VARIABLE = "REFERRAL_ADAPTER_FHIR_TOKEN"
SMART_ENV_PREFIX = "REFERRAL_ADAPTER_SMART_"
DEFAULT_DB = "sqlite:///referral-adapter.db"
DEFAULT_OVERLAP_SECONDS = 300  # adapter.sync.OVERLAP; a test keeps the two equal
DEFAULT_PAGE_SIZE = 100  # adapter.sync.PAGE_SIZE; the same test


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 date or date-time; a date is midnight UTC, a time without offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--as-of {text!r}: not an ISO 8601 date or date-time (e.g. 2026-12-03T09:00:00Z)"
        ) from None
    return as_utc(moment)


def report(where: str, message: str) -> None:
    """One problem with the input or the server, on stderr: where, and what (never a value)."""
    sys.stderr.write(f"{PROG}: {where}: {message}\n")


def _fhir_client(args: argparse.Namespace, http: Any) -> Any:
    """A FHIR client on --fhir-base: SMART Backend Services when --smart-client-id is given,
    else the bearer token from the environment if one is set, else no authentication."""
    from adapter.fhir_client import FhirClient
    from adapter.smart_auth import BearerToken, SmartBackendAuth

    token = os.environ.get(TOKEN_VARIABLE)
    smart = (args.smart_client_id, args.smart_key, args.smart_key_id)
    if any(smart):
        if not all(smart):
            raise ConfigError(
                "SMART Backend Services needs --smart-client-id, --smart-key and --smart-key-id "
                "together"
            )
        if token:
            raise ConfigError(f"{TOKEN_VARIABLE} is set: use it or SMART options, not both")
        try:
            pem = Path(args.smart_key).read_bytes()
        except OSError as error:
            raise ConfigError(
                f"--smart-key {args.smart_key}: cannot read ({error.strerror})"
            ) from None
        auth: Any = SmartBackendAuth(
            args.fhir_base,
            args.smart_client_id,
            pem,
            args.smart_key_id,
            scope=args.smart_scope,
            token_endpoint=args.smart_token_endpoint,
        )
        return FhirClient(args.fhir_base, http, auth)
    return FhirClient(args.fhir_base, http, BearerToken(token) if token else None)


def _server_options(command: argparse.ArgumentParser, required: bool = True) -> None:
    """--fhir-base and how to authenticate to it."""
    command.add_argument(
        "--fhir-base",
        required=required,
        metavar="URL",
        help="the server's FHIR base URL, e.g. http://127.0.0.1:8080/fhir",
    )
    smart = command.add_argument_group(
        "SMART Backend Services",
        f"Authenticate with a signed private_key_jwt (RS384 or ES384) for a client_credentials "
        f"token; the token endpoint is discovered from .well-known/smart-configuration unless "
        f"given. Without these options a bearer token is read from {TOKEN_VARIABLE}, if set. "
        f"Each option can also come from the environment ({SMART_ENV_PREFIX}CLIENT_ID, ...).",
    )
    for name, metavar, text in (
        ("client-id", "ID", "the client id registered with the EHR"),
        ("key", "PEM", "the private key file (RSA of 2048 bits or more, or EC P-384)"),
        ("key-id", "KID", "the key's id in the registered JWK Set"),
        ("scope", "SCOPES", "scopes to ask for (default system/*.rs)"),
        ("token-endpoint", "URL", "the token endpoint, when not discovered"),
    ):
        variable = SMART_ENV_PREFIX + name.upper().replace("-", "_")
        default = os.environ.get(variable)
        if name == "scope":
            default = default or "system/*.rs"
        smart.add_argument(f"--smart-{name}", metavar=metavar, default=default, help=text)


def _progress_printer(stream: TextIO, what: str) -> Callable[[int], None] | None:
    """Progress lines on a terminal only; pipes and CI logs stay clean."""
    if not stream.isatty():
        return None

    def show(count: int) -> None:
        stream.write(f"\r{PROG}: {count:,} {what}")
        stream.flush()

    return show


def _segment(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    as_of = args.as_of or datetime.now(UTC)

    progress = _progress_printer(sys.stderr, "resources read")
    with bulk_allocation():
        evaluator, stats = evaluate_input(args.input, rules, as_of, report, progress)
        if progress is not None:
            sys.stderr.write("\n")
        if args.summary:
            sys.stdout.write(render_summary(evaluator, as_of, stats.resources, stats.skipped))
        else:
            sys.stdout.flush()
            write_lines(evaluator, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    if stats.skipped:
        noun = "resource" if stats.skipped == 1 else "resources"
        sys.stderr.write(f"{PROG}: {stats.skipped} unreadable {noun} skipped\n")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from adapter.synth import OutDirNotEmptyError, synth_to_dir

    as_of = args.as_of or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    shown = _progress_printer(sys.stderr, "referrals generated")

    def progress(done: int, total: int) -> None:
        if shown is not None:
            shown(done)

    try:
        counts = synth_to_dir(
            args.referrals, args.seed, as_of, args.out, progress, id_prefix=args.id_prefix
        )
    except (OutDirNotEmptyError, NotADirectoryError, ValueError) as error:
        raise ConfigError(str(error)) from None
    if shown is not None:
        sys.stderr.write("\n")
    total = sum(counts.values())
    parts = ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
    sys.stderr.write(f"{PROG}: wrote {total} resources to {args.out} ({parts})\n")
    return 0


def _load(args: argparse.Namespace) -> int:
    from adapter.http_policy import make_http_client
    from adapter.loading import load_input

    progress = _progress_printer(sys.stderr, "resources written")
    with make_http_client() as http:
        client = _fhir_client(args, http)
        result = load_input(args.input, client, report, progress, args.batch_size)
    if progress is not None:
        sys.stderr.write("\n")
    sys.stderr.write(
        f"{PROG}: wrote {result.written} resources to {args.fhir_base} in "
        f"{result.transactions} transactions; {result.refused} refused by the server, "
        f"{result.stats.skipped} unreadable skipped\n"
    )
    return 0


def _engine(url: str) -> Any:
    from adapter import store

    store.upgrade(url)
    return store.make_engine(url)


def _sync(args: argparse.Namespace) -> int:
    from adapter.errors import TemporaryServerError
    from adapter.http_policy import make_http_client
    from adapter.sync import run_sync

    rules = load_rules(args.rules)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None

    def on_event(event: dict[str, Any]) -> None:
        if args.json:
            _json_line(event)
        if bar is not None:
            bar.show(event)

    engine = _engine(args.db)
    with make_http_client() as http:
        client = _fhir_client(args, http)
        while True:
            try:
                # Not under bulk_allocation: pages come and go, and their garbage has cycles
                # (sessions, responses) that only the collector frees. The index is built
                # with it paused (evaluate_stored).
                summary = run_sync(
                    client,
                    engine,
                    rules,
                    on_problem=report,
                    on_event=on_event,
                    as_of=args.as_of,
                    overlap=timedelta(seconds=args.overlap_seconds),
                    page_size=args.page_size,
                )
            except TemporaryServerError as error:
                if args.every is None:
                    raise
                # A worker outlives a server's bad minutes: say so, and try at the next round.
                if bar is not None:
                    bar.end()
                sys.stderr.write(f"{PROG}: sync failed, next try in {args.every} s: {error}\n")
                if args.json:
                    _json_line({"event": "failed", "error": str(error), "retry_in": args.every})
            else:
                if bar is not None:
                    bar.end()
                _sync_report(summary, args.json)
                if args.write_back:
                    _write_back(client, engine, rules, args)
            if args.every is None:
                return 0
            time.sleep(args.every)


def _write_back(client: Any, engine: Any, rules: Any, args: argparse.Namespace) -> None:
    """Write the outbox to the server and report it (stderr line, or JSON events)."""
    from adapter.writeback import run_writeback

    def on_event(event: dict[str, Any]) -> None:
        if args.json:
            _json_line(event)

    summary = run_writeback(
        client,
        engine,
        rules,
        batch=not args.no_batch,
        batch_size=args.batch_size,
        on_event=on_event,
    )
    if args.json:
        _json_line({"event": "writeback", **_writeback_fields(summary)})
    else:
        sys.stderr.write(f"{PROG}: write-back: {summary.line()}\n")


def _writeback_fields(summary: Any) -> dict[str, Any]:
    fields = ("entries", "written", "already", "conflicts", "failed", "dead", "pending", "requests")
    out = {name: getattr(summary, name) for name in fields}
    out["seconds"] = round(summary.seconds, 3)
    return out


def _writeback(args: argparse.Namespace) -> int:
    from adapter.http_policy import make_http_client
    from adapter.writeback import planned

    rules = load_rules(args.rules)
    engine = _engine(args.db)
    if args.dry_run:
        out = sys.stdout
        count = 0
        for entry in planned(engine):
            method = "PUT-or-POST" if entry.kind == "task" else "POST"
            line = {
                "key": entry.key,
                "request": f"{method} {entry.resource_type}",
                "if_none_exist": f"identifier={entry.identifier}",
                "resource": entry.resource,
            }
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            count += 1
        out.flush()
        sys.stderr.write(f"{PROG}: dry run: {count} pending writes, nothing sent\n")
        return 0
    if not args.fhir_base:
        raise ConfigError("writeback needs --fhir-base (or --dry-run)")
    with make_http_client() as http:
        client = _fhir_client(args, http)
        _write_back(client, engine, rules, args)
    return 0


def _outbox(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from adapter import outbox

    engine = _engine(args.db)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        if args.retry or args.retry_dead:
            count = outbox.retry(session, now, None if args.retry_dead else args.retry)
            sys.stderr.write(f"{PROG}: {count} dead entries back to pending\n")
            return 0
        for entry in outbox.list_entries(session, args.status, args.referral, args.limit):
            line = {
                "key": entry.key,
                "referral": entry.referral_key,
                "kind": entry.kind,
                "status": entry.status,
                "attempts": entry.attempts,
                "next_attempt_at": entry.next_attempt_at.isoformat(),
                "written": entry.written,
                "error": entry.last_error,
            }
            sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        counts = outbox.counts(session)
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "empty"
    sys.stderr.write(f"{PROG}: outbox: {shown}\n")
    return 0


def _actor(args: argparse.Namespace) -> Any:
    from adapter.actions import Actor

    who = args.by or os.environ.get("USER") or "command-line"
    reference = who if "/" in who else None
    return Actor(id=who, reference=reference, display=args.by_name)


def _contact(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from adapter.actions import record_contact

    rules = load_rules(args.rules)
    engine = _engine(args.db)
    with Session(engine) as session, session.begin():
        attempt = record_contact(
            session,
            args.referral,
            channel=args.channel,
            outcome=args.outcome,
            actor=_actor(args),
            rules=rules,
            at=args.at,
            note=args.note,
        )
    sys.stderr.write(f"{PROG}: contact attempt {attempt.id} recorded and queued for write-back\n")
    return 0


def _note(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from adapter.actions import write_note

    rules = load_rules(args.rules)
    engine = _engine(args.db)
    with Session(engine) as session, session.begin():
        write_note(
            session,
            args.referral,
            actor=_actor(args),
            rules=rules,
            contacted=args.contacted,
            requested=args.requested,
            response=args.said,
            still_missing=args.still_missing or (),
            next_attempt_due=args.next_due,
        )
    sys.stderr.write(f"{PROG}: note recorded; the referral's Task is queued for write-back\n")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from adapter.actions import assign_owner
    from mappings.writeback import Owner

    rules = load_rules(args.rules)
    engine = _engine(args.db)
    with Session(engine) as session, session.begin():
        assign_owner(
            session,
            args.referral,
            owner=Owner(args.owner, args.owner_name),
            actor=_actor(args),
            rules=rules,
        )
    sys.stderr.write(f"{PROG}: owner assigned; the referral's Task is queued for write-back\n")
    return 0


def _import(args: argparse.Namespace) -> int:
    from adapter.ingest import ingest

    rules = load_rules(args.rules)
    engine = _engine(args.db)
    as_of = args.as_of or datetime.now(UTC)
    with bulk_allocation():
        summary = ingest(args.input, engine, rules, as_of, report)
    sys.stderr.write(
        f"{PROG}: imported {summary.stored} resources ({summary.stats.skipped} unreadable "
        f"skipped); {summary.referrals} referrals evaluated ({summary.moved} moved); "
        f"write-back queued {summary.planned_tasks} Task and {summary.planned_messages} status "
        "updates\n"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import waitress

    from smart_launch import create_app, load_config

    config = load_config(args.config)
    app = create_app(config)
    sys.stderr.write(f"{PROG}: serving the referral view on http://{args.host}:{args.port}/\n")
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident=None)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import secrets

    import waitress

    from adapter.ingest import ingest
    from adapter.synth import synth_to_dir
    from smart_launch import ViewConfig, create_app

    folder: Path = args.dir
    data, db = folder / "data", folder / "demo.db"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (db, db.with_name("demo.db-wal"), db.with_name("demo.db-shm")):
        stale.unlink(missing_ok=True)
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    synth_to_dir(args.referrals, args.seed, today + timedelta(days=1), data)
    url = f"sqlite:///{db}"
    engine = _engine(url)
    with bulk_allocation():
        summary = ingest(data, engine, load_rules(None), now, report, source="demo")
    sys.stderr.write(
        f"{PROG}: demo: {args.referrals} synthetic referrals generated into {data} and run "
        f"through the pipeline into {db} ({summary.referrals} evaluated)\n"
    )
    config = ViewConfig(
        database=url,
        secret_key=secrets.token_urlsafe(32),
        demo=True,
        # Loopback and no EHR iframe: a first-party Lax cookie (Secure needs HTTPS elsewhere).
        secure_cookies=False,
    )
    app = create_app(config, engine)
    address = f"http://127.0.0.1:{args.port}/demo"
    sys.stderr.write(f"{PROG}: demo: open {address} (Ctrl-C stops)\n")
    sys.stderr.flush()
    waitress.serve(app, host="127.0.0.1", port=args.port, threads=8, ident=None)
    return 0


def _json_line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class ProgressBar:
    """One line on a terminal, redrawn per page: the step, a bar when the server gave a total
    (of matches: the referral query's pages carry their context besides), and the counts."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False
        self.done: dict[tuple[str, str], int] = {}

    def show(self, event: dict[str, Any]) -> None:
        if event.get("event") != "page":
            return
        step = (event["step"], event["type"])
        done = self.done[step] = self.done.get(step, 0) + int(event["matches"])
        total = event.get("total")
        shown = f"{step[0]} {step[1]}"
        if isinstance(total, int) and total > 0:
            filled = round(self.WIDTH * min(done, total) / total)
            shown += f" [{'#' * filled}{'.' * (self.WIDTH - filled)}]"
        self.stream.write(
            f"\r{PROG}: {shown} fetched {event['fetched']:,}, changed {event['changed']:,}\x1b[K"
        )
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False
        self.done.clear()


def _sync_report(summary: Any, as_json: bool) -> None:
    for note in summary.notes:
        sys.stderr.write(f"{PROG}: note: {note}\n")
    if as_json:
        fields = (
            "fetched",
            "changed",
            "deleted",
            "quarantined",
            "requests",
            "referrals",
            "moved",
            "removed",
            "planned_tasks",
            "planned_messages",
            "by_type",
            "notes",
        )
        line = {"event": "summary", **{name: getattr(summary, name) for name in fields}}
        line["seconds"] = round(summary.seconds, 3)
        _json_line(line)
    else:
        sys.stderr.write(f"{PROG}: sync: {summary.line()}\n")


def _referrals(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from adapter import store
    from adapter.sync import evaluate_stored

    engine = _engine(args.db)
    out = sys.stdout.buffer
    if args.as_of is not None:
        # Evaluated afresh from the stored resources and printed; the store is left as it is
        # (it keeps the picture of the latest sync).

        with bulk_allocation():
            evaluator = evaluate_stored(engine, load_rules(args.rules), args.as_of, report)
            write_lines(evaluator, out)
    else:
        with Session(engine) as session:
            for evaluation in store.stored_evaluations(session):
                out.write(json.dumps(evaluation, separators=(",", ":")).encode() + b"\n")
    out.flush()
    return 0


def _weekly_report(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from adapter.report import Period, ReportSettings, compute_report
    from adapter.report_render import render

    if args.week is not None and (args.start is not None or args.end is not None):
        raise ConfigError("give --week, or --from and --to, not both")
    if args.week is not None:
        period = Period.week(args.week)
    elif args.start is not None and args.end is not None:
        period = Period.between(args.start, args.end)
    else:
        raise ConfigError("give --week (e.g. 2026-W48), or --from and --to")
    settings = ReportSettings(
        stale_missing_days=args.stale_days,
        open_limit_days=args.open_limit_days,
        trend_weeks=args.trend_weeks,
    )
    engine = _engine(args.db)
    with Session(engine) as session:
        result = compute_report(session, period, load_rules(args.rules), settings)
    text = render(result, args.format)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--out {args.out}: cannot write ({error.strerror})") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="FHIR R4 referral follow-up adapter.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = commands.add_parser(
        "segment",
        help="evaluate referrals: state, segments, missing details, aging, next action",
        description="Read a FHIR Bundle, an NDJSON file or a Bulk Data directory and print one "
        "JSON object per referral per line.",
    )
    segment.add_argument(
        "--input",
        required=True,
        type=Path,
        metavar="PATH",
        help="a Bundle (.json), an NDJSON file, or a directory of them",
    )
    segment.add_argument(
        "--as-of",
        type=parse_as_of,
        metavar="ISO8601",
        help="evaluate at this instant (default: now)",
    )
    segment.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="practice rules (YAML), laid over the shipped defaults",
    )
    segment.add_argument(
        "--summary",
        action="store_true",
        help="print a table of open referrals by segment and aging band instead",
    )
    segment.set_defaults(run=_segment)

    synth = commands.add_parser(
        "synth",
        help="write a synthetic practice's month of referrals as a Bulk Data directory",
        description="Generate synthetic FHIR data (no real patients): one NDJSON file per type.",
    )
    synth.add_argument("--referrals", type=_count, required=True, metavar="N")
    synth.add_argument(
        "--seed", type=int, default=1, metavar="S", help="same seed, same output (default 1)"
    )
    synth.add_argument("--out", type=Path, required=True, metavar="DIR")
    synth.add_argument(
        "--id-prefix",
        default="",
        metavar="TEXT",
        help="put TEXT before every id, so several data sets can share one server",
    )
    synth.add_argument(
        "--as-of",
        type=parse_as_of,
        metavar="ISO8601",
        help="the end of the generated month (default: today, 00:00 UTC)",
    )
    synth.set_defaults(run=_synth)

    load = commands.add_parser(
        "load",
        help="upload a Bundle, NDJSON file or Bulk Data directory to a FHIR server",
        description="Upload FHIR input to a server as transaction Bundles, keeping resource ids "
        f"(PUT). Unreadable resources are reported and skipped. A bearer token, if the server "
        f"needs one, is read from the environment variable {TOKEN_VARIABLE}.",
    )
    _server_options(load)
    load.add_argument("--input", required=True, type=Path, metavar="PATH")
    load.add_argument(
        "--batch-size",
        type=_positive,
        default=200,
        metavar="N",
        help="resources per transaction Bundle (default 200)",
    )
    load.set_defaults(run=_load)

    sync = commands.add_parser(
        "sync",
        help="fetch referrals and their context from a FHIR server into the store, incrementally",
        description="Fetch every type the referral model reads by its own _lastUpdated cursor, "
        "store it (newest version wins), quarantine what cannot be read, and re-evaluate the "
        f"referrals. A bearer token, if needed, is read from {TOKEN_VARIABLE}.",
    )
    _server_options(sync)
    sync.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help=f"SQLAlchemy database URL (default {DEFAULT_DB})",
    )
    sync.add_argument("--rules", type=Path, metavar="FILE")
    sync.add_argument(
        "--as-of",
        type=parse_as_of,
        metavar="ISO8601",
        help="evaluate at this instant (default: when the sync started)",
    )
    sync.add_argument(
        "--json",
        action="store_true",
        help='JSON lines on stdout: one per page stored (event "page"), then "evaluated" '
        'and a "summary"',
    )
    sync.add_argument(
        "--page-size",
        type=_positive,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"_count of each search (default {DEFAULT_PAGE_SIZE}); a server may give fewer",
    )
    sync.add_argument(
        "--overlap-seconds",
        type=_count,
        default=DEFAULT_OVERLAP_SECONDS,
        metavar="S",
        help="re-read this much before the cursor, for clock skew and late commits "
        f"(default {DEFAULT_OVERLAP_SECONDS})",
    )
    sync.add_argument(
        "--every",
        type=_positive,
        metavar="SECONDS",
        help="sync again every SECONDS, for ever (a worker); a server that is down is tried "
        "again at the next round",
    )
    sync.add_argument(
        "--write-back",
        action="store_true",
        help="after the sync, write the outbox (Tasks, status updates) to the same server",
    )
    _writeback_options(sync)
    sync.set_defaults(run=_sync)

    writeback = commands.add_parser(
        "writeback",
        help="write the outbox's Tasks and Communications to the FHIR server, exactly once",
        description="Write the pending outbox entries: follow-up Tasks (conditional create, "
        "then If-Match updates), status updates to referring offices and contact attempts. "
        "Failed entries are retried with backoff, then dead-lettered (see `outbox`).",
    )
    _server_options(writeback, required=False)
    writeback.add_argument("--db", default=DEFAULT_DB, metavar="URL")
    writeback.add_argument("--rules", type=Path, metavar="FILE")
    writeback.add_argument(
        "--dry-run",
        action="store_true",
        help="print the pending writes (one JSON object per line) and send nothing",
    )
    _writeback_options(writeback)
    writeback.add_argument("--json", action="store_true", help="JSON lines on stdout")
    writeback.set_defaults(run=_writeback)

    box = commands.add_parser(
        "outbox",
        help="list the outbox (pending, done, dead writes) or retry dead-lettered entries",
    )
    box.add_argument("--db", default=DEFAULT_DB, metavar="URL")
    box.add_argument("--status", choices=["pending", "done", "dead", "superseded"])
    box.add_argument("--referral", metavar="KEY", help="only this referral's entries")
    box.add_argument("--limit", type=_positive, default=100, metavar="N")
    box.add_argument("--retry", nargs="+", metavar="KEY", help="put these dead entries back")
    box.add_argument("--retry-dead", action="store_true", help="put every dead entry back")
    box.set_defaults(run=_outbox)

    def actor_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--db", default=DEFAULT_DB, metavar="URL")
        command.add_argument("--rules", type=Path, metavar="FILE")
        command.add_argument("--referral", required=True, metavar="KEY", help="ServiceRequest/ID")
        command.add_argument(
            "--by",
            metavar="WHO",
            help="who acts: a reference (Practitioner/123) or a user name (default: $USER)",
        )
        command.add_argument("--by-name", metavar="NAME", help="how the resources name them")

    terms = terminology()
    contact = commands.add_parser(
        "contact", help="record an attempt to reach the patient (queued for write-back)"
    )
    actor_options(contact)
    contact.add_argument("--channel", required=True, choices=terms.contact_channels)
    contact.add_argument("--outcome", required=True, choices=terms.contact_outcomes)
    contact.add_argument("--at", type=parse_as_of, metavar="ISO8601", help="when (default: now)")
    contact.add_argument("--note", metavar="TEXT")
    contact.set_defaults(run=_contact)

    note = commands.add_parser(
        "note", help="write the note for the next person (queued for write-back on the Task)"
    )
    actor_options(note)
    note.add_argument("--contacted", metavar="WHO", help="who was contacted")
    note.add_argument("--requested", metavar="WHAT", help="what was requested")
    note.add_argument("--said", metavar="TEXT", help="what they said")
    note.add_argument(
        "--still-missing",
        nargs="+",
        choices=[item.code for item in terms.missing_items],
        metavar="ITEM",
        help="missing items still outstanding",
    )
    note.add_argument("--next-due", type=parse_as_of, metavar="ISO8601", help="next attempt due")
    note.set_defaults(run=_note)

    assign = commands.add_parser("assign", help="assign the referral's follow-up to an owner")
    actor_options(assign)
    assign.add_argument("--owner", metavar="REF", help="Practitioner/123, PractitionerRole/...")
    assign.add_argument("--owner-name", metavar="NAME", help="the owner's name")
    assign.set_defaults(run=_assign)

    imported = commands.add_parser(
        "import",
        help="put a Bundle, NDJSON file or Bulk Data export into the store (no server)",
        description="Validate and store the input as a sync would, then evaluate every stored "
        "referral (and queue the write-back it calls for).",
    )
    imported.add_argument("--input", required=True, type=Path, metavar="PATH")
    imported.add_argument("--db", default=DEFAULT_DB, metavar="URL")
    imported.add_argument("--rules", type=Path, metavar="FILE")
    imported.add_argument("--as-of", type=parse_as_of, metavar="ISO8601")
    imported.set_defaults(run=_import)

    serve = commands.add_parser(
        "serve", help="serve the SMART-on-FHIR work queue (waitress, production)"
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML configuration (database, secret_key, base_url, issuers, frame_ancestors); "
        "REFERRAL_ADAPTER_* variables override it",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_count, default=8000)
    serve.add_argument("--threads", type=_positive, default=8)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo",
        help="the work queue on synthetic data, on 127.0.0.1, behind a demo sign-in",
        description="Generate a synthetic practice's referrals, run them through the real "
        "pipeline into SQLite and serve the work queue on 127.0.0.1 with a demo sign-in. "
        "Needs no external server.",
    )
    demo.add_argument("--referrals", type=_positive, default=300, metavar="N")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--port", type=_count, default=8000)
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path("referral-adapter-demo"),
        metavar="DIR",
        help="where the data and the store go (default ./referral-adapter-demo, replaced)",
    )
    demo.set_defaults(run=_demo)

    referrals = commands.add_parser(
        "referrals",
        help="print the stored referrals, one JSON object per line as `segment` prints them",
    )
    referrals.add_argument("--db", default=DEFAULT_DB, metavar="URL")
    referrals.add_argument(
        "--as-of",
        type=parse_as_of,
        metavar="ISO8601",
        help="re-evaluate the stored resources at this instant first",
    )
    referrals.add_argument("--rules", type=Path, metavar="FILE")
    referrals.set_defaults(run=_referrals)

    weekly = commands.add_parser(
        "report",
        help="the weekly referral review: movement, aging, leakage (HTML, CSV or JSON)",
        description="Metrics for a period, computed in the store's database from the segment "
        "history: by segment and referring source, with the referrals behind every number.",
    )
    weekly.add_argument("--week", metavar="YYYY-Www", help="an ISO week, e.g. 2026-W48")
    weekly.add_argument("--from", dest="start", type=parse_as_of, metavar="ISO8601")
    weekly.add_argument("--to", dest="end", type=parse_as_of, metavar="ISO8601")
    weekly.add_argument("--format", choices=("html", "csv", "json"), default="html")
    weekly.add_argument("--db", default=DEFAULT_DB, metavar="URL")
    weekly.add_argument("--rules", type=Path, metavar="FILE")
    weekly.add_argument("--out", type=Path, metavar="FILE", help="default: standard output")
    weekly.add_argument("--stale-days", type=_count, default=7, metavar="N")
    weekly.add_argument("--open-limit-days", type=_count, default=30, metavar="N")
    weekly.add_argument("--trend-weeks", type=_positive, default=8, metavar="N")
    weekly.set_defaults(run=_weekly_report)
    return parser


def _writeback_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--no-batch",
        action="store_true",
        help="write-back: one request per resource instead of batch Bundles",
    )
    command.add_argument(
        "--batch-size",
        type=_positive,
        default=100,
        metavar="N",
        help="write-back: entries per batch Bundle (default 100)",
    )


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.run(args))
    except AdapterError as error:
        sys.stderr.write(f"{PROG}: {error}\n")
        return EXIT_UNREADABLE
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as error:
        # A bug of ours: one line naming the exception type (its text could quote input), and
        # the traceback only when asked for.
        if os.environ.get("REFERRAL_ADAPTER_DEBUG"):
            raise
        sys.stderr.write(
            f"{PROG}: internal error ({type(error).__name__}); "
            "set REFERRAL_ADAPTER_DEBUG=1 for the traceback\n"
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
