"""Does an attribution point at what the model uses? AOPC comprehensiveness and sufficiency.

Definitions follow the ``ferret`` library (Attanasio et al. 2023,
``ferret/evaluators/faithfulness_measures.py``), with its defaults:

* the rationale at fraction v is the top ``int(v * n)`` pieces by score, for
  v = 0.1, 0.2, ..., 1.0, over the n word pieces of the input except [CLS]/[SEP]
  (``remove_first_last``), counting only pieces with a positive score (``only_pos``);
  a fraction whose rationale equals the previous one is skipped;
* comprehensiveness = mean over fractions of p(full input) - p(input without the
  rationale): high means removing the top pieces hurts the prediction;
* sufficiency = mean over fractions of p(full input) - p(only the rationale): low
  means the top pieces alone keep the prediction;
* "removing" deletes the pieces (``remove_tokens=True``); with no rationale at any
  fraction comprehensiveness is 0 and sufficiency 1.

Differences, all deliberate: ferret decodes the shortened ids to text and
re-tokenizes; we delete ids directly (a round trip can re-split pieces). The
target's own position (the [MASK] of a masked-token target, the labelled piece of
a token-class target) is never removed, and the target is the probability of the
attributed output (for a similarity target: the cosine similarity itself).
``removal="mask"`` replaces pieces by [MASK] instead of deleting them.

:func:`group_faithfulness` scores a whole-note explanation
(:class:`~cbert_core.analyses.whole_note.NoteAttribution`) at a grouping: a rationale is the top
groups (words, sentences, sections) by score, and removing it deletes all their pieces (the
target's own [MASK] excepted). A note-level target on a long note is then read as the model would
read the shortened note: cut into windows again (without snapping to sentences, for the full note
too, so that the drops come from the removal only) and combined as the whole note's score is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cbert_core.analyses.attribution import Attribution
from cbert_core.analyses.attribution_groups import Groups, group_scores
from cbert_core.analyses.note_score import NoteScorer
from cbert_core.analyses.targets import target_probability, target_scores_for_ids
from cbert_core.analyses.whole_note import NoteAttribution
from cbert_core.errors import TargetError
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.run.forward import DEFAULT_INFERENCE_MEMORY, fit_batch
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes

Removal = Literal["delete", "mask"]
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))


@dataclass(frozen=True, kw_only=True)
class Faithfulness:
    """AOPC comprehensiveness and sufficiency of one attribution, with the curve behind each."""

    method: str
    target_label: str
    knocked_out: HeadSet
    removal: Removal
    only_positive: bool
    full_probability: float  # the target on the whole window (the explained windows, by group)
    fractions: np.ndarray  # float32 [k]: fractions kept after skipping repeated rationales
    removed: np.ndarray  # int32 [k]: rationale size at each fraction (pieces, or groups by group)
    comprehensiveness_drops: np.ndarray  # float32 [k]: p(full) - p(without rationale)
    sufficiency_drops: np.ndarray  # float32 [k]: p(full) - p(rationale only)
    comprehensiveness: float  # mean of comprehensiveness_drops (0 when k = 0); higher is better
    sufficiency: float  # mean of sufficiency_drops (1 when k = 0); lower is better
    seconds: float
    grouping: str = "piece"  # what a rationale is made of: pieces, or words, sentences, sections

    def __post_init__(self) -> None:
        k = len(self.fractions)
        for array in (self.removed, self.comprehensiveness_drops, self.sufficiency_drops):
            if array.shape != (k,):
                raise ValueError("Faithfulness curves must be [k]")
        for array in (self.fractions, self.removed, self.comprehensiveness_drops, self.sufficiency_drops):
            array.flags.writeable = False


def rationales(scores: np.ndarray, fractions: Sequence[float], only_positive: bool) -> list[tuple[float, np.ndarray]]:
    """ferret's discrete rationales: (fraction, int64 indices into ``scores``) with repeats skipped.

    Args:
        scores: float [n] importance of each removable piece.
    """
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    chosen: list[tuple[float, np.ndarray]] = []
    previous: frozenset[int] | None = None
    for fraction in fractions:
        k = int(fraction * n)
        if k <= 0 or k > n:
            continue
        top = order[:k]
        if only_positive:
            top = top[scores[top] > 0]
        if previous is not None and frozenset(top.tolist()) == previous:
            continue
        previous = frozenset(top.tolist())
        chosen.append((float(fraction), top.astype(np.int64)))
    return chosen


def planned_passes(positions: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Passes:
    """The passes :func:`faithfulness` runs on a window of ``positions``: two shortened inputs per fraction."""
    return Passes(forward=((max(positions // 2, 1), 2 * len(fractions)),))


def faithfulness(loaded: LoadedModel, attribution: Attribution, *, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 only_positive: bool = True, removal: Removal = "delete",
                 knocked_out: Iterable[tuple[int, int]] | None = None, batch_size: int = 16,
                 memory_limit: int = DEFAULT_INFERENCE_MEMORY, progress: Progress | None = None) -> Faithfulness:
    """AOPC comprehensiveness and sufficiency of ``attribution`` on its own target and window.

    Args:
        fractions: shares of the pieces removed (ferret: 10 % ... 100 %).
        only_positive: count only positively scored pieces in a rationale (ferret's default).
        removal: "delete" the pieces (ferret) or replace them by "mask".
        knocked_out: heads zeroed (None: the attribution's own knocked-out heads).
        batch_size: shortened inputs per forward pass.

    Raises:
        TargetError: ``removal="mask"`` on a tokenizer without a mask token.
        ResourceLimitError: a batch over ``memory_limit``.
    """
    started = time.perf_counter()
    heads_wanted = attribution.knocked_out if knocked_out is None else knocked_out
    target = attribution.target
    ids = attribution.input_ids
    removable = np.flatnonzero(~attribution.fixed)  # [n] local rows that may be removed
    position = attribution.target_position
    mask_id = loaded.tokenizer(attribution.lowercase).mask_token_id
    if removal == "mask" and mask_id is None:
        raise TargetError("This model's tokenizer has no [MASK] token; use deletion instead.")
    chosen = rationales(attribution.piece_scores[removable].astype(np.float64), fractions, only_positive)

    def shortened(drop: np.ndarray) -> tuple[np.ndarray, int]:
        """The window's ids without local rows ``drop`` (or masked there), and the target's new row."""
        if removal == "mask":
            out = ids.copy()
            out[drop] = mask_id
            return out, position
        keep = np.ones(ids.size, dtype=bool)
        keep[drop] = False
        new_position = int(keep[:position].sum()) if position >= 0 else -1
        return ids[keep], new_position

    sequences, positions = [ids], [position]
    for _, top in chosen:
        rationale = removable[top]
        for drop in (rationale, np.setdiff1d(removable, rationale)):  # comprehensiveness, then sufficiency
            sequence, row = shortened(drop)
            sequences.append(sequence)
            positions.append(row)
    rows = fit_batch(loaded, ids.size, batch_size, memory_limit, backward=False, what="Faithfulness")
    values = np.zeros(len(sequences), np.float64)
    with torch.inference_mode(), knockout(loaded.anatomy, heads_wanted) as heads:
        for first in range(0, len(sequences), rows):
            part = slice(first, first + rows)
            values[part] = target_scores_for_ids(loaded, target, sequences[part], positions[part], rows)
            if progress is not None:
                done = min(first + rows, len(sequences))
                progress(done / len(sequences), f"Faithfulness: {done} of {len(sequences)} shortened inputs")
    probabilities = np.asarray(target_probability(target, values), dtype=np.float64)
    full = float(probabilities[0])
    comprehensiveness = (full - probabilities[1::2]).astype(np.float32)
    sufficiency = (full - probabilities[2::2]).astype(np.float32)
    return Faithfulness(
        method=attribution.method, target_label=target.label, knocked_out=heads, removal=removal,
        only_positive=only_positive, full_probability=full,
        fractions=np.array([f for f, _ in chosen], np.float32),
        removed=np.array([top.size for _, top in chosen], np.int32),
        comprehensiveness_drops=comprehensiveness, sufficiency_drops=sufficiency,
        comprehensiveness=float(comprehensiveness.mean()) if chosen else 0.0,
        sufficiency=float(sufficiency.mean()) if chosen else 1.0,
        seconds=time.perf_counter() - started,
    )


def planned_group_passes(windows: tuple[int, ...], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Passes:
    """The passes :func:`group_faithfulness` runs over windows of these positions: two shortened notes per
    fraction and the full one, each about half or all of the windows."""
    return Passes(forward=tuple((positions, 2 * len(fractions) + 1) for positions in windows))


def group_faithfulness(loaded: LoadedModel, plan: NotePlan, attribution: NoteAttribution, groups: Groups, *,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, only_positive: bool = True,
                       batch_size: int = 16, memory_limit: int = DEFAULT_INFERENCE_MEMORY,
                       progress: Progress | None = None) -> Faithfulness:
    """AOPC comprehensiveness and sufficiency of ``attribution`` when its rationales are whole groups.

    Args:
        plan: the note ``attribution`` explains (same text and options).
        groups: the grouping (from :func:`cbert_core.analyses.attribution_groups.note_groups` on ``plan``).
        fractions, only_positive: as :func:`faithfulness`, over the groups instead of the pieces.

    Raises:
        ValueError: ``plan`` is not the note the attribution explains.
        ResourceLimitError: a batch over ``memory_limit``.
    """
    if plan.text != attribution.text or groups.members.shape != attribution.piece_scores.shape:
        raise ValueError("the plan and the groups must be those of the explained note")
    started = time.perf_counter()
    target = attribution.target
    window = None if attribution.whole_note or target.positional else attribution.windows[0].index
    with torch.inference_mode(), knockout(loaded.anatomy, attribution.knocked_out) as heads:
        scorer = NoteScorer(loaded, plan, target, window, attribution.baseline, memory_limit)
        inside = slice(scorer.start, scorer.stop)
        content, fixed, members = scorer.content_ids(), scorer.content_fixed(), groups.members[inside]
        target_index = scorer.positional_content
        if target_index >= 0:
            fixed[target_index] = True  # the target's own piece is never removed
        removable_groups = np.unique(members[~fixed])  # groups holding a piece that may be removed
        scores = group_scores(attribution.piece_scores, groups)[removable_groups]
        chosen = rationales(scores, fractions, only_positive)
        sequences, indices = [content], [target_index]
        for _, top in chosen:
            rationale = np.isin(members, removable_groups[top]) & ~fixed
            for drop in (rationale, ~rationale & ~fixed):  # comprehensiveness, then sufficiency
                sequences.append(content[~drop])
                indices.append(int((~drop)[:target_index].sum()) if target_index >= 0 else -1)
        values = np.zeros(len(sequences), np.float64)
        for first in range(0, len(sequences), batch_size):
            part = slice(first, first + batch_size)
            values[part] = scorer.scores_for_sequences(sequences[part], indices[part], batch_size)
            done = min(first + batch_size, len(sequences))
            report(progress, done / len(sequences), f"Faithfulness: {done} of {len(sequences)} shortened notes")
    probabilities = np.asarray(target_probability(target, values), dtype=np.float64)
    full = float(probabilities[0])
    comprehensiveness = (full - probabilities[1::2]).astype(np.float32)
    sufficiency = (full - probabilities[2::2]).astype(np.float32)
    return Faithfulness(
        method=attribution.method, target_label=target.label, knocked_out=heads, removal="delete",
        only_positive=only_positive, full_probability=full, fractions=np.array([f for f, _ in chosen], np.float32),
        removed=np.array([top.size for _, top in chosen], np.int32), comprehensiveness_drops=comprehensiveness,
        sufficiency_drops=sufficiency, comprehensiveness=float(comprehensiveness.mean()) if chosen else 0.0,
        sufficiency=float(sufficiency.mean()) if chosen else 1.0, seconds=time.perf_counter() - started,
        grouping=groups.grouping,
    )
