"""The SMART view: `create_app` and its pages.

- `/launch` (EHR launch: `iss`, `launch`) and `/launch/standalone`: discovery, PKCE S256, a
  single-use state bound to this browser session, `aud` = `iss`, only configured issuers.
- `/launch/callback`: the code exchange; the granted scope decides what the user may do; a
  patient in the token response opens that patient's referrals, else the whole queue.
- `/queue`: lanes by primary segment and the same-day review lane, with filters and sorting.
- `/referrals/<id>`: one referral, its scripts, and the actions (contact attempt, note for the
  next person, owner, reviewed), each stored, audited and queued for write-back.
- `/demo` (demo mode only): a clearly labelled sign-in for synthetic data, no EHR.

Tokens never leave the server: not in the page, a script, a cookie or a log.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from flask import Flask, abort, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from adapter import actions, store
from adapter.errors import ConfigError
from adapter.planning import details_from_store, with_people
from adapter.practice_rules import load_rules
from fhir_profiles import terminology
from mappings.review import review_window
from mappings.rules import PracticeRules
from mappings.writeback import Owner, office_message, patient_message
from smart_launch import queue
from smart_launch.config import Issuer, ViewConfig
from smart_launch.sessions import SessionStore
from smart_launch.smart import (
    LaunchError,
    Scopes,
    authorize_url,
    discover,
    exchange_code,
    new_pkce,
    new_state,
    refresh_tokens,
)
from smart_launch.web import browser, install

__all__ = ["DEMO_USERS", "create_app"]

log = logging.getLogger("referral_adapter.view")
STATE_TTL_S = 600  # a launch must come back within ten minutes
DEMO_SCOPE = "user/*.cruds"
# The demo's sign-in: synthetic staff of the synthetic practice (adapter.personas).
DEMO_USERS: dict[str, dict[str, str | None]] = {
    "sam": {
        "reference": "Practitioner/prac-coord-sam-park",
        "display": "Sam Park (referral coordinator)",
    },
    "dana": {"reference": None, "display": "Dana Ortiz (scheduler)"},
}


def create_app(config: ViewConfig, engine: Engine | None = None) -> Flask:
    """The view's Flask app over the store at `config.database` (migrated on start)."""
    if engine is None:
        store.upgrade(config.database)
        engine = store.make_engine(config.database)
    rules = load_rules(config.rules)
    app = Flask(__name__)
    app.config["RA_CONFIG"] = config
    app.config["RA_RULES"] = rules
    app.config["RA_ENGINE"] = engine
    app.config["RA_QUEUE_CACHE"] = queue.QueueCache[queue.QueuePage](config.queue_cache_seconds)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.jinja_env.autoescape = True
    app.jinja_env.globals.update(
        terms=terminology(),
        csrf=lambda: browser().csrf_token,
        # The referral review covers the whole practice: not offered in a patient's launch.
        practice_wide=_practice_wide,
        demo=config.demo,
    )
    zone = rules.business_hours.zone

    def when(value: Any) -> str:
        """A time as staff read it: in the practice's time zone, with the zone named."""
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return str(value)
        if not isinstance(value, datetime):
            return "not set"
        local = value.astimezone(zone)
        return f"{local:%a %d %b %Y %H:%M} {local.tzname()}"

    app.jinja_env.filters["when"] = when
    install(app, SessionStore(engine, config.secret_key, timedelta(hours=config.session_hours)))
    _routes(app)
    return app


def _config() -> ViewConfig:
    found: ViewConfig = current_app.config["RA_CONFIG"]
    return found


def _rules() -> PracticeRules:
    found: PracticeRules = current_app.config["RA_RULES"]
    return found


def _engine() -> Engine:
    found: Engine = current_app.config["RA_ENGINE"]
    return found


def _http() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(_config().http_timeout_s), follow_redirects=False)


def _redirect_uri() -> str:
    base = _config().base_url or request.host_url.rstrip("/")
    return f"{base}/launch/callback"


def _actor() -> actions.Actor:
    user = browser().user or {}
    reference = user.get("reference")
    return actions.Actor(
        id=str(reference or user.get("id") or "unknown"),
        reference=reference if isinstance(reference, str) else None,
        display=user.get("display") if isinstance(user.get("display"), str) else None,
    )


def _scopes() -> Scopes:
    return Scopes.parse(str(browser().data.get("scope", "")))


def _refused(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", title=title, message=message), status


def _signed_in() -> bool:
    return browser().user is not None


def _practice_wide() -> bool:
    """A user-level session (no patient in its launch context)."""
    return not isinstance(browser().data.get("patient"), str)


def _keep_tokens_fresh() -> None:
    """Refresh the EHR's access token shortly before it expires (never from the page)."""
    session = browser()
    expires = session.secret.get("expires_at")
    refresh = session.secret.get("refresh_token")
    iss = session.data.get("iss")
    if (
        not isinstance(expires, int | float)
        or not isinstance(refresh, str)
        or not isinstance(iss, str)
    ):
        return
    if expires - time.time() > _config().refresh_margin_s:
        return
    issuer = _config().issuer(iss)
    if issuer is None:
        return
    try:
        with _http() as http:
            tokens = refresh_tokens(
                http,
                discover(http, issuer.iss),
                issuer,
                refresh,
                str(session.data.get("scope", "")),
            )
    except LaunchError as error:
        log.warning("token refresh failed for a session: %s", error)
        session.set_secret("refresh_token", None)
        return
    for key, value in tokens.secrets().items():
        session.set_secret(key, value)
    session.set("scope", tokens.scope)


def _routes(app: Flask) -> None:
    @app.get("/health")
    def health() -> tuple[str, int, dict[str, str]]:
        return "ok", 200, {"Content-Type": "text/plain"}

    @app.before_request
    def _fresh() -> None:
        if request.endpoint not in ("static", "health") and _signed_in():
            _keep_tokens_fresh()

    @app.get("/")
    def home() -> Response | str:
        if _signed_in():
            return redirect(url_for("work_queue"))
        return render_template("welcome.html", issuers=_config().issuers)

    # --- launch ---------------------------------------------------------------------------

    def _start(issuer: Issuer, launch: str | None, scope: str) -> Response | tuple[str, int]:
        try:
            with _http() as http:
                smart = discover(http, issuer.iss)
        except LaunchError as error:
            return _refused(502, "The EHR could not be reached", str(error))
        session = browser()
        state = new_state()
        verifier, challenge = new_pkce()
        pending = {
            k: v
            for k, v in dict(session.data.get("pending") or {}).items()
            if isinstance(v, dict) and v.get("created", 0) > time.time() - STATE_TTL_S
        }
        pending[state] = {"iss": issuer.iss, "created": time.time(), "standalone": launch is None}
        session.set("pending", pending)
        verifiers = dict(session.secret.get("verifiers") or {})
        verifiers[state] = verifier
        session.set_secret("verifiers", {k: v for k, v in verifiers.items() if k in pending})
        url = authorize_url(
            smart,
            issuer,
            redirect_uri=_redirect_uri(),
            scope=scope,
            state=state,
            code_challenge=challenge,
            launch=launch,
        )
        return redirect(url, code=302)

    @app.get("/launch")
    def ehr_launch() -> Response | tuple[str, int]:
        iss, launch = request.args.get("iss", ""), request.args.get("launch", "")
        if not iss or not launch:
            return _refused(
                400, "Not a SMART launch", "An EHR launch needs the iss and launch parameters."
            )
        issuer = _config().issuer(iss)
        if issuer is None:
            log.warning("launch refused: an issuer that is not configured")
            return _refused(
                403, "Unknown EHR", "This EHR is not configured to launch the referral view."
            )
        return _start(issuer, launch, issuer.scopes)

    @app.get("/launch/standalone")
    def standalone_launch() -> Response | tuple[str, int]:
        iss = request.args.get("iss") or (
            _config().issuers[0].iss if len(_config().issuers) == 1 else ""
        )
        issuer = _config().issuer(iss) if iss else None
        if issuer is None:
            return _refused(403, "Unknown EHR", "Choose an EHR this view is configured for.")
        return _start(issuer, None, issuer.standalone_scopes)

    @app.get("/launch/callback")
    def launch_callback() -> Response | tuple[str, int]:
        session = browser()
        state = request.args.get("state", "")
        pending = dict(session.data.get("pending") or {})
        started = pending.pop(state, None) if state else None
        verifiers = dict(session.secret.get("verifiers") or {})
        verifier = verifiers.pop(state, None) if state else None
        # Single use: the state is spent whatever happens next.
        session.set("pending", pending)
        session.set_secret("verifiers", verifiers)
        if not isinstance(started, dict) or not isinstance(verifier, str):
            log.warning("launch refused: unknown, reused or foreign state")
            return _refused(
                400,
                "Launch refused",
                "The launch's state is missing, unknown or already used. Start again from the EHR.",
            )
        if started.get("created", 0) < time.time() - STATE_TTL_S:
            return _refused(
                400, "Launch refused", "The launch took too long. Start again from the EHR."
            )
        if request.args.get("error"):
            return _refused(
                403,
                "The EHR did not authorize the view",
                "The EHR refused the launch. Ask your EHR administrator.",
            )
        code = request.args.get("code", "")
        issuer = _config().issuer(str(started.get("iss", "")))
        if not code or issuer is None:
            return _refused(400, "Launch refused", "The EHR sent no authorization code.")
        try:
            with _http() as http:
                tokens = exchange_code(
                    http,
                    discover(http, issuer.iss),
                    issuer,
                    code=code,
                    verifier=verifier,
                    redirect_uri=_redirect_uri(),
                )
        except LaunchError as error:
            log.warning("launch refused: %s", error)
            return _refused(403, "Launch refused", str(error))
        scopes = Scopes.parse(tokens.scope)
        if not (scopes.allows("ServiceRequest", "r") or scopes.allows("ServiceRequest", "s")):
            return _refused(
                403,
                "Not enough access",
                "The EHR granted no access to referrals (ServiceRequest), so there is nothing "
                "to show.",
            )
        fresh = current_app.extensions["ra_sessions"].rotate(session)
        g.browser = fresh
        patient = f"Patient/{tokens.patient}" if tokens.patient else None
        user_reference = _fhir_user_reference(tokens.fhir_user, issuer.iss)
        fresh.set(
            "user",
            {
                "id": user_reference or f"{issuer.client_id}-user",
                "reference": user_reference,
                "display": _user_name(tokens, user_reference, issuer),
            },
        )
        fresh.set("iss", issuer.iss)
        fresh.set("scope", tokens.scope)
        fresh.set("patient", patient)
        fresh.set("launch", "standalone" if started.get("standalone") else "ehr")
        for key, value in tokens.secrets().items():
            fresh.set_secret(key, value)
        return redirect(url_for("work_queue"))

    @app.get("/demo")
    def demo_signin() -> str | tuple[str, int]:
        if not _config().demo:
            abort(404)
        return render_template("demo.html", users=DEMO_USERS)

    @app.post("/demo")
    def demo_signin_post() -> Response:
        if not _config().demo:
            abort(404)
        chosen = DEMO_USERS.get(request.form.get("user", ""))
        if chosen is None:
            abort(400, description="Choose one of the demo users.")
        fresh = current_app.extensions["ra_sessions"].rotate(browser())
        g.browser = fresh
        fresh.set("user", {"id": chosen["reference"] or chosen["display"], **chosen})
        fresh.set("scope", DEMO_SCOPE)
        fresh.set("patient", None)
        fresh.set("launch", "demo")
        return redirect(url_for("work_queue"))

    @app.post("/signout")
    def sign_out() -> Response:
        browser().sign_out()
        return redirect(url_for("home"))

    # --- the queue ------------------------------------------------------------------------

    @app.get("/queue")
    def work_queue() -> Response | str | tuple[str, int]:
        if not _signed_in():
            return redirect(url_for("home"))
        filters = _filters()
        now = datetime.now(UTC)
        window = review_window(now, _rules())

        def compute() -> queue.QueuePage:
            with Session(_engine()) as session:
                found = queue.lanes(session, filters, now, window, _config().queue_page_size)
                sources = queue.source_names(session, filters.patient, filters.source)
            html = render_template("_lanes.html", lanes=found, filters=filters)
            return queue.QueuePage(found, sources, html)

        cache: queue.QueueCache[queue.QueuePage] = current_app.config["RA_QUEUE_CACHE"]
        page = cache.get((filters, window.since), compute)
        with Session(_engine()) as session, session.begin():
            actions.audit(
                session,
                _actor().id,
                "queue-view",
                patient=filters.patient,
                detail={"patients": page.patients, "filters": filters.query()},
                now=now,
            )
        return render_template(
            "queue.html",
            lanes_html=Markup(page.lanes_html),  # rendered with autoescaping by compute()
            filters=filters,
            sources=page.sources,
            source_limit=queue.SOURCE_CHOICES,
            window=window,
            bands=queue.BANDS,
            user=browser().user,
            patient=filters.patient,
            can_write=_can_write(),
            flash=browser().pop_flash(),
        )

    @app.get("/metrics")
    def metrics() -> Response | str | tuple[str, int]:
        """The weekly referral review (adapter.report), for a practice-wide session only."""
        from adapter.report import DEFINITIONS, Period, compute_report, week_label
        from adapter.report_render import charts

        if not _signed_in():
            return redirect(url_for("home"))
        if not _practice_wide():
            return _refused(
                403, "Not allowed", "The referral review covers the whole practice, not a patient."
            )
        now = datetime.now(UTC)
        monday = (now - timedelta(days=now.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        try:
            period = Period.week(request.args.get("week") or week_label(monday))
        except ConfigError:
            return _refused(400, "Not a week", "Give an ISO week such as 2026-W48.")
        with Session(_engine()) as session, session.begin():
            report = compute_report(session, period, _rules())
            actions.audit(
                session, _actor().id, "metrics-view", detail={"week": period.label}, now=now
            )
        return render_template(
            "metrics.html",
            report=report,
            charts=charts(report),
            definitions=DEFINITIONS,
            previous=week_label(period.start),
            following=week_label(period.end + timedelta(days=7)),
            limit=50,
            user=browser().user,
        )

    @app.get("/referrals/<rid>")
    def referral(rid: str) -> Response | str | tuple[str, int]:
        if not _signed_in():
            return redirect(url_for("home"))
        key = _allowed_referral(rid)
        with Session(_engine()) as session, session.begin():
            view = queue.referral_view(session, key)
            if view is None:
                abort(404)
            details = details_from_store(session, [key])
            named = with_people(session, details, {key: view.item.patient})
            scripts = None
            if key in named:
                scripts = {
                    "patient": patient_message(view.item.evaluation, named[key], _rules()),
                    "office": office_message(view.item.evaluation, named[key], _rules()),
                }
            actions.audit(
                session, _actor().id, "referral-view", referral=key, patient=view.item.patient
            )
            return render_template(
                "referral.html",
                view=view,
                item=view.item,
                scripts=scripts,
                user=browser().user,
                patient=browser().data.get("patient"),
                can_write=_can_write(),
                flash=browser().pop_flash(),
                now=datetime.now(UTC),
            )

    def _act(rid: str, done: str, action: Any) -> Response | tuple[str, int]:
        if not _signed_in():
            return redirect(url_for("home"))
        key = _allowed_referral(rid)
        if not _can_write():
            return _refused(
                403,
                "Not allowed",
                "Your EHR session does not allow recording actions (it granted no Task and "
                "Communication writes).",
            )
        try:
            with Session(_engine()) as session, session.begin():
                action(session, key)
        except ConfigError as error:
            browser().flash(f"Not recorded: {error}")
            return redirect(url_for("referral", rid=rid))
        current_app.config["RA_QUEUE_CACHE"].clear()  # the queue shows the action at once
        browser().flash(done)
        return redirect(url_for("referral", rid=rid))

    @app.post("/referrals/<rid>/contact")
    def record_contact(rid: str) -> Response | tuple[str, int]:
        form = request.form

        def run(session: Session, key: str) -> None:
            actions.record_contact(
                session,
                key,
                channel=form.get("channel", ""),
                outcome=form.get("outcome", ""),
                actor=_actor(),
                rules=_rules(),
                note=form.get("note") or None,
            )

        return _act(rid, "Contact attempt recorded and queued for write-back.", run)

    @app.post("/referrals/<rid>/note")
    def write_note(rid: str) -> Response | tuple[str, int]:
        form = request.form

        def run(session: Session, key: str) -> None:
            due = form.get("next_due") or None
            actions.write_note(
                session,
                key,
                actor=_actor(),
                rules=_rules(),
                contacted=form.get("contacted") or None,
                requested=form.get("requested") or None,
                response=form.get("said") or None,
                still_missing=form.getlist("still_missing"),
                next_attempt_due=_local_time(due) if due else None,
            )

        return _act(rid, "Note saved; the referral's Task is queued for write-back.", run)

    @app.post("/referrals/<rid>/assign")
    def assign(rid: str) -> Response | tuple[str, int]:
        form = request.form

        def run(session: Session, key: str) -> None:
            if form.get("owner") == "me":
                me = _actor()
                owner = Owner(me.reference, me.display or (None if me.reference else me.id))
            else:
                name = (form.get("owner_name") or "").strip()[:200]
                owner = Owner(None, name or None)
            actions.assign_owner(session, key, owner=owner, actor=_actor(), rules=_rules())

        return _act(rid, "Owner assigned; the referral's Task is queued for write-back.", run)

    @app.post("/referrals/<rid>/review")
    def mark_reviewed(rid: str) -> Response | tuple[str, int]:
        def run(session: Session, key: str) -> None:
            actions.mark_reviewed(session, key, actor=_actor(), rules=_rules())

        return _act(rid, "Marked reviewed.", run)

    @app.errorhandler(400)
    def bad_request(error: Any) -> tuple[str, int]:
        return _refused(400, "Request refused", getattr(error, "description", "Bad request"))

    @app.errorhandler(404)
    def not_found(error: Any) -> tuple[str, int]:
        return _refused(404, "Not found", "There is no such page or referral here.")

    @app.errorhandler(403)
    def forbidden(error: Any) -> tuple[str, int]:
        return _refused(403, "Not allowed", getattr(error, "description", "Not allowed"))


def _filters() -> queue.Filters:
    args = request.args
    terms = terminology()
    segment = args.get("segment") or None
    if segment not in (None, queue.REVIEW_LANE, *terms.segments):
        segment = None
    band = args.get("band") or None
    if band not in (None, *queue.BANDS):
        band = None
    sort = args.get("sort") or "due"
    if sort not in queue.SORTS:
        sort = "due"
    patient = browser().data.get("patient")
    return queue.Filters(
        segment=segment,
        band=band,
        source=(args.get("source") or None),
        owner=(args.get("owner") or None),
        overdue=args.get("overdue") == "1",
        sort=sort,
        patient=patient if isinstance(patient, str) else None,
    )


def _can_write() -> bool:
    scopes = _scopes()
    return (scopes.allows("Task", "c") or scopes.allows("Task", "u")) and scopes.allows(
        "Communication", "c"
    )


def _allowed_referral(rid: str) -> str:
    """The referral's key, if this session may see it (a patient launch: that patient's only)."""
    if not rid or "/" in rid or len(rid) > 64:
        abort(404)
    key = f"ServiceRequest/{rid}"
    patient = browser().data.get("patient")
    if isinstance(patient, str):
        with Session(_engine()) as session:
            found = store.stored_evaluation(session, key)
        if found is None or found.get("patient") != patient:
            abort(404)
    return key


def _local_time(text: str) -> datetime:
    """A datetime-local form value, read in the practice's business-hours time zone."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError("the next attempt's due time is not a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_rules().business_hours.zone)
    return moment.astimezone(UTC)


def _fhir_user_reference(fhir_user: str | None, iss: str) -> str | None:
    """`Practitioner/123` from the fhirUser claim (an absolute URL under the iss, or relative)."""
    if not fhir_user:
        return None
    tail = fhir_user.removeprefix(iss.rstrip("/") + "/")
    parts = tail.split("/")
    if len(parts) == 2 and parts[0] in (
        "Practitioner",
        "PractitionerRole",
        "Patient",
        "RelatedPerson",
        "Person",
    ):
        return tail
    return None


def _user_name(tokens: Any, reference: str | None, issuer: Issuer) -> str | None:
    """The user's name, read from the EHR with the new token (with a timeout); None if that
    fails: the view then names the user by reference."""
    if reference is None:
        return None
    try:
        with _http() as http:
            response = http.get(
                f"{issuer.iss}/{reference}",
                headers={
                    "Authorization": f"Bearer {tokens.access_token}",
                    "Accept": "application/fhir+json",
                },
            )
        if response.status_code != 200:
            return None
        return queue.display_name(response.json())
    except (httpx.HTTPError, ValueError):
        return None
