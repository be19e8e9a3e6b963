"""Layer-wise linear probes: at which layer can a label (negated or affirmed...) be read off linearly?

For a labelled collection, :func:`run_probes` takes one vector per note at every layer, all layers
from one batched pass per note (:func:`cbert_core.run.encode.run_sequences`): the [CLS] position, the
mean of the note's pieces, or the mean of a target phrase's pieces (NegEx names the condition each
label is about). At each layer a logistic regression (scikit-learn, standardised features) is scored
by stratified k-fold cross-validation.

A probe that reads a label may only be memorising words. The control task (Hewitt and Liang, 2019)
keeps that capacity and removes the linguistic signal: each target phrase gets one random label, drawn
from the label frequencies and fixed for every note with that phrase (without phrases, the labels are
shuffled). Selectivity = probe accuracy - control accuracy: high where the layer holds the label beyond
what the words alone give away.

The notes run with their plans' options: casing, knocked-out heads (a probe re-run with the heads that
carry a pair's difference switched off) and precision.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cbert_core.errors import DataFileError
from cbert_core.model.hooks import HeadSet, knockout
from cbert_core.model.loading import LoadedModel
from cbert_core.model.precision import autocast
from cbert_core.progress import Progress, part, report
from cbert_core.records import frozen
from cbert_core.run.encode import DEFAULT_BATCH_SIZE, run_sequences
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes

Pooling = Literal["cls", "mean", "phrase"]
POOLINGS: tuple[Pooling, ...] = ("cls", "mean", "phrase")
DEFAULT_FOLDS = 5


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """Probe and control accuracy at every layer (0 = the embeddings), per cross-validation fold."""

    pooling: Pooling
    label_names: tuple[str, ...]
    examples: int  # notes probed
    dropped: int  # notes left out: their target phrase is not in the note
    accuracy: np.ndarray  # float64 [layer + 1, fold]
    control: np.ndarray  # float64 [layer + 1, fold]: the control task's accuracy
    majority: float  # accuracy of always answering the commonest label
    knocked_out: HeadSet
    seconds: float

    def __post_init__(self) -> None:
        if self.accuracy.shape != self.control.shape or self.accuracy.ndim != 2:
            raise ValueError("ProbeResult accuracy and control must be [layer + 1, fold]")
        frozen(self.accuracy, self.control)

    @property
    def selectivity(self) -> np.ndarray:
        """float64 [layer + 1]: mean probe accuracy - mean control accuracy."""
        return self.accuracy.mean(1) - self.control.mean(1)

    @property
    def best_layer(self) -> int:
        """The layer (0 = the embeddings) where the label is most selectively readable."""
        return int(np.argmax(self.selectivity))


def phrase_span(text: str, phrase: str) -> tuple[int, int] | None:
    """Characters of the first occurrence of ``phrase`` in ``text``, ignoring case and runs of spaces."""
    words = phrase.split()
    if not words:
        return None
    lowered = text.lower()
    match = re.search(r"\s+".join(re.escape(word.lower()) for word in words), lowered)
    return None if match is None else (match.start(), match.end())


def control_labels(labels: np.ndarray, phrases: Sequence[str] | None, seed: int = 0) -> np.ndarray:
    """int64 [n]: the control task's labels (see the module notes).

    Args:
        labels: int64 [n] the real labels.
        phrases: each note's target phrase (None: shuffle the labels instead).
    """
    rng = np.random.default_rng(seed)
    if phrases is None:
        return rng.permutation(labels).astype(np.int64)
    frequencies = np.bincount(labels) / labels.size
    types = [" ".join(phrase.lower().split()) for phrase in phrases]
    drawn = {kind: int(rng.choice(frequencies.size, p=frequencies)) for kind in dict.fromkeys(types)}
    return np.asarray([drawn[kind] for kind in types], dtype=np.int64)


def _fold_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> float:
    if np.unique(labels[train]).size < 2:  # a control fold may draw one label only: predict it
        return float(np.mean(labels[test] == labels[train][0]))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(features[train], labels[train])
    return float(model.score(features[test], labels[test]))


def fit_probes(features: np.ndarray, labels: np.ndarray, control: np.ndarray, *, folds: int = DEFAULT_FOLDS,
               seed: int = 0, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated accuracy of a logistic-regression probe at every layer, for the labels and the control.

    Args:
        features: float [n, layer, d]. labels, control: int64 [n].
        folds: stratified folds (by the real labels; the same splits for the control).

    Returns:
        (accuracy, control accuracy), float64 [layer, fold] each.

    Raises:
        DataFileError: fewer than two labels, or a label with fewer than two notes.
    """
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if counts.size < 2:
        raise DataFileError("A probe needs notes of at least two different labels; this collection has one.")
    folds = int(min(folds, counts.min()))
    if folds < 2:
        raise DataFileError("Every label needs at least two notes for cross-validation; one label has only one.")
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(features[:, 0], labels))
    layers = features.shape[1]
    accuracy = np.zeros((layers, folds))
    controlled = np.zeros((layers, folds))
    for layer in range(layers):
        at_layer = np.ascontiguousarray(features[:, layer], dtype=np.float64)
        for fold, (train, test) in enumerate(splits):
            accuracy[layer, fold] = _fold_accuracy(at_layer, labels, train, test, seed)
            controlled[layer, fold] = _fold_accuracy(at_layer, control, train, test, seed)
        report(progress, (layer + 1) / layers, f"Probed {layer + 1} of {layers} layers")
    return accuracy, controlled


def _sequences(plans: Sequence[NotePlan], pooling: Pooling,
               spans: Sequence[tuple[int, int] | None]) -> tuple[list[np.ndarray], list[tuple[int, np.ndarray, float]]]:
    """The windows to encode and, per window, (note, rows to pool, the window's weight in the note)."""
    sequences, uses = [], []
    for note, plan in enumerate(plans):
        if pooling == "phrase":
            start, end = spans[note]
            offsets = plan.tokens.offsets
            pieces = np.flatnonzero((offsets[:, 0] < end) & (offsets[:, 1] > start))
            window = plan.windows[int(plan.owner[pieces[0]])]
            pieces = pieces[(pieces >= window.start) & (pieces < window.stop)]
            sequences.append(plan.window_ids(window))
            uses.append((note, pieces - window.start + 1, 1.0))
            continue
        for window in plan.windows:
            sequences.append(plan.window_ids(window))
            rows = np.array([0]) if pooling == "cls" else np.arange(1, window.size + 1)
            uses.append((note, rows, 1.0 if pooling == "cls" else float(window.size)))
    return sequences, uses


def probe_features(loaded: LoadedModel, plans: Sequence[NotePlan], *, pooling: Pooling,
                   spans: Sequence[tuple[int, int] | None] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   progress: Progress | None = None) -> np.ndarray:
    """float32 [note, layer + 1, d]: each note's vector at every layer, every layer from one pass per window.

    [CLS] and the mean of the pieces average over a long note's windows (the mean weighted by each
    window's pieces); a phrase is read in the window that owns its first piece. The plans' options
    (knocked-out heads, precision) apply.

    Args:
        spans: each note's target phrase as characters (pooling "phrase" only; every span found).
    """
    if pooling == "phrase" and (spans is None or any(span is None for span in spans)):
        raise ValueError("phrase pooling needs every note's phrase span")
    sequences, uses = _sequences(plans, pooling, spans or [None] * len(plans))
    info = loaded.info
    sums = np.zeros((len(plans), info.num_layers + 1, info.hidden_size), np.float64)
    weights = np.zeros(len(plans))
    options = plans[0].options if plans else None
    heads = options.knocked_out if options is not None else frozenset()
    with knockout(loaded.anatomy, heads), autocast(options.precision if options is not None else "fp32", loaded.device):
        for index, hidden in run_sequences(loaded, sequences, batch_size=batch_size, progress=progress, what="notes"):
            note, rows, weight = uses[index]  # hidden: [layer + 1, t, d]
            sums[note] += weight * hidden[:, rows].mean(1)
            weights[note] += weight
    return (sums / weights[:, None, None]).astype(np.float32)


def planned_passes(plans: Sequence[NotePlan], pooling: Pooling) -> Passes:
    """The windows :func:`run_probes` encodes (one row each, all layers at once)."""
    windows = [len(plan.windows) if pooling != "phrase" else 1 for plan in plans]
    longest = max((window.size + 2 for plan in plans for window in plan.windows), default=2)
    return Passes(forward=((longest, int(sum(windows))),))


def run_probes(loaded: LoadedModel, plans: Sequence[NotePlan], labels: Sequence[str], *, pooling: Pooling = "cls",
               phrases: Sequence[str] | None = None, folds: int = DEFAULT_FOLDS, seed: int = 0,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None) -> ProbeResult:
    """Probe every layer of ``loaded`` for ``labels`` over the planned notes, with the control task.

    Args:
        plans: the notes, planned for ``loaded`` (one set of options for all).
        labels: [note] label of each note.
        pooling: "cls", "mean" (of the note's pieces) or "phrase" (of the target phrase's pieces).
        phrases: [note] target phrase of each note (needed for "phrase"; also makes the control task's
            labels fixed per phrase). Notes whose phrase is not in their text are left out and counted.

    Raises:
        DataFileError: no labels, lengths that disagree, no phrases for phrase pooling, no phrase found,
            or too few notes per label.
    """
    started = time.perf_counter()
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if len(labels) != len(plans) or (phrases is not None and len(phrases) != len(plans)):
        raise DataFileError("Each note needs one label (and one target phrase, if any): the columns disagree.")
    if pooling == "phrase" and phrases is None:
        raise DataFileError("Reading the target phrase needs a target phrase column (as NegEx's Condition). "
                            "Choose one, or read the [CLS] position or the mean of the note instead.")
    keep = np.arange(len(plans))
    spans: list[tuple[int, int] | None] | None = None
    if phrases is not None:
        found = [phrase_span(plan.text, phrase) for plan, phrase in zip(plans, phrases)]
        if pooling == "phrase":
            keep = np.asarray([i for i, span in enumerate(found) if span is not None], dtype=np.int64)
            if keep.size == 0:
                raise DataFileError("No note contains its target phrase, so there is nothing to read. Check the "
                                    "target phrase column.")
            spans = [found[i] for i in keep]
    names = tuple(sorted(set(labels)))
    label_ids = np.asarray([names.index(labels[i]) for i in keep], dtype=np.int64)
    kept_plans = [plans[i] for i in keep]
    control = control_labels(label_ids, None if phrases is None else [phrases[i] for i in keep], seed)
    features = probe_features(loaded, kept_plans, pooling=pooling, spans=spans, batch_size=batch_size,
                              progress=part(progress, 0.0, 0.6))
    accuracy, controlled = fit_probes(features, label_ids, control, folds=folds, seed=seed,
                                      progress=part(progress, 0.6, 1.0))
    majority = float(np.bincount(label_ids).max() / label_ids.size)
    return ProbeResult(pooling=pooling, label_names=names, examples=int(keep.size),
                       dropped=len(plans) - int(keep.size), accuracy=accuracy, control=controlled, majority=majority,
                       knocked_out=kept_plans[0].options.knocked_out, seconds=time.perf_counter() - started)

