"""Retry policy as data, Retry-After parsing, and the HTTP client factory for FHIR servers.

The policy decides *whether* and *how long* to wait; `adapter.fhir_client` does the waiting
through the policy's injectable `sleep`, so tests never wait.
"""

from __future__ import annotations

import email.utils
import os
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

__all__ = [
    "DEFAULT_TIMEOUT",
    "HTTP_LOG_VARIABLE",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "make_http_client",
    "parse_retry_after",
]

# Status codes worth sending the same request again for, each with why.
# See https://developer.mozilla.org/en-US/docs/Web/HTTP/Status
RETRYABLE_STATUSES: frozenset[int] = frozenset(
    {
        408,  # Request Timeout: the server gave up waiting for our request; nothing was done.
        429,  # Too Many Requests: rate limited; usually comes with Retry-After.
        # 500 is generic: servers answer it for blips and for real faults alike (Oracle Health
        # is known to do both), and we cannot tell them apart, so it is retried a few times.
        500,  # Internal Server Error
        502,  # Bad Gateway: a proxy in front of the server could not reach it (a blip).
        503,  # Service Unavailable: overloaded or restarting; usually comes with Retry-After.
        504,  # Gateway Timeout: a proxy gave up waiting for the server (a blip).
    }
)

# Statuses that mean the request was refused before anything ran on the server, so even a
# non-idempotent request (a plain create) may be sent again after them.
NOT_PROCESSED_STATUSES: frozenset[int] = frozenset({429})

# Connect, read, write and pool timeouts for FHIR calls: a search page of a few hundred
# resources on a busy EHR can take tens of seconds, a connection should not.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; every source of time and chance is injectable."""

    max_attempts: int = 5  # total attempts, the first one included
    backoff_base_s: float = 1.0  # the wait after the first failure, before jitter
    backoff_max_s: float = 30.0  # no exponential wait grows beyond this
    retry_after_cap_s: float = 60.0  # a server's Retry-After is honoured up to this
    retryable_statuses: frozenset[int] = RETRYABLE_STATUSES
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    random: Callable[[], float] = field(default=_random.random, repr=False)  # in [0, 1)
    now: Callable[[], datetime] = field(default=_now_utc, repr=False)  # aware, for HTTP dates

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), with equal jitter."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        # Half fixed, half random: spreads clients that failed together without ever
        # retrying immediately.
        return ceiling / 2 + self.random() * ceiling / 2

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before the next attempt: the server's Retry-After (capped) if usable."""
        parsed = parse_retry_after(retry_after, now=self.now) if retry_after else None
        if parsed is not None:
            return min(parsed, self.retry_after_cap_s)
        return self.backoff(attempt)


def parse_retry_after(value: str, *, now: Callable[[], datetime] = _now_utc) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or HTTP-date); None if unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def make_http_client(
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    *,
    max_connections: int = 10,
    verify: bool | str = True,
) -> httpx.Client:
    """A sync httpx.Client suited to FHIR servers: timeouts on every phase, bounded connections.

    Redirects are not followed: a FHIR API that redirects is misconfigured, and following one
    could carry the bearer token to another host.
    """
    if not isinstance(timeout, httpx.Timeout):
        timeout = httpx.Timeout(timeout)
    hooks: dict[str, list[Callable[[httpx.Response], None]]] = {}
    log = os.environ.get(HTTP_LOG_VARIABLE)
    if log:
        hooks["response"] = [_request_logger(log)]
    return httpx.Client(
        timeout=timeout,
        limits=httpx.Limits(max_connections=max_connections),
        follow_redirects=False,
        verify=verify,
        event_hooks=hooks,
    )


# A file to which every request's method, URL and status is appended, one line each: for an
# operator asking what the adapter asked of the server, and for bench/sync_bench.py's floor,
# which replays the same GETs. URLs carry resource ids and search parameters, no other data.
HTTP_LOG_VARIABLE = "REFERRAL_ADAPTER_HTTP_LOG"


def _request_logger(path: str) -> Callable[[httpx.Response], None]:
    def log(response: httpx.Response) -> None:
        request = response.request
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{request.method} {request.url} {response.status_code}\n")

    return log
