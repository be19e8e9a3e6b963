"""Helpers for the frozen, keyword-only result records every analysis returns.

Records hold numpy arrays, never torch objects or a model; their arrays are made read-only so a
record shared between sessions (the caches hand out the same object) cannot be changed by one of them.
"""

from __future__ import annotations

import numpy as np


def frozen(*arrays: np.ndarray | None) -> None:
    """Make each array read-only (None is skipped)."""
    for array in arrays:
        if array is not None:
            array.flags.writeable = False


def frozen_array(array: np.ndarray) -> np.ndarray:
    """``array``, made read-only."""
    array.flags.writeable = False
    return array
