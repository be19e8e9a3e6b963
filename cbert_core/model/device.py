"""Where the model runs: ``CBERT_DEVICE=auto|cpu|cuda``.

``auto`` (the default) runs on the first CUDA GPU when torch can use one and on the CPU
otherwise; ``cpu`` always runs on the CPU; ``cuda`` runs on the GPU and refuses to start on a
machine without one (only ``auto`` falls back), so a server set up for a GPU never runs ten
times slower unnoticed. The model is moved once, when it is loaded; every analysis creates its
inputs where the model is (:func:`device_of`) and brings what it keeps back to the CPU as numpy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

from cbert_core.errors import DeviceError

DEVICE_ENV_VAR = "CBERT_DEVICE"
DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[DeviceChoice, ...] = ("auto", "cpu", "cuda")


def requested_device(env: Mapping[str, str] | None = None) -> DeviceChoice:
    """The device asked for in ``CBERT_DEVICE`` (``auto`` when unset or empty).

    Raises:
        DeviceError: a value other than auto, cpu or cuda.
    """
    env = os.environ if env is None else env
    value = str(env.get(DEVICE_ENV_VAR, "") or "auto").strip().lower()
    if value not in DEVICE_CHOICES:
        raise DeviceError(
            f"{DEVICE_ENV_VAR}={env.get(DEVICE_ENV_VAR)!r} is not a device this app knows. "
            f"Set it to one of {', '.join(DEVICE_CHOICES)} (auto: the GPU when there is one, else the CPU).")
    return value  # type: ignore[return-value]


def resolve_device(choice: str | None = None, *,
                   cuda_available: Callable[[], bool] | None = None) -> torch.device:
    """The torch device for ``choice`` (None: read ``CBERT_DEVICE``).

    Args:
        choice: ``auto``, ``cpu`` or ``cuda`` (case-insensitive).
        cuda_available: whether torch can use a CUDA GPU here (None: ``torch.cuda.is_available``;
            a parameter so that tests can ask "what if there were none").

    Raises:
        DeviceError: an unknown choice, or ``cuda`` on a machine where torch sees no GPU.
    """
    wanted = requested_device() if choice is None else requested_device({DEVICE_ENV_VAR: choice})
    if wanted == "cpu":
        return torch.device("cpu")
    if (cuda_available or torch.cuda.is_available)():
        return torch.device("cuda")
    if wanted == "auto":
        return torch.device("cpu")
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
    raise DeviceError(
        f"{DEVICE_ENV_VAR}=cuda, but torch sees no CUDA GPU on this machine ({build}). Set {DEVICE_ENV_VAR}=auto "
        f"(the GPU when there is one, else the CPU) or {DEVICE_ENV_VAR}=cpu, or install a CUDA build of torch "
        "and the GPU's driver.")


def device_of(module: nn.Module) -> torch.device:
    """Where ``module``'s parameters live (the CPU for a module without parameters)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """The device in words for the sidebar and the benchmarks, e.g. "GPU: NVIDIA A100 (40 GB)"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        return f"GPU: {properties.name} ({properties.total_memory / 2**30:.0f} GB)"
    return f"CPU ({torch.get_num_threads()} threads)"


__all__ = ["DEVICE_CHOICES", "DEVICE_ENV_VAR", "DeviceChoice", "describe_device", "device_of", "requested_device",
           "resolve_device"]
