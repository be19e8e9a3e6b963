"""The explained score of a note, as the model computes it from the windows it reads.

A note longer than the model's positions is read in windows, each on its own. What the app shows
for the whole note combines them, and an explanation of the whole note explains that combination:

* a class: the mean of the windows' probabilities (:func:`cbert_core.analyses.labelling.classify`),
  so the explained score is ``log(mean_w p_w(class))``;
* a similarity: the cosine between the description and the length-weighted mean of the windows'
  mean-pooled last layers (:func:`cbert_core.analyses.similarity.embedding_similarity`).

Each window contributes a *summary* (its log-probability, or its mean-pooled state) and the
note's score is a fixed function of the summaries (:func:`combine`). A positional target (a masked
word, a word's entity label) and a chosen window have one window, whose summary is the score itself:
that is what :func:`cbert_core.analyses.attribution.attribute` explains.

:class:`NoteScorer` keeps every explained window's input and summary for one explanation, so

* :meth:`NoteScorer.with_window` gives the note's score with one window's word vectors replaced
  and the other windows as the model read them (differentiable: gradient methods explain a
  window "with the others' context as the model saw it");
* :meth:`NoteScorer.scores_for_content` gives the score of perturbed copies of the note's pieces,
  running again only the windows a copy changed (perturbation methods over sentences or
  sections cost tens of window passes, not one per piece);
* :meth:`NoteScorer.scores_for_sequences` scores shortened notes (faithfulness deletes pieces),
  cut into windows again as a note of that length would be.

A scorer holds tensors and lives for one explanation; build it inside the caller's knockout and
autocast context (its end points run in float32, like attribution's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cbert_core.analyses.attribution import DEFAULT_ATTRIBUTION_MEMORY, BaselineKind, Rule, baseline_ids
from cbert_core.analyses.targets import ResolvedTarget, Taps, Target, pooled_states, resolve_target, target_scores
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import float32
from cbert_core.progress import Progress, report
from cbert_core.run.forward import DEFAULT_INFERENCE_MEMORY, fit_batch, word_vectors
from cbert_core.run.plan import NotePlan
from cbert_core.text.windows import Window, plan_windows

DEFAULT_SAMPLES = 16
DEFAULT_NOISE = 0.1


@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """How an explanation's method runs (each method reads the fields it uses)."""

    steps: int = 50  # path integral points (Integrated Gradients, layer conductance)
    rule: Rule = "gauss-legendre"  # our Integrated Gradients' quadrature
    tolerance: float | None = None  # our Integrated Gradients' early stop (see attribution.attribute)
    samples: int = DEFAULT_SAMPLES  # noisy copies, permutations or coalitions of the sampling methods
    noise: float = DEFAULT_NOISE  # noise standard deviation, as a fraction of the input's
    memory_limit: int = DEFAULT_ATTRIBUTION_MEMORY  # activation bytes one batch may use


@dataclass(frozen=True, kw_only=True)
class WindowRun:
    """What a gradient method found in one window."""

    scores: np.ndarray  # float64 [t]: one per input row of the window, [CLS] and [SEP] included
    evaluations: int  # gradient evaluations (rows through the model, forward and backward)
    batch_size: int  # rows per batch


def explained_windows(loaded: LoadedModel, plan: NotePlan, target: Target,
                      window: int | None) -> tuple[ResolvedTarget, ...]:
    """The windows an explanation covers, each with its input and target row.

    A positional target: the window owning its position. A chosen ``window``: that one. A note that
    fits one window: it. Otherwise (a note-level target on a long note, ``window=None``): every window.

    Raises:
        TargetError, WrongHeadError: the target does not fit the note or the model.
    """
    if target.positional or window is not None or len(plan.windows) == 1:
        return (resolve_target(loaded, plan, target, window),)
    return tuple(resolve_target(loaded, plan, target, index) for index in range(len(plan.windows)))


def window_summaries(loaded: LoadedModel, target: Target, words: torch.Tensor, rows: torch.Tensor,
                     key_mask: torch.Tensor | None = None, taps: Taps | None = None) -> torch.Tensor:
    """What one window contributes to the note's score, for a batch of its inputs.

    Args:
        words: [b, t, e] word vectors; rows: int64 [b] the target row of each input.
        key_mask: bool [b, t] for padded batches.
        taps: applied to each layer's output (captum's layer methods hook them).

    Returns:
        [b] the target's log-probability at ``rows``, or (similarity) float32 [b, d] mean-pooled states.
    """
    if target.kind == "similarity":
        return pooled_states(loaded, words, key_mask, taps)
    return target_scores(loaded, target, words, rows, key_mask, taps)


def combine(target: Target, summaries: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The note's score from its windows' summaries (float32).

    Args:
        summaries: [b, W] log-probabilities or [b, W, d] pooled states.
        weights: float32 [W] each window's share of the note's pieces (summing to 1).

    Returns:
        [b]: log of the mean probability, or the cosine of the weighted mean state to the description.
    """
    with float32():
        summaries = summaries.float()
        if target.kind == "similarity":
            pooled = (summaries * weights[None, :, None]).sum(1)  # [b, d]
            reference = torch.tensor(target.reference, dtype=torch.float32, device=pooled.device)
            return F.cosine_similarity(pooled, reference[None], dim=-1)
        return torch.logsumexp(summaries, dim=1) - math.log(summaries.shape[1])


class NoteScorer:
    """The explained windows of one note, their inputs and summaries, for one explanation."""

    def __init__(self, loaded: LoadedModel, plan: NotePlan, target: Target, window: int | None,
                 baseline: BaselineKind, memory_limit: int = DEFAULT_INFERENCE_MEMORY) -> None:
        self.loaded, self.plan, self.target = loaded, plan, target
        self.resolved = explained_windows(loaded, plan, target, window)
        self.windows: tuple[Window, ...] = tuple(r.window for r in self.resolved)
        self.memory_limit = memory_limit
        self.base_ids = [baseline_ids(loaded, plan, r, baseline) for r in self.resolved]  # int64 [t_w] each
        sizes = torch.tensor([w.size for w in self.windows], dtype=torch.float32, device=loaded.device)
        self.weights = sizes / sizes.sum()  # [W]
        self.rows = [max(r.position, 0) for r in self.resolved]
        self.start, self.stop = self.windows[0].start, self.windows[-1].stop  # content pieces covered
        with torch.no_grad(), float32():
            self.inputs = [word_vectors(loaded, torch.from_numpy(r.ids)[None].to(loaded.device))[0] for r in self.resolved]  # [t, e]
            self.references = [word_vectors(loaded, torch.from_numpy(ids)[None].to(loaded.device))[0] for ids in self.base_ids]
            self.summaries = torch.stack([self._summary(i, self.inputs[i][None])[0]
                                          for i in range(len(self.windows))])  # [W] or [W, d]
        self._baseline_summaries: torch.Tensor | None = None
        self.score = float(combine(target, self.summaries[None], self.weights)[0])
        self.forward_rows = len(self.windows)

    def _summary(self, index: int, words: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        rows = torch.full((words.shape[0],), self.rows[index], dtype=torch.long, device=words.device)
        return window_summaries(self.loaded, self.target, words, rows, taps=taps)

    @property
    def positional_content(self) -> int:
        """The target's content index relative to :attr:`start` (-1 for a note-level target)."""
        resolved = self.resolved[0]
        return resolved.window.start + resolved.position - 1 - self.start if self.target.positional else -1

    def content_ids(self) -> np.ndarray:
        """int64 [m]: the covered content pieces' ids (pieces start..stop of the note)."""
        return self.plan.tokens.ids[self.start:self.stop].astype(np.int64)

    def content_fixed(self) -> np.ndarray:
        """bool [m]: covered pieces never perturbed (the target [MASK])."""
        fixed = np.zeros(self.stop - self.start, dtype=bool)
        for resolved in self.resolved:
            inner = resolved.fixed[1:-1]
            fixed[resolved.window.start - self.start:resolved.window.stop - self.start] |= inner
        return fixed

    def content_baseline(self) -> np.ndarray:
        """int64 [m]: the baseline piece of every covered piece (its own id where it is fixed)."""
        out = self.content_ids().copy()
        for resolved, base in zip(self.resolved, self.base_ids):
            out[resolved.window.start - self.start:resolved.window.stop - self.start] = base[1:-1]
        return out

    def with_window(self, index: int, words: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """[b]: the note's score with window ``index`` read from ``words`` [b, t, e], the others as read.

        ``taps``: applied to each layer's output of window ``index`` (see :func:`window_summaries`).
        """
        summary = self._summary(index, words, taps)  # [b] or [b, d]
        others = self.summaries.detach()[None].expand(words.shape[0], *self.summaries.shape)
        summaries = torch.cat([others[:, :index], summary[:, None], others[:, index + 1:]], dim=1)
        return combine(self.target, summaries, self.weights)

    def baseline_summaries(self) -> torch.Tensor:
        """[W] or [W, d]: each window's summary with all its pieces at the baseline (float32, computed once)."""
        if self._baseline_summaries is None:
            with torch.no_grad(), float32():
                self._baseline_summaries = torch.stack([self._summary(i, self.references[i][None])[0]
                                                        for i in range(len(self.windows))])
            self.forward_rows += len(self.windows)
        return self._baseline_summaries

    def score_without(self, index: int) -> float:
        """The note's score with window ``index`` at the baseline and the others as read."""
        summaries = self.summaries.clone()
        summaries[index] = self.baseline_summaries()[index]
        return float(combine(self.target, summaries[None], self.weights)[0])

    @property
    def baseline_score(self) -> float:
        """The note's score with every explained window at the baseline."""
        return float(combine(self.target, self.baseline_summaries()[None], self.weights)[0])

    def scores_for_content(self, contents: torch.Tensor, progress: Progress | None = None,
                           message: str = "Perturbed copies") -> torch.Tensor:
        """float32 [b]: the note's score for copies of the covered pieces (no gradient).

        Only the windows a copy changes run again, in batches within the memory bound; the
        others keep the summary the model gave the note as it is.

        Args:
            contents: [b, m] piece ids (any number type; rounded) of the covered pieces start..stop.
        """
        contents = contents.detach().round().long().to(self.loaded.device)
        original = torch.from_numpy(self.content_ids()).to(contents.device)
        summaries = self.summaries[None].repeat(contents.shape[0], *([1] * self.summaries.dim())).clone()
        with torch.no_grad():
            for index, window in enumerate(self.windows):
                part = contents[:, window.start - self.start:window.stop - self.start]  # [b, size]
                same = original[window.start - self.start:window.stop - self.start]
                changed = torch.nonzero((part != same).any(1)).flatten()  # copies that change this window
                if changed.numel() == 0:
                    continue
                ids = torch.cat([torch.full((changed.numel(), 1), self.plan.cls_id, device=part.device), part[changed],
                                 torch.full((changed.numel(), 1), self.plan.sep_id, device=part.device)], dim=1)
                batch = fit_batch(self.loaded, ids.shape[1], 64, self.memory_limit, backward=False,
                                  what="A perturbation method")
                for first in range(0, changed.numel(), batch):
                    rows = changed[first:first + batch]
                    chunk = ids[first:first + batch]
                    summaries[rows, index] = self._summary(index, word_vectors(self.loaded, chunk)).float()
                    self.forward_rows += len(rows)
                report(progress, (index + 1) / len(self.windows),
                       f"{message}: window {index + 1} of {len(self.windows)}")
        return combine(self.target, summaries, self.weights)

    def scores_for_sequences(self, contents: Sequence[np.ndarray], target_indices: Sequence[int],
                             batch_size: int = 16) -> np.ndarray:
        """float64 [k]: the score of shortened notes, each cut into windows as a note of its length would be.

        Args:
            contents: int content-piece ids of each note (no [CLS]/[SEP]).
            target_indices: a positional target's content index in each (ignored for note-level targets).
        """
        limit = self.loaded.info.max_tokens - 2
        jobs: list[tuple[int, int, np.ndarray, int]] = []  # (note, window, ids with specials, target row)
        sizes: list[list[int]] = []
        for number, content in enumerate(contents):
            if self.target.positional:
                cut = (Window(index=0, start=0, stop=len(content)),)
            else:
                cut = plan_windows(max(len(content), 1), limit, self.plan.options.overlap)
            sizes.append([w.size for w in cut])
            for index, window in enumerate(cut):
                ids = np.concatenate([[self.plan.cls_id], content[window.start:window.stop], [self.plan.sep_id]])
                row = target_indices[number] + 1 if self.target.positional else 0
                jobs.append((number, index, ids.astype(np.int64), row))
        summaries: dict[tuple[int, int], torch.Tensor] = {}
        with torch.no_grad():
            for first in range(0, len(jobs), batch_size):
                chunk = jobs[first:first + batch_size]
                width = max(ids.size for _, _, ids, _ in chunk)
                batch = fit_batch(self.loaded, width, len(chunk), self.memory_limit, backward=False,
                                  what="Faithfulness")
                for start in range(0, len(chunk), batch):
                    part = chunk[start:start + batch]
                    ids = torch.zeros(len(part), width, dtype=torch.long)
                    keep = torch.zeros(len(part), width, dtype=torch.bool)
                    for row, (_, _, sequence, _) in enumerate(part):
                        ids[row, :sequence.size] = torch.from_numpy(sequence)
                        keep[row, :sequence.size] = True
                    rows = torch.tensor([row for *_, row in part], dtype=torch.long)
                    device = self.loaded.device
                    values = window_summaries(self.loaded, self.target, word_vectors(self.loaded, ids.to(device)),
                                              rows.to(device), None if bool(keep.all()) else keep.to(device))
                    for row, (number, index, _, _) in enumerate(part):
                        summaries[(number, index)] = values[row].float()
                    self.forward_rows += len(part)
        out = np.zeros(len(contents), np.float64)
        for number, window_sizes in enumerate(sizes):
            stacked = torch.stack([summaries[(number, index)] for index in range(len(window_sizes))])
            weights = torch.tensor(window_sizes, dtype=torch.float32, device=stacked.device)
            out[number] = float(combine(self.target, stacked[None], weights / weights.sum().clamp_min(1))[0])
        return out
