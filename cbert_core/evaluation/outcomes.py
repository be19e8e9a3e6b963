"""Gold labels against the model's predictions, unit by unit (a note, or a word for a token classifier).

The collection's label names are matched to the model's classes through a mapping the user can see
and change (:func:`cbert_core.evaluation.dataset.guess_mapping` proposes one); a label mapped to
:data:`cbert_core.evaluation.dataset.LEAVE_OUT` is not evaluated. A token classifier's label column
holds one tag per whitespace-separated word (as CoNLL files do); a row whose tag count differs from
its word count is left out, with a message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cbert_core.errors import LabelMismatchError
from cbert_core.evaluation.dataset import LEAVE_OUT
from cbert_core.evaluation.predictions import CollectionPredictions
from cbert_core.records import frozen


@dataclass(frozen=True, kw_only=True)
class Outcomes:
    """The evaluated units: gold class, the model's probabilities, and where each unit sits."""

    classes: tuple[str, ...]  # [class]
    gold: np.ndarray  # int64 [unit]: index into classes
    probs: np.ndarray  # float32 [unit, class]
    rows: np.ndarray  # int64 [unit]: the collection row of each unit
    spans: np.ndarray  # int32 [unit, 2]: its characters in that row's note
    unit: str  # "note" or "word"
    left_out: int = 0  # units not evaluated (label left out, tags that do not fit, no word piece)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        units = len(self.gold)
        if self.probs.shape != (units, len(self.classes)) or self.rows.shape != (units,) or \
                self.spans.shape != (units, 2):
            raise ValueError("Outcomes arrays must be [unit], [unit, class] and [unit, 2]")
        frozen(self.gold, self.probs, self.rows, self.spans)

    def __len__(self) -> int:
        return len(self.gold)

    @property
    def predicted(self) -> np.ndarray:
        """int64 [unit]."""
        return self.probs.argmax(-1)

    @property
    def confidence(self) -> np.ndarray:
        """float32 [unit]: the probability of the predicted class."""
        return self.probs.max(-1)

    @property
    def correct(self) -> np.ndarray:
        """bool [unit]."""
        return self.predicted == self.gold

    def subset(self, keep: np.ndarray) -> Outcomes:
        """The units where ``keep`` (bool [unit]) holds."""
        return Outcomes(classes=self.classes, gold=self.gold[keep], probs=self.probs[keep], rows=self.rows[keep],
                        spans=self.spans[keep], unit=self.unit, left_out=self.left_out, warnings=self.warnings)


def label_names(labels: Sequence[str], unit: str) -> tuple[str, ...]:
    """The distinct gold label names to map (sorted): note labels, or for ``unit`` "word" the tags of tag sequences."""
    if unit == "word":
        return tuple(sorted({tag for label in labels for tag in str(label).split()}))
    return tuple(sorted(set(labels)))


def gold_names(predictions: CollectionPredictions, labels: Sequence[str]) -> tuple[str, ...]:
    """:func:`label_names` of ``labels`` for the unit ``predictions`` are made of."""
    return label_names(labels, predictions.unit)


def outcomes(predictions: CollectionPredictions, labels: Sequence[str],
             mapping: Mapping[str, str] | None = None) -> Outcomes:
    """Match gold ``labels`` (one per row) to ``predictions`` through ``mapping`` (gold name -> class).

    A gold name the mapping does not mention counts as itself.

    Raises:
        LabelMismatchError: a gold name that is not a class and not mapped (the mapping must say what it
            means), or no unit left to evaluate.
    """
    if len(labels) != predictions.rows:
        raise ValueError("one gold label per row of the predictions is needed")
    mapping = dict(mapping or {})
    classes = predictions.classes
    index = {name: i for i, name in enumerate(classes)}
    names = gold_names(predictions, labels)
    unknown = [name for name in names if mapping.get(name, name) not in index and mapping.get(name) != LEAVE_OUT]
    if unknown:
        raise LabelMismatchError(
            f"The labels {', '.join(repr(n) for n in unknown[:8])}{' ...' if len(unknown) > 8 else ''} are not "
            f"among the model's classes ({', '.join(repr(c) for c in classes)}). Say which class each one means "
            f"in the label mapping, or leave it out.")
    code = {name: (-1 if mapping.get(name) == LEAVE_OUT else index[mapping.get(name, name)]) for name in names}
    warnings: list[str] = []
    if predictions.unit == "word":
        gold = np.full(len(predictions.unit_rows), -1, dtype=np.int64)
        counts = np.bincount(predictions.unit_rows, minlength=predictions.rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        misfit = 0
        for row, label in enumerate(labels):
            tags = str(label).split()
            if len(tags) != counts[row]:
                misfit += 1
                continue
            gold[starts[row]:starts[row] + counts[row]] = [code[tag] for tag in tags]
        if misfit:
            warnings.append(f"{misfit:,} row(s) have a different number of tags than of words (separated by "
                            f"spaces) and were left out: the label column of a token classifier holds one tag "
                            f"per word, such as 'O O B-PROBLEM I-PROBLEM'.")
    else:
        gold = np.asarray([code[label] for label in labels], dtype=np.int64)
    keep = (gold >= 0) & np.isfinite(predictions.probs).all(-1)
    if not keep.any():
        raise LabelMismatchError("No row is left to evaluate: every label is left out in the mapping (or no tag "
                                 "sequence fits its note). Map at least one label to a class of the model.")
    left_out = int((~keep).sum())
    if left_out:
        warnings.append(f"{left_out:,} {predictions.unit}(s) are not evaluated (their label is left out in the "
                        f"mapping{', or their tags do not fit' if predictions.unit == 'word' else ''}).")
    if len(np.unique(gold[keep])) == 1:
        only = classes[int(gold[keep][0])]
        warnings.append(f"Every evaluated {predictions.unit} has the same label ('{only}'): accuracy only says how "
                        f"often the model predicts it, and macro-F1, the confusion matrix and calibration say "
                        f"little. Evaluate on a collection with several classes, or map the labels differently.")
    return Outcomes(classes=classes, gold=gold[keep], probs=np.asarray(predictions.probs[keep], dtype=np.float32),
                    rows=predictions.unit_rows[keep].astype(np.int64), spans=predictions.unit_spans[keep],
                    unit=predictions.unit, left_out=left_out, warnings=tuple(warnings))
