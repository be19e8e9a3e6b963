"""Time estimates rest on what this server measured, per model, precision and kind of pass."""

from __future__ import annotations

import pytest

from cbert_core.speed import GRADIENT_COST, Estimate, Passes, SpeedBook, fitted_seconds_per_row


def power(t: int, c: float = 2e-4, p: float = 1.5) -> float:
    return c * t ** p


def test_seconds_per_row_follow_a_power_law_fitted_to_the_measured_lengths() -> None:
    measured = [(64, 4, 4 * power(64)), (256, 2, 2 * power(256)), (128, 1, power(128))]
    for t in (32, 200, 512):
        assert fitted_seconds_per_row(measured, t, hidden=768) == pytest.approx(power(t), rel=1e-9)


def test_one_measured_length_scales_by_the_cost_model() -> None:
    hidden = 384
    measured = [(100, 10, 10 * 0.05)]  # 0.05 s per row of 100 positions

    def cost(t: int) -> float:  # projections + feed-forward linear in t, attention quadratic
        return t * (1 + t / (6 * hidden))

    assert fitted_seconds_per_row(measured, 400, hidden) == pytest.approx(0.05 * cost(400) / cost(100))


def test_estimates_use_the_kind_measured_and_derive_the_others() -> None:
    book = SpeedBook()
    passes = Passes(forward=((128, 2),), gradient=((128, 50),))
    assert book.estimate("m", "fp32", 768, passes) is None  # nothing measured: no guess

    book.record("m", "fp32", "trace", Passes(forward=((128, 1),)), 0.2)
    rough = book.estimate("m", "fp32", 768, passes)
    assert rough is not None and "rough" in rough.basis
    assert rough.seconds == pytest.approx(2 * 0.2 + 50 * GRADIENT_COST * 0.2)
    assert book.estimate("m", "bf16", 768, passes) is None  # precision is part of the speed
    assert book.estimate("other", "fp32", 768, passes) is None

    book.record("m", "fp32", "gradient", Passes(gradient=((128, 20),)), 10.0)  # 0.5 s per gradient row
    measured = book.estimate("m", "fp32", 768, passes)
    assert "gradient passes" in measured.basis and "rough" not in measured.basis
    assert measured.seconds == pytest.approx(2 * 0.2 + 50 * 0.5)


def test_a_measurement_is_taken_at_the_row_weighted_length() -> None:
    book = SpeedBook()
    book.record("m", "fp32", "forward", Passes(forward=((100, 3), (200, 1))), 4.0)
    ((positions, rows, seconds),) = book.measurements[("m", "fp32", "forward")]
    assert (positions, rows, seconds) == (125, 4, 4.0)


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "under a second"), (24.6, "about 25 s"),
                                               (185.0, "about 3 min")])
def test_estimates_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert Estimate(seconds=seconds, basis="").text() == text


def test_projections_are_estimated_per_point_from_earlier_runs() -> None:
    book = SpeedBook()
    assert book.estimate_points("umap", 500) is None
    book.record_points("umap", 250, 5.0)
    found = book.estimate_points("umap", 500)
    assert found.seconds == pytest.approx(10.0) and "UMAP" in found.basis
    assert book.estimate_points("tsne", 500) is None
