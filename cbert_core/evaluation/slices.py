"""Slices of a collection (by a metadata column or a clinical feature): size, metric, a 95% bootstrap
interval, and the gap to the whole collection, worst first.

Intervals come from scipy's ``bootstrap`` (percentile method, resampling the slice's units; paired gold
and prediction for macro-F1, computed for all resamples at once by
:func:`cbert_core.evaluation.metrics.macro_f1_along`). A slice smaller than ``min_size`` units is
listed without an interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from cbert_core.evaluation.metrics import macro_f1_along
from cbert_core.evaluation.outcomes import Outcomes
from cbert_core.progress import Progress, report

Metric = Literal["accuracy", "macro-F1"]
METRICS: tuple[Metric, ...] = ("accuracy", "macro-F1")
DEFAULT_RESAMPLES = 1000
MIN_SIZE = 5  # smallest slice with an interval
MAX_VALUES = 30  # a column with more distinct values is not sliced (an id, a free-text column)
SLICE_COLUMNS = ("slice by", "value", "size", "metric", "low", "high", "gap")


@dataclass(frozen=True, kw_only=True)
class SliceTable:
    """Every slice of the collection, sorted by its gap to the whole (worst first)."""

    metric: Metric
    overall: float
    table: pd.DataFrame  # SLICE_COLUMNS: column, value, units, metric, interval, metric - overall
    skipped: tuple[str, ...]  # columns not sliced (too many distinct values)


def score(found: Outcomes, metric: Metric) -> float:
    """Accuracy or macro-F1 of ``found``."""
    if metric == "accuracy":
        return float(found.correct.mean()) if len(found) else float("nan")
    return float(macro_f1_along(found.gold, found.predicted, len(found.classes)))


def _interval(found: Outcomes, metric: Metric, resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():  # a slice where every unit is right (or wrong) gives a degenerate interval
        warnings.simplefilter("ignore")
        if metric == "accuracy":
            result = bootstrap((found.correct.astype(np.float64),), np.mean, n_resamples=resamples,
                               method="percentile", vectorized=True, rng=rng)
        else:
            classes = len(found.classes)
            result = bootstrap((found.gold, found.predicted),
                               lambda gold, predicted, axis=-1: macro_f1_along(gold, predicted, classes, axis),
                               paired=True, n_resamples=resamples, method="percentile", vectorized=True, rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def slice_values(features: pd.DataFrame, found: Outcomes) -> pd.DataFrame:
    """[unit, column]: each unit's value of each slicing column (its row's)."""
    return features.iloc[found.rows].reset_index(drop=True)


def slice_table(found: Outcomes, features: pd.DataFrame, *, metric: Metric = "accuracy",
                columns: Sequence[str] | None = None, min_size: int = MIN_SIZE,
                resamples: int = DEFAULT_RESAMPLES, seed: int = 0, progress: Progress | None = None) -> SliceTable:
    """Every (column, value) slice of ``found`` by the row features in ``features`` ([row, column] strings).

    Args:
        columns: the columns to slice by (None: all of ``features``).
        min_size: slices with fewer units get no interval (NaN).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")
    names = list(features.columns if columns is None else columns)
    values = slice_values(features[names], found)
    overall = score(found, metric)
    rows, skipped = [], []
    for number, column in enumerate(names):
        kinds = values[column].astype(str)
        distinct = kinds.unique()
        if len(distinct) > MAX_VALUES:
            skipped.append(column)
            continue
        for value in sorted(distinct):
            member = (kinds == value).to_numpy()
            part = found.subset(member)
            measured = score(part, metric)
            low, high = _interval(part, metric, resamples, seed) if len(part) >= min_size else (np.nan, np.nan)
            rows.append({"slice by": column, "value": value, "size": len(part), "metric": measured,
                         "low": low, "high": high, "gap": measured - overall})
        report(progress, (number + 1) / len(names), f"Slices: {number + 1} of {len(names)} columns")
    table = pd.DataFrame(rows, columns=list(SLICE_COLUMNS))
    table = table.sort_values(["gap", "size"], ascending=[True, False], kind="stable").reset_index(drop=True)
    return SliceTable(metric=metric, overall=overall, table=table, skipped=tuple(skipped))


def in_slice(found: Outcomes, features: pd.DataFrame, column: str, value: str) -> np.ndarray:
    """bool [unit]: the units of the slice ``column == value``."""
    return (slice_values(features[[column]], found)[column].astype(str) == value).to_numpy()


def slice_options(features: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, value) of every slice a filter can offer (columns with at most :data:`MAX_VALUES` values)."""
    options = []
    for column in features.columns:
        values = features[column].astype(str).unique()
        if len(values) <= MAX_VALUES:
            options += [(str(column), str(value)) for value in sorted(values)]
    return options
