"""Per-head attention statistics, computed while the model runs from the weights it produced.

A trace no longer stores every attention weight (they are recomputed on demand from the queries and
keys it keeps), but the Attention page's overview needs a number per head for the whole window. So the
trace reduces each layer's scores and weights to these statistics as the attention kernel computes them
(:class:`StatisticsCollector`), from the model's own weights, before they are dropped:

* entropy (and its share of the uniform entropy), mean attention distance;
* the share of attention on [CLS], [SEP] and punctuation (the "no-op" heads Clark et al. 2019 describe),
  on the query itself and on the piece just before.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cbert_core.records import frozen

PUNCTUATION = frozenset(string.punctuation) | {"…", "–", "—", "’", "“", "”"}
TINY = float(torch.finfo(torch.float32).tiny)  # the smallest normal float32
SMALL_WEIGHT = 1e-20  # below this, a weight's logarithm is not used to find its row's log-sum-exp
METRICS = ("entropy", "normalized_entropy", "mean_distance", "cls_share", "sep_share",
           "punctuation_share", "self_share", "previous_share")


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

    METRICS = METRICS

    def __post_init__(self) -> None:
        frozen(*(getattr(self, name) for name in METRICS))

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

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, name).nbytes for name in METRICS))


def is_punctuation(token: str) -> bool:
    piece = token.removeprefix("##").lstrip("Ġ▁")
    return bool(piece) and all(ch in PUNCTUATION for ch in piece)


def statistics_reducer(tokens: Sequence[str]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """For one window's tokens ([CLS] ... [SEP]): one layer's scores and weights [batch 1, head, q, k] ->
    float32 [metric, head] (in :data:`METRICS` order)."""
    size = len(tokens)
    positions = torch.arange(size, dtype=torch.float32)
    distance = (positions[:, None] - positions[None, :]).abs().reshape(-1)  # [q * k]
    punctuation = torch.tensor([is_punctuation(token) for token in tokens], dtype=torch.float32)
    punctuation[[0, -1]] = 0.0
    log_keys = float(np.log(max(size, 2)))

    on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # moved once, not once per layer

    def reduce(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        device = weights.device
        if device not in on_device:
            on_device[device] = (distance.to(device), punctuation.to(device))
        # in float32 even inside a bf16 trace: autocast would run the products below in bfloat16
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            return layer_statistics(scores[0].float(), weights[0].float(), *on_device[device], log_keys).cpu()

    return reduce


def layer_statistics(scores: torch.Tensor, weights: torch.Tensor, distance: torch.Tensor, punctuation: torch.Tensor,
                     log_keys: float) -> torch.Tensor:
    """float32 [metric, head] of one layer's ``weights`` = softmax(``scores``) over the last axis, both
    [head, q, k] (``distance`` [q * k] flattened |q - k|, ``punctuation`` [k] 0/1).

    Every sum over all weights is one whole-layer pass with no temporary of the layer's size: three passes
    per layer rather than several per head, which matters because each pass wakes the CPU's threads (about
    3 ms instead of 16 ms per 512-token layer on 2 cores). The entropy needs no logarithm of every weight:
    -sum_k p log p = lse - sum_k p s, and a row's log-sum-exp is lse = s - log p at any one key, taken at the
    query itself (or, where that weight is too small to trust, at the row's largest weight).

    ``scores`` is overwritten (with p * s). Masked keys must have finite scores (the eager mask's most
    negative float; their weights are 0).
    """
    heads, size, _ = weights.shape
    flat = weights.reshape(heads, size * size)
    own_weight = torch.diagonal(weights, dim1=1, dim2=2)  # [head, q]
    log_sum_exp = torch.diagonal(scores, dim1=1, dim2=2) - own_weight.log()  # [head, q]
    small = own_weight < SMALL_WEIGHT  # log p of a tiny (or zero) weight loses precision
    if bool(small.any()):
        largest, at = weights[small].max(-1)  # [rows]
        log_sum_exp[small] = scores[small].gather(-1, at[:, None])[:, 0] - largest.log()
    weighted_scores = scores.mul_(weights).reshape(heads, size * size).sum(-1)  # [head]: sum over q, k of p s
    entropy = log_sum_exp.mean(-1) - weighted_scores / size
    previous = (torch.diagonal(weights, offset=-1, dim1=1, dim2=2).mean(-1) if size > 1
                else torch.zeros(heads, dtype=weights.dtype, device=weights.device))
    return torch.stack([
        entropy,
        entropy / log_keys,
        flat @ distance / size,
        weights[:, :, 0].mean(-1),
        weights[:, :, -1].mean(-1),
        (weights.reshape(heads * size, size) @ punctuation).reshape(heads, size).mean(-1),
        own_weight.mean(-1),
        previous,
    ])


class StatisticsCollector:
    """An attention observer (:func:`cbert_core.model.hooks.observe_attention`) that reduces each layer the
    model computes to statistics, one window at a time; the weights themselves are never copied."""

    def __init__(self) -> None:
        self._reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self._layers: list[torch.Tensor] = []

    def start_window(self, tokens: Sequence[str]) -> None:
        """The next forward pass runs the window of ``tokens`` ([CLS] ... [SEP])."""
        self._reduce = statistics_reducer(tokens)
        self._layers = []

    def __call__(self, scores: torch.Tensor, weights: torch.Tensor) -> None:
        if self._reduce is None:
            raise RuntimeError("start_window before the forward pass")
        self._layers.append(self._reduce(scores.detach(), weights.detach()))

    def finish_window(self, window: int, num_layers: int) -> HeadStatistics:
        """The record of the window's ``num_layers`` layers, seen since :meth:`start_window`."""
        if len(self._layers) != num_layers:
            raise RuntimeError(f"saw {len(self._layers)} attention layers, expected {num_layers}: the model does "
                               "not run the explorer's attention kernel")
        record = statistics_record(window, torch.stack(self._layers).numpy())
        self._reduce, self._layers = None, []
        return record


def statistics_record(window: int, per_layer: np.ndarray) -> HeadStatistics:
    """The record for ``window`` from the reduced layers, float32 [layer, metric, head]."""
    return HeadStatistics(window=window, **{name: np.ascontiguousarray(per_layer[:, index], dtype=np.float32)
                                            for index, name in enumerate(METRICS)})


def window_statistics(weights: np.ndarray, tokens: Sequence[str], window: int = 0) -> HeadStatistics:
    """Statistics of given weights [layer, head, q, k] (any array-like) for a window's ``tokens``."""
    reduce = statistics_reducer(tokens)
    layers = []
    for layer in range(len(weights)):
        layer_weights = torch.from_numpy(np.asarray(weights[layer], dtype=np.float32))[None]
        # any scores whose softmax gives the weights: their logarithm (0 weights stand at the smallest float)
        layers.append(reduce(layer_weights.clamp_min(TINY).log(), layer_weights))
    return statistics_record(window, torch.stack(layers).numpy())
