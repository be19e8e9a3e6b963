"""CBERT_DEVICE: which device the model runs on, and what happens when the machine cannot honour it.

The suite runs on CPU-only machines, so the GPU path is checked through its decisions (a fake "is there
a GPU?" answer) and every analysis through the CPU path it shares with the GPU; bench/device.py times
the real thing where a GPU is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import streamlit.testing.v1.app_test as app_test_module
import torch
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from cbert_core.errors import CbertError, DeviceError
from cbert_core.model.device import DEVICE_ENV_VAR, requested_device, resolve_device
from cbert_core.model.loading import load_model
from cbert_core.model.precision import autocast, float32, precisions_for
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from ui.sidebar import server_device

APP = str(Path(__file__).resolve().parent.parent / "app.py")
NOTE = "Patient denies chest pain. Continue metoprolol 25 mg b.i.d."


def no_gpu() -> bool:
    return False


def a_gpu() -> bool:
    return True


def test_auto_takes_the_gpu_when_there_is_one_and_the_cpu_otherwise() -> None:
    assert resolve_device("auto", cuda_available=a_gpu) == torch.device("cuda")
    assert resolve_device("auto", cuda_available=no_gpu) == torch.device("cpu")
    assert resolve_device("cpu", cuda_available=a_gpu) == torch.device("cpu")
    assert resolve_device("CUDA", cuda_available=a_gpu) == torch.device("cuda")


def test_cuda_without_a_gpu_refuses_with_a_message_that_says_what_to_do() -> None:
    with pytest.raises(DeviceError) as refused:
        resolve_device("cuda", cuda_available=no_gpu)
    message = str(refused.value)
    assert isinstance(refused.value, CbertError)
    assert f"{DEVICE_ENV_VAR}=cuda" in message and "no CUDA GPU" in message
    assert f"{DEVICE_ENV_VAR}=auto" in message and f"{DEVICE_ENV_VAR}=cpu" in message


def test_the_environment_decides_and_an_unknown_value_is_refused() -> None:
    assert requested_device({}) == "auto"
    assert requested_device({DEVICE_ENV_VAR: ""}) == "auto"
    assert requested_device({DEVICE_ENV_VAR: " Cpu "}) == "cpu"
    with pytest.raises(DeviceError, match="gpu0"):
        requested_device({DEVICE_ENV_VAR: "gpu0"})


def test_loading_puts_the_model_on_the_device_and_refuses_cuda_without_a_gpu(tiny_dir, monkeypatch) -> None:
    loaded = load_model(str(tiny_dir), device="cpu")
    assert loaded.device == torch.device("cpu")
    assert {parameter.device for parameter in loaded.model.parameters()} == {torch.device("cpu")}
    monkeypatch.setenv(DEVICE_ENV_VAR, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", no_gpu)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        load_model(str(tiny_dir))  # the default device comes from CBERT_DEVICE
    monkeypatch.setenv(DEVICE_ENV_VAR, "auto")
    assert load_model(str(tiny_dir)).device == torch.device("cpu")  # only auto falls back


def test_precisions_follow_the_device() -> None:
    assert precisions_for("cpu") == ("fp32", "bf16")
    assert precisions_for(torch.device("cuda")) == ("fp32", "bf16", "fp16")
    with pytest.raises(ValueError, match="GPU only"):
        with autocast("fp16", "cpu"):
            pass
    weights = torch.ones(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert (weights @ weights).dtype == torch.bfloat16
        with float32():
            assert (weights @ weights).dtype == torch.float32
    with autocast("fp32", "cpu"):
        assert (weights @ weights).dtype == torch.float32


def test_a_trace_on_the_chosen_device_comes_back_as_cpu_numpy(tiny_dir) -> None:
    loaded = load_model(str(tiny_dir), device=torch.device("cpu"))
    result = trace(loaded, plan_note(loaded, NOTE))
    assert isinstance(result.hidden_states, np.ndarray)
    window = result.attentions[0]  # kept as the queries and keys; weights are computed on demand
    assert isinstance(window.queries, np.ndarray) and isinstance(window.keys, np.ndarray)
    assert isinstance(window.head(0, 0), np.ndarray) and isinstance(window.full(), np.ndarray)
    assert isinstance(result.head.top_ids, np.ndarray)


class _NavigationPagesManager(PagesManager):
    """As in test_app_pages: leave Streamlit's legacy pages/ mode the way the real server does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


def test_the_app_stops_at_start_when_cuda_is_asked_for_without_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(app_test_module, "PagesManager", _NavigationPagesManager)
    monkeypatch.setenv(DEVICE_ENV_VAR, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", no_gpu)
    server_device.clear()  # decided once per server: forget what an earlier test's app decided
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        assert any("cannot start" in error.value and f"{DEVICE_ENV_VAR}=cuda" in error.value for error in at.error)
        assert not any("In force" in caption.value for caption in at.sidebar.caption)  # no model was loaded
        assert not at.get("plotly_chart") and not at.title  # no page ran
    finally:
        server_device.clear()
