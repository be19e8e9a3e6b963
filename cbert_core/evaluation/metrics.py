"""Accuracy, macro-F1, per-class precision/recall/F1 with counts, and the confusion matrix (scikit-learn's).

Macro-F1 averages the F1 of the classes that occur among the gold labels or the predictions, as
scikit-learn does by default. :func:`macro_f1_along` computes the same along an axis of many
resamples at once, for bootstrap intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from cbert_core.evaluation.outcomes import Outcomes
from cbert_core.records import frozen


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """How often the model is right, overall and per class."""

    classes: tuple[str, ...]  # [class]
    count: int  # units evaluated
    accuracy: float
    macro_f1: float
    precision: np.ndarray  # float64 [class]
    recall: np.ndarray  # float64 [class]
    f1: np.ndarray  # float64 [class]
    support: np.ndarray  # int64 [class]: gold units of each class
    predicted_count: np.ndarray  # int64 [class]: units predicted as each class
    confusion: np.ndarray  # int64 [gold class, predicted class]

    def __post_init__(self) -> None:
        classes = len(self.classes)
        if self.confusion.shape != (classes, classes) or self.f1.shape != (classes,):
            raise ValueError("Metrics arrays must be [class] and [class, class]")
        frozen(self.precision, self.recall, self.f1, self.support, self.predicted_count, self.confusion)


def metrics(found: Outcomes) -> Metrics:
    """The metrics of ``found`` (see the module notes)."""
    labels = np.arange(len(found.classes))
    gold, predicted = found.gold, found.predicted
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels,
                                                                     zero_division=0)
    return Metrics(classes=found.classes, count=len(found), accuracy=float(accuracy_score(gold, predicted)),
                   macro_f1=float(f1_score(gold, predicted, average="macro", zero_division=0)),
                   precision=np.asarray(precision, np.float64), recall=np.asarray(recall, np.float64),
                   f1=np.asarray(f1, np.float64), support=np.asarray(support, np.int64),
                   predicted_count=np.bincount(predicted, minlength=len(labels)).astype(np.int64),
                   confusion=confusion_matrix(gold, predicted, labels=labels).astype(np.int64))


def macro_f1_along(gold: np.ndarray, predicted: np.ndarray, classes: int, axis: int = -1) -> np.ndarray:
    """Macro-F1 of many samples at once: ``gold`` and ``predicted`` are int arrays of the same shape, the
    units along ``axis``; classes absent from both gold and predictions of a sample are not averaged."""
    gold = np.moveaxis(np.asarray(gold), axis, -1)
    predicted = np.moveaxis(np.asarray(predicted), axis, -1)
    scores, present = [], []
    for klass in range(classes):
        is_gold, is_predicted = gold == klass, predicted == klass
        true_positive = (is_gold & is_predicted).sum(-1)
        wrong = (is_gold ^ is_predicted).sum(-1)  # false positives + false negatives
        denominator = 2 * true_positive + wrong
        scores.append(np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0))
        present.append(denominator > 0)
    scores_array, present_array = np.stack(scores, -1), np.stack(present, -1)
    return (scores_array * present_array).sum(-1) / np.maximum(present_array.sum(-1), 1)
