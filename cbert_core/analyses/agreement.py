"""Which explanation to trust: how far methods agree on a note, beside how faithful each one is.

:func:`method_agreement` ranks the groups (words, sentences, sections) by each method's scores
and correlates every pair of methods (Spearman's rank correlation, scipy). Only groups every
method covers are compared, and groups made only of the target's own [MASK] are left out (the
question, not evidence). Saliency-type methods score magnitudes only: a pair with such a method
is compared on absolute scores.

:func:`holds_up` reads faithfulness and agreement together: the method whose top groups matter
most to the prediction (highest comprehensiveness minus sufficiency, ferret's AOPC scores) is
the one that holds up on this note, and the methods that rank the groups like it (rank
correlation of at least :data:`AGREE`) back it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from cbert_core.analyses.attribution_groups import Groups, group_scores
from cbert_core.analyses.faithfulness import Faithfulness
from cbert_core.analyses.whole_note import NoteAttribution
from cbert_core.records import frozen_array

AGREE = 0.5  # a rank correlation at least this large counts as agreeing


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """Rank correlation of group scores between every pair of methods."""

    methods: tuple[str, ...]  # [m]
    grouping: str
    compared: int  # groups every method covers (the correlation's sample size)
    correlation: np.ndarray  # float64 [m, m]: Spearman's rho (NaN where a method ranks every group alike)

    def __post_init__(self) -> None:
        m = len(self.methods)
        if self.correlation.shape != (m, m):
            raise ValueError("Agreement.correlation must be [m, m]")
        frozen_array(self.correlation)


def method_agreement(attributions: Sequence[NoteAttribution], groups: Groups) -> Agreement:
    """Spearman rank correlation of the group scores of every pair of ``attributions`` (one note, one target).

    Raises:
        ValueError: no attribution, or attributions of different notes.
    """
    if not attributions:
        raise ValueError("give at least one attribution")
    if any(a.piece_scores.shape != groups.members.shape for a in attributions):
        raise ValueError("every attribution must be of the note the groups are of")
    covered = np.logical_and.reduce([a.covered for a in attributions])
    movable = covered & ~np.logical_or.reduce([a.fixed for a in attributions])
    compared = np.bincount(groups.members, weights=movable.astype(np.float64), minlength=len(groups)) > 0
    fully = np.bincount(groups.members, weights=(~covered).astype(np.float64), minlength=len(groups)) == 0
    keep = compared & fully
    scores = [group_scores(a.piece_scores, groups)[keep] for a in attributions]
    m = len(attributions)
    correlation = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(i, m):
            both_signed = attributions[i].signed and attributions[j].signed
            a, b = (scores[i], scores[j]) if both_signed else (np.abs(scores[i]), np.abs(scores[j]))
            if a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
                correlation[i, j] = correlation[j, i] = float(spearmanr(a, b).statistic)
    return Agreement(methods=tuple(a.method for a in attributions), grouping=groups.grouping,
                     compared=int(keep.sum()), correlation=correlation)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The explanation that holds up on this note, and which others rank the groups like it."""

    best: str  # the method with the highest comprehensiveness - sufficiency
    comprehensiveness: float
    sufficiency: float
    agreeing: tuple[str, ...]  # other methods whose rank correlation with ``best`` is at least AGREE
    disagreeing: tuple[str, ...]  # other methods below AGREE (or not comparable)
    faithful: bool  # removing the best method's top groups lowers the prediction more than keeping only them


def holds_up(faithfulness: Sequence[Faithfulness], agreement: Agreement) -> Verdict:
    """Which explanation holds up: faithfulness first (comprehensiveness - sufficiency), agreement beside it.

    Args:
        faithfulness: one per method of ``agreement``, in the same order.
    """
    if [f.method for f in faithfulness] != list(agreement.methods):
        raise ValueError("give the faithfulness of each method of the agreement, in its order")
    margins = np.array([f.comprehensiveness - f.sufficiency for f in faithfulness])
    best = int(np.argmax(margins))
    others = [i for i in range(len(faithfulness)) if i != best]
    rho = agreement.correlation[best]
    return Verdict(
        best=agreement.methods[best], comprehensiveness=faithfulness[best].comprehensiveness,
        sufficiency=faithfulness[best].sufficiency,
        agreeing=tuple(agreement.methods[i] for i in others if np.isfinite(rho[i]) and rho[i] >= AGREE),
        disagreeing=tuple(agreement.methods[i] for i in others if not (np.isfinite(rho[i]) and rho[i] >= AGREE)),
        faithful=bool(margins[best] > 0),
    )
