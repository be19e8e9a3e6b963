"""Which word pieces drive a prediction: gradient and occlusion attribution of one target.

A :class:`~cbert_core.analyses.targets.Target` names one scalar of the model's output (a
masked token's log-probability, a class's log-probability, a cosine similarity
to a label description). :func:`attribute` explains it with

* ``integrated-gradients``: the path integral of the gradient w.r.t. the word
  embeddings from a baseline to the input (what captum's LayerIntegratedGradients
  on the word-embedding layer computes), with its convergence delta;
* ``gradient-x-input``: gradient . word embedding per piece;
* ``saliency``: the L2 norm of the gradient per piece;
* ``occlusion``: the score lost when one word's pieces are replaced by the baseline
  piece ([PAD] or [MASK]), every word in one batched pass.

Baselines replace every word piece by [PAD] (or [MASK]) and keep [CLS], [SEP] and,
for a masked-token target, the target [MASK] itself (it is the question, not
evidence), so that piece always scores 0.

One window at a time: a note longer than the model's positions is attributed in
the window where the target position is most central; a note-level target (a
class, a similarity) on such a note needs ``window=`` (else ResourceLimitError).

Speed: gradients are taken w.r.t. the word-embedding output only (parameters stay
frozen), the last layer and the head run only at the target row, attention is
scaled-dot-product (no [t, t] weights stored) and the integration steps run in
batches sized to a memory bound.

Targets live in :mod:`cbert_core.analyses.targets`, head importance in
:mod:`cbert_core.analyses.knockout_scan` and counterfactual edits in
:mod:`cbert_core.analyses.counterfactual`; they are re-exported here for callers of the
former single module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cbert_core.analyses.targets import (
    ResolvedTarget,
    Target,
    resolve_target,
    target_scores,
    target_scores_for_ids,
)
from cbert_core.errors import TargetError
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import Precision, autocast, float32
from cbert_core.progress import Progress, part, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import check_memory, fit_batch, word_vectors
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.text.windows import Window

Method = Literal["integrated-gradients", "gradient-x-input", "saliency", "occlusion"]
METHODS: tuple[Method, ...] = ("integrated-gradients", "gradient-x-input", "saliency", "occlusion")
BaselineKind = Literal["pad", "mask"]
Rule = Literal["gauss-legendre", "riemann-trapezoid"]
DEFAULT_STEPS = 50
# Activation memory one gradient batch may use (bytes); about 3 rows of 512 tokens on BERT-base.
DEFAULT_ATTRIBUTION_MEMORY = 3 << 29
PREFERRED_BATCH_TOKENS = 1536  # rows x tokens per gradient batch: moderate batches are fastest on CPU


@dataclass(frozen=True, kw_only=True)
class Attribution:
    """Scores per word piece and per word of one window, for one method and target."""

    method: Method
    target: Target
    baseline: BaselineKind
    precision: Precision  # fp32, or bf16 autocast for the model's matrix products
    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    window: Window
    positions: np.ndarray  # int64 [t]: global position of each window input
    input_ids: np.ndarray  # int64 [t]
    tokens: tuple[str, ...]  # [t]
    offsets: np.ndarray  # int32 [t, 2] characters in the note; (-1, -1) for [CLS]/[SEP]
    word_ids: np.ndarray  # int32 [t]: global word index, -1 for [CLS]/[SEP]
    fixed: np.ndarray  # bool [t]: pieces never perturbed ([CLS], [SEP], the target [MASK])
    piece_scores: np.ndarray  # float32 [t]
    words: np.ndarray  # int32 [w]: global index of each word in the window
    word_spans: np.ndarray  # int32 [w, 2]
    word_scores: np.ndarray  # float32 [w]: sum over the word's pieces
    target_position: int  # local row of the target (-1: the whole window)
    score: float  # the target on the input
    baseline_score: float  # the target on the baseline (integrated gradients; NaN otherwise)
    delta: float  # IG convergence delta: sum(piece_scores) - (score - baseline_score); NaN otherwise
    steps: int  # gradient evaluations run (IG, all passes with a tolerance), else 1 or the occluded words
    rule: str  # IG quadrature rule ("" for other methods)
    batch_size: int
    forward_rows: int  # rows run through the model, all batches together
    seconds: float

    def __post_init__(self) -> None:
        t = len(self.tokens)
        for name in ("positions", "input_ids", "word_ids", "fixed", "piece_scores"):
            if getattr(self, name).shape != (t,):
                raise ValueError(f"Attribution.{name} must be [t]")
        if self.offsets.shape != (t, 2):
            raise ValueError("Attribution.offsets must be [t, 2]")
        w = len(self.words)
        if self.word_spans.shape != (w, 2) or self.word_scores.shape != (w,):
            raise ValueError("Attribution word arrays must be [w] and [w, 2]")
        for array in (self.positions, self.input_ids, self.offsets, self.word_ids, self.fixed, self.piece_scores,
                      self.words, self.word_spans, self.word_scores):
            frozen_array(array)

    @property
    def word_fixed(self) -> np.ndarray:
        """bool [w]: words made only of fixed pieces (the target [MASK]): the question, not evidence."""
        return np.array([bool(self.fixed[self.word_ids == word].all()) for word in self.words], dtype=bool)

    @property
    def relative_delta(self) -> float:
        """|delta| as a fraction of |score - baseline_score| (NaN unless IG)."""
        gap = abs(self.score - self.baseline_score)
        return float(abs(self.delta) / gap) if gap > 0 else float("nan")


def quadrature(steps: int, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
    """Points in [0, 1] and weights for integrating along the path.

    Gauss-Legendre (captum's default) is exact for polynomials of degree 2 * steps - 1
    and gives a far smaller convergence delta than the trapezoid rule at the same
    number of gradient evaluations.

    Returns:
        float64 [steps] alphas and [steps] weights (summing to 1).
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if rule == "gauss-legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if rule == "riemann-trapezoid":
        if steps < 2:
            return np.array([1.0]), np.array([1.0])
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
        return np.linspace(0.0, 1.0, steps), weights
    raise ValueError(f"unknown rule {rule!r}")


def planned_passes(method: Method, positions: int, words: int, *, steps: int = DEFAULT_STEPS,
                   tolerance: float | None = None) -> Passes:
    """The passes :func:`attribute` runs on a window of ``positions`` holding ``words`` words (for estimates).

    With a ``tolerance``, Integrated Gradients is counted at its first 16 points, the usual case.
    """
    ends = ((positions, 2),)  # the score and the baseline score
    if method == "integrated-gradients":
        points = steps if tolerance is None else min(steps, 16)
        return Passes(forward=ends, gradient=((positions, points),))
    if method in {"gradient-x-input", "saliency"}:
        return Passes(forward=ends, gradient=((positions, 1),))
    return Passes(forward=ends + ((positions, words),))


def baseline_ids(loaded: LoadedModel, plan: NotePlan, resolved: ResolvedTarget, baseline: BaselineKind) -> np.ndarray:
    """int64 [t]: every non-fixed piece replaced by [PAD] (or [MASK])."""
    replacement = plan.pad_id if baseline == "pad" else plan.mask_id
    if replacement is None:
        raise TargetError(f"This model's tokenizer has no {'[PAD]' if baseline == 'pad' else '[MASK]'} token; "
                          f"choose the other baseline.")
    return np.where(resolved.fixed, resolved.ids, int(replacement)).astype(np.int64)


ScoreFunction = Callable[[torch.Tensor], torch.Tensor]  # word vectors [b, t, e] -> target scores [b]


def gradient_sum(score: ScoreFunction, start: torch.Tensor, direction: torch.Tensor, alphas: np.ndarray,
                 weights: np.ndarray, batch_size: int, progress: Progress | None,
                 message: str) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_k weights[k] * grad score(start + alphas[k] * direction) and the score at each point.

    Args:
        score: the explained scalar for a batch of word-vector inputs (differentiable).
        start, direction: [t, e] word vectors.

    Returns:
        ([t, e] weighted gradient sum, [steps] scores).
    """
    total = torch.zeros_like(start)
    scores = torch.zeros(len(alphas), dtype=torch.float64, device=start.device)
    with torch.enable_grad():
        for first in range(0, len(alphas), batch_size):
            alpha = torch.from_numpy(alphas[first:first + batch_size]).to(device=start.device, dtype=start.dtype)
            weight = torch.from_numpy(weights[first:first + batch_size]).to(device=start.device, dtype=start.dtype)
            points = (start[None] + alpha[:, None, None] * direction[None]).requires_grad_(True)  # [b, t, e]
            values = score(points)
            (gradient,) = torch.autograd.grad(values.sum(), points)
            total += (gradient * weight[:, None, None]).sum(0)
            scores[first:first + len(alpha)] = values.detach().double()
            done = first + len(alpha)
            report(progress, done / len(alphas), f"{message}: {done} of {len(alphas)}")
    return total, scores


def window_score(loaded: LoadedModel, target: Target, resolved: ResolvedTarget) -> ScoreFunction:
    """The target read from ``resolved``'s window, as a function of that window's word vectors."""
    position = torch.tensor([max(resolved.position, 0)], dtype=torch.long, device=loaded.device)
    return lambda points: target_scores(loaded, target, points, position.expand(points.shape[0]))


def attribute(loaded: LoadedModel, plan: NotePlan, target: Target, *, method: Method = "integrated-gradients",
              steps: int = DEFAULT_STEPS, rule: Rule = "gauss-legendre", baseline: BaselineKind = "pad",
              tolerance: float | None = None, batch_size: int | None = None,
              memory_limit: int = DEFAULT_ATTRIBUTION_MEMORY, window: int | None = None,
              progress: Progress | None = None) -> Attribution:
    """Explain ``target`` on the planned note with one attribution method.

    Args:
        plan: the note prepared for ``loaded`` (:func:`cbert_core.run.plan.plan_note`); its options
            give the knocked-out heads and the precision ("bf16" runs the gradient passes under
            bfloat16 autocast, 2-3x faster on CPUs with native bf16; the two end points stay
            float32, so the score is exact and the convergence delta shows the cost of the bf16 path).
        method: integrated-gradients, gradient-x-input, saliency or occlusion.
        steps: IG gradient evaluations (50 as in captum).
        rule: IG quadrature rule.
        baseline: "pad" or "mask": the piece that stands for "no information".
        tolerance: IG only. If given, integrate first with min(16, ``steps``) points and
            stop there when |delta| <= tolerance * |score - baseline_score| (the
            convergence criterion captum recommends); otherwise also run ``steps``
            points, whose result is kept. None: always ``steps`` points.
        batch_size: rows per forward/backward pass (None: the largest within
            ``memory_limit``, capped at a size that runs fast on CPU).
        memory_limit: bytes of activations a batch may use.
        window: which window of a long note (note-level targets only).
        progress: called with (fraction, message) after each batch.

    Raises:
        TargetError, WrongHeadError, ResourceLimitError.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    precision, knocked_out = plan.options.precision, plan.options.knocked_out
    started = time.perf_counter()
    resolved = resolve_target(loaded, plan, target, window)
    tokens = resolved.ids.size
    backward = method != "occlusion"
    wanted = batch_size if batch_size is not None else max(1, min(
        steps if method == "integrated-gradients" else 64, PREFERRED_BATCH_TOKENS // tokens or 1))
    if batch_size is not None:
        check_memory(loaded, tokens, batch_size, memory_limit, backward=backward, what=f"Attribution ({method})")
    rows_per_batch = fit_batch(loaded, tokens, wanted, memory_limit, backward=backward,
                               what=f"Attribution ({method})")
    base_ids = baseline_ids(loaded, plan, resolved, baseline)
    device = loaded.device
    position = torch.tensor([max(resolved.position, 0)], dtype=torch.long, device=device)
    baseline_score, delta, rule_used, evaluations = float("nan"), float("nan"), "", 1
    # inference_mode(False): gradients work even when the caller runs under inference mode.
    with torch.inference_mode(False), knockout(loaded.anatomy, knocked_out) as heads, autocast(precision, device):
        # The end points in float32 even under bf16: the score, and IG's delta, are then exact.
        with torch.no_grad(), float32():
            inputs = word_vectors(loaded, torch.from_numpy(resolved.ids)[None].to(device))[0]  # [t, e]
            reference = word_vectors(loaded, torch.from_numpy(base_ids)[None].to(device))[0]  # [t, e]
            ends = target_scores(loaded, target, torch.stack([inputs, reference]), position.expand(2))
        score = float(ends[0])
        forward_rows = 2
        if method == "integrated-gradients":
            baseline_score = float(ends[1])
            schedule = [steps] if tolerance is None or steps <= 16 else [16, steps]
            evaluations, rule_used = 0, rule
            for points in schedule:
                share = (evaluations / sum(schedule), (evaluations + points) / sum(schedule))
                alphas, weights = quadrature(points, rule)
                gradient, _ = gradient_sum(window_score(loaded, target, resolved), reference, inputs - reference,
                                           alphas, weights, rows_per_batch, part(progress, *share),
                                           f"Integrated gradients ({points} steps)")
                pieces = ((inputs - reference) * gradient).sum(-1)  # [t]
                delta = float(pieces.sum()) - (score - baseline_score)
                evaluations += points
                if tolerance is not None and abs(delta) <= tolerance * abs(score - baseline_score):
                    break
            forward_rows += evaluations
        elif method in {"gradient-x-input", "saliency"}:
            gradient, _ = gradient_sum(window_score(loaded, target, resolved), inputs, torch.zeros_like(inputs),
                                       np.zeros(1), np.ones(1), 1, progress, "Gradient")
            pieces = (gradient * inputs).sum(-1) if method == "gradient-x-input" else gradient.norm(dim=-1)
            forward_rows += 1
        else:
            pieces, evaluations = _occlusion(loaded, plan, target, resolved, base_ids, score, rows_per_batch,
                                             progress)
            forward_rows += evaluations
    piece_scores = pieces.detach().double().cpu().numpy().astype(np.float32) if isinstance(pieces, torch.Tensor) \
        else pieces.astype(np.float32)
    return _record(loaded, plan, resolved, target, method, baseline, heads, piece_scores, score=score,
                   baseline_score=baseline_score, delta=delta, steps=evaluations, rule=rule_used, precision=precision,
                   batch_size=rows_per_batch, forward_rows=forward_rows, seconds=time.perf_counter() - started)


def _occlusion(loaded: LoadedModel, plan: NotePlan, target: Target, resolved: ResolvedTarget, base_ids: np.ndarray,
               score: float, batch_size: int, progress: Progress | None) -> tuple[np.ndarray, int]:
    """Leave-one-word-out: per piece, its word's score drop divided among the word's pieces."""
    window = resolved.window
    local_words = np.concatenate([[-1], plan.tokens.word_ids[window.start:window.stop], [-1]])  # [t]
    movable = ~resolved.fixed
    words = [w for w in np.unique(local_words[movable]) if w >= 0]
    pieces = np.zeros(resolved.ids.size, np.float64)
    position = max(resolved.position, 0)
    with torch.no_grad():
        for first in range(0, len(words), batch_size):
            chunk = words[first:first + batch_size]
            sequences = []
            for word in chunk:
                occluded = resolved.ids.copy()
                where = (local_words == word) & movable
                occluded[where] = base_ids[where]
                sequences.append(occluded)
            values = target_scores_for_ids(loaded, target, sequences, [position] * len(sequences), len(sequences))
            for word, value in zip(chunk, values):
                where = (local_words == word) & movable
                pieces[where] = (score - value) / where.sum()
            done = first + len(chunk)
            report(progress, done / max(len(words), 1), f"Occlusion: {done} of {len(words)} words")
    return pieces, len(words)


def _record(loaded: LoadedModel, plan: NotePlan, resolved: ResolvedTarget, target: Target, method: Method,
            baseline: BaselineKind, heads: HeadSet, piece_scores: np.ndarray, **values: object) -> Attribution:
    window = resolved.window
    note = plan.tokens
    positions = np.concatenate([[0], np.arange(window.start + 1, window.stop + 1), [plan.positions - 1]])
    word_ids = np.concatenate([[-1], note.word_ids[window.start:window.stop], [-1]]).astype(np.int32)
    words = np.unique(word_ids[word_ids >= 0]).astype(np.int32)
    word_scores = np.zeros(words.size, np.float64)
    np.add.at(word_scores, np.searchsorted(words, word_ids[word_ids >= 0]), piece_scores[word_ids >= 0])
    tokens = plan.global_tokens()
    return Attribution(
        method=method, target=target, baseline=baseline, model_key=loaded.info.key, text=plan.text,
        lowercase=plan.lowercase, knocked_out=heads, window=window, positions=positions.astype(np.int64),
        input_ids=resolved.ids.astype(np.int64), tokens=tuple(tokens[int(p)] for p in positions),
        offsets=plan.global_offsets()[positions], word_ids=word_ids, fixed=resolved.fixed.copy(),
        piece_scores=piece_scores, words=words, word_spans=np.asarray(note.word_spans, np.int32)[words].reshape(-1, 2),
        word_scores=word_scores.astype(np.float32), target_position=int(resolved.position), **values,
    )


