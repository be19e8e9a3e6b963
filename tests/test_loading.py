"""Loading: specs, default resolution, layouts, heads, casing, bad checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cbert_core.errors import (
    HubUnreachableError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from cbert_core.model import hub
from cbert_core.model.hooks import hook_count
from cbert_core.model.loading import BUNDLED, ModelSpec, load_model, parse_spec, resolve_default_model
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.run.trace import trace
from tiny_models import write_bert, write_family


def test_parse_spec_kinds(tmp_path: Path) -> None:
    assert parse_spec("") == BUNDLED
    assert parse_spec("bundled") == BUNDLED
    assert parse_spec(str(tmp_path)) == ModelSpec(kind="folder", location=str(tmp_path.resolve()))
    assert parse_spec("emilyalsentzer/Bio_ClinicalBERT") == ModelSpec(
        kind="hub", location="emilyalsentzer/Bio_ClinicalBERT")
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        parse_spec(str(tmp_path / "missing" / "model"))


def test_env_var_wins(tiny_dir: Path) -> None:
    resolution = resolve_default_model(env={"CBERT_MODEL": str(tiny_dir)})
    assert resolution.spec.kind == "folder" and resolution.spec.location == str(tiny_dir.resolve())
    assert "CBERT_MODEL" in resolution.steps[0]


def test_offline_resolution_falls_back_to_bundled_and_explains() -> None:
    resolution = resolve_default_model(env={"HF_HUB_OFFLINE": "1"})
    assert resolution.spec == BUNDLED
    text = " ".join(resolution.steps)
    assert "not in the local Hugging Face cache" in text and "HF_HUB_OFFLINE" in text and "bundled" in text
    assert resolution.seconds < 3


def test_silent_hub_decision_is_bounded() -> None:
    """A hub that accepts connections but never answers must not hold start-up past the timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # never accepts or answers
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        started = time.perf_counter()
        resolution = resolve_default_model(env={"HF_ENDPOINT": endpoint}, hub_timeout_s=1.0)
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    assert resolution.spec == BUNDLED
    assert any("did not answer" in step for step in resolution.steps)
    assert elapsed < 3.0


def test_hub_answer_is_used_when_it_answers() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - http.server API
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        resolution = resolve_default_model(env={"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"})
    finally:
        server.shutdown()
    assert resolution.spec == ModelSpec(kind="hub", location="emilyalsentzer/Bio_ClinicalBERT")


def test_hub_id_without_cache_offline_is_a_clear_error() -> None:
    started = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="not in the local cache"):
        load_model("someone/not-cached-model")
    assert time.perf_counter() - started < 3


def test_hub_layout_folder_loads_as_bert(tmp_path: Path) -> None:
    folder = write_bert(tmp_path / "hub", layout="hub")
    assert "model_type" not in json.loads((folder / "config.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    loaded = load_model(str(folder))
    assert loaded.info.family == "bert"
    assert loaded.info.head_kind == "masked-lm"
    assert loaded.info.weights_file == "pytorch_model.bin"
    assert loaded.model.config._attn_implementation == "cbert_eager"  # eager-style: returns its weights
    assert not loaded.model.training
    result = trace(loaded, plan_note(loaded, "Patient denies chest pain."))
    assert result.attentions[0].shape[:2] == (2, 4)


def test_real_size_hub_layout_from_shared_tool(shared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shaped"
    subprocess.run([sys.executable, str(shared_dir / "tools" / "make_shaped_checkpoint.py"), str(out),
                    "--hub-layout", "--layers", "2"], check=True, capture_output=True)
    loaded = load_model(str(out))
    info = loaded.info
    assert (info.family, info.head_kind, info.hidden_size, info.num_heads, info.vocab_size) == (
        "bert", "masked-lm", 768, 12, 28996)
    assert info.vocab_cased and info.tokenizer_lowercases and info.casing_mismatch
    assert trace(loaded, plan_note(loaded, "COPD exacerbation.", RunOptions(lowercase=True))).tokens[1:3] == ("cop", "##d")
    assert trace(loaded, plan_note(loaded, "COPD exacerbation.", RunOptions(lowercase=False))).tokens[1:3] == ("CO", "##PD")


def test_bundled_model_is_a_bare_uncased_encoder(bundled) -> None:
    info = bundled.info
    assert (info.family, info.head_kind, info.num_layers, info.num_heads, info.hidden_size) == (
        "bert", "encoder", 6, 12, 384)
    assert not info.vocab_cased and info.tokenizer_lowercases
    assert info.max_tokens == 512


def test_casing_is_reported_and_switchable(tiny) -> None:
    assert tiny.info.vocab_cased and tiny.info.tokenizer_lowercases and tiny.info.casing_switchable
    lowered = trace(tiny, plan_note(tiny, "COPD Patient", RunOptions(lowercase=True))).tokens[1:-1]
    kept = trace(tiny, plan_note(tiny, "COPD Patient", RunOptions(lowercase=False))).tokens[1:-1]
    assert lowered == ("cop", "##d", "patient")
    assert kept == ("CO", "##PD", "Patient")


@pytest.mark.parametrize("head,labels", [("token-classification", ("O", "B-PROBLEM", "I-PROBLEM")),
                                         ("sequence-classification", ("negated", "affirmed")),
                                         ("encoder", ())])
def test_head_kind_and_labels(tmp_path: Path, head: str, labels: tuple[str, ...]) -> None:
    folder = write_bert(tmp_path / head, head=head, labels=labels or ("A", "B"))
    loaded = load_model(str(folder))
    assert loaded.info.head_kind == head
    assert loaded.info.labels == labels


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_other_bert_families_trace(tmp_path: Path, family: str) -> None:
    loaded = load_model(str(write_family(tmp_path / family, family)))
    assert loaded.info.family == family
    result = trace(loaded, plan_note(loaded, "Patient denies chest pain. " * 30), capture_qk=True)
    assert len(result.windows) >= 2  # 64 positions: forces windows
    for attention in result.attentions:
        assert abs(attention.astype("float32").sum(-1) - 1).max() < 2e-3
    assert hook_count(loaded.model) == 0


def test_gpt2_is_refused_with_what_is_supported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="BERT, RoBERTa, DistilBERT and ELECTRA"):
        load_model(str(write_family(tmp_path / "gpt2", "gpt2")))


def test_folder_without_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedModelError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_config_without_model_type_that_is_not_bert(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"n_embd": 32, "n_layer": 2}))
    with pytest.raises(UnsupportedModelError, match="no model_type"):
        load_model(str(folder))


def test_truncated_weights_are_a_load_error(tmp_path: Path) -> None:
    folder = write_bert(tmp_path / "trunc")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupted"):
        load_model(str(folder))


def test_corrupted_bin_is_a_load_error(tmp_path: Path) -> None:
    folder = write_bert(tmp_path / "corrupt", layout="hub")
    (folder / "pytorch_model.bin").write_bytes(b"not a checkpoint at all" * 100)
    with pytest.raises(ModelLoadError):
        load_model(str(folder))


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch exploit_ran",))


def test_bin_weights_are_loaded_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_bert(tmp_path / "evil", layout="hub")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["payload"] = _Exploit()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        torch.save(state, handle, pickle_module=pickle)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError):
        load_model(str(folder))
    assert not (tmp_path / "exploit_ran").exists()


def test_safetensors_preferred_over_bin(tmp_path: Path) -> None:
    folder = write_bert(tmp_path / "both")
    (folder / "pytorch_model.bin").write_bytes(b"garbage that would fail to unpickle")
    loaded = load_model(str(folder))
    assert loaded.info.weights_file == "model.safetensors"


def test_missing_encoder_weights_are_reported(tmp_path: Path) -> None:
    folder = write_bert(tmp_path / "partial", layout="hub")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state = {k: v for k, v in state.items() if ".layer.1." not in k}
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(str(folder))


def test_cached_snapshot_reads_only_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert hub.cached_snapshot("emilyalsentzer/Bio_ClinicalBERT") is None
