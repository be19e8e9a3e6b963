"""How fast this server runs a model, measured, and estimates of an analysis before it runs.

Every analysis the server runs is timed and recorded per model, precision and kind of pass:
the trace of a note (``"trace"``: one row per window, the first analysis of every note), lean
forward passes (``"forward"``: predictions, occlusion, head scans, faithfulness) and gradient
passes (``"gradient"``: forward + backward, the attribution methods), and fine-tuning runs
(``"training"``, see :class:`Training`). A pass's cost per row
grows faster than its length (attention is quadratic; long backward passes are memory-bound),
so the seconds per row are fitted as a power of the positions, ``c * positions ** p``, to the
recent measurements of that kind (``p`` from the cost model while only one length was seen).

An estimate uses the measured kind; a kind not run yet is derived from another (a lean
forward row costs what a trace row costs; a gradient row about :data:`GRADIENT_COST` forward
rows) and says so. Before anything was measured there is no estimate: the app says the time
is measured on the first run instead of guessing.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

RateKind = Literal["trace", "forward", "gradient", "training"]
ProjectionKind = Literal["umap", "tsne"]
GRADIENT_COST = 3.0  # a forward + backward row, in forward rows (used until a gradient pass was measured)
TRAINING_PRECISION = "fp32"  # fine-tuning always runs in float32
KEPT_MEASUREMENTS = 16  # per (model, precision, kind): the most recent ones
EXPONENT_RANGE = (0.8, 2.5)  # fitted exponents outside this are clipped (noise on a shared machine)


@dataclass(frozen=True, kw_only=True)
class Passes:
    """The passes an analysis will run through the model: (positions, rows) per batch shape, by kind."""

    forward: tuple[tuple[int, int], ...] = ()  # lean forward passes (no gradient)
    gradient: tuple[tuple[int, int], ...] = ()  # forward + backward passes

    def __add__(self, other: Passes) -> Passes:
        return Passes(forward=self.forward + other.forward, gradient=self.gradient + other.gradient)

    @property
    def rows(self) -> int:
        return sum(rows for _positions, rows in self.forward + self.gradient)


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """How long an analysis should take on this server, and what the figure rests on."""

    seconds: float
    basis: str  # e.g. "measured on this server: gradient passes of this model at fp32"

    def text(self) -> str:
        """"under a second" / "about 25 s" / "about 3 min"."""
        if self.seconds < 1.0:
            return "under a second"
        if self.seconds < 90:
            return f"about {self.seconds:.0f} s"
        return f"about {self.seconds / 60:.0f} min"


@dataclass(frozen=True, kw_only=True)
class Training:
    """The work of a fine-tuning run, for estimates (made by ``cbert_core.training.finetune.planned_passes``).

    A training step runs only part of the model: the frozen bottom (the embeddings and the
    layers below the trained ones) needs no backward pass and, when its outputs are cached,
    runs once for the whole run instead of every epoch; the trained top layers run forward
    and backward at every step. So the run is counted in forward rows of the whole model, by
    the share of the encoder's layers each part covers: per training example,
    ``(1 - trained_share)`` once (cached) or every epoch, plus ``epochs * GRADIENT_COST *
    trained_share``; one row per held-out example (the check at the end). The head and the
    optimiser (a few vectors per example) are not counted. Building the private model copy
    costs a fixed time, measured on its own (``setup_seconds`` in :meth:`SpeedBook.record_training`).
    """

    examples: tuple[tuple[int, int], ...]  # (positions, training examples), each cut to the longest allowed
    validation: tuple[tuple[int, int], ...]  # (positions, held-out examples)
    epochs: float  # epochs run (a fraction when a step limit ends the run early)
    trained_share: float  # trained encoder layers / all encoder layers (0: the head only)
    cached_trunk: bool  # the frozen bottom runs once (True) or at every epoch (False)

    @property
    def steps_rows(self) -> int:
        """Example-steps trained: epochs x training examples."""
        return round(self.epochs * sum(count for _positions, count in self.examples))

    def forward_rows(self) -> tuple[tuple[int, float], ...]:
        """(positions, forward rows of the whole model that the run costs), by the cost model above."""
        frozen = (1.0 - self.trained_share) * (1.0 if self.cached_trunk else self.epochs)
        per_example = frozen + self.epochs * GRADIENT_COST * self.trained_share
        return (tuple((t, count * per_example) for t, count in self.examples if count)
                + tuple((t, float(count)) for t, count in self.validation if count))


def fitted_seconds_per_row(measurements: list[tuple[int, int, float]], positions: int, hidden: int) -> float:
    """Seconds per row at ``positions`` from (positions, rows, seconds) measurements, by a power-law fit.

    With a single length measured, the exponent comes from the cost model: a row of ``t``
    positions through a width-``hidden`` encoder costs about ``t * (1 + t / (6 * hidden))``
    (projections and feed-forward ``24 t d^2``, attention ``4 t^2 d`` multiply-adds per layer).
    """
    points = [(math.log(t), math.log(seconds / rows)) for t, rows, seconds in measurements if t > 0 and rows > 0]
    xs = [x for x, _y in points]
    if len({round(x, 6) for x in xs}) >= 2:
        mean_x, mean_y = sum(xs) / len(xs), sum(y for _x, y in points) / len(points)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
        slope = min(max(slope, EXPONENT_RANGE[0]), EXPONENT_RANGE[1])
        return math.exp(mean_y + slope * (math.log(positions) - mean_x))
    nearest_t, rows, seconds = min(measurements, key=lambda m: abs(math.log(m[0]) - math.log(positions)))

    def cost(t: int) -> float:
        return t * (1.0 + t / (6.0 * max(hidden, 1)))

    return seconds / rows * cost(positions) / cost(nearest_t)


@dataclass
class SpeedBook:
    """Recent measurements per (model key, precision, kind); safe to share between threads (sessions)."""

    measurements: dict[tuple[str, str, RateKind], deque] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)  # latest time to build a model copy to train
    point_seconds: dict[ProjectionKind, float] = field(default_factory=dict)  # latest seconds per projected point
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, model_key: str, precision: str, kind: RateKind, passes: Passes, seconds: float) -> None:
        """Record that ``passes`` took ``seconds``, as one measurement at their row-weighted mean length."""
        shapes = passes.gradient if kind == "gradient" else passes.forward
        rows = sum(count for _positions, count in shapes)
        if rows <= 0 or seconds <= 0:
            return
        positions = round(sum(t * count for t, count in shapes) / rows)
        with self.lock:
            kept = self.measurements.setdefault((model_key, precision, kind), deque(maxlen=KEPT_MEASUREMENTS))
            kept.append((max(positions, 1), rows, float(seconds)))

    def _measured(self, model_key: str, precision: str, kind: RateKind) -> list[tuple[int, int, float]]:
        with self.lock:
            return list(self.measurements.get((model_key, precision, kind), ()))

    def estimate(self, model_key: str, precision: str, hidden: int, passes: Passes, *,
                 traced: bool = False) -> Estimate | None:
        """Seconds ``passes`` should take on this server, or None when nothing was measured for the model.

        ``traced``: the forward passes are a trace's (every layer's attention captured), priced
        from the model's timed traces only.
        """
        trace = self._measured(model_key, precision, "trace")
        if traced:
            if not trace or passes.gradient:
                return None
            seconds = sum(count * fitted_seconds_per_row(trace, t, hidden) for t, count in passes.forward)
            return Estimate(seconds=seconds, basis=f"from this model's traces timed on this server at {precision}")
        forward = self._measured(model_key, precision, "forward")
        gradient = self._measured(model_key, precision, "gradient")
        forward_source, forward_factor = (forward, 1.0) if forward else (trace, 1.0)
        if gradient:
            gradient_source, gradient_factor = gradient, 1.0
        else:
            gradient_source, gradient_factor = forward_source, GRADIENT_COST
        if (passes.forward and not forward_source) or (passes.gradient and not gradient_source):
            return None
        seconds = sum(count * forward_factor * fitted_seconds_per_row(forward_source, t, hidden)
                      for t, count in passes.forward)
        seconds += sum(count * gradient_factor * fitted_seconds_per_row(gradient_source, t, hidden)
                       for t, count in passes.gradient)
        if passes.gradient:
            measured, rough = ("gradient passes", False) if gradient else ("analyses", True)
        else:
            measured, rough = ("forward passes", False) if forward else ("analyses", False)
        basis = f"{'rough, ' if rough else ''}from this model's {measured} timed on this server at {precision}"
        return Estimate(seconds=seconds, basis=basis)

    def record_training(self, model_key: str, plan: Training, seconds: float, setup_seconds: float) -> None:
        """Record that a fine-tuning run of ``plan`` took ``seconds``, ``setup_seconds`` of them building the model."""
        rows = plan.forward_rows()
        total = sum(count for _positions, count in rows)
        work = seconds - setup_seconds
        if total <= 0 or work <= 0:
            return
        positions = round(sum(t * count for t, count in rows) / total)
        with self.lock:
            self.setup_seconds[model_key] = max(float(setup_seconds), 0.0)
            kept = self.measurements.setdefault((model_key, TRAINING_PRECISION, "training"),
                                                deque(maxlen=KEPT_MEASUREMENTS))
            kept.append((max(positions, 1), total, float(work)))

    def estimate_training(self, model_key: str, hidden: int, plan: Training) -> Estimate | None:
        """Seconds a fine-tuning run of ``plan`` should take, or None when nothing was measured for the model.

        From this model's earlier training runs; before one ran, roughly, from its analyses
        (forward rows at float32; building the model copy not counted).
        """
        training = self._measured(model_key, TRAINING_PRECISION, "training")
        source, setup, measured = training, self.setup_seconds.get(model_key, 0.0), "training runs"
        if not training:  # a training row costs what a forward row costs, by the cost model of Training
            source = (self._measured(model_key, TRAINING_PRECISION, "forward")
                      or self._measured(model_key, TRAINING_PRECISION, "trace"))
            setup, measured = 0.0, "analyses"
        if not source:
            return None
        seconds = setup + sum(count * fitted_seconds_per_row(source, t, hidden) for t, count in plan.forward_rows())
        rough = "" if training else "rough, "
        return Estimate(seconds=seconds,
                        basis=f"{rough}from this model's {measured} timed on this server at {TRAINING_PRECISION}")

    def record_points(self, kind: ProjectionKind, points: int, seconds: float) -> None:
        """Record that a projection of ``points`` points took ``seconds`` (UMAP and t-SNE run on the CPU)."""
        if points > 0 and seconds > 0:
            with self.lock:
                self.point_seconds[kind] = seconds / points

    def estimate_points(self, kind: ProjectionKind, points: int) -> Estimate | None:
        """Seconds a projection of ``points`` points should take, from the last one run here."""
        with self.lock:
            rate = self.point_seconds.get(kind)
        if rate is None:
            return None
        return Estimate(seconds=rate * points, basis=f"from the last {kind.upper()} run on this server")
