"""Which word pieces drive a prediction: attribution, head importance, counterfactual edits.

A :class:`Target` names one scalar of the model's output (a masked token's
log-probability, a class's log-probability, a cosine similarity to a label
description). :func:`attribute` explains it with

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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ResourceLimitError, TargetError
from .hooks import HeadSet, knockout
from .loading import LoadedModel
from .predict import (
    DEFAULT_INFERENCE_MEMORY,
    DEFAULT_TOP_K,
    Prepared,
    WrongHeadError,
    attention_context,
    check_memory,
    description_embedding,
    embed,
    finish_layer,
    fit_batch,
    gate_heads,
    head_logits,
    prepare,
    require_head,
    run_encoder,
    vocabulary_id,
    word_vectors,
)
from .text import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, Window

Progress = Callable[[float, str], None]
Method = Literal["integrated-gradients", "gradient-x-input", "saliency", "occlusion"]
METHODS: tuple[Method, ...] = ("integrated-gradients", "gradient-x-input", "saliency", "occlusion")
BaselineKind = Literal["pad", "mask"]
Rule = Literal["gauss-legendre", "riemann-trapezoid"]
TargetKind = Literal["masked-token", "class", "token-class", "similarity"]
DEFAULT_STEPS = 50
# Activation memory one gradient batch may use (bytes); about 3 rows of 512 tokens on BERT-base.
DEFAULT_ATTRIBUTION_MEMORY = 3 << 29
_PREFERRED_BATCH_TOKENS = 1536  # rows x tokens per gradient batch: moderate batches are fastest on CPU


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Target:
    """One scalar of the model's output, named in terms of the note (not of token positions).

    masked-token: log p(``token_id``) at the ``mask_index``-th [MASK] of the note.
    class: log p(``class_index``) of a sequence classifier.
    token-class: log p(``class_index``) at the first piece of the word holding ``char_index``.
    similarity: cosine similarity between the note's mean-pooled embedding and ``reference``.
    """

    kind: TargetKind
    label: str  # what the user sees: the word, class label or description
    token_id: int = -1
    mask_index: int = 0
    char_index: int = -1
    class_index: int = -1
    reference: np.ndarray | None = field(default=None, compare=False)  # float32 [hidden], unit length

    def __post_init__(self) -> None:
        if self.kind == "masked-token" and (self.token_id < 0 or self.mask_index < 0):
            raise ValueError("a masked-token target needs token_id and mask_index")
        if self.kind in {"class", "token-class"} and self.class_index < 0:
            raise ValueError("a class target needs class_index")
        if self.kind == "token-class" and self.char_index < 0:
            raise ValueError("a token-class target needs char_index")
        if self.kind == "similarity":
            if self.reference is None or self.reference.ndim != 1:
                raise ValueError("a similarity target needs a [hidden] reference vector")
            _frozen(self.reference)

    @property
    def score_name(self) -> str:
        return "cosine similarity" if self.kind == "similarity" else "log-probability"

    @property
    def positional(self) -> bool:
        """True when the target lives at one position (so a long note has an obvious window)."""
        return self.kind in {"masked-token", "token-class"}


def masked_token_target(loaded: LoadedModel, word: str, *, mask_index: int = 0,
                        lowercase: bool | None = None) -> Target:
    """Target: the log-probability of ``word`` at the ``mask_index``-th [MASK] (0 = first).

    Raises:
        WrongHeadError: no masked-LM head. TargetError: ``word`` is not one vocabulary piece.
    """
    require_head(loaded, "masked-lm", "Explaining a masked word")
    token_id = vocabulary_id(loaded, word, lowercase=lowercase)
    shown = loaded.tokenizer(loaded.resolve_lowercase(lowercase)).convert_ids_to_tokens(token_id)
    return Target(kind="masked-token", label=str(shown), token_id=token_id, mask_index=int(mask_index))


def _class_index(loaded: LoadedModel, label: str | int) -> int:
    labels = loaded.info.labels
    if isinstance(label, int | np.integer):
        if not 0 <= int(label) < len(labels):
            raise TargetError(f"Class {label} does not exist; the model has {len(labels)} classes.")
        return int(label)
    if label not in labels:
        raise TargetError(f"'{label}' is not one of the model's labels ({', '.join(labels)}).")
    return labels.index(label)


def class_target(loaded: LoadedModel, label: str | int) -> Target:
    """Target: the log-probability of a sequence classifier's class (name or index)."""
    require_head(loaded, "sequence-classification", "Explaining a class")
    index = _class_index(loaded, label)
    return Target(kind="class", label=loaded.info.labels[index], class_index=index)


def token_class_target(loaded: LoadedModel, char_index: int, label: str | int) -> Target:
    """Target: the log-probability of ``label`` at the word holding character ``char_index``."""
    require_head(loaded, "token-classification", "Explaining an entity label")
    index = _class_index(loaded, label)
    return Target(kind="token-class", label=loaded.info.labels[index], class_index=index, char_index=int(char_index))


def similarity_target(loaded: LoadedModel, description: str, *, lowercase: bool | None = None) -> Target:
    """Target: cosine similarity between the note's mean-pooled embedding and ``description``'s."""
    reference = description_embedding(loaded, description, lowercase=lowercase)
    return Target(kind="similarity", label=description.strip(), reference=reference)


@dataclass(frozen=True, kw_only=True)
class _Resolved:
    """A target placed in one window of a prepared note."""

    window: Window
    ids: np.ndarray  # int64 [t]: the window's input
    position: int  # local row the score reads (0 for class; -1 for similarity)
    fixed: np.ndarray  # bool [t]: never perturbed ([CLS], [SEP], the target [MASK])


def _resolve(loaded: LoadedModel, prepared: Prepared, target: Target, window: int | None) -> _Resolved:
    note = prepared.note
    content: int | None = None
    if target.kind == "masked-token":
        require_head(loaded, "masked-lm", "Explaining a masked word")
        masks = np.flatnonzero(note.ids == prepared.mask_id)
        mask = loaded.info.mask_token or "[MASK]"
        if masks.size == 0:
            raise TargetError(f"The note has no {mask}. Type {mask} where the word to explain goes.")
        if target.mask_index >= masks.size:
            raise TargetError(f"The note has {masks.size} {mask} tokens; mask number {target.mask_index + 1} "
                              f"does not exist.")
        content = int(masks[target.mask_index])
    elif target.kind == "token-class":
        require_head(loaded, "token-classification", "Explaining an entity label")
        holding = np.flatnonzero((note.offsets[:, 0] <= target.char_index) & (note.offsets[:, 1] > target.char_index))
        if holding.size == 0:
            raise TargetError("The chosen character is not inside a word. Click a word of the note.")
        content = int(np.flatnonzero(note.word_ids == note.word_ids[holding[0]])[0])
    elif target.kind == "class":
        require_head(loaded, "sequence-classification", "Explaining a class")
    if content is not None:
        chosen = prepared.windows[int(prepared.owner[content])]
    elif window is not None:
        if not 0 <= window < len(prepared.windows):
            raise TargetError(f"Window {window} does not exist; the note has {len(prepared.windows)} windows.")
        chosen = prepared.windows[window]
    elif len(prepared.windows) > 1:
        raise ResourceLimitError(
            f"The note has {len(note)} word pieces, more than the {loaded.info.max_tokens - 2} the model reads at "
            f"once, and this target depends on the whole note. Select a section or a window of the note to explain."
        )
    else:
        chosen = prepared.windows[0]
    ids = prepared.window_ids(chosen)
    fixed = np.zeros(ids.size, dtype=bool)
    fixed[[0, -1]] = True
    position = {"class": 0, "similarity": -1}.get(target.kind, -1)
    if content is not None:
        position = content - chosen.start + 1
        if target.kind == "masked-token":
            fixed[position] = True
    return _Resolved(window=chosen, ids=ids, position=position, fixed=fixed)


def _scores(loaded: LoadedModel, target: Target, words: torch.Tensor, positions: torch.Tensor | None = None,
            key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The target scalar for a batch of word-vector inputs.

    Args:
        words: [b, t, embedding size].
        positions: int64 [b] target row per input (ignored for similarity).
        key_mask: bool [b, t] for padded batches.

    Returns:
        [b] log-probability (or cosine similarity).
    """
    hidden = embed(loaded, words)
    if target.kind == "similarity":
        states = run_encoder(loaded, hidden, key_mask=key_mask)  # [b, t, d]
        if key_mask is None:
            pooled = states.mean(1)
        else:
            pooled = (states * key_mask[..., None]).sum(1) / key_mask.sum(1, keepdim=True)
        reference = torch.tensor(target.reference, dtype=torch.float32)
        return F.cosine_similarity(pooled, reference[None].to(pooled.dtype), dim=-1)
    assert positions is not None
    states = run_encoder(loaded, hidden, rows=positions[:, None], key_mask=key_mask)  # [b, 1, d]
    logits = head_logits(loaded, states)
    logits = logits if target.kind == "class" else logits[:, 0]  # [b, classes or vocab]
    index = target.token_id if target.kind == "masked-token" else target.class_index
    logits = logits.float()
    return logits[:, index] - torch.logsumexp(logits, dim=-1)


def _scores_for_ids(loaded: LoadedModel, target: Target, sequences: list[np.ndarray], positions: list[int],
                    batch_size: int) -> np.ndarray:
    """float64 [n]: the target scalar for token-id sequences of any lengths (padded batches, no grad)."""
    out = np.zeros(len(sequences), np.float64)
    for first in range(0, len(sequences), batch_size):
        chunk = list(range(first, min(first + batch_size, len(sequences))))
        width = max(sequences[i].size for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        keep = torch.zeros(len(chunk), width, dtype=torch.bool)
        for row, i in enumerate(chunk):
            ids[row, :sequences[i].size] = torch.tensor(sequences[i], dtype=torch.long)
            keep[row, :sequences[i].size] = True
        rows = torch.tensor([max(positions[i], 0) for i in chunk], dtype=torch.long)
        scores = _scores(loaded, target, word_vectors(loaded, ids), rows, None if bool(keep.all()) else keep)
        out[chunk] = scores.double().numpy()
    return out


def target_probability(target: Target, score: np.ndarray | float) -> np.ndarray | float:
    """The target's probability (exp of a log-probability); a cosine similarity stays as it is."""
    return score if target.kind == "similarity" else np.exp(score)


# ---------------------------------------------------------------------------------------------
# Attribution
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Attribution:
    """Scores per word piece and per word of one window, for one method and target."""

    method: Method
    target: Target
    baseline: BaselineKind
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
            _frozen(array)

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


def baseline_ids(loaded: LoadedModel, prepared: Prepared, resolved: _Resolved, baseline: BaselineKind) -> np.ndarray:
    """int64 [t]: every non-fixed piece replaced by [PAD] (or [MASK])."""
    replacement = prepared.pad_id if baseline == "pad" else prepared.mask_id
    if replacement is None:
        raise TargetError(f"This model's tokenizer has no {'[PAD]' if baseline == 'pad' else '[MASK]'} token; "
                          f"choose the other baseline.")
    return np.where(resolved.fixed, resolved.ids, int(replacement)).astype(np.int64)


def _gradient_sum(loaded: LoadedModel, target: Target, resolved: _Resolved, start: torch.Tensor,
                  direction: torch.Tensor, alphas: np.ndarray, weights: np.ndarray, batch_size: int,
                  progress: Progress | None, message: str) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_k weights[k] * grad F(start + alphas[k] * direction) and F at each point.

    Args:
        start, direction: [t, e] word vectors.

    Returns:
        ([t, e] weighted gradient sum, [steps] scores).
    """
    total = torch.zeros_like(start)
    scores = torch.zeros(len(alphas), dtype=torch.float64)
    position = torch.tensor([max(resolved.position, 0)], dtype=torch.long)
    with torch.enable_grad():
        for first in range(0, len(alphas), batch_size):
            alpha = torch.from_numpy(alphas[first:first + batch_size]).to(start.dtype)
            weight = torch.from_numpy(weights[first:first + batch_size]).to(start.dtype)
            points = (start[None] + alpha[:, None, None] * direction[None]).requires_grad_(True)  # [b, t, e]
            values = _scores(loaded, target, points, position.expand(len(alpha)))
            (gradient,) = torch.autograd.grad(values.sum(), points)
            total += (gradient * weight[:, None, None]).sum(0)
            scores[first:first + len(alpha)] = values.detach().double()
            done = first + len(alpha)
            _report(progress, done / len(alphas), f"{message}: {done} of {len(alphas)}")
    return total, scores


def attribute(loaded: LoadedModel, text: str, target: Target, *, method: Method = "integrated-gradients",
              steps: int = DEFAULT_STEPS, rule: Rule = "gauss-legendre", baseline: BaselineKind = "pad",
              tolerance: float | None = None, batch_size: int | None = None,
              memory_limit: int = DEFAULT_ATTRIBUTION_MEMORY,
              window: int | None = None, lowercase: bool | None = None,
              knocked_out: Iterable[tuple[int, int]] = (), overlap: int = DEFAULT_OVERLAP,
              max_chars: int = DEFAULT_MAX_CHARS, progress: Progress | None = None) -> Attribution:
    """Explain ``target`` on ``text`` with one attribution method.

    Args:
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
        knocked_out: (layer, head) pairs zeroed for this run.
        progress: called with (fraction, message) after each batch.

    Raises:
        TargetError, WrongHeadError, ResourceLimitError.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    started = time.perf_counter()
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars)
    resolved = _resolve(loaded, prepared, target, window)
    tokens = resolved.ids.size
    backward = method != "occlusion"
    wanted = batch_size if batch_size is not None else max(1, min(
        steps if method == "integrated-gradients" else 64, _PREFERRED_BATCH_TOKENS // tokens or 1))
    if batch_size is not None:
        check_memory(loaded, tokens, batch_size, memory_limit, backward=backward, what=f"Attribution ({method})")
    rows_per_batch = fit_batch(loaded, tokens, wanted, memory_limit, backward=backward,
                               what=f"Attribution ({method})")
    base_ids = baseline_ids(loaded, prepared, resolved, baseline)
    position = torch.tensor([max(resolved.position, 0)], dtype=torch.long)
    baseline_score, delta, rule_used, evaluations = float("nan"), float("nan"), "", 1
    # inference_mode(False): gradients work even when the caller runs under inference mode.
    with torch.inference_mode(False), knockout(loaded.anatomy, knocked_out) as heads:
        with torch.no_grad():
            inputs = word_vectors(loaded, torch.from_numpy(resolved.ids)[None])[0]  # [t, e]
            reference = word_vectors(loaded, torch.from_numpy(base_ids)[None])[0]  # [t, e]
            ends = _scores(loaded, target, torch.stack([inputs, reference]), position.expand(2))
        score = float(ends[0])
        forward_rows = 2
        if method == "integrated-gradients":
            baseline_score = float(ends[1])
            schedule = [steps] if tolerance is None or steps <= 16 else [16, steps]
            evaluations, rule_used = 0, rule
            for points in schedule:
                share = (evaluations / sum(schedule), (evaluations + points) / sum(schedule))
                part = None if progress is None else (
                    lambda fraction, message, a=share[0], b=share[1]: progress(a + (b - a) * fraction, message))
                alphas, weights = quadrature(points, rule)
                gradient, _ = _gradient_sum(loaded, target, resolved, reference, inputs - reference, alphas, weights,
                                            rows_per_batch, part, f"Integrated gradients ({points} steps)")
                pieces = ((inputs - reference) * gradient).sum(-1)  # [t]
                delta = float(pieces.sum()) - (score - baseline_score)
                evaluations += points
                if tolerance is not None and abs(delta) <= tolerance * abs(score - baseline_score):
                    break
            forward_rows += evaluations
        elif method in {"gradient-x-input", "saliency"}:
            gradient, _ = _gradient_sum(loaded, target, resolved, inputs, torch.zeros_like(inputs), np.zeros(1),
                                        np.ones(1), 1, progress, "Gradient")
            pieces = (gradient * inputs).sum(-1) if method == "gradient-x-input" else gradient.norm(dim=-1)
            forward_rows += 1
        else:
            pieces, evaluations = _occlusion(loaded, prepared, target, resolved, base_ids, score, rows_per_batch,
                                             progress)
            forward_rows += evaluations
    piece_scores = pieces.detach().double().numpy().astype(np.float32) if isinstance(pieces, torch.Tensor) \
        else pieces.astype(np.float32)
    return _record(loaded, prepared, resolved, target, method, baseline, heads, piece_scores, score=score,
                   baseline_score=baseline_score, delta=delta, steps=evaluations, rule=rule_used,
                   batch_size=rows_per_batch, forward_rows=forward_rows, seconds=time.perf_counter() - started)


def _occlusion(loaded: LoadedModel, prepared: Prepared, target: Target, resolved: _Resolved, base_ids: np.ndarray,
               score: float, batch_size: int, progress: Progress | None) -> tuple[np.ndarray, int]:
    """Leave-one-word-out: per piece, its word's score drop divided among the word's pieces."""
    window = resolved.window
    local_words = np.concatenate([[-1], prepared.note.word_ids[window.start:window.stop], [-1]])  # [t]
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
            values = _scores_for_ids(loaded, target, sequences, [position] * len(sequences), len(sequences))
            for word, value in zip(chunk, values):
                where = (local_words == word) & movable
                pieces[where] = (score - value) / where.sum()
            done = first + len(chunk)
            _report(progress, done / max(len(words), 1), f"Occlusion: {done} of {len(words)} words")
    return pieces, len(words)


def _record(loaded: LoadedModel, prepared: Prepared, resolved: _Resolved, target: Target, method: Method,
            baseline: BaselineKind, heads: HeadSet, piece_scores: np.ndarray, **values: object) -> Attribution:
    window = resolved.window
    note = prepared.note
    positions = np.concatenate([[0], np.arange(window.start + 1, window.stop + 1), [prepared.positions - 1]])
    word_ids = np.concatenate([[-1], note.word_ids[window.start:window.stop], [-1]]).astype(np.int32)
    words = np.unique(word_ids[word_ids >= 0]).astype(np.int32)
    word_scores = np.zeros(words.size, np.float64)
    np.add.at(word_scores, np.searchsorted(words, word_ids[word_ids >= 0]), piece_scores[word_ids >= 0])
    tokens = prepared.global_tokens()
    return Attribution(
        method=method, target=target, baseline=baseline, model_key=loaded.info.key, text=prepared.text,
        lowercase=prepared.lowercase, knocked_out=heads, window=window, positions=positions.astype(np.int64),
        input_ids=resolved.ids.astype(np.int64), tokens=tuple(tokens[int(p)] for p in positions),
        offsets=prepared.global_offsets()[positions], word_ids=word_ids, fixed=resolved.fixed.copy(),
        piece_scores=piece_scores, words=words, word_spans=np.asarray(note.word_spans, np.int32)[words].reshape(-1, 2),
        word_scores=word_scores.astype(np.float32), target_position=int(resolved.position), **values,
    )


# ---------------------------------------------------------------------------------------------
# Head importance
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class HeadImportance:
    """How much the target changes when each head is knocked out (one head at a time)."""

    target: Target
    model_key: str
    text: str
    knocked_out: HeadSet  # heads out in every run, the intact one included
    window: Window
    intact_score: float
    scores: np.ndarray  # float32 [layer, head]: knocked-out score - intact score; NaN for heads already out
    seconds: float

    def __post_init__(self) -> None:
        if self.scores.ndim != 2:
            raise ValueError("HeadImportance.scores must be [layer, head]")
        _frozen(self.scores)


def head_importance(loaded: LoadedModel, text: str, target: Target, *, batch_size: int | None = None,
                    memory_limit: int = DEFAULT_INFERENCE_MEMORY, window: int | None = None,
                    lowercase: bool | None = None, knocked_out: Iterable[tuple[int, int]] = (),
                    overlap: int = DEFAULT_OVERLAP, max_chars: int = DEFAULT_MAX_CHARS,
                    progress: Progress | None = None) -> HeadImportance:
    """Knock out each of the layer x head heads in turn and record the target's change.

    Exact and batched: every batch row gates a different head (a [row, head] multiplier on
    the context vector before the output projection, as :func:`cbert_core.hooks.knockout`
    does for the whole batch). Rows that knock out a head of layer L reuse the intact run's
    layers below L and its attention in L, so the work is about half of layer x head full
    passes.

    Raises:
        TargetError, WrongHeadError, ResourceLimitError.
    """
    started = time.perf_counter()
    prepared = prepare(loaded, text, lowercase=lowercase, overlap=overlap, max_chars=max_chars)
    resolved = _resolve(loaded, prepared, target, window)
    layers, heads_per_layer = len(loaded.anatomy.layers), loaded.anatomy.num_heads
    rows_per_batch = fit_batch(loaded, resolved.ids.size, batch_size or heads_per_layer, memory_limit,
                               backward=False, what="Head importance")
    scores = np.zeros((layers, heads_per_layer), np.float32)
    positional = target.kind != "similarity"
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as base_heads:
        ids = torch.from_numpy(resolved.ids)[None]
        inputs: list[torch.Tensor] = []
        rows = torch.tensor([[max(resolved.position, 0)]]) if positional else None
        final = run_encoder(loaded, embed(loaded, word_vectors(loaded, ids)), rows=rows, layer_inputs=inputs)
        intact = float(_read_score(loaded, target, final)[0])
        total, done = layers * heads_per_layer, 0
        for layer in range(layers):
            hidden = inputs[layer]  # [1, t, d]
            last = layer == layers - 1
            queries = hidden[:, rows[0]] if positional and last else hidden
            context = attention_context(loaded, layer, hidden, queries)  # [1, q, h * dh]
            for first in range(0, heads_per_layer, rows_per_batch):
                chosen = list(range(first, min(first + rows_per_batch, heads_per_layer)))
                gate = torch.ones(len(chosen), heads_per_layer)
                gate[torch.arange(len(chosen)), torch.tensor(chosen)] = 0
                gated = gate_heads(loaded, context.expand(len(chosen), -1, -1), gate)
                out = finish_layer(loaded, layer, gated, queries.expand(len(chosen), -1, -1))
                if not last:
                    out = run_encoder(loaded, out, start=layer + 1,
                                      rows=rows.expand(len(chosen), -1) if positional else None)
                scores[layer, chosen] = (_read_score(loaded, target, out) - intact).numpy()
                done += len(chosen)
                _report(progress, done / total, f"Head importance: {done} of {total} heads")
    for layer, head in base_heads:
        scores[layer, head] = np.nan
    return HeadImportance(target=target, model_key=loaded.info.key, text=text, knocked_out=base_heads,
                          window=resolved.window, intact_score=intact, scores=scores,
                          seconds=time.perf_counter() - started)


def _read_score(loaded: LoadedModel, target: Target, states: torch.Tensor) -> torch.Tensor:
    """float64 [b] target scalar from last-layer states ([b, 1, d] at the target row, or [b, t, d])."""
    if target.kind == "similarity":
        reference = torch.tensor(target.reference, dtype=torch.float32)
        return F.cosine_similarity(states.mean(1), reference[None], dim=-1).double()
    logits = head_logits(loaded, states)
    logits = (logits if target.kind == "class" else logits[:, 0]).float()
    index = target.token_id if target.kind == "masked-token" else target.class_index
    return (logits[:, index] - torch.logsumexp(logits, dim=-1)).double()


# ---------------------------------------------------------------------------------------------
# Counterfactual edit
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The target and the distribution it lives in, for one version of the note."""

    text: str
    score: float  # the target scalar (log-probability or cosine)
    names: tuple[str, ...]  # [c] tokens, labels or the description
    probs: np.ndarray  # float32 [c]
    attribution: Attribution | None

    def __post_init__(self) -> None:
        if self.probs.shape != (len(self.names),):
            raise ValueError("Outcome.probs must be [c]")
        _frozen(self.probs)


@dataclass(frozen=True, kw_only=True)
class Counterfactual:
    """A word span replaced in place: both predictions, their difference, aligned words."""

    target: Target
    edit: tuple[int, int]  # characters replaced in the original
    replacement: str
    edited_span: tuple[int, int]  # the replacement's characters in the edited text
    original: Outcome
    edited: Outcome
    names: tuple[str, ...]  # [c] union of both outcomes' names
    original_probs: np.ndarray  # float32 [c]
    edited_probs: np.ndarray  # float32 [c]
    prob_change: np.ndarray  # float32 [c]: edited - original
    score_change: float
    word_alignment: np.ndarray  # int32 [original word]: the same word in the edited note, -1 if edited away
    word_score_change: np.ndarray | None  # float32 [original word]: attribution change (NaN unaligned/outside)

    def __post_init__(self) -> None:
        c = len(self.names)
        if not (self.original_probs.shape == self.edited_probs.shape == self.prob_change.shape == (c,)):
            raise ValueError("Counterfactual probabilities must be [c]")
        for array in (self.original_probs, self.edited_probs, self.prob_change, self.word_alignment,
                      self.word_score_change):
            if array is not None:
                _frozen(array)


def _outcome(loaded: LoadedModel, text: str, target: Target, *, window: int | None, lowercase: bool | None,
             knocked_out: Iterable[tuple[int, int]], top_k: int) -> tuple[Outcome, np.ndarray]:
    """The target on one version of the note, and the full distribution it comes from.

    Returns:
        (outcome, float32 [vocab or labels] full distribution; [1] cosine for similarity).
    """
    prepared = prepare(loaded, text, lowercase=lowercase)
    resolved = _resolve(loaded, prepared, target, window)
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out):
        ids = torch.from_numpy(resolved.ids)[None]
        hidden = embed(loaded, word_vectors(loaded, ids))
        if target.kind == "similarity":
            score = float(_read_score(loaded, target, run_encoder(loaded, hidden))[0])
            single = np.array([score], np.float32)
            return Outcome(text=text, score=score, names=(target.label,), probs=single, attribution=None), single
        logits = head_logits(loaded, run_encoder(loaded, hidden, rows=torch.tensor([[max(resolved.position, 0)]])))
        probs = torch.softmax((logits if target.kind == "class" else logits[:, 0])[0].float(), dim=-1).numpy()
    index = target.token_id if target.kind == "masked-token" else target.class_index
    score = float(np.log(max(float(probs[index]), 1e-45)))
    if target.kind == "masked-token":
        chosen = list(dict.fromkeys([index, *np.argsort(-probs)[:top_k].tolist()]))
        names = tuple(loaded.tokenizer(prepared.lowercase).convert_ids_to_tokens(chosen))
        return Outcome(text=text, score=score, names=names, probs=probs[chosen].astype(np.float32),
                       attribution=None), probs.astype(np.float32)
    return Outcome(text=text, score=score, names=loaded.info.labels, probs=probs.astype(np.float32),
                   attribution=None), probs.astype(np.float32)


def counterfactual(loaded: LoadedModel, text: str, char_start: int, char_end: int, replacement: str,
                   target: Target, *, method: Method | None = None, top_k: int = DEFAULT_TOP_K,
                   window: int | None = None, lowercase: bool | None = None,
                   knocked_out: Iterable[tuple[int, int]] = (), progress: Progress | None = None,
                   **attribution_settings: object) -> Counterfactual:
    """Replace text[char_start:char_end] by ``replacement`` and compare the two predictions.

    Args:
        target: what to compare; a token-class target's character is moved with the edit.
        method: also attribute both versions with this method (None: predictions only).
        attribution_settings: passed to :func:`attribute` (steps, baseline, batch_size, ...).

    Raises:
        TargetError: an empty or out-of-range span, or an edit that replaces the target itself.
    """
    if not (0 <= char_start < char_end <= len(text)):
        raise TargetError("Select the words to replace (a non-empty span of the note).")
    edited_text = text[:char_start] + replacement + text[char_end:]
    shift = len(replacement) - (char_end - char_start)
    edited_target = target
    if target.kind == "token-class":
        if char_start <= target.char_index < char_end:
            raise TargetError("The edit replaces the word being explained. Choose another word to edit or explain.")
        if target.char_index >= char_end:
            edited_target = Target(kind="token-class", label=target.label, class_index=target.class_index,
                                   char_index=target.char_index + shift)
    if target.kind == "masked-token":
        mask = loaded.info.mask_token or "[MASK]"
        if mask in text[char_start:char_end] or mask in replacement:
            raise TargetError(f"The edit must not add or remove {mask} tokens; edit other words.")
    original, original_full = _outcome(loaded, text, target, window=window, lowercase=lowercase,
                                        knocked_out=knocked_out, top_k=top_k)
    _report(progress, 0.05, "Predicted the original note")
    edited, edited_full = _outcome(loaded, edited_text, edited_target, window=window, lowercase=lowercase,
                                    knocked_out=knocked_out, top_k=top_k)
    _report(progress, 0.1, "Predicted the edited note")
    names = tuple(dict.fromkeys([*original.names, *edited.names]))
    if target.kind == "masked-token":
        tokenizer = loaded.tokenizer(loaded.resolve_lowercase(lowercase))
        ids = tokenizer.convert_tokens_to_ids(list(names))
        original_probs, edited_probs = original_full[ids], edited_full[ids]
    else:
        original_probs, edited_probs = original_full, edited_full
    original_attribution = edited_attribution = None
    if method is not None:
        def part(offset: float) -> Progress | None:
            if progress is None:
                return None
            return lambda fraction, message: progress(0.1 + 0.45 * (offset + fraction), message)

        original_attribution = attribute(loaded, text, target, method=method, window=window, lowercase=lowercase,
                                         knocked_out=knocked_out, progress=part(0.0), **attribution_settings)
        edited_attribution = attribute(loaded, edited_text, edited_target, method=method, window=window,
                                       lowercase=lowercase, knocked_out=knocked_out, progress=part(1.0),
                                       **attribution_settings)
    alignment = _align_words(loaded, text, edited_text, char_start, char_end, shift, lowercase)
    score_change = None
    if original_attribution is not None and edited_attribution is not None:
        score_change = _word_score_change(original_attribution, edited_attribution, alignment)
    _report(progress, 1.0, "Done")
    return Counterfactual(
        target=target, edit=(char_start, char_end), replacement=replacement,
        edited_span=(char_start, char_start + len(replacement)),
        original=Outcome(text=text, score=original.score, names=original.names, probs=original.probs.copy(),
                         attribution=original_attribution),
        edited=Outcome(text=edited_text, score=edited.score, names=edited.names, probs=edited.probs.copy(),
                       attribution=edited_attribution),
        names=names, original_probs=original_probs, edited_probs=edited_probs,
        prob_change=(edited_probs - original_probs).astype(np.float32),
        score_change=edited.score - original.score, word_alignment=alignment, word_score_change=score_change,
    )


def _align_words(loaded: LoadedModel, text: str, edited_text: str, start: int, end: int, shift: int,
                 lowercase: bool | None) -> np.ndarray:
    """int32 [original word]: index of the same word (same characters, moved by the edit) or -1."""
    before = prepare(loaded, text, lowercase=lowercase).note.word_spans
    after = prepare(loaded, edited_text, lowercase=lowercase).note.word_spans
    lookup = {(int(a), int(b)): index for index, (a, b) in enumerate(after)}
    alignment = np.full(len(before), -1, np.int32)
    for index, (a, b) in enumerate(before):
        if b <= start:
            alignment[index] = lookup.get((int(a), int(b)), -1)
        elif a >= end:
            alignment[index] = lookup.get((int(a) + shift, int(b) + shift), -1)
    return alignment


def _word_score_change(original: Attribution, edited: Attribution, alignment: np.ndarray) -> np.ndarray:
    change = np.full(alignment.size, np.nan, np.float32)
    edited_index = {int(w): i for i, w in enumerate(edited.words)}
    for i, word in enumerate(original.words):
        j = edited_index.get(int(alignment[word]), -1) if alignment[word] >= 0 else -1
        if j >= 0:
            change[word] = edited.word_scores[j] - original.word_scores[i]
    return change


__all__ = [
    "Attribution", "BaselineKind", "Counterfactual", "DEFAULT_STEPS", "HeadImportance", "METHODS", "Method",
    "Outcome", "Rule", "Target", "WrongHeadError", "attribute", "baseline_ids", "class_target", "counterfactual",
    "head_importance", "masked_token_target", "quadrature", "similarity_target", "target_probability",
    "token_class_target",
]
