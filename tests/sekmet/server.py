"""Start and stop a sekmet-fhir test server (PyPI `sekmet-fhir`, a FHIR R4 server on SQLite).

`sekmet serve` reads everything from a settings file; this module writes one into a state
directory of its own: loopback only, a given port, the SQLite database in that directory, the
workflow simulator off (otherwise it answers ServiceRequests, Tasks and Appointments on its own
after 2 s), no inbound traffic log, no authentication, structural validation on (its default).
`base_url` in the settings must name the real port: sekmet builds next links, fullUrls and
Location headers from it, not from the request.

    python -m tests.sekmet.server [STATE_DIR]   start by hand, print the base URL, Ctrl-C stops
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.server_process import HUNG, free_port, launch, stop, wait_until_up, with_retries

START_TIMEOUT_S = 30.0  # it starts in about a second; a hung start is tried again
STOP_TIMEOUT_S = 15.0
# Variables sekmet's settings loader lets override the file: never inherited from the caller.
OVERRIDES = ("SEKMET_CONFIG", "SEKMET_BASE_URL", "SEKMET_DB", "SEKMET_PORT", "SEKMET_PUBLIC_URL")


class SekmetStartError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


def sekmet_executable() -> Path:
    """The `sekmet` console script of the running interpreter's environment."""
    return Path(sys.executable).with_name("sekmet")


def settings_for(state_dir: Path, port: int) -> dict[str, object]:
    data_dir = state_dir / "data"
    return {
        "base_url": f"http://127.0.0.1:{port}/fhir",
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "db_path": str(data_dir / "sekmet.db"),
        "simulator": {"enabled": False},
        "log_inbound": False,
        "server_auth": {"types": ["none"]},
        "validation": {"inbound": "strict"},
    }


class SekmetServer:
    """One `sekmet serve` process with its own settings file, database and log."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.log_file = state_dir / "sekmet.log"
        self.settings_file = state_dir / "settings.yaml"
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.started_in_s = 0.0

    def start(self, attempts: int = 3) -> str:
        """Start on a free loopback port, wait for /metadata, return the FHIR base URL."""
        executable = sekmet_executable()
        if not executable.exists():
            raise SekmetStartError(
                f"{executable} not found: install the test server with "
                f"`{sys.executable} -m pip install sekmet-fhir`"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return with_retries(
            lambda: self._start_once(executable),
            SekmetStartError,
            ("address already in use", HUNG),
            attempts,
        )

    def _start_once(self, executable: Path) -> str:
        port = free_port()
        # JSON is YAML: no YAML writer needed.
        self.settings_file.write_text(json.dumps(settings_for(self.state_dir, port), indent=2))
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
        env["_TYPER_STANDARD_TRACEBACK"] = "1"  # plain tracebacks in the log, no boxes
        self.process = launch(
            [str(executable), "serve", "--config", str(self.settings_file)],
            cwd=self.state_dir,  # sekmet resolves relative paths (keys/, data/) from here
            env=env,
            log_file=self.log_file,
        )
        base_url = f"http://127.0.0.1:{port}/fhir"
        try:
            self.started_in_s = wait_until_up(
                self.process,
                f"{base_url}/metadata",
                name="sekmet",
                log_file=self.log_file,
                timeout_s=START_TIMEOUT_S,
                stop_timeout_s=STOP_TIMEOUT_S,
                error=SekmetStartError,
            )
        except SekmetStartError:
            self.process = None
            raise
        self.base_url = base_url
        return base_url

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down cleanly), SIGKILL if it has not exited in time."""
        process, self.process = self.process, None
        stop(process, STOP_TIMEOUT_S)


def _main(argv: list[str]) -> int:
    import tempfile

    state_dir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="sekmet-"))
    server = SekmetServer(state_dir)
    try:
        print(server.start(), flush=True)
    except SekmetStartError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"ready after {server.started_in_s:.1f} s; log {server.log_file}", file=sys.stderr)
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
