"""Real-browser tests of the SMART launch view: headless Chromium (Debian's package, driven by
Playwright through executable_path) opens the test EHR's launch page on http://127.0.0.1:PORT,
which frames the view on http://localhost:PORT2 (another site), and the view launches against
oidc-provider in tests/smart_ehr, in front of a real FHIR server (sekmet).

Started once per session: sekmet (loaded with the synthetic practice through `referral-adapter
load`), the SMART EHR (node), the view (waitress in a thread, over a SQLite store the same
practice went into through the real import pipeline) and Chromium. Each test gets a browser
context of its own (no cookies shared between tests).

Nothing skips: without Chromium, node or the npm packages, the fixtures fail with what to
install (scripts/browser-tools installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Frame,
    Page,
    Playwright,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from adapter import store
from adapter.ingest import ingest
from adapter.practice_rules import default_rules
from adapter.smart_auth import load_private_key
from adapter.store_models import Referral
from adapter.synth import synth_to_dir
from smart_launch import Issuer, ViewConfig, create_app
from smart_launch.sessions import SessionStore
from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ClientKey,
    LateApp,
    ViewServer,
    artifacts_folder,
)
from tests.sekmet.server import SekmetServer, SekmetStartError
from tests.smart_ehr.launcher import HERE as SMART_EHR_DIR
from tests.smart_ehr.launcher import SmartEhr, SmartEhrStartError

HOSTILE = "<img src=x onerror=alert(1)>"
CLIENT_ID = "referral-view"
SECRET_KEY = "browser-test-secret"
USER = {"fhirUser": "Practitioner/prac-coord-sam-park", "name": "Sam Park"}
AXE = SMART_EHR_DIR / "node_modules" / "axe-core" / "axe.min.js"


def _no_problem(where: str, what: str) -> None:
    raise AssertionError(f"the synthetic practice has an unreadable resource: {where}: {what}")


@dataclass(frozen=True)
class Stack:
    """Everything running for the session, and the facts the tests need about the data."""

    view_url: str  # http://localhost:PORT
    ehr_url: str  # http://127.0.0.1:PORT
    fhir_base: str  # the iss: ehr_url + "/fhir"
    ehr: SmartEhr
    engine: Engine
    client_key: ClientKey
    hostile_patient: str  # a patient id (no "Patient/")
    standalone_patient: str  # a patient id, the EHR's choice for a standalone launch

    def launch_page(self, patient: str | None = None) -> str:
        """The EHR's launch page, framing the view (a patient launch when `patient` is set)."""
        url = f"{self.ehr_url}/ehr/launch?app={quote(self.view_url + '/launch', safe='')}"
        return url + (f"&patient={quote(patient, safe='')}" if patient else "")

    def sessions(self) -> SessionStore:
        """The view's session store (decrypts what the view keeps secret)."""
        return SessionStore(self.engine, SECRET_KEY, timedelta(hours=8))

    def referrals_of(self, patient: str | None = None) -> list[str]:
        """Ids of the open referrals in the store (of one patient, if given), sorted."""
        with Session(self.engine) as session:
            query = select(Referral.key).where(Referral.state == "open")
            if patient is not None:
                query = query.where(Referral.patient == f"Patient/{patient}")
            return sorted(k.removeprefix("ServiceRequest/") for k in session.scalars(query))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    return artifacts_folder()


@pytest.fixture(scope="session")
def practice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A synthetic month of 30 referrals as a Bulk Data directory; the patient of the first
    referral that stays open is renamed to break HTML. (folder, that patient's id, the patient
    of another open referral, the EHR's standalone patient)."""
    folder = tmp_path_factory.mktemp("browser-practice")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    synth_to_dir(30, 11, today + timedelta(days=1), folder)

    def rows(kind: str) -> list[dict[str, Any]]:
        path = folder / f"{kind}.ndjson"
        return (
            [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
        )

    booked = {b["reference"] for a in rows("Appointment") for b in a.get("basedOn", [])}
    known = {p["id"] for p in rows("Patient")}
    # Patients of referrals that stay open (active, no appointment), in file order.
    subjects = [
        r["subject"]["reference"].removeprefix("Patient/")
        for r in rows("ServiceRequest")
        if r.get("status") == "active" and f"ServiceRequest/{r['id']}" not in booked
    ]
    subjects = [s for s in dict.fromkeys(subjects) if s in known]
    hostile, other = subjects[0], subjects[1]
    patients_file = folder / "Patient.ndjson"
    patients = rows("Patient")
    for patient in patients:
        if patient["id"] == hostile:
            patient["name"] = [{"family": HOSTILE, "given": ["Eve"]}]
    patients_file.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in patients))
    return folder, hostile, other


@pytest.fixture(scope="session")
def fhir_upstream(
    tmp_path_factory: pytest.TempPathFactory, practice: tuple[Path, str, str]
) -> Iterator[str]:
    """A sekmet FHIR server holding the practice (`referral-adapter load`), for the EHR."""
    server = SekmetServer(tmp_path_factory.mktemp("browser-sekmet"))
    try:
        base_url = server.start()
    except SekmetStartError as error:
        pytest.fail(f"sekmet did not start: {error}", pytrace=False)
    try:
        loaded = subprocess.run(
            [
                str(Path(sys.executable).with_name("referral-adapter")),
                "load",
                "--fhir-base",
                base_url,
                "--input",
                str(practice[0]),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if loaded.returncode != 0:
            pytest.fail(f"loading sekmet failed:\n{loaded.stderr[-3000:]}", pytrace=False)
        yield base_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    practice: tuple[Path, str, str],
    fhir_upstream: str,
) -> Iterator[Stack]:
    folder, hostile, other = practice
    state = tmp_path_factory.mktemp("browser-stack")
    database = f"sqlite+pysqlite:///{state / 'store.db'}"
    store.upgrade(database)
    engine = store.make_engine(database)
    ingest(folder, engine, default_rules(), datetime.now(UTC), _no_problem)
    key = ClientKey.create(state)
    late = LateApp()
    server = ViewServer(late)
    view_url = f"http://localhost:{server.port}"
    ehr = SmartEhr(
        state / "ehr",
        {
            "fhir_upstream": fhir_upstream,
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "redirect_uris": [f"{view_url}/launch/callback"],
                    "token_endpoint_auth_method": "private_key_jwt",
                    "jwks": key.jwks,
                }
            ],
            "users": {"sam": USER},
            "default_user": "sam",
            "standalone_patient": f"Patient/{other}",
            "access_token_ttl": 3600,
        },
    )
    if shutil.which("node") is None:
        pytest.fail(
            "node is not on PATH: the browser tests need Node.js 20.12+ with npm for the SMART "
            "EHR (tests/smart_ehr); then run scripts/browser-tools",
            pytrace=False,
        )
    try:
        ehr_url = ehr.start()
    except SmartEhrStartError as error:
        pytest.fail(f"the SMART EHR did not start: {error}", pytrace=False)
    config = ViewConfig(
        database=database,
        secret_key=SECRET_KEY,
        base_url=view_url,
        frame_ancestors=(ehr_url,),
        issuers=(
            Issuer(
                iss=ehr.fhir_base,
                client_id=CLIENT_ID,
                private_key=load_private_key(key.pem_file.read_bytes()),
                key_id=key.key_id,
            ),
        ),
        # SameSite=None; Secure; Partitioned, as in production: Chromium treats
        # http://localhost as a secure origin, so the cookie works inside the EHR's iframe.
        secure_cookies=True,
    )
    late.app = create_app(config, engine)
    server.start()
    try:
        yield Stack(
            view_url=view_url,
            ehr_url=ehr_url,
            fhir_base=ehr.fhir_base,
            ehr=ehr,
            engine=engine,
            client_key=key,
            hostile_patient=hostile,
            standalone_patient=other,
        )
    finally:
        server.stop()
        ehr.stop()
        engine.dispose()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium package "
            "(run scripts/browser-tools, or apt-get install chromium)",
            pytrace=False,
        )
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run tests/smart_ehr/setup.sh (npm ci)", pytrace=False)
    launched = playwright_driver.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


def new_page(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    return context.new_page()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a browser context of its own; fails the test on a JavaScript dialog, a script
    error or a console error (a CSP refusal is one) in the EHR page or the view. HTTP error
    statuses, which Chromium also logs as console errors, are the tests' to check."""
    opened = new_page(browser)
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(f"console: {message.text} at {message.location}")

    def on_script_error(error: PlaywrightError) -> None:
        errors.append(f"script error: {error}")

    opened.on("dialog", on_dialog)
    opened.on("console", on_console)
    opened.on("pageerror", on_script_error)
    try:
        yield opened
    finally:
        opened.context.close()
    assert not dialogs, f"a JavaScript dialog opened: {dialogs}"
    assert not errors, errors


def app_frame(page: Page) -> Frame:
    """The view's frame inside the EHR page."""
    handle = page.locator("iframe#app").element_handle()
    assert handle is not None
    frame = handle.content_frame()
    assert frame is not None
    return frame


def ehr_launch(page: Page, stack: Stack, patient: str | None = None) -> Frame:
    """Open the EHR's launch page and wait until the framed view shows the work queue."""
    page.goto(stack.launch_page(patient))
    frame = app_frame(page)
    frame.wait_for_url(f"{stack.view_url}/queue**")
    frame.wait_for_load_state()
    return frame


def shown_referrals(frame: Frame) -> list[str]:
    """Ids of the referrals whose cards the queue shows, sorted, each once."""
    hrefs = frame.locator("article.card h3 a").evaluate_all("links => links.map(a => a.pathname)")
    return sorted({h.removeprefix("/referrals/") for h in hrefs})
