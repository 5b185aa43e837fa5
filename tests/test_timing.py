"""The one timing primitive (:mod:`arraycnn.timing`): interleaved rounds, warm-up, rotation,
the number of rounds, and its docstring examples. No speed is asserted."""

from __future__ import annotations

import doctest
import time

import pytest

import arraycnn.timing
from arraycnn.timing import interleaved_medians, time_call


def test_module_examples_pass():
    result = doctest.testmod(arraycnn.timing, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_interleaving_warms_each_contender_and_rotates_the_order():
    log: list[str] = []
    calls = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    medians = interleaved_medians(calls, rounds=3)
    assert set(medians) == {"a", "b", "c"} and all(t >= 0 for t in medians.values())
    # each round: every contender twice in a row (warm, timed), starting one further on
    assert log == [*"aabbcc", *"bbccaa", *"ccaabb"]


def test_without_warm_up_each_contender_runs_once_per_round():
    log: list[str] = []
    calls = {name: (lambda name=name: log.append(name)) for name in ("a", "b")}
    interleaved_medians(calls, rounds=2, warm=False)
    assert log == [*"ab", *"ba"]


def test_reduce_gets_every_timed_sample():
    calls = {"a": lambda: None, "b": lambda: None}
    assert interleaved_medians(calls, rounds=4, reduce=len) == {"a": 4, "b": 4}


def test_cheap_cases_get_more_rounds_until_the_time_budget():
    """At least ``rounds`` rounds; more while under ``min_seconds``; never past
    ``max_rounds``; ``min_seconds=0`` runs exactly ``rounds``."""
    log: list[str] = []
    calls = {"a": lambda: log.append("a") or time.sleep(0.001)}
    interleaved_medians(calls, rounds=2)
    assert len(log) == 2 * 2  # warm + timed per round
    log.clear()
    interleaved_medians(calls, rounds=2, min_seconds=0.05, max_rounds=1000)
    assert 2 * 5 <= len(log) <= 2 * 40  # ~0.05 s of 2 ms rounds
    log.clear()
    interleaved_medians(calls, rounds=2, min_seconds=10.0, max_rounds=7)
    assert len(log) == 2 * 7
    log.clear()
    interleaved_medians(calls, rounds=3, min_seconds=0.0, max_rounds=1)
    assert len(log) == 2 * 3  # rounds is a minimum even above max_rounds


def test_time_call_times_the_whole_call():
    seconds = time_call(lambda: time.sleep(0.02))
    assert seconds >= 0.02


def test_time_call_accepts_tuples_of_arrays():
    np = pytest.importorskip("numpy")
    assert time_call(lambda: (np.ones(3), np.zeros(2))) >= 0


def test_on_call_reports_each_timed_call_before_it_runs():
    """``on_call(name, done, planned)`` comes before each (warm + timed) pair, in the
    rotated order, with the count of calls done so far."""
    events: list[tuple[str, object]] = []
    calls = {name: (lambda name=name: events.append(("run", name))) for name in "ab"}

    def on_call(name, done, planned):
        events.append(("report", (name, done, planned)))

    interleaved_medians(calls, rounds=2, on_call=on_call)
    reports = [e[1] for e in events if e[0] == "report"]
    assert reports == [("a", 0, 4), ("b", 1, 4), ("b", 2, 4), ("a", 3, 4)]
    # each report is followed by its call's warm-up and timed run
    for i, event in enumerate(events):
        if event[0] == "report":
            assert events[i + 1 : i + 3] == [("run", event[1][0])] * 2
