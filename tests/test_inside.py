"""The "Inside the model" walk: every number re-derived from the model's weights, per family."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from cbert_core.analyses.inside import attention_step, embedding_walk, encoder_stack, logit_lens, verify_layer
from cbert_core.errors import CbertError, EmptyNoteError, ResourceLimitError, TargetError
from cbert_core.model.hooks import hook_count
from cbert_core.model.loading import HeadKind, LoadedModel, load_model
from cbert_core.run.inside_capture import InsideTrace, inside_trace
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from tiny_models import write_bert, write_family
from ui.captions import CAPTIONS, OUTPUT_CAPTIONS

MASKED_NOTE = "Patient denies chest [MASK] . No fever."
NOTE = "Patient denies chest pain. No evidence of pneumonia."
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_inside(tiny: LoadedModel) -> InsideTrace:
    return inside_trace(tiny, plan_note(tiny, MASKED_NOTE))


@pytest.fixture(scope="module")
def bundled_inside(bundled: LoadedModel) -> InsideTrace:
    return inside_trace(bundled, plan_note(bundled, NOTE))


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    root = tmp_path_factory.mktemp("families")
    return {family: load_model(str(write_family(root / family, family)))
            for family in ("distilbert", "electra", "roberta")}


def weights(linear: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()


def layer_norm(x: np.ndarray, norm: torch.nn.LayerNorm) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    weight, bias = norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy()
    return (x - mean) / np.sqrt(variance + norm.eps) * weight + bias


def softmax(scores: np.ndarray) -> np.ndarray:
    exponentials = np.exp(scores - scores.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def forward_layer(loaded: LoadedModel, layer: int, stream: np.ndarray) -> dict[str, np.ndarray]:
    """One encoder layer in float64 numpy from its input [t, d] and the weights only."""
    parts, heads, head_dim = loaded.anatomy.layers[layer], loaded.anatomy.num_heads, loaded.anatomy.head_dim
    tokens = stream.shape[0]

    def project(linear: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
        weight, bias = weights(linear)
        return x @ weight.T + bias

    def by_head(x: np.ndarray) -> np.ndarray:  # [t, h * dh] -> [h, t, dh]
        return x.reshape(tokens, heads, head_dim).transpose(1, 0, 2)

    query, key, value = (by_head(project(linear, stream)) for linear in (parts.query, parts.key, parts.value))
    attention = softmax(query @ key.transpose(0, 2, 1) / np.sqrt(head_dim))  # [h, t, t]
    context = attention @ value  # [h, t, dh]
    update = project(parts.attention_out_proj, context.transpose(1, 0, 2).reshape(tokens, -1))
    middle = layer_norm(stream + update, parts.attention_norm)
    activation = torch.nn.functional.gelu(torch.from_numpy(project(parts.ffn_in, middle))).numpy()
    ffn_update = project(parts.ffn_out, activation)
    return dict(query=query, key=key, value=value, attention=attention, context=context, update=update,
                middle=middle, ffn_update=ffn_update, output=layer_norm(middle + ffn_update, parts.output_norm))


def plain_forward(loaded: LoadedModel, inside: InsideTrace) -> object:
    with torch.inference_mode():
        return loaded.model(input_ids=torch.from_numpy(inside.input_ids.copy())[None])


@pytest.mark.parametrize("name", ["tiny", "bundled"])
def test_attention_and_layer_outputs_rederived_from_weights(name: str, request: pytest.FixtureRequest) -> None:
    loaded, inside = request.getfixturevalue(name), request.getfixturevalue(f"{name}_inside")
    assert loaded.model.config.hidden_act == "gelu"
    for layer in range(inside.num_layers):
        derived = forward_layer(loaded, layer, inside.hidden_states[layer].astype(np.float64))
        for key, captured in (("query", inside.queries), ("key", inside.keys), ("value", inside.values),
                              ("context", inside.contexts)):
            np.testing.assert_allclose(captured[layer], derived[key], **TOLERANCE, err_msg=key)
        np.testing.assert_allclose(inside.attention_updates[layer], derived["update"], **TOLERANCE)
        np.testing.assert_allclose(inside.attention_outputs[layer], derived["middle"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(inside.ffn_updates[layer], derived["ffn_update"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(inside.hidden_states[layer + 1], derived["output"], rtol=1e-4, atol=1e-4)
        # The heads' contributions through the output projection add up to the attention update.
        weight, bias = weights(loaded.anatomy.layers[layer].attention_out_proj)
        per_head = np.einsum("htk,dhk->thd", inside.contexts[layer].astype(np.float64),
                             weight.reshape(weight.shape[0], inside.num_heads, inside.head_dim))  # [t, h, d]
        np.testing.assert_allclose(per_head.sum(1) + bias, inside.attention_updates[layer], **TOLERANCE)
        np.testing.assert_allclose(inside.head_contribution_norms[layer], np.linalg.norm(per_head, axis=-1),
                                   **TOLERANCE)
        check = verify_layer(loaded, inside, layer)
        assert check.layer == layer and check.max_error < 1e-5
    last = plain_forward(loaded, inside)
    if loaded.info.head_kind == "encoder":
        np.testing.assert_allclose(inside.hidden_states[-1], last.last_hidden_state[0].numpy(), atol=1e-5)


def test_attention_step_matches_the_model(tiny: LoadedModel, tiny_inside: InsideTrace) -> None:
    reference = trace(tiny, plan_note(tiny, MASKED_NOTE))  # the ordinary trace, float16 attention
    assert reference.tokens == tiny_inside.tokens
    query = int(tiny_inside.mask_positions[0])
    for layer in range(tiny_inside.num_layers):
        for head in range(tiny_inside.num_heads):
            step = attention_step(tiny_inside, layer, head, query)
            expected_scores = tiny_inside.keys[layer, head] @ tiny_inside.queries[layer, head, query] / np.sqrt(8)
            np.testing.assert_allclose(step.scores, expected_scores, rtol=1e-5, atol=1e-6)
            assert abs(step.weights.sum() - 1) < 1e-6 and (step.weights > 0).all()
            np.testing.assert_allclose(step.weights, reference.attentions[0][layer, head, query].astype(np.float32),
                                       atol=2e-3)
            np.testing.assert_allclose(step.weighted_values.sum(0), step.context, atol=1e-6)
            np.testing.assert_allclose(step.context, step.model_context, atol=1e-6)
            assert abs(step.head_shares.sum() - 1) < 1e-5 and step.share == pytest.approx(step.head_shares[head])
            assert step.keys.shape == (tiny_inside.num_positions, 8) and step.query.shape == (8,)
            assert step.top_keys(3)[0] == int(np.argmax(step.weights))
    with pytest.raises(TargetError):
        attention_step(tiny_inside, tiny_inside.num_layers, 0, 0)
    with pytest.raises(TargetError):
        attention_step(tiny_inside, 0, -1, 0)
    with pytest.raises(TargetError):
        attention_step(tiny_inside, 0, 0, tiny_inside.num_positions)


@pytest.mark.parametrize("name", ["tiny", "bundled"])
def test_embedding_parts_sum_to_layer_norm_input(name: str, request: pytest.FixtureRequest) -> None:
    loaded, inside = request.getfixturevalue(name), request.getfixturevalue(f"{name}_inside")
    emb = loaded.anatomy.embeddings
    walk = embedding_walk(inside)
    assert walk.part_names == ("word", "position", "segment")
    word, position, segment = inside.embedding_parts
    np.testing.assert_array_equal(word, emb.word.weight.detach().numpy()[inside.input_ids])
    np.testing.assert_array_equal(position, emb.position.weight.detach().numpy()[: inside.num_positions])
    np.testing.assert_array_equal(segment, np.broadcast_to(emb.token_type.weight.detach().numpy()[0], segment.shape))
    np.testing.assert_allclose(inside.embedding_parts.sum(0), inside.embedding_sum, rtol=0, atol=1e-6)
    assert walk.sum_error < 1e-6
    np.testing.assert_allclose(layer_norm(inside.embedding_sum.astype(np.float64), emb.norm),
                               inside.embedding_output, atol=1e-5)
    np.testing.assert_allclose(inside.embedding_output, inside.hidden_states[0], rtol=0, atol=1e-7)
    assert not walk.projected
    np.testing.assert_allclose(walk.norm_shares.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(walk.projection_shares.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(walk.part_norms, np.linalg.norm(inside.embedding_parts, axis=-1), rtol=1e-6)
    assert walk.note_norm_shares.shape == (3,) and abs(walk.note_norm_shares.sum() - 1) < 1e-5
    np.testing.assert_allclose(walk.layer_input_norms, np.linalg.norm(inside.hidden_states[0], axis=-1), rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "bundled"])
def test_encoder_stack_updates_rebuild_the_stream(name: str, request: pytest.FixtureRequest) -> None:
    loaded, inside = request.getfixturevalue(name), request.getfixturevalue(f"{name}_inside")
    stack = encoder_stack(inside)
    layers, positions = inside.num_layers, inside.num_positions
    assert stack.attention_relative.shape == stack.ffn_relative.shape == (layers, positions)
    assert stack.stream_norms.shape == (layers + 1, positions)
    for layer, parts in enumerate(loaded.anatomy.layers):
        stream = inside.hidden_states[layer].astype(np.float64)
        middle = layer_norm(stream + inside.attention_updates[layer], parts.attention_norm)
        np.testing.assert_allclose(middle, inside.attention_outputs[layer], rtol=1e-4, atol=1e-5)
        after = layer_norm(inside.attention_outputs[layer].astype(np.float64) + inside.ffn_updates[layer],
                           parts.output_norm)
        np.testing.assert_allclose(after, inside.hidden_states[layer + 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stack.stream_norms, np.linalg.norm(inside.hidden_states, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(stack.attention_relative * stack.stream_norms[:-1],
                               np.linalg.norm(inside.attention_updates, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(stack.ffn_relative * stack.middle_norms,
                               np.linalg.norm(inside.ffn_updates, axis=-1), rtol=1e-5)
    for turn in (stack.attention_turn, stack.ffn_turn):
        assert ((turn > -1e-6) & (turn < 2 + 1e-6)).all()
    assert stack.layer_attention_relative.shape == stack.layer_ffn_relative.shape == (layers,)


def test_logit_lens_last_layer_equals_masked_lm_output(tiny: LoadedModel, tiny_inside: InsideTrace,
                                                       families: dict[str, LoadedModel]) -> None:
    for loaded in (tiny, *families.values()):
        inside = tiny_inside if loaded is tiny else inside_trace(loaded, plan_note(loaded, MASKED_NOTE))
        position = int(inside.mask_positions[0])
        lens = logit_lens(loaded, inside, position, top_k=5)
        probs = torch.softmax(plain_forward(loaded, inside).logits[0, position].float(), dim=-1)
        values, indices = torch.topk(probs, 5)
        family = loaded.info.family
        np.testing.assert_array_equal(lens.top_ids[-1], indices.numpy(), err_msg=family)
        np.testing.assert_allclose(lens.top_probs[-1], values.numpy(), rtol=1e-5, atol=1e-7, err_msg=family)
        np.testing.assert_array_equal(inside.output.top_ids[position, :5], indices.numpy(), err_msg=family)
        assert lens.top_probs.shape == (inside.num_layers + 1, 5) and len(lens.layer_names) == inside.num_layers + 1
        assert lens.token == "[MASK]" and lens.final_id == int(indices[0]) and lens.final_ranks[-1] == 0
        assert lens.final_probs[-1] == pytest.approx(float(values[0]), rel=1e-5)
        assert lens.top_tokens[-1][0] == inside.output.predictions_at(position)[0][0] == lens.final_token
        assert (np.diff(lens.top_probs, axis=1) <= 0).all()


def test_families_walk_distilbert_without_segments_and_electra_projection(
        families: dict[str, LoadedModel]) -> None:
    distilbert = inside_trace(families["distilbert"], plan_note(families["distilbert"], NOTE))
    assert distilbert.embedding_part_names == ("word", "position")
    np.testing.assert_allclose(distilbert.embedding_parts.sum(0), distilbert.embedding_sum, atol=1e-6)
    np.testing.assert_allclose(distilbert.embedding_output, distilbert.hidden_states[0], atol=1e-7)
    assert embedding_walk(distilbert).norm_shares.shape == (distilbert.num_positions, 2)

    electra_model = families["electra"]
    electra = inside_trace(electra_model, plan_note(electra_model, NOTE))
    assert electra.embedding_parts.shape == (3, electra.num_positions, 16)
    assert electra.hidden_states.shape == (3, electra.num_positions, 32) and electra.embedding_projected
    emb = electra_model.anatomy.embeddings
    np.testing.assert_allclose(electra.embedding_parts.sum(0), electra.embedding_sum, atol=1e-6)
    np.testing.assert_allclose(layer_norm(electra.embedding_sum.astype(np.float64), emb.norm),
                               electra.embedding_output, atol=1e-5)
    weight, bias = weights(electra_model.model.base_model.embeddings_project)
    np.testing.assert_allclose(electra.embedding_output @ weight.T + bias, electra.hidden_states[0], atol=1e-5)
    walk = embedding_walk(electra)
    assert walk.projected and walk.output.shape[-1] == 16 and walk.layer_input_norms.shape == (electra.num_positions,)

    for loaded, inside in ((families["distilbert"], distilbert), (electra_model, electra),
                           (families["roberta"], inside_trace(families["roberta"], plan_note(families["roberta"], NOTE)))):
        for layer in range(inside.num_layers):
            derived = forward_layer(loaded, layer, inside.hidden_states[layer].astype(np.float64))
            np.testing.assert_allclose(inside.hidden_states[layer + 1], derived["output"], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(inside.contexts[layer], derived["context"], **TOLERANCE)
            assert verify_layer(loaded, inside, layer).max_error < 1e-5
        encoder_stack(inside)
        attention_step(inside, inside.num_layers - 1, inside.num_heads - 1, 1)
        assert hook_count(loaded.model) == 0


def test_output_layer_for_each_head_kind(tiny_inside: InsideTrace, bundled: LoadedModel,
                                         bundled_inside: InsideTrace, tmp_path: Path) -> None:
    masked = tiny_inside.output
    assert masked.kind == "masked-lm" and masked.top_probs.shape == (tiny_inside.num_positions, 10)
    assert masked.pooled_vector is None and masked.cls_vector.shape == (32,)

    encoder = bundled_inside.output
    reference = plain_forward(bundled, bundled_inside)
    assert encoder.kind == "encoder" and encoder.top_probs is None and encoder.predictions_at(1) == []
    np.testing.assert_allclose(encoder.cls_vector, reference.last_hidden_state[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(encoder.mean_vector, reference.last_hidden_state[0].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(encoder.pooled_vector, reference.pooler_output[0].numpy(), atol=1e-5)

    for kind in ("sequence-classification", "token-classification"):
        loaded = load_model(str(write_bert(tmp_path / kind, head=kind)))
        inside = inside_trace(loaded, plan_note(loaded, NOTE))
        logits = plain_forward(loaded, inside).logits[0].numpy()
        output = inside.output
        assert output.kind == kind and output.labels == ("NEG", "POS")
        if kind == "sequence-classification":
            np.testing.assert_allclose(output.sequence_logits, logits, atol=1e-5)
            assert abs(output.sequence_probs.sum() - 1) < 1e-6
        else:
            np.testing.assert_allclose(output.token_logits, logits, atol=1e-5)
            np.testing.assert_allclose(output.token_probs.sum(-1), 1, atol=1e-6)
        with pytest.raises(TargetError, match="fill-mask"):
            logit_lens(loaded, inside, 1)


def test_typed_errors_for_long_notes_other_models_and_empty_text(tiny: LoadedModel, bundled: LoadedModel,
                                                                 tiny_inside: InsideTrace,
                                                                 bundled_inside: InsideTrace) -> None:
    long_note = " ".join(["patient denies chest pain ."] * 20)  # > 64 word pieces, tiny's window
    with pytest.raises(ResourceLimitError, match="Choose a part of the note") as refused:
        inside_trace(tiny, plan_note(tiny, long_note))
    assert isinstance(refused.value, CbertError)
    with pytest.raises(ResourceLimitError):
        inside_trace(bundled, plan_note(bundled, NOTE), max_positions=5)
    with pytest.raises(EmptyNoteError):
        inside_trace(tiny, plan_note(tiny, "   "))
    with pytest.raises(TargetError, match="fill-mask"):
        logit_lens(bundled, bundled_inside, 1)
    with pytest.raises(TargetError):
        logit_lens(tiny, bundled_inside, 1)  # numbers from another model
    with pytest.raises(TargetError):
        verify_layer(bundled, tiny_inside, 0)
    assert hook_count(tiny.model) == 0 and hook_count(bundled.model) == 0


def test_a_long_note_is_walked_one_window_at_a_time_as_the_trace_reads_it(tiny: LoadedModel) -> None:
    long_note = " ".join(f"Patient {index} denies chest pain. No fever today." for index in range(12))
    result = trace(tiny, plan_note(tiny, long_note))
    assert len(result.windows) > 1
    for window in range(len(result.windows)):
        inside = inside_trace(tiny, plan_note(tiny, long_note), window=window)
        positions = result.window_positions(window)
        assert (inside.window, inside.window_count) == (window, len(result.windows))
        assert inside.note_positions.tolist() == positions.tolist()
        assert inside.tokens == result.window_tokens(window)
        np.testing.assert_array_equal(inside.offsets, result.offsets[positions])
        owned = result.owner[positions] == window
        np.testing.assert_allclose(inside.hidden_states[:, owned],  # the trace's are float16: its rounding
                                   result.hidden_states[:, positions[owned]].astype(np.float32), rtol=2**-11, atol=1e-5)
        scores = inside.queries @ np.swapaxes(inside.keys, -1, -2) * inside.attention_scale  # [layer, head, q, k]
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        np.testing.assert_allclose(weights, result.attentions[window].astype(np.float32), atol=2e-3)
    with pytest.raises(TargetError, match="does not exist"):
        inside_trace(tiny, plan_note(tiny, long_note), window=len(result.windows))


def test_no_hook_left_after_walk_or_failed_forward(tiny: LoadedModel) -> None:
    assert hook_count(tiny.model) == 0
    inside_trace(tiny, plan_note(tiny, NOTE))
    assert hook_count(tiny.model) == 0

    class Exploding:
        """Runs the real model (so the hooks fire), then fails like an interrupted run."""

        def __call__(self, **inputs: object) -> object:
            tiny.model(**inputs)
            assert hook_count(tiny.model) > 0
            raise RuntimeError("interrupted")

    broken = dataclasses.replace(tiny, model=Exploding())
    with pytest.raises(RuntimeError, match="interrupted"):
        inside_trace(broken, plan_note(broken, NOTE))
    assert hook_count(tiny.model) == 0


def test_records_are_plain_read_only_and_default_trace_is_unchanged(tiny: LoadedModel,
                                                                    tiny_inside: InsideTrace) -> None:
    def fields(record: object) -> list[object]:
        return [getattr(record, field.name) for field in dataclasses.fields(record)]

    step = attention_step(tiny_inside, 0, 0, 0)
    records = [tiny_inside, tiny_inside.output, embedding_walk(tiny_inside), encoder_stack(tiny_inside), step,
               logit_lens(tiny, tiny_inside, 1), verify_layer(tiny, tiny_inside, 0)]
    for record in records:
        for value in fields(record):
            assert not isinstance(value, (torch.Tensor, torch.nn.Module))
            if isinstance(value, np.ndarray):
                assert not value.flags.writeable
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.layer = 0  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(tiny_inside))
    np.testing.assert_array_equal(copy.hidden_states, tiny_inside.hidden_states)
    assert 0 < tiny_inside.nbytes < 1_000_000
    assert trace(tiny, plan_note(tiny, NOTE)).extras == {}  # the page's sites are not captured by default
    package = Path(sys.modules["cbert_core.analyses.inside"].__file__).parent
    for source in package.glob("inside*.py"):
        assert "streamlit" not in source.read_text(encoding="utf-8")


def test_captions_cover_every_panel_and_head_kind() -> None:
    assert set(OUTPUT_CAPTIONS) == set(typing.get_args(HeadKind))
    expected = {"embeddings", "embedding_projection", "attention_step", "head_share", "encoder_stack",
                "logit_lens", "check"}
    assert expected <= set(CAPTIONS)
    for caption in CAPTIONS.values():
        assert isinstance(caption, str) and 80 < len(caption) < 900 and caption.strip() == caption
