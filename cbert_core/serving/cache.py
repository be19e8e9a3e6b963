"""A thread-safe, size-bounded LRU cache that computes each key once.

Browser sessions share models and traces. When two sessions ask for the same
key at once, one computes and the other waits for its result; when the
computation fails (or is cancelled by its session), nothing is stored and the
next caller computes afresh. Values must be immutable: callers get the very
object that is stored.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import numpy as np

Value = TypeVar("Value")


class ResultCache(Generic[Value]):
    """LRU cache bounded by item count and by total size (bytes, as ``sizeof`` reports)."""

    def __init__(self, max_items: int, max_bytes: int | None = None,
                 sizeof: Callable[[Value], int] | None = None) -> None:
        self._items: OrderedDict[Hashable, tuple[Value, int]] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._sizeof = sizeof or (lambda _value: 0)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _value, size in self._items.values())

    def values(self) -> list[Value]:
        """A snapshot of the cached values (oldest first)."""
        with self._lock:
            return [value for value, _size in self._items.values()]

    def keys(self) -> list[Hashable]:
        """A snapshot of the cached keys (oldest first)."""
        with self._lock:
            return list(self._items)

    def key_of(self, value: object) -> Hashable | None:
        """The key under which this very object (by identity) is cached, or None."""
        with self._lock:
            return next((key for key, (held, _size) in self._items.items() if held is value), None)

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        return None

    def get_or_compute(self, key: Hashable, compute: Callable[[], Value]) -> Value:
        """The cached value for ``key``, computing it (once across threads) if missing."""
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key][0]
                waiter = self._pending.get(key)
                if waiter is None:
                    done = threading.Event()
                    self._pending[key] = done
                    break
            waiter.wait()  # another thread computes it; then look again
        try:
            value = compute()
        except BaseException:
            with self._lock:
                self._pending.pop(key, None)
            done.set()
            raise
        size = int(self._sizeof(value))
        with self._lock:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            self._evict()
            self._pending.pop(key, None)
        done.set()
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _evict(self) -> None:
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)
        if self._max_bytes is not None:
            while len(self._items) > 1 and sum(size for _v, size in self._items.values()) > self._max_bytes:
                self._items.popitem(last=False)


def payload_bytes(value: Any, _seen: set[int] | None = None) -> int:
    """Approximate bytes held by an analysis result: numpy arrays, records, containers, frames.

    Counts each object once (shared arrays are not double-counted). A value with an
    ``nbytes`` property (traces, indexes, arrays) reports its own size.
    """
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes) if value.base is None or id(value.base) not in seen else 0
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return sys.getsizeof(value)
    if hasattr(value, "memory_usage") and hasattr(value, "columns"):  # a pandas DataFrame
        return int(value.memory_usage(deep=True).sum())
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sys.getsizeof(value) + sum(payload_bytes(getattr(value, field.name), seen)
                                          for field in dataclasses.fields(value))
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(payload_bytes(k, seen) + payload_bytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(payload_bytes(item, seen) for item in value)
    return sys.getsizeof(value)
