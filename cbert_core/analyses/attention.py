"""Attention analyses over a Trace window (pure numpy, no model).

* per-head statistics: entropy, mean attention distance, share of attention on
  [CLS], [SEP] and punctuation (the "no-op" heads Clark et al. 2019 describe),
  reduced while the trace ran (:mod:`cbert_core.run.head_stats`);
* word-level aggregation: pieces of a key word are summed, pieces of a query
  word averaged, so each word row still sums to one;
* hiding [CLS]/[SEP] with rows renormalized;
* attention rollout (Abnar & Zuidema 2020): residual-aware product of the
  head-averaged attention through the layers.
"""

from __future__ import annotations

import numpy as np

from cbert_core.run.head_stats import HeadStatistics, window_statistics
from cbert_core.run.trace import Trace


def focus_position(result: Trace, window: int, layer: int, head: int) -> int:
    """A window row worth looking around first: the note's first [MASK] in the window, else the piece
    the head attends to most (summed over queries, [CLS] and [SEP] left out)."""
    positions = result.window_positions(window)
    masks = np.flatnonzero(np.isin(positions, result.mask_positions))
    if masks.size:
        return int(masks[0])
    received = result.attentions[window][layer, head].astype(np.float32).sum(0)  # [k]
    received[[0, -1]] = 0
    return int(np.argmax(received))


def statistics_table(stats: HeadStatistics) -> list[dict[str, float]]:
    """One row per head (1-based layer and head numbers) with every statistic, for a CSV export."""
    layers, heads = stats.entropy.shape
    names = ("structure", *HeadStatistics.METRICS)
    return [{"layer": layer + 1, "head": head + 1, **{name: float(stats.metric(name)[layer, head]) for name in names}}
            for layer in range(layers) for head in range(heads)]


def head_statistics(result: Trace, window: int = 0) -> HeadStatistics:
    """Statistics of every head of ``result``'s ``window``.

    The trace reduced them from the model's own weights while it ran (:mod:`cbert_core.run.head_stats`), so
    this costs nothing; a trace given its attention arrays (not computed on demand) is summarized from those.
    """
    attention = result.attentions[window]
    if isinstance(attention, np.ndarray):
        return window_statistics(attention, result.window_tokens(window), window)
    return result.head_stats[window]


def window_groups(result: Trace, window: int) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Group id per window position (a word, or a special token alone), labels, first positions."""
    global_positions = result.window_positions(window)
    word_ids = result.word_ids[global_positions]
    groups = np.empty(len(global_positions), dtype=np.int64)
    labels: list[str] = []
    firsts: list[int] = []
    previous = None
    for index, word in enumerate(word_ids):
        key = ("special", index) if word < 0 else ("word", int(word))
        if key != previous:
            firsts.append(index)
            if word < 0:
                labels.append(result.tokens[global_positions[index]])
            else:
                start, end = result.word_spans[word]
                labels.append(result.text[start:end])
        groups[index] = len(firsts) - 1
        previous = key
    return groups, tuple(labels), np.asarray(firsts, dtype=np.int64)


def to_words(weights: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Aggregate [..., q, k] piece attention to [..., wq, wk] word attention.

    Keys: pieces of one word are summed. Queries: pieces of one word averaged.
    """
    count = int(groups.max()) + 1
    membership = np.zeros((weights.shape[-1], count), dtype=np.float32)  # [pos, w]
    membership[np.arange(weights.shape[-1]), groups] = 1.0
    sizes = membership.sum(0)  # [w]
    summed_keys = weights.astype(np.float32) @ membership  # [..., q, w]
    return np.swapaxes(np.swapaxes(summed_keys, -1, -2) @ membership, -1, -2) / sizes[:, None]


def hide_specials(weights: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Drop rows/columns not in ``keep`` (bool [n]) and renormalize rows to sum to 1."""
    kept = weights[..., keep, :][..., :, keep].astype(np.float32)
    totals = kept.sum(-1, keepdims=True)
    return np.divide(kept, totals, out=np.zeros_like(kept), where=totals > 0)


def rollout(result: Trace, window: int = 0, residual: bool = True) -> np.ndarray:
    """Attention rollout: how much each position draws on each input position, by layer.

    Args:
        residual: mix in the identity (0.5 A + 0.5 I) for the residual connection.

    Returns:
        float32 [layer, q, k]: the rollout after each layer; rows sum to 1.
    """
    attention = result.attentions[window]  # [layer, head, q, k]
    size = attention.shape[-1]
    identity = np.eye(size, dtype=np.float32)
    current = identity
    out = np.empty((attention.shape[0], size, size), dtype=np.float32)
    for layer in range(attention.shape[0]):
        mixed = attention[layer].astype(np.float32).mean(0)
        if residual:
            mixed = 0.5 * mixed + 0.5 * identity
        mixed /= mixed.sum(-1, keepdims=True)
        current = mixed @ current
        out[layer] = current
    return out
