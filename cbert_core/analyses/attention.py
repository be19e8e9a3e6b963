"""Attention analyses over a Trace window (pure numpy, no model).

* per-head statistics: entropy, mean attention distance, share of attention on
  [CLS], [SEP] and punctuation (the "no-op" heads Clark et al. 2019 describe);
* word-level aggregation: pieces of a key word are summed, pieces of a query
  word averaged, so each word row still sums to one;
* hiding [CLS]/[SEP] with rows renormalized;
* attention rollout (Abnar & Zuidema 2020): residual-aware product of the
  head-averaged attention through the layers.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.run.trace import Trace

PUNCTUATION = frozenset(string.punctuation) | {"…", "–", "—", "’", "“", "”"}


@dataclass(frozen=True, kw_only=True)
class HeadStatistics:
    """One number per head, for one window. Every array is float32 [layer, head]."""

    window: int
    entropy: np.ndarray  # mean over queries of -sum p log p (nats)
    normalized_entropy: np.ndarray  # entropy / log(keys): 0 = one key, 1 = uniform
    mean_distance: np.ndarray  # mean over queries of sum_k p * |q - k| (positions)
    cls_share: np.ndarray  # mean over queries of attention on [CLS]
    sep_share: np.ndarray  # ... on [SEP]
    punctuation_share: np.ndarray  # ... on punctuation pieces
    self_share: np.ndarray  # ... on the query itself
    previous_share: np.ndarray  # ... on the piece just before

    METRICS = ("entropy", "normalized_entropy", "mean_distance", "cls_share", "sep_share",
               "punctuation_share", "self_share", "previous_share")

    def metric(self, name: str) -> np.ndarray:
        if name not in (*self.METRICS, "structure"):
            raise ValueError(f"unknown head statistic {name!r}")
        return getattr(self, name)

    @property
    def structure(self) -> np.ndarray:
        """float32 [layer, head]: how concentrated a head's attention is on the note's own pieces.

        (1 - normalized entropy) x (1 - share on [CLS] and [SEP]): 0 for a head that spreads
        evenly or parks its attention on the special tokens (no-op heads), near 1 for a head
        that looks at one content piece per query. Such a head's map shows its pattern.
        """
        return ((1.0 - self.normalized_entropy) * (1.0 - self.cls_share - self.sep_share)).astype(np.float32)

    def most_structured(self) -> tuple[int, int]:
        """0-based (layer, head) with the most :attr:`structure`."""
        layer, head = np.unravel_index(int(np.argmax(self.structure)), self.structure.shape)
        return int(layer), int(head)


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


def is_punctuation(token: str) -> bool:
    piece = token.removeprefix("##").lstrip("Ġ▁")
    return bool(piece) and all(ch in PUNCTUATION for ch in piece)


def head_statistics(result: Trace, window: int = 0) -> HeadStatistics:
    """Statistics of every head of ``result``'s ``window``.

    Runs in torch (vectorized, multi-threaded), layer by layer so the float32
    working copy stays small: about 0.3 s for 12 x 12 heads at 512 tokens.
    """


    attention = result.attentions[window]  # [layer, head, q, k] float16
    layers, heads, size, _ = attention.shape
    tokens = result.window_tokens(window)
    positions = torch.arange(size, dtype=torch.float32)
    distance = (positions[:, None] - positions[None, :]).abs()  # [q, k]
    punctuation = torch.tensor([is_punctuation(t) for t in tokens], dtype=torch.bool)
    punctuation[[0, -1]] = False
    out = {name: np.zeros((layers, heads), dtype=np.float32) for name in HeadStatistics.METRICS}
    log_keys = float(np.log(max(size, 2)))
    with torch.inference_mode():
        for layer in range(layers):
            weights = torch.from_numpy(attention[layer].copy()).float()  # [head, q, k]
            entropy = torch.special.entr(weights).sum(-1).mean(-1)
            out["entropy"][layer] = entropy.numpy()
            out["normalized_entropy"][layer] = (entropy / log_keys).numpy()
            out["mean_distance"][layer] = (weights * distance).sum(-1).mean(-1).numpy()
            out["cls_share"][layer] = weights[:, :, 0].mean(-1).numpy()
            out["sep_share"][layer] = weights[:, :, -1].mean(-1).numpy()
            out["punctuation_share"][layer] = weights[:, :, punctuation].sum(-1).mean(-1).numpy()
            out["self_share"][layer] = torch.diagonal(weights, dim1=1, dim2=2).mean(-1).numpy()
            if size > 1:
                out["previous_share"][layer] = torch.diagonal(weights, offset=-1, dim1=1, dim2=2).mean(-1).numpy()
    return HeadStatistics(window=window, **out)


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
