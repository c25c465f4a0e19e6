"""The queue's shared lanes (smart_launch.queue.QueueCache): one computation per key while
fresh, the previous value to everyone else while one request refreshes it, nothing kept from a
computation an action made stale."""

from __future__ import annotations

import threading
import time

from smart_launch.queue import QueueCache


def test_a_fresh_entry_is_computed_once() -> None:
    cache: QueueCache[int] = QueueCache(60)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get("k", compute) == 1
    assert cache.get("k", compute) == 1
    assert cache.get("other", compute) == 2
    assert len(calls) == 2


def test_while_one_request_refreshes_the_others_get_the_previous_value() -> None:
    cache: QueueCache[str] = QueueCache(0.01)
    assert cache.get("k", lambda: "old") == "old"
    time.sleep(0.02)  # the entry is due
    started, release = threading.Event(), threading.Event()
    results: list[str] = []

    def slow() -> str:
        started.set()
        release.wait(10)
        return "new"

    refresher = threading.Thread(target=lambda: results.append(cache.get("k", slow)))
    refresher.start()
    assert started.wait(10)
    # Not computed a second time, not waiting: the entry being replaced.
    assert cache.get("k", lambda: "another computation") == "old"
    release.set()
    refresher.join(10)
    assert results == ["new"]
    assert cache.get("k", lambda: "another computation") == "new"


def test_a_computation_overtaken_by_an_action_is_not_kept() -> None:
    cache: QueueCache[str] = QueueCache(60)

    def stale() -> str:
        cache.clear()  # an action lands while the lanes are computed
        return "before the action"

    assert cache.get("k", stale) == "before the action"
    assert cache.get("k", lambda: "after the action") == "after the action"


def test_nothing_is_kept_with_zero_seconds() -> None:
    cache: QueueCache[int] = QueueCache(0)
    calls: list[int] = []
    for _ in range(3):
        cache.get("k", lambda: calls.append(1) or len(calls))
    assert len(calls) == 3


def test_with_nothing_kept_yet_the_others_wait_for_the_one_computation() -> None:
    cache: QueueCache[str] = QueueCache(60)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    results: list[str] = []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(10)
        return "computed once"

    first = threading.Thread(target=lambda: results.append(cache.get("k", slow)))
    first.start()
    assert started.wait(10)
    waiters = [
        threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(4)
    ]
    for waiter in waiters:
        waiter.start()
    release.set()
    for thread in [first, *waiters]:
        thread.join(10)
    assert results == ["computed once"] * 5
    assert len(calls) == 1


def test_when_the_one_computation_fails_a_waiter_computes_it() -> None:
    cache: QueueCache[str] = QueueCache(60)
    started, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def failing() -> str:
        started.set()
        release.wait(10)
        raise RuntimeError("the store went away")

    def first() -> None:
        try:
            cache.get("k", failing)
        except RuntimeError:
            outcomes.append("failed")

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(10)
    waiter = threading.Thread(target=lambda: outcomes.append(cache.get("k", lambda: "retried")))
    waiter.start()
    release.set()
    thread.join(10)
    waiter.join(10)
    assert sorted(outcomes) == ["failed", "retried"]
