"""Number formats the model can run in, and whether this CPU runs bfloat16 fast.

``fp32`` is exact; ``bf16`` runs matrix products under bfloat16 autocast (softmax,
layer norm and the reductions stay float32). bf16 is 2-3x faster on CPUs with
AVX512-BF16 or AMX and several times slower on the rest, where torch emulates it.
On a CUDA GPU (see :mod:`cbert_core.model.device`) autocast runs on the GPU, and ``fp16``
(float16 autocast, the GPU's fastest format) is offered too; a CPU has no fast float16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


def check_precision(precision: str) -> Precision:
    """``precision`` if known, else ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision  # type: ignore[return-value]


def precisions_for(device: torch.device | str) -> tuple[Precision, ...]:
    """The precisions offered on ``device``: fp16 only on a CUDA GPU."""
    return PRECISIONS if torch.device(device).type == "cuda" else ("fp32", "bf16")


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device | str) -> Iterator[None]:
    """Autocast on ``device`` (where the model is): bfloat16 for ``bf16``, float16 for ``fp16``
    (GPU only), nothing for ``fp32``.

    Raises:
        ValueError: an unknown precision, or fp16 on a CPU.
    """
    check_precision(precision)
    device_type = torch.device(device).type
    if precision not in precisions_for(device):
        raise ValueError(f"precision {precision} runs on a GPU only; on the CPU choose one of "
                         f"{', '.join(precisions_for(device))}")
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device_type, dtype=_AUTOCAST_DTYPES[precision]):
        yield


@contextlib.contextmanager
def float32() -> Iterator[None]:
    """Turn autocast off for a block: it runs in float32 even inside ``autocast("bf16", ...)``, on
    whichever device autocast is on."""
    with contextlib.ExitStack() as stack:
        for device_type in _AUTOCAST_DEVICE_TYPES:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
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


__all__ = ["PRECISIONS", "Precision", "autocast", "bf16_is_fast", "check_precision", "cpu_flags", "float32",
           "has_native_bf16", "precisions_for"]
