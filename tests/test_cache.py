"""The shared result cache: LRU by count and bytes, one computation per key across threads; result sizes."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from cbert_core.serving.cache import ResultCache, payload_bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    values: np.ndarray
    labels: tuple[str, ...]
    extra: dict[str, np.ndarray]


def test_payload_bytes_counts_arrays_in_records_containers_and_frames() -> None:
    big = np.zeros((1000, 100), np.float32)  # 400,000 bytes
    record = Record(values=big, labels=("a", "b"), extra={"rollout": np.zeros(50_000, np.float64)})
    size = payload_bytes(record)
    assert 800_000 <= size < 810_000
    assert payload_bytes((big, big, big[:10])) < 410_000  # one array shared three times counts once
    frame = pd.DataFrame({"score": np.zeros(100_000, np.float64)})
    assert 800_000 <= payload_bytes(frame) < 900_000
    assert payload_bytes([record, frame]) >= size + 800_000


def test_cache_drops_the_least_recently_used_by_count_and_by_bytes() -> None:
    cache: ResultCache[np.ndarray] = ResultCache(max_items=3, max_bytes=2_500, sizeof=payload_bytes)
    for key in "abc":
        cache.get_or_compute(key, lambda: np.zeros(100, np.float64))  # 800 bytes each
    assert len(cache) == 3 and cache.total_bytes == 2_400
    cache.get("a")  # "a" is now the most recent
    cache.get_or_compute("d", lambda: np.zeros(100, np.float64))
    assert "b" not in cache and all(key in cache for key in "acd")
    cache.get_or_compute("e", lambda: np.zeros(200, np.float64))  # 1,600 bytes: two must go for the bound
    assert [key for key in "acde" if key in cache] == ["d", "e"] and cache.total_bytes == 2_400


def test_cache_computes_each_key_once_across_threads_and_stores_no_failure() -> None:
    cache: ResultCache[int] = ResultCache(max_items=8)
    calls = []
    lock = threading.Lock()

    def slow() -> int:
        with lock:
            calls.append(1)
        time.sleep(0.2)
        return 42

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _i: cache.get_or_compute("k", slow), range(8)))
    assert results == [42] * 8 and len(calls) == 1

    def broken() -> int:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("x", broken)
    assert "x" not in cache
    assert cache.get_or_compute("x", lambda: 7) == 7
