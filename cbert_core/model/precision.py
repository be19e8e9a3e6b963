"""Number formats the model can run in, and whether this CPU runs bfloat16 fast.

``fp32`` is exact; ``bf16`` runs matrix products under bfloat16 autocast (softmax,
layer norm and the reductions stay float32). bf16 is 2-3x faster on CPUs with
AVX512-BF16 or AMX and several times slower on the rest, where torch emulates it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
_FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def check_precision(precision: str) -> Precision:
    """``precision`` if known, else ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(precision: Precision) -> Iterator[None]:
    """bfloat16 autocast on the CPU for ``bf16``; nothing for ``fp32``."""
    check_precision(precision)
    if precision == "bf16":
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


@contextlib.contextmanager
def float32() -> Iterator[None]:
    """Turn autocast off for a block: it runs in float32 even inside ``autocast("bf16")``."""
    with torch.autocast(device_type="cpu", enabled=False):
        yield


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags the kernel reports for the first CPU (empty if unknown)."""
    try:
        with cpuinfo.open(encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_native_bf16(flags: frozenset[str]) -> bool:
    """Whether CPU ``flags`` include native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    return bool(flags & _FAST_BF16_FLAGS)


@lru_cache(maxsize=1)
def bf16_is_fast() -> bool:
    """Whether this machine's CPU has native bfloat16 arithmetic."""
    return has_native_bf16(cpu_flags())


__all__ = ["PRECISIONS", "Precision", "autocast", "bf16_is_fast", "check_precision", "cpu_flags", "float32", "has_native_bf16"]
