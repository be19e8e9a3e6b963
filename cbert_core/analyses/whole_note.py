"""Explanations of the score the model gives a whole note: every window, any method, any grouping.

:func:`explain` explains a :class:`~cbert_core.analyses.targets.Target` with one method of
:data:`METHOD_SPECS` (ours and captum's) and returns a :class:`NoteAttribution`: a score per
content piece of the note, which :mod:`cbert_core.analyses.attribution_groups` sums into words,
sentences or sections.

What is explained (see :mod:`cbert_core.analyses.note_score`): a positional target in the window
that owns its position; a note-level target (a class, a similarity) on a note longer than one window
over **every** window, as the whole note's score (``window=None``), or in one chosen window.

* Gradient methods explain each window in turn, with the other windows as the model read them,
  and the windows' scores are stitched by the trace's ownership rule (a piece read by two windows
  shows its score from the window where it is most central). Completeness is stated per window
  and in total: a window's attributions (every piece it read, its copies of shared pieces
  included) against the change of the note's score when that window's pieces all become the
  baseline piece (:attr:`NoteAttribution.window_gaps`).
* Perturbation methods (occlusion, Shapley sampling, KernelSHAP, LIME) remove whole groups
  (``grouping``): a section is one feature, so a long note explained by section costs tens of window
  passes. A group's value is divided evenly among its pieces (the target's own [MASK] excepted), so
  the group's score is that value again.

Progress is reported per window (gradient methods) or per batch of perturbed copies; raising from
the progress callback cancels the run (no hook is left, nothing half-done is returned). Memory
stays within ``memory_limit`` per batch, one window at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cbert_core.analyses import captum_methods
from cbert_core.analyses.attribution import (
    DEFAULT_ATTRIBUTION_MEMORY,
    DEFAULT_STEPS,
    PREFERRED_BATCH_TOKENS,
    BaselineKind,
    Rule,
    gradient_sum,
    quadrature,
)
from cbert_core.analyses.attribution_groups import Grouping, Groups, note_groups
from cbert_core.analyses.captum_methods import GradientRunner, GroupRunner
from cbert_core.analyses.note_score import (
    DEFAULT_NOISE,
    DEFAULT_SAMPLES,
    MethodSettings,
    NoteScorer,
    WindowRun,
)
from cbert_core.analyses.targets import Target
from cbert_core.errors import ResourceLimitError, TargetError
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import Precision, autocast
from cbert_core.progress import Progress, part, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import fit_batch
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.text.windows import Window

Completeness = Literal["window", "note", "none"]
# Perturbation methods run one copy per group at least: more groups than this is refused (use a coarser grouping).
MAX_PERTURBED_GROUPS = 4096


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One attribution method: who implements it, how it runs and what its scores mean."""

    name: str
    family: Literal["ours", "captum"]
    kind: Literal["gradient", "perturbation"]
    signed: bool  # False: magnitudes only (saliency)
    completeness: Completeness  # "window": sums to each window's score change; "note": to the note's; "none"
    gradient: GradientRunner | None = None
    perturbation: GroupRunner | None = None
    rows_per_window: Callable[[MethodSettings], int] = lambda settings: 1  # gradient rows, for estimates
    uses: frozenset[str] = frozenset()  # the settings of explain() that change its result besides the shared ones


@dataclass(frozen=True, kw_only=True)
class NoteAttribution:
    """Scores per content piece of a note for one method and target, over the explained windows."""

    method: str
    target: Target
    baseline: BaselineKind
    grouping: Grouping  # what a perturbation method removed at once ("piece" for gradient methods)
    precision: Precision
    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    windows: tuple[Window, ...]  # the windows explained, in order
    whole_note: bool  # every window of a note longer than one (a note-level target)
    piece_scores: np.ndarray  # float32 [n]: per content piece, stitched by ownership; 0 where not covered
    covered: np.ndarray  # bool [n]: pieces inside the explained windows
    fixed: np.ndarray  # bool [n]: pieces never perturbed (the target [MASK])
    special_scores: np.ndarray  # float32 [W, 2]: [CLS] and [SEP] of each explained window
    window_sums: np.ndarray  # float64 [W]: all of a window's attributions (NaN for perturbation methods)
    window_gaps: np.ndarray  # float64 [W]: score - score with that window at the baseline (NaN unless complete)
    score: float  # the explained score (log-probability or cosine similarity)
    baseline_score: float  # the score with every covered piece at the baseline
    signed: bool
    completeness: Completeness
    steps: int  # gradient evaluations or perturbed copies, all windows together
    batch_size: int
    forward_rows: int  # rows run through the model, all batches together
    seconds: float

    def __post_init__(self) -> None:
        n, w = self.piece_scores.shape[0], len(self.windows)
        for name in ("covered", "fixed"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"NoteAttribution.{name} must be [n]")
        if self.special_scores.shape != (w, 2) or self.window_sums.shape != (w,) or self.window_gaps.shape != (w,):
            raise ValueError("NoteAttribution window arrays must be [W, 2] and [W]")
        for array in (self.piece_scores, self.covered, self.fixed, self.special_scores, self.window_sums,
                      self.window_gaps):
            frozen_array(array)

    @property
    def total(self) -> float:
        """The sum of every score (pieces and each window's [CLS]/[SEP])."""
        return float(self.piece_scores.astype(np.float64).sum() + self.special_scores.astype(np.float64).sum())

    @property
    def window_deltas(self) -> np.ndarray:
        """float64 [W]: each window's attributions minus its score change (NaN unless complete per window)."""
        return self.window_sums - self.window_gaps

    @property
    def delta(self) -> float:
        """The convergence delta over the note: per window summed ("window"), or total - (score - baseline)
        ("note"); NaN for methods that do not add up to a score change."""
        if self.completeness == "window":
            return float(self.window_deltas.sum())
        if self.completeness == "note":
            return self.total - (self.score - self.baseline_score)
        return float("nan")

    @property
    def gap(self) -> float:
        """The score change the scores should add up to (NaN for methods that do not)."""
        if self.completeness == "window":
            return float(self.window_gaps.sum())
        if self.completeness == "note":
            return self.score - self.baseline_score
        return float("nan")

    @property
    def relative_delta(self) -> float:
        gap = abs(self.gap)
        return float(abs(self.delta) / gap) if gap > 0 else float("nan")


# ---------------------------------------------------------------------------------------------------------
# Our gradient methods, per window (the same computation as attribution.attribute on one window)
# ---------------------------------------------------------------------------------------------------------

def _ig_rows(scorer: NoteScorer, index: int, settings: MethodSettings) -> int:
    tokens = scorer.inputs[index].shape[0]
    wanted = max(1, min(settings.steps, PREFERRED_BATCH_TOKENS // tokens or 1))
    return fit_batch(scorer.loaded, tokens, wanted, settings.memory_limit, backward=True,
                     what="Attribution (integrated-gradients)")


def integrated_gradients(scorer: NoteScorer, index: int, settings: MethodSettings,
                         progress: Progress | None) -> WindowRun:
    """Our Integrated Gradients of the note's score along window ``index``'s path, the others as read."""
    inputs, reference = scorer.inputs[index], scorer.references[index]
    rows = _ig_rows(scorer, index, settings)
    gap = scorer.score - scorer.score_without(index)
    schedule = [settings.steps] if settings.tolerance is None or settings.steps <= 16 else [16, settings.steps]
    evaluations, pieces = 0, torch.zeros(inputs.shape[0], device=inputs.device)
    for points in schedule:
        share = (evaluations / sum(schedule), (evaluations + points) / sum(schedule))
        alphas, weights = quadrature(points, settings.rule)
        gradient, _ = gradient_sum(lambda words: scorer.with_window(index, words), reference, inputs - reference,
                                   alphas, weights, rows, part(progress, *share),
                                   f"Integrated gradients ({points} steps)")
        pieces = ((inputs - reference) * gradient).sum(-1)  # [t]
        evaluations += points
        if settings.tolerance is not None and abs(float(pieces.sum()) - gap) <= settings.tolerance * abs(gap):
            break
    return WindowRun(scores=pieces.detach().double().cpu().numpy(), evaluations=evaluations, batch_size=rows)


def _plain_gradient(reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> GradientRunner:
    def run(scorer: NoteScorer, index: int, settings: MethodSettings, progress: Progress | None) -> WindowRun:
        inputs = scorer.inputs[index]
        gradient, _ = gradient_sum(lambda words: scorer.with_window(index, words), inputs, torch.zeros_like(inputs),
                                   np.zeros(1), np.ones(1), 1, progress, "Gradient")
        return WindowRun(scores=reduce(gradient, inputs).detach().double().cpu().numpy(), evaluations=1, batch_size=1)
    return run


SAMPLED = frozenset({"samples"})
NOISY = frozenset({"samples", "noise"})
GROUPED = frozenset({"grouping"})
METHOD_SPECS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec(name="integrated-gradients", family="ours", kind="gradient", signed=True, completeness="window",
               gradient=integrated_gradients, uses=frozenset({"steps", "rule", "tolerance"}),
               rows_per_window=lambda s: s.steps if s.tolerance is None else min(s.steps, 16)),
    MethodSpec(name="gradient-x-input", family="ours", kind="gradient", signed=True, completeness="none",
               gradient=_plain_gradient(lambda gradient, inputs: (gradient * inputs).sum(-1))),
    MethodSpec(name="saliency", family="ours", kind="gradient", signed=False, completeness="none",
               gradient=_plain_gradient(lambda gradient, inputs: gradient.norm(dim=-1))),
    MethodSpec(name="occlusion", family="captum", kind="perturbation", signed=True, completeness="none",
               perturbation=captum_methods.occlusion, uses=GROUPED),
    MethodSpec(name="captum-integrated-gradients", family="captum", kind="gradient", signed=True,
               completeness="window", gradient=captum_methods.captum_integrated_gradients,
               uses=frozenset({"steps"}), rows_per_window=lambda s: s.steps),
    MethodSpec(name="deeplift", family="captum", kind="gradient", signed=True, completeness="window",
               gradient=captum_methods.deeplift, rows_per_window=lambda s: 2),
    MethodSpec(name="deeplift-shap", family="captum", kind="gradient", signed=True, completeness="none",
               gradient=captum_methods.deeplift_shap, rows_per_window=lambda s: 6),
    MethodSpec(name="gradient-shap", family="captum", kind="gradient", signed=True, completeness="none",
               gradient=captum_methods.gradient_shap, uses=NOISY, rows_per_window=lambda s: s.samples),
    MethodSpec(name="smoothgrad", family="captum", kind="gradient", signed=False, completeness="none",
               gradient=captum_methods.smoothgrad, uses=NOISY, rows_per_window=lambda s: s.samples),
    MethodSpec(name="smoothgrad-x-input", family="captum", kind="gradient", signed=True, completeness="none",
               gradient=captum_methods.smoothgrad_x_input, uses=NOISY, rows_per_window=lambda s: s.samples),
    MethodSpec(name="smoothgrad-ig", family="captum", kind="gradient", signed=True, completeness="none",
               gradient=captum_methods.smoothgrad_integrated_gradients, uses=NOISY | {"steps"},
               rows_per_window=lambda s: s.samples * s.steps),
    MethodSpec(name="shapley-sampling", family="captum", kind="perturbation", signed=True, completeness="note",
               perturbation=captum_methods.shapley_sampling, uses=GROUPED | SAMPLED),
    MethodSpec(name="kernel-shap", family="captum", kind="perturbation", signed=True, completeness="none",
               perturbation=captum_methods.kernel_shap, uses=GROUPED | SAMPLED),
    MethodSpec(name="lime", family="captum", kind="perturbation", signed=True, completeness="none",
               perturbation=captum_methods.lime, uses=GROUPED | SAMPLED),
)}
NOTE_METHODS: tuple[str, ...] = tuple(METHOD_SPECS)


def method_title(method: str) -> str:
    """The method's name in a message ("KernelSHAP")."""
    return {"kernel-shap": "KernelSHAP", "lime": "LIME"}.get(method, method)


def method_spec(method: str) -> MethodSpec:
    """The spec of ``method``; ValueError naming the choices for an unknown one."""
    if method not in METHOD_SPECS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_SPECS)}")
    return METHOD_SPECS[method]


def planned_passes(method: str, windows: tuple[int, ...], groups: int, *, steps: int = DEFAULT_STEPS,
                   tolerance: float | None = None, samples: int = DEFAULT_SAMPLES) -> Passes:
    """The passes :func:`explain` runs over windows of these positions with ``groups`` groups (for estimates).

    A perturbation copy is counted as one pass of every window (an upper bound: occlusion of a group
    inside one window runs only that window).
    """
    spec = method_spec(method)
    settings = MethodSettings(steps=steps, tolerance=tolerance, samples=samples)
    ends = tuple((positions, 2) for positions in windows)
    if spec.kind == "gradient":
        return Passes(forward=ends, gradient=tuple((positions, spec.rows_per_window(settings))
                                                   for positions in windows))
    copies = {"occlusion": groups, "shapley-sampling": samples * groups}.get(method, samples)
    if method == "occlusion":  # one group changes about one window
        return Passes(forward=ends + (((sum(windows) // max(len(windows), 1)), copies),))
    return Passes(forward=ends + tuple((positions, copies) for positions in windows))


def explain(loaded: LoadedModel, plan: NotePlan, target: Target, *, method: str = "integrated-gradients",
            grouping: Grouping = "word", window: int | None = None, whole_note: bool = False,
            baseline: BaselineKind = "pad",
            steps: int = DEFAULT_STEPS, rule: Rule = "gauss-legendre", tolerance: float | None = None,
            samples: int = DEFAULT_SAMPLES, noise: float = DEFAULT_NOISE,
            memory_limit: int = DEFAULT_ATTRIBUTION_MEMORY, progress: Progress | None = None) -> NoteAttribution:
    """Explain ``target`` on the planned note (every window of a long note for a note-level target).

    Args:
        plan: the note prepared for ``loaded``; its options give the knocked-out heads and the precision.
        method: a name in :data:`METHOD_SPECS`.
        grouping: what a perturbation method removes at once (piece, word, sentence or section;
            sections fall back to sentences in a note without headers). Gradient methods score pieces.
        window: explain only this window of a long note (a note-level target); None: every window.
        whole_note: ask for every window explicitly: a positional target then raises TargetError (it is
            read in one window).
        baseline: "pad" or "mask": the piece that stands for "no information".
        steps, rule, tolerance: Integrated Gradients' points, quadrature and early stop (ours); captum's
            Integrated Gradients, SmoothGrad-IG use ``steps``.
        samples: noisy copies (SmoothGrad, GradientShap), permutations (Shapley) or coalitions (KernelSHAP,
            LIME).
        noise: the noise's standard deviation as a fraction of the word vectors'.
        memory_limit: bytes of activations a batch may use.
        progress: called with (fraction, message); raising from it cancels the run.

    Raises:
        TargetError, WrongHeadError: the target or the method does not fit the note or the model.
        ResourceLimitError: over the memory bound, or a perturbation method over too many groups.
    """
    spec = method_spec(method)
    if whole_note and target.positional:
        what = "A masked word" if target.kind == "masked-token" else "A word's label"
        raise TargetError(f"{what} is predicted from the window that holds it, not from the whole note, so it is "
                          f"explained in that window. Whole-note explanations are for a class or a similarity.")
    if whole_note and window is not None:
        raise ValueError("whole_note and window exclude each other")
    if samples < 1 or steps < 1:
        raise ValueError("steps and samples must be at least 1")
    started = time.perf_counter()
    settings = MethodSettings(steps=steps, rule=rule, tolerance=tolerance, samples=samples, noise=noise,
                              memory_limit=memory_limit)
    precision, knocked_out = plan.options.precision, plan.options.knocked_out
    # inference_mode(False): gradients work even when the caller runs under inference mode.
    with torch.inference_mode(False), knockout(loaded.anatomy, knocked_out) as heads, autocast(precision, loaded.device):
        scorer = NoteScorer(loaded, plan, target, window, baseline, memory_limit)
        count = len(scorer.windows)
        runs: list[WindowRun] = []
        values = np.zeros(0)
        used: Grouping = "piece"
        if spec.kind == "gradient":
            assert spec.gradient is not None
            for index in range(count):
                runs.append(spec.gradient(scorer, index, settings, part(progress, index / count, (index + 1) / count)))
                report(progress, (index + 1) / count, f"Window {index + 1} of {count} explained")
            window_gaps = np.array([scorer.score - scorer.score_without(i) for i in range(count)]) \
                if spec.completeness == "window" else np.full(count, np.nan)
        else:
            assert spec.perturbation is not None
            groups = note_groups(plan, grouping)
            used = groups.grouping
            mask = torch.from_numpy(_local_groups(groups, scorer)).to(loaded.device)
            if int(mask.max()) + 1 > MAX_PERTURBED_GROUPS:
                raise ResourceLimitError(
                    f"{method} would remove each of {int(mask.max()) + 1:,} groups in turn; the limit is "
                    f"{MAX_PERTURBED_GROUPS:,}. Score by sentence or section instead.")
            if method in {"kernel-shap", "lime"} and int(mask.max()) + 1 < 2:
                raise TargetError(
                    f"{method_title(method)} fits a model over the note's parts and needs at least two of them; the "
                    f"part of the note explained is one {groups.grouping}. Score by a finer grouping (words) or "
                    f"choose Leave one out or Shapley value sampling, which give that one part's whole effect.")
            values, copies = spec.perturbation(scorer, mask.long(), settings, progress)
            window_gaps = np.full(count, np.nan)
        baseline_score = scorer.baseline_score
    return _record(loaded, plan, scorer, spec, baseline, used, heads, runs, values, window_gaps,
                   baseline_score=baseline_score, steps=sum(r.evaluations for r in runs) if runs else copies,
                   batch_size=max((r.batch_size for r in runs), default=captum_methods.PERTURBATIONS_PER_CALL),
                   forward_rows=scorer.forward_rows + sum(r.evaluations for r in runs),
                   seconds=time.perf_counter() - started)


def _record(loaded: LoadedModel, plan: NotePlan, scorer: NoteScorer, spec: MethodSpec, baseline: BaselineKind,
            grouping: Grouping, heads: HeadSet, runs: list[WindowRun], values: np.ndarray, window_gaps: np.ndarray,
            **numbers: float | int) -> NoteAttribution:
    n = len(plan.tokens)
    pieces = np.zeros(n, np.float64)
    covered = np.zeros(n, dtype=bool)
    covered[scorer.start:scorer.stop] = True
    fixed = np.zeros(n, dtype=bool)
    fixed[scorer.start:scorer.stop] = scorer.content_fixed()
    count = len(scorer.windows)
    specials = np.zeros((count, 2), np.float64)
    sums = np.full(count, np.nan)
    if runs:
        owner = plan.owner if count == len(plan.windows) else np.full(n, scorer.windows[0].index, np.int32)
        for index, (window, run) in enumerate(zip(scorer.windows, runs)):
            mine = np.flatnonzero(owner[window.start:window.stop] == window.index)
            pieces[window.start + mine] = run.scores[1 + mine]
            specials[index] = run.scores[[0, -1]]
            sums[index] = run.scores.sum()
    else:  # a perturbation method: each group's value divided among its movable covered pieces
        inside = slice(scorer.start, scorer.stop)
        movable = ~fixed[inside]
        members = _local_groups(note_groups(plan, grouping), scorer)
        per_group = np.bincount(members, weights=movable.astype(np.float64))  # movable pieces per group
        pieces[inside] = np.where(movable, values / np.maximum(per_group[members], 1), 0.0)
    return NoteAttribution(
        method=spec.name, target=scorer.target, baseline=baseline, grouping=grouping,
        precision=plan.options.precision, model_key=loaded.info.key, text=plan.text, lowercase=plan.lowercase,
        knocked_out=heads, windows=scorer.windows, whole_note=count > 1, piece_scores=pieces.astype(np.float32),
        covered=covered, fixed=fixed, special_scores=specials.astype(np.float32), window_sums=sums,
        window_gaps=np.asarray(window_gaps, np.float64), score=scorer.score, signed=spec.signed,
        completeness=spec.completeness, **numbers)


def _local_groups(groups: Groups, scorer: NoteScorer) -> np.ndarray:
    """int64 [m]: the groups of the covered pieces, numbered 0.. in text order (captum's feature mask)."""
    return np.unique(groups.members[scorer.start:scorer.stop], return_inverse=True)[1].astype(np.int64)
