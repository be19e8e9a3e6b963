"""Calibration: does a confidence of 80% mean right 80% of the time? Reliability bins, the expected
calibration error, and temperature scaling fitted on a split the user sees.

The confidence of a unit is the probability of its predicted class (top-label calibration, Guo et al.
2017). Bins are equal-width on [0, 1], each holding the confidences in (low, high] (the first also 0);
ECE = sum over bins of (units in the bin / all units) * |accuracy - mean confidence|. scikit-learn's
``calibration_curve`` is for one class's probability; the top-label version is these few lines.
Temperature scaling divides the log-probabilities by one number T fitted by maximum likelihood
(scipy's bounded scalar minimiser over log T) on the *fit* part of a stratified split of the rows;
the reliability of both versions is shown on the other, *check* part, which the fit never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.model_selection import train_test_split

from cbert_core.evaluation.outcomes import Outcomes
from cbert_core.records import frozen

DEFAULT_BINS = 10
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True, kw_only=True)
class Reliability:
    """Confidence against accuracy in equal-width bins."""

    edges: np.ndarray  # float64 [bin + 1]
    counts: np.ndarray  # int64 [bin]
    confidence: np.ndarray  # float64 [bin]: mean confidence (NaN in an empty bin)
    accuracy: np.ndarray  # float64 [bin]: share right (NaN in an empty bin)
    ece: float

    def __post_init__(self) -> None:
        frozen(self.edges, self.counts, self.confidence, self.accuracy)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> Reliability:
    """Reliability bins and ECE of ``confidence`` (float [unit]) against ``correct`` (bool [unit])."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (low, high]; 0 in bin 0
    counts = np.bincount(which, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    total = max(int(counts.sum()), 1)
    ece = float(np.nansum(counts / total * np.abs(accuracy - mean_confidence)))
    return Reliability(edges=edges, counts=counts, confidence=mean_confidence, accuracy=accuracy, ece=ece)


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """float32 [unit, class]: softmax(log(probs) / temperature)."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    return np.exp(log_softmax(logits / temperature, axis=-1)).astype(np.float32)


def negative_log_likelihood(probs: np.ndarray, gold: np.ndarray) -> float:
    """Mean -log p(gold class)."""
    chosen = np.asarray(probs, dtype=np.float64)[np.arange(len(gold)), gold]
    return float(-np.log(np.clip(chosen, 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(log(probs) / T) on ``gold``."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    rows = np.arange(len(gold))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=-1)[rows, gold].mean())

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Reliability before and after temperature scaling, on the check part of a split."""

    temperature: float
    fit_rows: np.ndarray  # int64 [row]: collection rows the temperature was fitted on
    check_rows: np.ndarray  # int64 [row]: the rows the reliability below is measured on
    before: Reliability
    after: Reliability
    nll_before: float
    nll_after: float
    fit_share: float
    seed: int

    def __post_init__(self) -> None:
        frozen(self.fit_rows, self.check_rows)


def calibrate(found: Outcomes, *, fit_share: float = 0.5, seed: int = 0, bins: int = DEFAULT_BINS) -> Calibration:
    """Split the rows (stratified by label where every class has two rows), fit T on one part, check on the other.

    Raises:
        ValueError: fewer than two rows, or a share outside (0, 1).
    """
    if not 0.0 < fit_share < 1.0:
        raise ValueError("fit_share must be between 0 and 1")
    rows = np.unique(found.rows)
    if len(rows) < 2:
        raise ValueError("calibration needs at least two rows")
    first_gold = {int(row): int(gold) for row, gold in zip(found.rows[::-1], found.gold[::-1])}  # each row's first unit
    strata = np.asarray([first_gold[int(row)] for row in rows])
    counts = np.bincount(strata)
    stratify = strata if counts[counts > 0].min() >= 2 and len(np.unique(strata)) > 1 else None
    fit_rows, check_rows = train_test_split(rows, train_size=fit_share, random_state=seed, stratify=stratify)
    fit_rows, check_rows = np.sort(fit_rows).astype(np.int64), np.sort(check_rows).astype(np.int64)
    fitting, checking = np.isin(found.rows, fit_rows), np.isin(found.rows, check_rows)
    temperature = fit_temperature(found.probs[fitting], found.gold[fitting])
    check_probs, check_gold = found.probs[checking], found.gold[checking]
    after_probs = scaled(check_probs, temperature)
    return Calibration(
        temperature=temperature, fit_rows=fit_rows, check_rows=check_rows,
        before=reliability(check_probs.max(-1), check_probs.argmax(-1) == check_gold, bins),
        after=reliability(after_probs.max(-1), after_probs.argmax(-1) == check_gold, bins),
        nll_before=negative_log_likelihood(check_probs, check_gold),
        nll_after=negative_log_likelihood(after_probs, check_gold), fit_share=fit_share, seed=seed)
