"""The test servers' start helper: a hung start is stopped and named as such (so it is tried
again), an early exit is reported with the log, and retries stop at the first other error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.server_process import HUNG, free_port, launch, wait_until_up, with_retries


class Failed(RuntimeError):
    pass


def test_a_hung_start_is_stopped_and_named(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    process = launch(
        [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"],
        cwd=tmp_path,
        env={},
        log_file=log,
    )
    url = f"http://127.0.0.1:{free_port()}/health"  # nobody listens there
    with pytest.raises(Failed, match=HUNG) as raised:
        wait_until_up(
            process, url, name="t", log_file=log, timeout_s=0.5, stop_timeout_s=5, error=Failed
        )
    assert process.poll() is not None  # stopped, not left running
    assert "starting" in str(raised.value)


def test_an_early_exit_is_reported_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    process = launch(
        [sys.executable, "-c", "print('no config', flush=True); raise SystemExit(3)"],
        cwd=tmp_path,
        env={},
        log_file=log,
    )
    process.wait(timeout=30)
    with pytest.raises(Failed, match="exited during start-up") as raised:
        wait_until_up(
            process,
            f"http://127.0.0.1:{free_port()}/",
            name="t",
            log_file=log,
            timeout_s=30,
            stop_timeout_s=5,
            error=Failed,
        )
    assert "no config" in str(raised.value)


def test_retries_only_for_the_named_failures() -> None:
    calls: list[str] = []

    def flaky() -> str:
        calls.append("x")
        if len(calls) < 3:
            raise Failed(f"http://x {HUNG} 30 s")
        return "up"

    assert with_retries(flaky, Failed, (HUNG,), attempts=3) == "up"
    assert len(calls) == 3

    def broken() -> str:
        calls.append("y")
        raise Failed("bad settings")

    with pytest.raises(Failed, match="bad settings"):
        with_retries(broken, Failed, (HUNG,), attempts=3)
    assert calls.count("y") == 1
