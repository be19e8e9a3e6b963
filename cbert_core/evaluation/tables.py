"""The Evaluate page's tables, built from the evaluation's records (shown on the page and exported).

Every table has one row per unit, class, bin, slice or test, with plain column names; note text
appears only where the user asked to see it (the predictions and errors tables of their own file).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cbert_core.evaluation.behaviour import BehaviourResult
from cbert_core.evaluation.calibration import Calibration, Reliability
from cbert_core.evaluation.clinical_features import length_features
from cbert_core.evaluation.dataset import LabelledSet
from cbert_core.evaluation.metrics import Metrics
from cbert_core.evaluation.outcomes import Outcomes
from cbert_core.evaluation.predictions import CollectionPredictions

NOTE_PREVIEW = 240  # characters of a note shown in a table cell


def features_table(labelled: LabelledSet, clinical: pd.DataFrame, predictions: CollectionPredictions) -> pd.DataFrame:
    """[row, column]: the file's metadata, the clinical features and the length features, as strings.

    A metadata column named like a clinical feature is kept as "<name> (file)".
    """
    metadata = labelled.metadata
    lengths = length_features(predictions.n_tokens, predictions.n_windows)
    computed = pd.concat([clinical.reset_index(drop=True), lengths], axis=1)
    renamed = {name: f"{name} (file)" for name in metadata.columns if name in computed.columns}
    return pd.concat([metadata.rename(columns=renamed).reset_index(drop=True).astype(str), computed], axis=1)


def _shown(texts: Sequence[str], found: Outcomes) -> list[str]:
    """What a unit is: its note (shortened), or for a word, the word in a little of its context."""
    if found.unit == "note":
        return [texts[row][:NOTE_PREVIEW] + ("…" if len(texts[row]) > NOTE_PREVIEW else "") for row in found.rows]
    shown = []
    for row, (start, end) in zip(found.rows, found.spans):
        text = texts[row]
        shown.append(f"{text[max(0, start - 40):start]}«{text[start:end]}»{text[end:end + 40]}")
    return shown


def units_table(found: Outcomes, ids: Sequence[str], texts: Sequence[str], features: pd.DataFrame | None = None,
                *, with_probabilities: bool = False) -> pd.DataFrame:
    """One row per evaluated unit: unit number, id, note (or word in context), gold, predicted, confidence, right,
    then (optionally) each class's probability and the row's features."""
    classes = np.asarray(found.classes, dtype=object)
    table = pd.DataFrame({
        "unit": np.arange(len(found)), "id": [ids[row] for row in found.rows],
        "note" if found.unit == "note" else "word": _shown(texts, found),
        "gold": classes[found.gold], "predicted": classes[found.predicted],
        "confidence": found.confidence.astype(np.float64), "right": found.correct,
    })
    if with_probabilities:
        for index, name in enumerate(found.classes):
            table[f"p({name})"] = found.probs[:, index].astype(np.float64)
    if features is not None:
        table = pd.concat([table, features.iloc[found.rows].reset_index(drop=True)], axis=1)
    return table


def errors_table(found: Outcomes, ids: Sequence[str], texts: Sequence[str], features: pd.DataFrame,
                 keep: np.ndarray | None = None) -> pd.DataFrame:
    """The misclassified units (of ``keep``, bool [unit]), the most confident mistakes first."""
    table = units_table(found, ids, texts, features)
    wrong = ~found.correct if keep is None else (~found.correct & keep)
    return table[wrong].sort_values("confidence", ascending=False, kind="stable").drop(columns="right")


def per_class_table(measured: Metrics) -> pd.DataFrame:
    return pd.DataFrame({"class": measured.classes, "precision": measured.precision, "recall": measured.recall,
                         "F1": measured.f1, "gold count": measured.support, "predicted count": measured.predicted_count})


def confusion_table(measured: Metrics) -> pd.DataFrame:
    return pd.DataFrame(measured.confusion, index=pd.Index(measured.classes, name="gold"),
                        columns=pd.Index(measured.classes, name="predicted")).reset_index()


def reliability_table(calibration: Calibration) -> pd.DataFrame:
    """Per bin: range, units, mean confidence and share right, before and after temperature scaling."""
    def part(found: Reliability, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix} units": found.counts, f"{prefix} confidence": found.confidence,
                f"{prefix} share right": found.accuracy}

    edges = calibration.before.edges
    return pd.DataFrame({"from": edges[:-1], "to": edges[1:], **part(calibration.before, "before"),
                         **part(calibration.after, "after")})


def split_table(calibration: Calibration, ids: Sequence[str]) -> pd.DataFrame:
    """Which rows the temperature was fitted on and which rows checked it (the split the user can see)."""
    rows = np.concatenate([calibration.fit_rows, calibration.check_rows])
    parts = ["fit"] * len(calibration.fit_rows) + ["check"] * len(calibration.check_rows)
    table = pd.DataFrame({"row": rows + 1, "id": [ids[row] for row in rows], "part": parts})
    return table.sort_values("row", kind="stable").reset_index(drop=True)


def behaviour_summary(results: Sequence[BehaviourResult]) -> pd.DataFrame:
    return pd.DataFrame({
        "test": [result.name for result in results],
        "expect": ["a change" if result.expectation == "change" else "no change" for result in results],
        "notes tried": [result.tested for result in results],
        "edited": [len(result.rows) for result in results],
        "changed": [result.changed_share for result in results],
        "failed": [result.failure_rate for result in results],
    })


def behaviour_examples(result: BehaviourResult, classes: Sequence[str], ids: Sequence[str],
                       texts: Sequence[str]) -> pd.DataFrame:
    """Each edited note of one test: the edit, the prediction before and after, failures first."""
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame({
        "example": np.arange(len(result.rows)), "id": [ids[row] for row in result.rows],
        "edit": [edit.describe(texts[row]) for row, edit in zip(result.rows, result.edits)],
        "edited note": [edit.apply(texts[row])[:NOTE_PREVIEW] for row, edit in zip(result.rows, result.edits)],
        "before": names[result.before], "after": names[result.after],
        "p(before class) before": result.before_prob.astype(np.float64),
        "p(before class) after": result.after_prob.astype(np.float64), "failed": result.failed,
    })
    return table.sort_values(["failed", "example"], ascending=[False, True], kind="stable")
