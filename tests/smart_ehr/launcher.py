"""Start and stop the test-only SMART EHR (`server.mjs` beside this file, Node + oidc-provider).

The server is a SMART App Launch authorization server under /oauth, a token-checking proxy in
front of a real FHIR server under /fhir, an EHR launch page and test hooks; README.md beside this
file describes it. This module writes its configuration into a state directory of its own
(`config.json`, with a free loopback port filled in), installs the npm dependencies with
`npm ci` when node_modules is missing or older than package-lock.json, starts
`node server.mjs CONFIG.json` with its output in `smart-ehr.log` there, and waits for
`GET {base}/health`.

    from tests.smart_ehr.launcher import SmartEhr
    ehr = SmartEhr(tmp_path / "ehr", {"fhir_upstream": fhir_base, "clients": [...], ...})
    base = ehr.start()          # "http://127.0.0.1:PORT"; FHIR base is base + "/fhir"
    ...
    ehr.stop()
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.server_process import (
    HUNG,
    free_port,
    launch,
    log_tail,
    stop,
    wait_until_up,
    with_retries,
)

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "server.mjs"
START_TIMEOUT_S = 30.0  # node starts in about a second; a hung start is tried again
STOP_TIMEOUT_S = 10.0
NPM_CI_TIMEOUT_S = 300.0


class SmartEhrStartError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


def node_modules_stale(project_dir: Path = HERE) -> bool:
    """True when node_modules is missing or older than package-lock.json."""
    modules = project_dir / "node_modules"
    lock = project_dir / "package-lock.json"
    if not (modules / "oidc-provider" / "package.json").exists():
        return True
    # npm ci writes node_modules/.package-lock.json last; fall back to the folder itself.
    marker = modules / ".package-lock.json"
    installed = marker if marker.exists() else modules
    return installed.stat().st_mtime < lock.stat().st_mtime


def ensure_node_modules(log_file: Path, project_dir: Path = HERE) -> None:
    """`npm ci --no-audit --no-fund` in project_dir when its node_modules is missing or stale.

    Serialised by a lock file in the temporary directory, so that test processes starting
    together (pytest-xdist) do not run two installs into the same folder.
    """
    if not node_modules_stale(project_dir):
        return
    key = hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"smart-ehr-npm-ci-{key}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if node_modules_stale(project_dir):
                _npm_ci(log_file, project_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _npm_ci(log_file: Path, project_dir: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SmartEhrStartError("npm not found on PATH: install Node.js 20+ with npm")
    with log_file.open("ab") as log:
        log.write(b"$ npm ci --no-audit --no-fund\n")
        log.flush()
        try:
            completed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=project_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=NPM_CI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise SmartEhrStartError(
                f"npm ci did not finish within {NPM_CI_TIMEOUT_S:.0f} s; last lines of "
                f"{log_file}:\n" + log_tail(log_file)
            ) from error
    if completed.returncode != 0:
        raise SmartEhrStartError(
            f"npm ci failed with exit code {completed.returncode}; last lines of {log_file}:\n"
            + log_tail(log_file)
        )


class SmartEhr:
    """One `node server.mjs` process with its own configuration file and log.

    `config` holds the keys of README.md except `port`, which start() chooses: fhir_upstream,
    clients, users, default_user, standalone_patient, access_token_ttl, deny_scopes.
    """

    def __init__(self, state_dir: Path, config: dict[str, Any]) -> None:
        self.state_dir = Path(state_dir)
        self.config = dict(config)
        self.log_file = self.state_dir / "smart-ehr.log"
        self.config_file = self.state_dir / "config.json"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.base_url = ""
        self.started_in_s = 0.0

    @property
    def fhir_base(self) -> str:
        """The FHIR base URL apps see (`{base}/fhir`); empty before start()."""
        return f"{self.base_url}/fhir" if self.base_url else ""

    def start(self, attempts: int = 3) -> str:
        """Start on a free loopback port, wait for /health, return the base URL."""
        if self.process is not None and self.process.poll() is None:
            return self.base_url
        node = shutil.which("node")
        if node is None:
            raise SmartEhrStartError("node not found on PATH: install Node.js 20+")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_node_modules(self.log_file)
        return with_retries(
            lambda: self._start_once(node), SmartEhrStartError, ("eaddrinuse", HUNG), attempts
        )

    def _start_once(self, node: str) -> str:
        port = free_port()
        self.config_file.write_text(json.dumps({**self.config, "port": port}, indent=2))
        self.process = launch(
            [node, str(SERVER_SCRIPT), str(self.config_file)],
            cwd=HERE,  # resolves `oidc-provider` from node_modules beside server.mjs
            env={**os.environ, "NODE_ENV": "test"},
            log_file=self.log_file,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            self.started_in_s = wait_until_up(
                self.process,
                f"{base_url}/health",
                name="smart-ehr",
                log_file=self.log_file,
                timeout_s=START_TIMEOUT_S,
                stop_timeout_s=STOP_TIMEOUT_S,
                error=SmartEhrStartError,
            )
        except SmartEhrStartError:
            self.process = None
            raise
        self.port = port
        self.base_url = base_url
        return base_url

    def stop(self) -> None:
        """SIGTERM (the server closes its listener), SIGKILL if it has not exited in time."""
        process, self.process = self.process, None
        stop(process, STOP_TIMEOUT_S)

    def __enter__(self) -> SmartEhr:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _main(argv: list[str]) -> int:
    """python -m tests.smart_ehr.launcher CONFIG.json [STATE_DIR]: start by hand, Ctrl-C stops."""
    import sys

    if not argv:
        print(_main.__doc__, file=sys.stderr)
        return 2
    config = json.loads(Path(argv[0]).read_text())
    config.pop("port", None)
    state_dir = Path(argv[1]) if len(argv) > 1 else Path(tempfile.mkdtemp(prefix="smart-ehr-"))
    ehr = SmartEhr(state_dir, config)
    try:
        print(ehr.start(), flush=True)
    except SmartEhrStartError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"ready after {ehr.started_in_s:.1f} s; log {ehr.log_file}", file=sys.stderr)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (and SIGINT, which a shell ignores for background jobs) stop the server too.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        while ehr.process is not None and ehr.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        ehr.stop()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
