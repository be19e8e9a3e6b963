"""How fast this server runs a model, measured, and estimates of an analysis before it runs.

Every analysis the server runs is timed and recorded per model, precision and kind of pass:
the trace of a note (``"trace"``: one row per window, the first analysis of every note), lean
forward passes (``"forward"``: predictions, occlusion, head scans, faithfulness) and gradient
passes (``"gradient"``: forward + backward, the attribution methods). A pass's cost per row
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

RateKind = Literal["trace", "forward", "gradient"]
ProjectionKind = Literal["umap", "tsne"]
GRADIENT_COST = 3.0  # a forward + backward row, in forward rows (used until a gradient pass was measured)
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

    def estimate(self, model_key: str, precision: str, hidden: int, passes: Passes) -> Estimate | None:
        """Seconds ``passes`` should take on this server, or None when nothing was measured for the model."""
        trace = self._measured(model_key, precision, "trace")
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
