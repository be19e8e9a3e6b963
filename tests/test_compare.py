"""Comparing two models on one note: linear CKA and character-aligned words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbert_core.analyses.compare import (
    aligned_word_states,
    casing_for_second_model,
    cka_matrix,
    compare_models,
    compare_traces,
    linear_cka,
    random_weight_copy,
    window_hidden_states,
    word_states,
)
from cbert_core.errors import TargetError
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from cbert_core.views.compare_figures import cka_heatmap
from notes import CLINICAL_NOTE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_linear_cka_invariances_and_range() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20))
    y = rng.normal(size=(60, 12))
    rotation, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x @ rotation * 7.5, y) == pytest.approx(linear_cka(x, y), abs=1e-10)
    assert linear_cka(x + 3.0, y) == pytest.approx(linear_cka(x, y), abs=1e-10)  # columns are centred
    values = [linear_cka(rng.normal(size=(30, 8)), rng.normal(size=(30, 5))) for _ in range(20)]
    assert all(0.0 <= value <= 1.0 for value in values)
    related = linear_cka(x, x[:, :12] + 0.1 * y)
    assert related > max(values)
    matrix = cka_matrix(np.stack([x, x @ rotation]), np.stack([x, y[:, :12] @ rng.normal(size=(12, 20))]))
    assert matrix.shape == (2, 2) and matrix[0, 0] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(1.0)


def test_model_against_itself_has_ones_on_the_diagonal(tiny) -> None:
    comparison = compare_models(tiny, plan_note(tiny, CLINICAL_NOTE), tiny, plan_note(tiny, CLINICAL_NOTE))
    layers = tiny.info.num_layers + 1
    assert comparison.cka.shape == (layers, layers)
    np.testing.assert_allclose(np.diag(comparison.cka), 1.0, atol=1e-5)
    assert ((comparison.cka >= 0) & (comparison.cka <= 1)).all()
    assert comparison.tokenization.differing == ()
    assert comparison.shared_words == comparison.words_a == comparison.words_b
    assert comparison.best_match.tolist() == list(range(layers))


def test_two_tokenizers_are_aligned_by_characters(tiny, bundled) -> None:
    trace_a, trace_b = trace(tiny, plan_note(tiny, CLINICAL_NOTE)), trace(bundled, plan_note(bundled, CLINICAL_NOTE))
    spans, states_a, states_b = aligned_word_states(trace_a, trace_b)
    assert states_a.shape == (3, len(spans), 32) and states_b.shape == (7, len(spans), 384)
    assert 10 < len(spans) <= min(len(trace_a.word_spans), len(trace_b.word_spans))
    word = int(np.flatnonzero(trace_a.word_spans[:, 0] == spans[0, 0])[0])
    pieces = np.flatnonzero(trace_a.word_ids == word)
    np.testing.assert_allclose(states_a[:, 0], trace_a.hidden_states[:, pieces].mean(axis=1), atol=1e-5)
    comparison = compare_traces(trace_a, trace_b, loaded_a=tiny, loaded_b=bundled, max_words=12)
    assert comparison.cka.shape == (3, 7) and comparison.sampled and len(comparison.word_spans) == 12
    assert comparison.tokenization.differing  # the tiny vocabulary splits clinical words differently
    assert ((comparison.cka >= 0) & (comparison.cka <= 1)).all()
    with pytest.raises(TargetError, match="same note"):
        compare_traces(trace_a, trace(tiny, plan_note(tiny, "Patient denies chest pain.")), loaded_a=tiny,
                       loaded_b=tiny)


def test_the_reference_is_a_random_weight_copy_of_b_on_the_same_words(tiny) -> None:
    comparison = compare_models(tiny, plan_note(tiny, CLINICAL_NOTE), tiny, plan_note(tiny, CLINICAL_NOTE), max_words=12)
    assert comparison.sampled and len(comparison.word_spans) == 12
    assert comparison.reference.shape == comparison.cka.shape
    np.testing.assert_allclose(np.diag(comparison.cka), 1.0, atol=1e-5)
    assert (np.diag(comparison.reference) < np.diag(comparison.cka) - 0.05).all()  # untrained copy: below itself
    np.testing.assert_allclose(comparison.above_reference, comparison.cka - comparison.reference)
    # Recompute the reference independently: trace the copy like any model, pool the words the comparison used.
    copy_b = random_weight_copy(tiny, comparison.reference_seed)
    spans_a, states_a = word_states(trace(tiny, plan_note(tiny, CLINICAL_NOTE)))
    spans_r, states_r = word_states(trace(copy_b, plan_note(copy_b, CLINICAL_NOTE)))
    rows_a = [spans_a.tolist().index(span) for span in comparison.word_spans.tolist()]
    rows_r = [spans_r.tolist().index(span) for span in comparison.word_spans.tolist()]
    expected = cka_matrix(states_a[:, rows_a], states_r[:, rows_r])
    np.testing.assert_allclose(comparison.reference, expected, atol=1e-4)


def test_the_random_weight_copy_is_seeded_untrained_and_leaves_torch_random_state_alone(tiny) -> None:
    state = torch.random.get_rng_state()
    first, again, other = (random_weight_copy(tiny, seed) for seed in (7, 7, 8))
    assert torch.equal(state, torch.random.get_rng_state())
    weights, repeated, reseeded = (dict(model.model.named_parameters()) for model in (first, again, other))
    for name, original in tiny.model.base_model.named_parameters():
        assert weights[name].shape == original.shape and torch.equal(weights[name], repeated[name])
        if original.ndim == 2:  # every matrix is drawn afresh
            assert not torch.equal(weights[name], original) and not torch.equal(weights[name], reseeded[name])
    assert first.info.key != tiny.info.key and first.info.head_kind == "encoder"


def test_window_hidden_states_reproduce_the_trace_over_several_windows(tiny) -> None:
    note = " ".join([CLINICAL_NOTE] * 3)  # the tiny model has 64 positions: several windows
    result = trace(tiny, plan_note(tiny, note))
    assert len(result.windows) > 2
    positions = np.flatnonzero(~result.special)[::3]
    states = window_hidden_states(tiny.model.base_model, result, positions)
    # the trace keeps hidden states in float16: equal up to float16's rounding
    np.testing.assert_allclose(states, result.hidden_states[:, positions].astype(np.float32), rtol=2**-11, atol=1e-6)


def test_a_long_note_is_sampled_from_a_few_windows_so_the_reference_runs_only_those(tiny, bundled) -> None:
    note = " ".join([CLINICAL_NOTE] * 4)
    trace_a, trace_b = trace(bundled, plan_note(bundled, note)), trace(tiny, plan_note(tiny, note))
    comparison = compare_traces(trace_a, trace_b, loaded_a=bundled, loaded_b=tiny, max_words=30)
    assert comparison.sampled and len(comparison.word_spans) == 30 < comparison.shared_words
    assert comparison.windows_b == len(trace_b.windows)
    assert 1 <= comparison.reference_windows < comparison.windows_b
    spans_b = trace_b.word_spans.tolist()
    owners = {int(trace_b.owner[position]) for span in comparison.word_spans.tolist()
              for position in np.flatnonzero(trace_b.word_ids == spans_b.index(span))}
    assert len(owners) == comparison.reference_windows


def test_the_second_model_keeps_its_own_casing_unless_the_switch_means_the_same(tiny, bundled) -> None:
    # tiny: cased vocabulary, lower-casing tokenizer (like Bio_ClinicalBERT); bundled: uncased vocabulary.
    assert tiny.info.vocab_cased and not bundled.info.vocab_cased
    assert casing_for_second_model(tiny.info, bundled.info, False) is True  # cased text would be [UNK]s
    assert casing_for_second_model(tiny.info, tiny.info, False) is False  # the same kind of tokenizer: same switch
    assert casing_for_second_model(tiny.info, tiny.info, True) is True
    assert casing_for_second_model(bundled.info, tiny.info, True) is tiny.info.tokenizer_lowercases


def test_cka_heatmap_shows_cka_reference_or_the_difference_and_hovers_all_three() -> None:
    cka = np.array([[1.0, 0.6], [0.5, 0.9], [0.2, 0.4]], dtype=np.float32)
    reference = np.array([[0.7, 0.6], [0.6, 0.5], [0.1, 0.3]], dtype=np.float32)
    plain = cka_heatmap(cka, reference, "A <b>", "B", "cka").data[0]
    assert (plain.zmin, plain.zmax) == (0.0, 1.0)
    np.testing.assert_array_equal(plain.z, cka)
    np.testing.assert_array_equal(cka_heatmap(cka, reference, "A", "B", "reference").data[0].z, reference)
    above = cka_heatmap(cka, reference, "A", "B", "above").data[0]
    np.testing.assert_allclose(above.z, cka - reference)
    assert above.zmid == 0.0 and above.zmin == -above.zmax
    np.testing.assert_allclose(np.asarray(plain.customdata)[..., :2], np.stack([cka, reference], axis=-1))
    assert "CKA %{customdata[0]" in plain.hovertemplate and "random-weight B: %{customdata[1]" in plain.hovertemplate
    assert "<b>" not in plain.hovertemplate and "&lt;b&gt;" in plain.hovertemplate
