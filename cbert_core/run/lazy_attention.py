"""A window's attention weights, computed when a view reads them, from the queries and keys the trace kept.

Storing every weight costs [layer, head, q, k] per window (75 MB at 512 tokens on a 12 x 12 model),
eight times what the queries and keys it is computed from take. :class:`WindowAttention` keeps only
those and computes weights exactly as the model did (``softmax(q k^T / sqrt(d))`` through the model's
own :func:`cbert_core.model.attention_kernel.attention_weights`, under the trace's autocast; windows
run unpadded, so there is no mask), at the granularity asked for:

* ``attention[layer, head]`` (and ``[layer, head, rows...]``): one head, a few milliseconds;
* ``attention[layer]``: one layer's heads;
* anything else (``np.asarray(attention)``, ``attention.astype(...)``, ``attention[:, :, span]``): the
  whole window, kept in a small cache shared by every trace (the last two windows computed).

Every path computes each head the same way, so a head read alone equals the same head read with its
window. Values are float16, like the stored weights they replace.

Precision (measured, bench/trace.py and tests/test_trace.py): with float32 keys and float16 queries the
recomputed weights are within about 1.3e-3 of the model's own on the bundled model over 54 notes
(float16 keys: up to 2.4e-3, over the 2e-3 bound); traces with bf16 autocast keep bf16 values, which
float16 and float32 hold exactly, and recompute them exactly.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from cbert_core.model.attention_kernel import attention_weights
from cbert_core.model.precision import Precision, autocast
from cbert_core.serving.cache import ResultCache

WEIGHT_DTYPE = np.float16
RECENT_WINDOWS = 2  # whole windows kept after they were computed (shared by every trace)
_serials = itertools.count()
_recent: ResultCache[np.ndarray] = ResultCache(max_items=RECENT_WINDOWS)


class WindowAttention:
    """Read-only attention weights of one window, float16 [layer, head, q, k], computed on demand.

    Args:
        queries: [layer, head, q, head_dim] as the model's query projection gave them (float16 or float32).
        keys: [layer, head, k, head_dim] (float32).
        precision: the trace's precision: "bf16" recomputes under the same bfloat16 autocast.
    """

    __slots__ = ("queries", "keys", "precision", "_serial")
    ndim = 4
    dtype = np.dtype(WEIGHT_DTYPE)

    def __init__(self, queries: np.ndarray, keys: np.ndarray, precision: Precision) -> None:
        if queries.ndim != 4 or keys.ndim != 4 or queries.shape[:2] != keys.shape[:2]:
            raise ValueError("queries and keys must be [layer, head, pos, head_dim] of one model")
        self.queries = queries
        self.keys = keys
        self.precision = precision
        self._serial = next(_serials)

    def __getstate__(self) -> dict[str, Any]:
        return {"queries": self.queries, "keys": self.keys, "precision": self.precision}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.queries, self.keys, self.precision = state["queries"], state["keys"], state["precision"]
        self._serial = next(_serials)  # a new identity in this process: never another window's cached weights

    @property
    def shape(self) -> tuple[int, int, int, int]:
        layers, heads, rows, _ = self.queries.shape
        return layers, heads, rows, int(self.keys.shape[2])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def head(self, layer: int, head: int) -> np.ndarray:
        """float16 [q, k]: one head's weights."""
        # float32 working copies (one head: a few hundred KB; the kept arrays are read-only)
        query = torch.from_numpy(np.array(self.queries[layer, head], dtype=np.float32))  # [q, head_dim]
        key = torch.from_numpy(np.array(self.keys[layer, head], dtype=np.float32))  # [k, head_dim]
        # Recomputed on the CPU from the kept arrays (a GPU's fp16 queries are read in float32 there).
        with torch.inference_mode(), autocast("fp32" if self.precision == "fp16" else self.precision, "cpu"):
            if self.precision == "bf16":  # the model's own bfloat16 values (held exactly): compute as it did
                query, key = query.to(torch.bfloat16), key.to(torch.bfloat16)
            weights = attention_weights(query, key).to(torch.float16).numpy()
        weights.flags.writeable = False
        return weights

    def layer(self, layer: int) -> np.ndarray:
        """float16 [head, q, k]: one layer's weights."""
        return np.stack([self.head(layer, head) for head in range(self.shape[1])])

    def full(self) -> np.ndarray:
        """float16 [layer, head, q, k]: the whole window (read-only; recently computed windows are kept)."""
        def compute() -> np.ndarray:
            whole = np.stack([self.layer(layer) for layer in range(self.shape[0])])
            whole.flags.writeable = False
            return whole
        return _recent.get_or_compute(self._serial, compute)

    def __getitem__(self, index: Any) -> np.ndarray:
        parts = index if isinstance(index, tuple) else (index,)
        if len(parts) >= 2 and _is_integer(parts[0]) and _is_integer(parts[1]):
            layer, head = self._checked(parts[0], 0), self._checked(parts[1], 1)
            return _rest(self.head(layer, head), parts[2:])
        if parts and _is_integer(parts[0]):
            return _rest(self.layer(self._checked(parts[0], 0)), parts[1:])
        return self.full()[index]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self.full()
        if dtype is not None and np.dtype(dtype) != whole.dtype:
            return whole.astype(dtype)
        return whole.copy() if copy else whole

    def astype(self, dtype: Any, **arguments: Any) -> np.ndarray:
        return self.full().astype(dtype, **arguments)

    def _checked(self, value: Any, axis: int) -> int:
        count = self.shape[axis]
        number = int(value)
        if not -count <= number < count:
            raise IndexError(f"index {number} is out of bounds for axis {axis} with size {count}")
        return number % count


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _rest(array: np.ndarray, rest: tuple[Any, ...]) -> np.ndarray:
    return array[rest] if rest else array
