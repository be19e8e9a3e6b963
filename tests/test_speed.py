"""Time estimates rest on what this server measured, per model, precision and kind of pass."""

from __future__ import annotations

import pytest

from cbert_core.serving.speed import GRADIENT_COST, Estimate, Passes, SpeedBook, Training, fitted_seconds_per_row


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


def test_a_trace_is_estimated_from_timed_traces_only() -> None:
    book = SpeedBook()
    windows = Passes(forward=((100, 3),))
    book.record("m", "fp32", "forward", Passes(forward=((100, 1),)), 5.0)  # lean passes say nothing of a trace
    assert book.estimate("m", "fp32", 768, windows, traced=True) is None
    book.record("m", "fp32", "trace", Passes(forward=((100, 2),)), 1.0)  # 0.5 s per traced window
    found = book.estimate("m", "fp32", 768, windows, traced=True)
    assert found.seconds == pytest.approx(1.5) and "traces timed on this server" in found.basis
    assert book.estimate("m", "fp32", 768, windows).seconds == pytest.approx(15.0)  # lean: the forward rate
    assert book.estimate("m", "bf16", 768, windows, traced=True) is None


def plan(trained_share: float, cached: bool = True, epochs: float = 2.0) -> Training:
    return Training(examples=((100, 10),), validation=((100, 4),), epochs=epochs, trained_share=trained_share,
                    cached_trunk=cached)


def test_frozen_layers_make_training_cheaper_by_their_share() -> None:
    # Per example: the frozen share once (cached) or every epoch, the trained share forward + backward every epoch.
    head_only, half, whole = plan(0.0), plan(0.5), plan(1.0)
    assert head_only.forward_rows() == ((100, 10 * 1.0), (100, 4.0))
    assert half.forward_rows() == ((100, 10 * (0.5 + 2 * GRADIENT_COST * 0.5)), (100, 4.0))
    assert whole.forward_rows() == ((100, 10 * 2 * GRADIENT_COST), (100, 4.0))
    assert plan(0.5, cached=False).forward_rows()[0] == (100, 10 * (2 * 0.5 + 2 * GRADIENT_COST * 0.5))
    assert half.steps_rows == 20


def test_training_is_estimated_from_earlier_runs_with_the_model_copy_timed_apart() -> None:
    book = SpeedBook()
    assert book.estimate_training("m", 768, plan(0.5)) is None
    book.record("m", "bf16", "forward", Passes(forward=((100, 10),)), 1.0)
    assert book.estimate_training("m", 768, plan(0.5)) is None  # training runs in float32
    book.record("m", "fp32", "forward", Passes(forward=((100, 10),)), 2.0)  # 0.2 s per forward row
    rough = book.estimate_training("m", 768, plan(0.5))
    half_rows = 10 * (0.5 + 2 * GRADIENT_COST * 0.5) + 4
    assert rough.seconds == pytest.approx(0.2 * half_rows) and rough.basis.startswith("rough, ")

    book.record_training("m", plan(0.5), seconds=3.0 + 0.5 * half_rows, setup_seconds=3.0)  # 0.5 s per row
    measured = book.estimate_training("m", 768, plan(0.5))
    assert measured.seconds == pytest.approx(3.0 + 0.5 * half_rows)
    assert "training runs timed on this server at fp32" in measured.basis and "rough" not in measured.basis
    whole_rows = 10 * 2 * GRADIENT_COST + 4  # every layer trained: the measured rate per row, more rows
    assert book.estimate_training("m", 768, plan(1.0)).seconds == pytest.approx(3.0 + 0.5 * whole_rows)
    assert book.estimate("m", "fp32", 768, Passes(gradient=((100, 1),))).basis.startswith("rough")  # kept apart
