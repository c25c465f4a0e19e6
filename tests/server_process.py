"""Starting and stopping a test server process (sekmet, the SMART EHR): a free loopback port,
the process with its output in a log file, a wait until its health URL answers 200, and a
stop that asks first (SIGTERM) and insists (SIGKILL) after a while. Each server module keeps its
own command, configuration and error type."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

# A start that hangs (seen once in many runs, cause unknown) is stopped and tried again on
# another port, as is one whose port another process took between probe and bind.
HUNG = "did not answer within"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_tail(log_file: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def with_retries(
    start_once: Callable[[], str], error: type[Exception], retry_on: Sequence[str], attempts: int
) -> str:
    """`start_once()`, again (up to `attempts` in all) when it fails with `error` whose message
    names one of `retry_on` (lower case)."""
    for attempt in range(1, attempts + 1):
        try:
            return start_once()
        except error as failure:
            if attempt == attempts or not any(m in str(failure).lower() for m in retry_on):
                raise
    raise AssertionError("unreachable")


def launch(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_file: Path
) -> subprocess.Popen[bytes]:
    """The server process in a session of its own, its output appended to `log_file`."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_up(
    process: subprocess.Popen[bytes],
    url: str,
    *,
    name: str,
    log_file: Path,
    timeout_s: float,
    stop_timeout_s: float,
    error: type[Exception],
) -> float:
    """Seconds until GET `url` answered 200. Raises `error` (with the log's tail) when the
    process exits first, or, after stopping it, when `timeout_s` pass without an answer."""
    started_at = time.monotonic()
    while time.monotonic() - started_at < timeout_s:
        if process.poll() is not None:
            raise error(
                f"{name} exited during start-up; last lines of {log_file}:\n" + log_tail(log_file)
            )
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - started_at
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(process, stop_timeout_s)
    raise error(f"{url} {HUNG} {timeout_s:.0f} s; last lines of {log_file}:\n" + log_tail(log_file))


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout_s`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
