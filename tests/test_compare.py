"""Comparing two models on one note: linear CKA and character-aligned words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbert_core.compare import aligned_word_states, cka_matrix, compare_models, linear_cka
from cbert_core.errors import TargetError
from cbert_core.trace import trace
from notes import CLINICAL_NOTE


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run faster on one torch thread, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    comparison = compare_models(tiny, tiny, CLINICAL_NOTE)
    layers = tiny.info.num_layers + 1
    assert comparison.cka.shape == (layers, layers)
    np.testing.assert_allclose(np.diag(comparison.cka), 1.0, atol=1e-5)
    assert ((comparison.cka >= 0) & (comparison.cka <= 1)).all()
    assert comparison.tokenization.differing == ()
    assert comparison.shared_words == comparison.words_a == comparison.words_b
    assert comparison.best_match.tolist() == list(range(layers))


def test_two_tokenizers_are_aligned_by_characters(tiny, bundled) -> None:
    trace_a, trace_b = trace(tiny, CLINICAL_NOTE), trace(bundled, CLINICAL_NOTE)
    spans, states_a, states_b = aligned_word_states(trace_a, trace_b)
    assert states_a.shape == (3, len(spans), 32) and states_b.shape == (7, len(spans), 384)
    assert 10 < len(spans) <= min(len(trace_a.word_spans), len(trace_b.word_spans))
    word = int(np.flatnonzero(trace_a.word_spans[:, 0] == spans[0, 0])[0])
    pieces = np.flatnonzero(trace_a.word_ids == word)
    np.testing.assert_allclose(states_a[:, 0], trace_a.hidden_states[:, pieces].mean(axis=1), atol=1e-5)
    comparison = compare_models(tiny, bundled, CLINICAL_NOTE, trace_a=trace_a, trace_b=trace_b, max_words=12)
    assert comparison.cka.shape == (3, 7) and comparison.sampled and len(comparison.word_spans) == 12
    assert comparison.tokenization.differing  # the tiny vocabulary splits clinical words differently
    assert ((comparison.cka >= 0) & (comparison.cka <= 1)).all()
    with pytest.raises(TargetError, match="same note"):
        compare_models(tiny, tiny, "Patient denies chest pain.", trace_a=trace_a)
