"""How much of the explained score each layer passes on, and from which part of the note: captum's
``LayerConductance``.

The conductance of a layer's output at a position is how much of the change from the baseline to
the note flows through that position's state after that layer (Dhamdhere et al. 2018); summed over
the positions of one layer it is the whole score change (completeness), so a row of the result says
where in the note the layer carries the prediction: spread over the words early, gathered at the
target row (or [CLS]) late. The last layer is computed only at the row the target reads (the lean
forward pass), so all of its conductance sits there; for a similarity every row is read.

Each layer's output passes through an ``nn.Identity`` made for this call that captum hooks, so no
hook is put on the model other sessions share. A long note's note-level target is explained window
by window with the other windows as the model read them (see :mod:`cbert_core.analyses.note_score`),
stitched by the trace's ownership rule. Costs one Integrated-Gradients-like pass (``steps`` rows)
per layer and window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import LayerConductance
from torch import nn

from cbert_core.analyses.attribution import DEFAULT_ATTRIBUTION_MEMORY, BaselineKind
from cbert_core.analyses.note_score import NoteScorer
from cbert_core.analyses.targets import Target
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import Precision, autocast
from cbert_core.progress import Progress, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import fit_batch
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.text.windows import Window

DEFAULT_CONDUCTANCE_STEPS = 16


@dataclass(frozen=True, kw_only=True)
class LayerConductances:
    """Conductance through each layer's output at each position of the note."""

    target: Target
    baseline: BaselineKind
    precision: Precision
    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    windows: tuple[Window, ...]
    whole_note: bool
    piece_scores: np.ndarray  # float32 [L, n]: per layer and content piece, stitched by ownership
    covered: np.ndarray  # bool [n]
    special_scores: np.ndarray  # float32 [L, W, 2]: [CLS] and [SEP] of each window, per layer
    layer_sums: np.ndarray  # float64 [L]: a layer's conductance over every window and position
    gap: float  # the score change every layer's sum should equal (sum over windows)
    score: float
    steps: int
    seconds: float

    def __post_init__(self) -> None:
        layers, n = self.piece_scores.shape
        if self.covered.shape != (n,) or self.layer_sums.shape != (layers,):
            raise ValueError("LayerConductances arrays must be [L, n], [n] and [L]")
        if self.special_scores.shape != (layers, len(self.windows), 2):
            raise ValueError("LayerConductances.special_scores must be [L, W, 2]")
        for array in (self.piece_scores, self.covered, self.special_scores, self.layer_sums):
            frozen_array(array)

    @property
    def layer_deltas(self) -> np.ndarray:
        """float64 [L]: each layer's conductance minus the score change (its convergence delta)."""
        return self.layer_sums - self.gap


def planned_passes(layers: int, windows: tuple[int, ...], steps: int = DEFAULT_CONDUCTANCE_STEPS) -> Passes:
    """The passes :func:`layer_conductance` runs over windows of these positions (for estimates)."""
    return Passes(forward=tuple((positions, 2) for positions in windows),
                  gradient=tuple((positions, layers * steps) for positions in windows))


def layer_conductance(loaded: LoadedModel, plan: NotePlan, target: Target, *, window: int | None = None,
                      baseline: BaselineKind = "pad", steps: int = DEFAULT_CONDUCTANCE_STEPS,
                      memory_limit: int = DEFAULT_ATTRIBUTION_MEMORY,
                      progress: Progress | None = None) -> LayerConductances:
    """captum's LayerConductance of ``target`` at every layer's output (every window of a long note).

    Args:
        window: one window of a long note (note-level target); None: every window.
        steps: points of the path integral per layer (captum's Gauss-Legendre).
        progress: called per layer and window; raising from it cancels the run.

    Raises:
        TargetError, WrongHeadError, ResourceLimitError.
    """
    started = time.perf_counter()
    layers = len(loaded.anatomy.layers)
    with torch.inference_mode(False), knockout(loaded.anatomy, plan.options.knocked_out) as heads, \
            autocast(plan.options.precision, loaded.device):
        scorer = NoteScorer(loaded, plan, target, window, baseline, memory_limit)
        count = len(scorer.windows)
        taps = nn.ModuleList(nn.Identity() for _ in range(layers))  # this call's own modules, hooked by captum
        per_window: list[np.ndarray] = []  # [L, t] each
        for index in range(count):
            tokens = scorer.inputs[index].shape[0]
            rows = fit_batch(loaded, tokens, steps, memory_limit, backward=True, what="Layer conductance")
            scores = np.zeros((layers, tokens), np.float64)
            for layer in range(layers):
                explainer = LayerConductance(lambda words: scorer.with_window(index, words, taps), taps[layer])
                found = explainer.attribute(scorer.inputs[index][None].clone(),
                                            baselines=scorer.references[index][None].clone(), n_steps=steps,
                                            internal_batch_size=rows)  # [1, t or 1, d]
                summed = found.detach().sum(-1)[0].double().cpu().numpy()
                if summed.size == tokens:
                    scores[layer] = summed
                else:  # the last layer, computed only at the target's row
                    scores[layer, scorer.rows[index]] = summed.sum()
                done = index * layers + layer + 1
                report(progress, done / (count * layers), f"Window {index + 1} of {count}, layer {layer + 1} of "
                                                          f"{layers}")
            per_window.append(scores)
        gap = sum(scorer.score - scorer.score_without(i) for i in range(count))
    n = len(plan.tokens)
    pieces = np.zeros((layers, n), np.float64)
    specials = np.zeros((layers, count, 2), np.float64)
    owner = plan.owner if count == len(plan.windows) else np.full(n, scorer.windows[0].index, np.int32)
    for index, (window_span, scores) in enumerate(zip(scorer.windows, per_window)):
        mine = np.flatnonzero(owner[window_span.start:window_span.stop] == window_span.index)
        pieces[:, window_span.start + mine] = scores[:, 1 + mine]
        specials[:, index] = scores[:, [0, -1]]
    covered = np.zeros(n, dtype=bool)
    covered[scorer.start:scorer.stop] = True
    return LayerConductances(
        target=target, baseline=baseline, precision=plan.options.precision, model_key=loaded.info.key,
        text=plan.text, lowercase=plan.lowercase, knocked_out=heads, windows=scorer.windows, whole_note=count > 1,
        piece_scores=pieces.astype(np.float32), covered=covered, special_scores=specials.astype(np.float32),
        layer_sums=np.sum([scores.sum(1) for scores in per_window], axis=0), gap=float(gap), score=scorer.score,
        steps=steps, seconds=time.perf_counter() - started)
