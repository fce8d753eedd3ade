"""The ingest benchmark's arithmetic: slices of several wrk runs merged into one latency distribution, and
ratios taken between apps measured in the same round. The benchmark itself does not run in the tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from ingest import (  # noqa: E402 - the bench's modules import each other by their bare names
    median_ratio,
    workers_note,
    workers_text,
)
from loadgen import WrkResult, merged_latency  # noqa: E402


def run(requests: int, latencies_ms: list[float], seconds: float = 1.0) -> WrkResult:
    """A wrk run whose requests took these latencies, summarised as wrk's script does: the latency at every
    0.1 %, the smallest value at or above that share of the requests."""
    ordered = sorted(latencies_ms)
    quantiles = [ordered[max(0, -(-step * len(ordered) // 1000) - 1)] for step in range(1, 1001)]
    return WrkResult(requests=requests, duration_s=seconds, statuses={"200": requests}, errors={},
                     latency_ms={"p99": quantiles[989], "max": ordered[-1]}, quantiles_ms=quantiles)


def test_one_run_keeps_its_own_percentiles():
    only = run(1000, [float(n) for n in range(1, 1001)])
    merged = merged_latency([only])
    assert merged["p50"] == 500.0
    assert merged["p90"] == 900.0
    assert merged["p99"] == only.latency_ms["p99"] == 990.0
    assert merged["max"] == 1000.0


def test_a_slow_run_among_fast_ones_moves_the_merged_p99():
    fast = [run(1000, [1.0] * 1000) for _ in range(9)]
    slow = run(1000, [1.0] * 800 + [50.0] * 200)  # a fifth of one run in ten: 2 % of all requests
    merged = merged_latency([*fast, slow])
    assert merged["p50"] == 1.0
    assert merged["p99"] == 50.0  # the median of the runs' own p99s would say 1 ms
    assert merged["max"] == 50.0


def test_runs_weigh_by_their_requests():
    many_fast = run(9000, [2.0] * 9000)
    few_slow = run(1000, [30.0] * 1000)
    merged = merged_latency([many_fast, few_slow])
    assert merged["p50"] == 2.0
    assert merged["p90"] == 2.0
    assert merged["p99"] == 30.0


def test_the_ratio_is_the_median_of_each_rounds_own_ratio():
    # The machine slows by half in the middle: the rounds' ratios stay 1.25 while the totals would say otherwise.
    mine = [run(1250, [1.0] * 10), run(625, [1.0] * 10), run(1250, [1.0] * 10)]
    theirs = [run(1000, [1.0] * 10), run(500, [1.0] * 10), run(1000, [1.0] * 10)]
    assert median_ratio(mine, theirs) == pytest.approx((1.25, 1.25, 1.25))
    # One round disturbed (the reference slowed by other load): the median does not follow it.
    disturbed = [run(1000, [1.0] * 10), run(1500, [1.0] * 10), run(1000, [1.0] * 10)]
    assert median_ratio(disturbed, theirs) == pytest.approx((1.0, 1.0, 3.0))


def test_no_ratio_without_rounds_of_the_reference():
    assert median_ratio([run(100, [1.0])], []) is None


def test_the_title_names_each_number_of_workers_with_the_apps_that_ran_it():
    assert workers_text({"ceiling": 3, "flask_rq": 3, "sqlite": 3}) == "3 sync workers"
    assert (workers_text({"ceiling": 2, "flask_rq": 2, "sqlite": 2, "postgresql": 3})
            == "sync workers: 2 (ceiling, flask_rq, sqlite); 3 (postgresql)")


def test_the_workers_note_says_when_web_concurrency_set_them_for_every_app():
    assert workers_note("4") == "sync workers: WEB_CONCURRENCY=4 in the environment, for every app"
    assert workers_note(None).startswith("sync workers: gunicorn.conf.py starts one per core on SQLite")
    assert workers_note("") == workers_note(None)  # empty is unset, as gunicorn.conf.py reads it
