"""How bench/load.py orders its runs and pools them, so a drifting machine does not favour one mode, and what
else was in flight during a visit."""

from __future__ import annotations

import math
import statistics

import pytest

from load_sessions import LoadReport, alternating_order, pooled_rate


def positions(order: list[str]) -> dict[str, float]:
    """Each mode's mean position in ``order``."""
    return {mode: statistics.mean(index for index, name in enumerate(order) if name == mode) for mode in set(order)}


def test_one_pass_runs_each_mode_once_in_the_order_given() -> None:
    assert alternating_order(["scheduler", "bypassed"], 1) == ["scheduler", "bypassed"]


@pytest.mark.parametrize("modes", [["scheduler", "bypassed"], ["scheduler", "scheduler-1-slot", "bypassed"]])
@pytest.mark.parametrize("passes", [2, 4])
def test_every_second_pass_reverses_so_each_mode_sits_at_the_same_mean_position(modes: list[str],
                                                                               passes: int) -> None:
    order = alternating_order(modes, passes)
    assert order[:len(modes)] == modes and order[len(modes):2 * len(modes)] == modes[::-1]
    assert sorted(order) == sorted(modes * passes)
    # a steady drift of the machine's speed then weighs on every mode alike
    assert len(set(positions(order).values())) == 1, positions(order)


def test_an_odd_pass_count_leaves_the_modes_at_different_mean_positions() -> None:
    means = positions(alternating_order(["scheduler", "bypassed"], 3))  # scheduler, bypassed, bypassed, scheduler, ...
    assert means["scheduler"] != means["bypassed"]


def report(pieces: int, elapsed_s: float) -> LoadReport:
    made = LoadReport(sessions=1, seconds=elapsed_s, elapsed_s=elapsed_s)
    made.page_times.extend([0.1] * pieces)
    return made


def test_pooled_rate_is_all_the_work_over_all_the_time_not_the_mean_of_the_rates() -> None:
    runs = [report(10, 60.0), report(110, 120.0)]  # 10 and 55 a minute on their own
    assert pooled_rate(runs) == pytest.approx(120 / 180 * 60)
    assert pooled_rate(iter(runs)) == pytest.approx(40.0)  # a generator is read once


def test_pooled_rate_of_no_time_is_not_a_number() -> None:
    assert math.isnan(pooled_rate([]))


def test_in_flight_is_the_other_work_overlapping_a_visit_on_average() -> None:
    timed = LoadReport(sessions=3, seconds=10.0)
    timed.spans = [(0.0, 2.0), (1.0, 2.0), (1.5, 4.0), (5.0, 6.0)]  # the visit [0, 2] and three other pieces
    assert timed.in_flight(0.0, 2.0) == pytest.approx((1.0 + 0.5) / 2.0)  # half of it beside one, a quarter another
    assert timed.in_flight(5.0, 1.0) == pytest.approx(0.0)  # alone
