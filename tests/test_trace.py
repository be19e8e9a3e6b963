"""Trace invariants: attention rows, logits, hooks, knockout, windows, threads, bad input."""

from __future__ import annotations

import dataclasses
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from cbert_core.errors import EmptyNoteError, NoteTooLongError
from cbert_core.model.hooks import capture, hook_count, knockout, whole_layers
from cbert_core.model.loading import load_model
from cbert_core.model.precision import cpu_flags, has_native_bf16
from cbert_core.run.head_stats import HeadStatistics, window_statistics
from cbert_core.run.lazy_attention import WindowAttention
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.run.trace import trace
from notes import CLINICAL_NOTE, HOSTILE_NOTES
from tiny_models import write_bert, write_family


def plain_logits(loaded, result) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model(input_ids=torch.from_numpy(result.input_ids)[None]).logits[0]


def test_attention_rows_sum_to_one(tiny, bundled) -> None:
    for loaded in (tiny, bundled):
        result = trace(loaded, plan_note(loaded, "Patient denies chest pain. No evidence of pneumonia."))
        for attention in result.attentions:
            assert abs(attention.astype(np.float32).sum(-1) - 1).max() < 2e-3


def test_trace_shapes_and_positions(bundled) -> None:
    result = trace(bundled, plan_note(bundled, CLINICAL_NOTE), capture_qk=True, capture_ffn=True)
    positions = len(result.tokens)
    assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
    assert result.hidden_states.shape == (7, positions, 384)
    assert result.attentions[0].shape == (6, 12, positions, positions)
    assert result.queries[0].shape == result.keys[0].shape == (6, 12, positions, 32)
    assert result.ffn_activations.shape == (6, positions, 1536)
    assert (result.offsets[0] == -1).all() and (result.offsets[-1] == -1).all()
    for token, (start, end) in zip(result.tokens[1:-1], result.offsets[1:-1]):
        assert CLINICAL_NOTE[start:end].lower().startswith(token.removeprefix("##")[:1]) or token == "[UNK]"
    assert result.section_ids.max() == 2  # three sections
    assert result.sentence_ids[1:-1].min() >= -1


def test_traced_outputs_equal_untraced(tiny) -> None:
    result = trace(tiny, plan_note(tiny, "Patient denies chest [MASK] . No fever."), top_k=5)
    logprobs = torch.log_softmax(plain_logits(tiny, result), dim=-1)
    values, indices = torch.topk(logprobs, 5, dim=-1)
    np.testing.assert_array_equal(result.head.top_ids, indices.numpy())
    np.testing.assert_allclose(result.head.top_logprobs, values.numpy(), rtol=0, atol=1e-5)


def test_traced_hidden_and_attention_equal_transformers_outputs() -> None:
    bundled = load_model("bundled")  # own copy: output_attentions makes transformers add hooks for good
    result = trace(bundled, plan_note(bundled, "Patient denies chest pain."))
    with torch.inference_mode():
        reference = bundled.model(input_ids=torch.from_numpy(result.input_ids)[None],
                                  output_attentions=True, output_hidden_states=True)
    expected_hidden = torch.stack(reference.hidden_states)[:, 0].numpy()
    assert result.hidden_states.dtype == np.float16  # kept in half precision: float16's own rounding
    np.testing.assert_allclose(result.hidden_states.astype(np.float32), expected_hidden, rtol=2**-11, atol=1e-6)
    expected_attention = torch.stack(reference.attentions)[:, 0].numpy()
    np.testing.assert_allclose(result.attentions[0].astype(np.float32), expected_attention, atol=2e-3)


def test_no_hook_left_after_trace_or_exception(tiny) -> None:
    all_hooks_before = hook_count(tiny.model, ours_only=False)
    assert hook_count(tiny.model) == 0
    trace(tiny, plan_note(tiny, "Patient denies chest pain.", RunOptions(knocked_out=[(0, 1)])), capture_qk=True, capture_ffn=True)
    assert hook_count(tiny.model) == 0

    def explode(fraction: float, message: str) -> None:
        raise RuntimeError("user changed the note")

    with pytest.raises(RuntimeError, match="changed the note"):
        trace(tiny, plan_note(tiny, "Patient denies chest pain.", RunOptions(knocked_out=[(1, 2)])), progress=explode)
    assert hook_count(tiny.model) == 0
    with pytest.raises(ZeroDivisionError):
        with capture(tiny.anatomy, {"hidden", "attention", "query"}), knockout(tiny.anatomy, [(0, 0)]):
            assert hook_count(tiny.model) > 0
            raise ZeroDivisionError
    assert hook_count(tiny.model) == 0
    assert hook_count(tiny.model, ours_only=False) == all_hooks_before


class RegistersAnotherWhenAsked:
    """A hook that, when asked whether it is ours, places another hook on its module: another session's thread
    registering (as captum does, outside our lock) at the very moment hook_count looks at this one."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.placed: list[torch.utils.hooks.RemovableHandle] = []

    def __call__(self, *args: object) -> None:
        return None

    @property
    def cbert_hook(self) -> bool:
        self.placed.append(self.module.register_forward_hook(lambda *args: None))
        return True


def test_counting_hooks_while_another_thread_registers_one(tiny) -> None:
    """The sidebar's status line counts hooks on the shared model while other sessions place and remove theirs."""
    module = tiny.anatomy.embeddings.word
    racer = RegistersAnotherWhenAsked(module)
    handle = module.register_forward_hook(racer)
    try:
        assert hook_count(tiny.model) == 1  # the table as it was when counting began
        assert len(racer.placed) == 1
        assert hook_count(tiny.model) == 1  # the hook placed meanwhile is not ours
    finally:
        handle.remove()
        for placed in racer.placed:
            placed.remove()
    assert hook_count(tiny.model) == 0


def test_knockout_changes_output_and_restoring_is_exact(tiny) -> None:
    text = "Patient denies chest pain [MASK] fever."
    intact = trace(tiny, plan_note(tiny, text))
    knocked = trace(tiny, plan_note(tiny, text, RunOptions(knocked_out=[(1, 0), (1, 3)])))
    assert knocked.knocked_out == frozenset({(1, 0), (1, 3)})
    assert not np.allclose(knocked.hidden_states[-1], intact.hidden_states[-1])
    np.testing.assert_array_equal(knocked.hidden_states[:2], intact.hidden_states[:2])  # layer 0 untouched
    again = trace(tiny, plan_note(tiny, text))
    np.testing.assert_array_equal(again.hidden_states, intact.hidden_states)
    np.testing.assert_array_equal(again.head.top_logprobs, intact.head.top_logprobs)


def test_knockout_of_no_heads_changes_nothing_and_a_whole_layer_does(tiny) -> None:
    ids = torch.from_numpy(trace(tiny, plan_note(tiny, "Patient denies chest pain.")).input_ids)[None]
    with torch.inference_mode():
        base = tiny.model(input_ids=ids).logits
        with knockout(tiny.anatomy, []):
            none = tiny.model(input_ids=ids).logits
        with knockout(tiny.anatomy, whole_layers([0], tiny.anatomy.num_heads)):
            layer = tiny.model(input_ids=ids).logits
    assert torch.equal(base, none)
    assert not torch.allclose(base, layer)


def test_knockout_zeroes_the_head_context(tiny) -> None:
    ids = torch.from_numpy(trace(tiny, plan_note(tiny, "Patient denies chest pain.")).input_ids)[None]
    seen = {}

    def grab(_module, args):
        seen["context"] = args[0].detach().clone()

    with torch.inference_mode(), knockout(tiny.anatomy, [(0, 2)]):
        handle = tiny.anatomy.layers[0].attention_out_proj.register_forward_pre_hook(grab)
        try:
            tiny.model(input_ids=ids)
        finally:
            handle.remove()
    # grab() ran after the knockout hook (registration order): head 2's slice is zero
    context = seen["context"].unflatten(-1, (4, 8))
    assert torch.count_nonzero(context[..., 2, :]) == 0
    assert torch.count_nonzero(context[..., 1, :]) > 0


def test_knockout_rejects_heads_outside_the_model(tiny) -> None:
    with pytest.raises(ValueError, match="outside"):
        trace(tiny, plan_note(tiny, "Patient.", RunOptions(knocked_out=[(5, 0)])))
    assert hook_count(tiny.model) == 0


def test_long_note_is_windowed_and_stitched(tmp_path: Path) -> None:
    loaded = load_model(str(write_bert(tmp_path / "short", max_positions=40)))
    text = " ".join(f"Patient denies chest pain number {i}." for i in range(40))
    result = trace(loaded, plan_note(loaded, text, RunOptions(overlap=8)))
    assert len(result.windows) > 3
    assert result.windows[-1].stop == len(result.tokens) - 2
    # Each window's attention is over its own positions; stitched hidden states
    # equal a plain forward of the owning window at the owned positions.
    for window in result.windows:
        positions = result.window_positions(window.index)
        ids = torch.from_numpy(result.input_ids[positions])[None]
        with torch.inference_mode():
            hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].numpy()
        owned = np.flatnonzero(result.owner[positions] == window.index)
        np.testing.assert_allclose(result.hidden_states[-1][positions[owned]].astype(np.float32), hidden[owned],
                                   rtol=2**-11, atol=1e-6)


def test_five_thousand_token_note_on_the_bundled_model(bundled) -> None:
    text = (CLINICAL_NOTE + "\n") * 36
    result = trace(bundled, plan_note(bundled, text))
    assert len(result.tokens) - 2 >= 5000
    assert len(result.windows) >= 10
    assert all(window.size <= 510 for window in result.windows)
    assert result.hidden_states.shape[1] == len(result.tokens)


def test_trace_is_frozen_readonly_and_pickles(tiny) -> None:
    result = trace(tiny, plan_note(tiny, "Patient denies chest pain."))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.hidden_states[0, 0, 0] = 1.0
    clone = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(clone.attentions[0], result.attentions[0])
    assert not any(isinstance(value, torch.Tensor | torch.nn.Module) for value in vars(result).values())


def test_eight_threads_get_their_own_results(bundled) -> None:
    notes = [f"Patient {i} denies chest pain. No evidence of pneumonia number {i}." * (1 + i % 3)
             for i in range(8)]
    reference = [trace(bundled, plan_note(bundled, note, RunOptions(knocked_out=[(i % 6, i % 12)] if i % 2 else []))) for i, note in
                 enumerate(notes)]

    def run(index: int):
        return trace(bundled, plan_note(bundled, notes[index], RunOptions(knocked_out=[(index % 6, index % 12)] if index % 2 else [])))

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _round in range(2):
            results = list(pool.map(run, range(8)))
            for got, expected in zip(results, reference):
                assert got.text == expected.text
                np.testing.assert_allclose(got.hidden_states, expected.hidden_states, atol=1e-4)
                np.testing.assert_allclose(got.attentions[0].astype(np.float32),
                                           expected.attentions[0].astype(np.float32), atol=2e-3)
    assert hook_count(bundled.model) == 0


def test_bf16_attention_is_close_to_fp32(tiny) -> None:
    text = "Patient denies chest pain. No evidence of pneumonia."
    fp32 = trace(tiny, plan_note(tiny, text))
    bf16 = trace(tiny, plan_note(tiny, text, RunOptions(precision="bf16")))
    assert bf16.precision == "bf16"
    difference = np.abs(fp32.attentions[0].astype(np.float32) - bf16.attentions[0].astype(np.float32)).max()
    assert 0 < difference < 0.05
    with pytest.raises(ValueError, match="fp32, bf16"):
        trace(tiny, plan_note(tiny, text, RunOptions(precision="fp16")))


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    flags = cpu_flags(cpuinfo)
    assert {"avx2", "avx512_bf16"} <= flags and has_native_bf16(flags)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 fma\n")
    assert not has_native_bf16(cpu_flags(cpuinfo))
    assert has_native_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("text,error", [("", EmptyNoteError), ("  \n ", EmptyNoteError),
                                        ("\x00\x01\x02", EmptyNoteError)])
def test_bad_notes_raise_typed_errors(tiny, text: str, error: type) -> None:
    with pytest.raises(error):
        trace(tiny, plan_note(tiny, text))


def test_note_over_the_limit(tiny) -> None:
    with pytest.raises(NoteTooLongError):
        trace(tiny, plan_note(tiny, "Patient. " * 20, RunOptions(max_chars=100)))


@pytest.mark.parametrize("name", sorted(HOSTILE_NOTES))
def test_hostile_notes_trace(bundled, name: str) -> None:
    text = HOSTILE_NOTES[name]
    result = trace(bundled, plan_note(bundled, text))
    content = result.offsets[1:-1]
    assert (content[:, 0] >= 0).all() and (content[:, 1] <= len(text)).all()
    assert abs(result.attentions[0].astype(np.float32).sum(-1) - 1).max() < 2e-3
    if name == "literal_specials":
        assert result.tokens.count("[CLS]") == 1 and result.tokens.count("[SEP]") == 1
    if name == "html":
        shown = {text[a:b] for a, b in content}
        assert {"<", "script", ">"} <= shown


def test_explorer_attention_equals_transformers_eager(tiny_dir) -> None:
    """The faster eager-style kernel gives what transformers' own eager attention gives."""
    from transformers import AutoModelForMaskedLM

    loaded = load_model(str(tiny_dir))
    reference = AutoModelForMaskedLM.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    result = trace(loaded, plan_note(loaded, "Patient denies chest pain [MASK] fever."))
    ids = torch.from_numpy(result.input_ids.copy())[None]
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 3, dtype=torch.long)], dim=1)
    with torch.inference_mode():
        for inputs in ({"input_ids": ids}, {"input_ids": padded, "attention_mask": mask}):
            ours = loaded.model(**inputs).logits[0, : ids.shape[1]]
            theirs = reference(**inputs).logits[0, : ids.shape[1]]
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def models_own_weights(loaded, result, window: int) -> np.ndarray:
    """float32 [layer, head, q, k]: the attention weights the model itself returns for one window of ``result``."""
    ids = torch.from_numpy(result.input_ids[result.window_positions(window)].copy())[None]
    with torch.inference_mode():
        return torch.stack(loaded.model(input_ids=ids, output_attentions=True).attentions)[:, 0].float().numpy()


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_weights_computed_on_demand_equal_the_models_own(tmp_path: Path, family: str) -> None:
    # own copies: output_attentions makes transformers add hooks for good
    folder = write_bert(tmp_path / family) if family == "bert" else write_family(tmp_path / family, family)
    loaded = load_model(str(folder))
    result = trace(loaded, plan_note(loaded, "Patient denies chest pain, no fever. " * 12))
    assert len(result.windows) >= 2
    for window, attention in enumerate(result.attentions):
        assert isinstance(attention, WindowAttention)  # not stored: computed from the kept queries and keys
        own = models_own_weights(loaded, result, window)
        np.testing.assert_allclose(np.asarray(attention, dtype=np.float32), own, atol=2e-3)
        np.testing.assert_array_equal(attention[1, 2], np.asarray(attention)[1, 2])  # one head alone: the same
        np.testing.assert_array_equal(attention[1], np.asarray(attention)[1])
        np.testing.assert_array_equal(attention[1, 2, 3:5, -1], np.asarray(attention)[1, 2, 3:5, -1])
        with pytest.raises(ValueError):
            attention[0, 0][0, 0] = 1.0
        with pytest.raises(IndexError):
            attention[loaded.info.num_layers, 0]


def test_weights_on_demand_on_the_bundled_model_and_the_statistics_of_the_models_own(bundled) -> None:
    copy = load_model("bundled")  # own copy for output_attentions
    result = trace(bundled, plan_note(bundled, CLINICAL_NOTE))
    own = models_own_weights(copy, result, 0)
    np.testing.assert_allclose(result.attentions[0].astype(np.float32), own, atol=2e-3)
    # the statistics were reduced from the model's own weights while it ran
    expected = window_statistics(own, result.window_tokens(0))
    for name in HeadStatistics.METRICS:
        np.testing.assert_allclose(result.head_stats[0].metric(name), expected.metric(name), rtol=1e-4, atol=1e-5)


def test_a_trace_stores_less_than_half_of_what_storing_the_weights_took(bundled) -> None:
    text = " ".join(["patient", "denies", "chest", "pain", "and", "fever", "today", "."] * 63)
    result = trace(bundled, plan_note(bundled, text))
    assert len(result.windows) == 1 and result.num_positions >= 500  # one full window
    # what the trace held before: every weight in float16, hidden states in float32
    weights = sum(np.prod(attention.shape) * 2 for attention in result.attentions)
    before = result.nbytes - result.hidden_states.nbytes - sum(a.nbytes for a in (*result.queries, *result.keys)) \
        - sum(stats.nbytes for stats in result.head_stats) + weights + result.hidden_states.size * 4
    assert result.nbytes <= 0.5 * before
    assert pickle.loads(pickle.dumps(result)).nbytes == result.nbytes
