"""What a masked-language-model head predicts: fill-mask and the pseudo-likelihood surprise map.

Every function here is a pure function of (LoadedModel, text, settings) and
returns a frozen record of numpy arrays, computed with the lean forward pass of
:mod:`cbert_core.run.forward` (the last layer and the vocabulary projection run only
at the masked rows). Positions follow :class:`cbert_core.run.trace.Trace`: 0 is
[CLS], 1..n are the note's word pieces, n + 1 is [SEP]; a long note predicts
each piece in the window where it is most central.

The other prediction views live in their own modules and are re-exported here
for callers of the former single module: classification heads in
:mod:`cbert_core.analyses.labelling`, zero-shot embedding similarity in
:mod:`cbert_core.analyses.similarity`, and the forward pass, note preparation and memory
bounds in :mod:`cbert_core.run.forward`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.errors import TargetError
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import Precision, autocast
from cbert_core.progress import Progress, report
from cbert_core.records import frozen_array
from cbert_core.run.forward import (
    DEFAULT_INFERENCE_MEMORY,
    check_memory,
    forward_ids,
    require_head,
    vocabulary_id,
)
from cbert_core.run.plan import NotePlan, plan_note
from cbert_core.serving.speed import Passes
from cbert_core.text.tokens import mask_positions
from cbert_core.text.windows import Window

DEFAULT_TOP_K = 10


# ---------------------------------------------------------------------------------------------
# Fill-mask
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FillMaskResult:
    """The masked-LM's candidates at every masked position of a note."""

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    tokens: tuple[str, ...]  # [pos] the input as run (masks included)
    offsets: np.ndarray  # int32 [pos, 2]; (-1, -1) for [CLS]/[SEP]
    positions: np.ndarray  # int64 [m]: masked positions
    char_spans: np.ndarray  # int32 [m, 2]: text each masked piece stands for
    top_ids: np.ndarray  # int64 [m, k]
    top_tokens: tuple[tuple[str, ...], ...]  # [m][k]
    top_probs: np.ndarray  # float32 [m, k]
    original_ids: np.ndarray  # int64 [m]: the piece that was masked; -1 where the user typed [MASK]
    original_tokens: tuple[str, ...]  # [m]; "" where the user typed [MASK]
    original_probs: np.ndarray  # float32 [m]; NaN where the user typed [MASK]
    candidates: tuple[str, ...] = ()  # [c] words asked about
    candidate_probs: np.ndarray | None = None  # float32 [m, c]
    masked_span: tuple[int, int] | None = None  # characters of the word mask_word() masked

    def __post_init__(self) -> None:
        m = len(self.positions)
        k = self.top_ids.shape[1] if self.top_ids.ndim == 2 else 0
        if self.top_ids.shape != (m, k) or self.top_probs.shape != (m, k) or len(self.top_tokens) != m:
            raise ValueError("FillMaskResult candidates must be [m, k]")
        if self.original_ids.shape != (m,) or self.original_probs.shape != (m,) or self.char_spans.shape != (m, 2):
            raise ValueError("FillMaskResult originals must be [m]")
        if self.candidate_probs is not None and self.candidate_probs.shape != (m, len(self.candidates)):
            raise ValueError("candidate_probs must be [m, candidates]")
        for array in (self.offsets, self.positions, self.char_spans, self.top_ids, self.top_probs,
                      self.original_ids, self.original_probs, self.candidate_probs):
            if array is not None:
                frozen_array(array)

    @property
    def original_logprob(self) -> float:
        """Sum of the originals' log-probabilities (each piece scored with all masks in place)."""
        known = self.original_probs[np.isfinite(self.original_probs)]
        return float(np.log(np.maximum(known, 1e-45)).sum()) if known.size else float("nan")


def fill_mask(loaded: LoadedModel, plan: NotePlan, *, top_k: int = DEFAULT_TOP_K,
              candidates: Sequence[str] = ()) -> FillMaskResult:
    """Top-k tokens, with probabilities, at every [MASK] the user typed.

    All masks are filled at once (each sees the others as [MASK]). A note longer than
    the model's window predicts each mask in the window where it is most central.

    Args:
        top_k: candidates per mask.
        candidates: words whose probability at each mask is also reported (single pieces).

    The plan's options give the knocked-out heads.

    Raises:
        WrongHeadError: the checkpoint has no masked-LM head.
        TargetError: the note has no mask token, or a candidate is not a single piece.
    """
    require_head(loaded, "masked-lm", "Fill-mask")
    mask = loaded.info.mask_token or "[MASK]"
    masked = mask_positions(plan.tokens.ids, plan.mask_id)
    if masked.size == 0:
        raise TargetError(f"The note has no {mask}. Type {mask} where you want the model to suggest a word, "
                          f"or select a word to mask.")
    return _predict_masks(loaded, plan, plan.tokens.ids, masked, np.full(masked.size, -1, np.int64),
                          top_k=top_k, candidates=candidates, masked_span=None)


def mask_word(loaded: LoadedModel, plan: NotePlan, char_start: int, char_end: int, *, top_k: int = DEFAULT_TOP_K,
              candidates: Sequence[str] = ()) -> FillMaskResult:
    """Mask every piece of the word(s) overlapping characters [char_start, char_end) and fill them in.

    Every piece of the chosen word becomes the mask id (multi-mask); the result gives the
    top-k per piece and the probability of each original piece. Other masks the user
    typed stay masked and are reported too (``original_ids`` -1).

    Raises:
        WrongHeadError, TargetError: the span covers no word piece.
    """
    require_head(loaded, "masked-lm", "Masking a word")
    note = plan.tokens
    hit = np.flatnonzero((note.offsets[:, 0] < char_end) & (note.offsets[:, 1] > char_start))
    if char_end <= char_start or hit.size == 0:
        raise TargetError("The selection holds no word. Select (part of) a word in the note to mask it.")
    chosen = np.flatnonzero(np.isin(note.word_ids, np.unique(note.word_ids[hit])))
    ids = note.ids.copy()
    originals = np.where(ids[chosen] == plan.mask_id, -1, ids[chosen]).astype(np.int64)
    ids[chosen] = plan.mask_id
    typed = np.setdiff1d(mask_positions(note.ids, plan.mask_id), chosen)
    masked = np.concatenate([chosen, typed])
    original_ids = np.concatenate([originals, np.full(typed.size, -1, np.int64)])
    order = np.argsort(masked, kind="stable")
    span = (int(note.offsets[chosen, 0].min()), int(note.offsets[chosen, 1].max()))
    return _predict_masks(loaded, plan, ids, masked[order], original_ids[order], top_k=top_k,
                          candidates=candidates, masked_span=span)


def _predict_masks(loaded: LoadedModel, plan: NotePlan, ids: np.ndarray, masked: np.ndarray,
                   original_ids: np.ndarray, *, top_k: int, candidates: Sequence[str],
                   masked_span: tuple[int, int] | None) -> FillMaskResult:
    """Run the windows owning ``masked`` (content indices) with ``ids`` [n] as input."""
    candidate_ids = [vocabulary_id(loaded, word, lowercase=plan.lowercase) for word in candidates]
    tokenizer = loaded.tokenizer(plan.lowercase)
    k = int(max(1, min(top_k, loaded.info.vocab_size)))
    m = masked.size
    top_ids = np.zeros((m, k), np.int64)
    top_probs = np.zeros((m, k), np.float32)
    original_probs = np.full(m, np.nan, np.float32)
    candidate_probs = np.zeros((m, len(candidate_ids)), np.float32)
    owners = plan.owner[masked]
    device = loaded.device
    with torch.inference_mode(), knockout(loaded.anatomy, plan.options.knocked_out) as heads:
        for window_index in np.unique(owners):
            window = plan.windows[int(window_index)]
            mine = np.flatnonzero(owners == window_index)
            window_ids = np.concatenate([[plan.cls_id], ids[window.start:window.stop], [plan.sep_id]])
            rows = torch.from_numpy(masked[mine] - window.start + 1)[None].to(device)  # [1, r]
            logits = forward_ids(loaded, torch.from_numpy(window_ids.astype(np.int64))[None].to(device), rows=rows)[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # [r, vocab]
            values, indices = torch.topk(logprobs, k, dim=-1)
            top_ids[mine] = indices.cpu().numpy()
            top_probs[mine] = values.exp().cpu().numpy()
            known = original_ids[mine] >= 0
            if known.any():
                picked = logprobs[torch.from_numpy(np.flatnonzero(known)).to(device),
                                  torch.from_numpy(original_ids[mine][known]).to(device)]
                original_probs[mine[known]] = picked.exp().cpu().numpy()
            if candidate_ids:
                candidate_probs[mine] = logprobs[:, candidate_ids].exp().cpu().numpy()
    note = plan.tokens
    return FillMaskResult(
        model_key=loaded.info.key, text=plan.text, lowercase=plan.lowercase, knocked_out=heads,
        tokens=(plan.cls_token, *tokenizer.convert_ids_to_tokens(ids.tolist()), plan.sep_token),
        offsets=plan.global_offsets(), positions=(masked + 1).astype(np.int64),
        char_spans=note.offsets[masked].astype(np.int32).reshape(-1, 2), top_ids=top_ids,
        top_tokens=tuple(tuple(tokenizer.convert_ids_to_tokens(row.tolist())) for row in top_ids),
        top_probs=top_probs, original_ids=original_ids.astype(np.int64),
        original_tokens=tuple(tokenizer.convert_ids_to_tokens(int(i)) if i >= 0 else "" for i in original_ids),
        original_probs=original_probs, candidates=tuple(candidates),
        candidate_probs=candidate_probs if candidate_ids else None, masked_span=masked_span,
    )


# ---------------------------------------------------------------------------------------------
# Pseudo-log-likelihood (surprise map)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PseudoLikelihood:
    """Per-token and per-word pseudo-log-likelihood: how expected each piece is in its context."""

    model_key: str
    text: str
    lowercase: bool
    knocked_out: HeadSet
    tokens: tuple[str, ...]  # [pos]
    offsets: np.ndarray  # int32 [pos, 2]
    word_ids: np.ndarray  # int32 [pos]; -1 for [CLS]/[SEP]
    token_logprobs: np.ndarray  # float32 [pos]: log p(original | rest); NaN for specials and typed masks
    expected_ids: np.ndarray  # int64 [pos]: the model's first choice at each masked position (-1 specials)
    expected_tokens: tuple[str, ...]  # [pos]
    word_spans: np.ndarray  # int32 [word, 2]
    word_logprobs: np.ndarray  # float32 [word]: sum over the word's pieces (NaN if any piece is NaN)
    word_mean_logprobs: np.ndarray  # float32 [word]: mean over the word's pieces (NaN if any piece is NaN)
    word_piece_counts: np.ndarray  # int32 [word]: pieces in each word
    windows: tuple[Window, ...]
    stride: int  # 0: exact (one mask per copy); s: tokens masked together are s apart
    precision: Precision  # fp32, or bf16 autocast for the encoder (the head stays float32)
    forward_rows: int  # masked copies run
    seconds: float

    def __post_init__(self) -> None:
        positions = len(self.tokens)
        for name in ("word_ids", "token_logprobs", "expected_ids"):
            if getattr(self, name).shape != (positions,):
                raise ValueError(f"PseudoLikelihood.{name} must be [pos]")
        for name in ("word_logprobs", "word_mean_logprobs", "word_piece_counts"):
            if getattr(self, name).shape != (len(self.word_spans),):
                raise ValueError(f"PseudoLikelihood.{name} must be [word]")
        for array in (self.offsets, self.word_ids, self.token_logprobs, self.expected_ids, self.word_spans,
                      self.word_logprobs, self.word_mean_logprobs, self.word_piece_counts):
            frozen_array(array)

    @property
    def total(self) -> float:
        """The note's pseudo-log-likelihood (sum over scored pieces)."""
        return float(np.nansum(self.token_logprobs))


def planned_passes(plan: NotePlan, *, stride: int = 0) -> Passes:
    """The forward passes :func:`pseudo_log_likelihood` runs on ``plan`` with ``stride`` (for time estimates).

    One row per masked copy, at its window's positions ([CLS] and [SEP] included): a window
    whose owned, scorable pieces (not a typed mask) number ``k`` runs ``k`` copies when exact
    (or when ``stride`` >= ``k``), else ``stride`` copies.
    """
    scorable = plan.tokens.ids != plan.mask_id
    rows = []
    for window in plan.windows:
        owned = int(np.count_nonzero((plan.owner == window.index) & scorable))
        copies = owned if stride <= 0 or stride >= owned else int(stride)
        if copies:
            rows.append((window.size + 2, copies))
    return Passes(forward=tuple(rows))


def pseudo_log_likelihood(loaded: LoadedModel, plan: NotePlan, *, batch_size: int = 8, stride: int = 0,
                          window_tokens: int | None = None, memory_limit: int = DEFAULT_INFERENCE_MEMORY,
                          progress: Progress | None = None) -> PseudoLikelihood:
    """Mask each piece in turn and score the original piece (Salazar et al. 2020).

    Many masked copies run in one batch; each copy needs the last layer and the
    vocabulary projection only at its masked position. Each piece is scored in the
    window where it is most central.

    The exact score costs one forward pass of the window per piece (n^2 work): about
    45 TFLOP for 512 pieces of a BERT-base, i.e. several minutes on two CPU cores
    (the benchmark measured 5-15 minutes on a shared machine). ``stride`` trades
    exactness for speed: with stride s, one copy masks every s-th piece at once, so a
    window needs s copies instead of n. Each piece is then scored with the pieces s,
    2s, ... away from it masked too (1/s of the context, like MLM pretraining's 15 %
    masking when s is 7). ``stride`` >= the window size is exact.

    Args:
        batch_size: masked copies per forward pass.
        stride: 0 (exact) or the spacing of pieces masked together.
        window_tokens: content pieces per window (None: the plan's windows, the model's maximum);
            smaller windows are faster and see less context (the note is planned again for them).
        memory_limit: bytes a batch may use; larger batches are refused.
        progress: called with (fraction, message) after each batch.

    The plan's options give the knocked-out heads and the precision ("bf16" runs the encoder
    under bfloat16 autocast, 2-3x faster on CPUs with native bf16; the vocabulary head stays float32).

    Raises:
        WrongHeadError, ResourceLimitError.
    """
    require_head(loaded, "masked-lm", "The surprise map (pseudo-likelihood)")
    started = time.perf_counter()
    precision, knocked_out, text = plan.options.precision, plan.options.knocked_out, plan.text
    if window_tokens is not None:
        plan = plan_note(loaded, text, plan.options, max_content=window_tokens)
    note = plan.tokens
    n = len(note)
    batch_size = int(max(1, batch_size))
    longest = max(w.size for w in plan.windows) + 2
    check_memory(loaded, longest, batch_size, memory_limit, backward=False, what="The surprise map")
    scorable = note.ids != plan.mask_id
    # One job per masked copy: (window, content indices masked together).
    jobs: list[tuple[int, np.ndarray]] = []
    for window in plan.windows:
        owned = np.flatnonzero((plan.owner == window.index) & scorable)
        if owned.size == 0:
            continue
        groups = [owned[i:i + 1] for i in range(owned.size)] if stride <= 0 or stride >= owned.size else \
            [owned[j::stride] for j in range(stride)]
        jobs += [(window.index, group) for group in groups]
    logprobs = np.full(n, np.nan, np.float32)
    expected = np.full(n, -1, np.int64)
    done = 0
    device = loaded.device
    with torch.inference_mode(), knockout(loaded.anatomy, knocked_out) as heads, autocast(precision, device):
        for window in plan.windows:
            mine = [group for index, group in jobs if index == window.index]
            base = torch.from_numpy(plan.window_ids(window)).to(device)
            for first in range(0, len(mine), batch_size):
                batch = mine[first:first + batch_size]
                width = max(group.size for group in batch)
                rows = np.stack([np.resize(group, width) for group in batch]) - window.start + 1  # [b, m] local
                ids = base.repeat(len(batch), 1)
                row_index = torch.from_numpy(rows).to(device)
                ids.scatter_(1, row_index, int(plan.mask_id))
                logits = forward_ids(loaded, ids, rows=row_index).float()  # [b, m, vocab]
                originals = base[row_index]  # [b, m]
                lse = torch.logsumexp(logits, dim=-1)
                picked = logits.gather(-1, originals[..., None])[..., 0] - lse  # [b, m]
                best = logits.argmax(-1)
                for row, group in enumerate(batch):
                    logprobs[group] = picked[row, :group.size].cpu().numpy()
                    expected[group] = best[row, :group.size].cpu().numpy()
                done += len(batch)
                report(progress, done / max(len(jobs), 1), f"Scored {done} of {len(jobs)} masked copies")
    tokenizer = loaded.tokenizer(plan.lowercase)
    token_logprobs = np.concatenate([[np.nan], logprobs, [np.nan]]).astype(np.float32)
    expected_ids = np.concatenate([[-1], expected, [-1]]).astype(np.int64)
    words = len(note.word_spans)
    word_logprobs = np.zeros(words, np.float64)
    np.add.at(word_logprobs, note.word_ids, logprobs.astype(np.float64))  # NaN propagates
    # A long word (a drug name of five pieces) sums five log-probabilities, so its sum is low
    # whatever the model thinks of it; the mean per piece compares words of any length.
    piece_counts = np.bincount(note.word_ids, minlength=words).astype(np.int32)  # [word]
    with np.errstate(invalid="ignore", divide="ignore"):
        word_mean_logprobs = np.where(piece_counts > 0, word_logprobs / np.maximum(piece_counts, 1), np.nan)
    return PseudoLikelihood(
        model_key=loaded.info.key, text=text, lowercase=plan.lowercase, knocked_out=heads,
        tokens=plan.global_tokens(), offsets=plan.global_offsets(), word_ids=plan.global_word_ids(),
        token_logprobs=token_logprobs, expected_ids=expected_ids,
        expected_tokens=tuple(tokenizer.convert_ids_to_tokens(int(i)) if i >= 0 else "" for i in expected_ids),
        word_spans=np.array(note.word_spans, dtype=np.int32), word_logprobs=word_logprobs.astype(np.float32),
        word_mean_logprobs=word_mean_logprobs.astype(np.float32), word_piece_counts=piece_counts,
        windows=plan.windows, stride=int(max(stride, 0)), precision=precision, forward_rows=len(jobs),
        seconds=time.perf_counter() - started,
    )


