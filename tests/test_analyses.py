"""Attention analyses, projections and tokenization comparisons (pure functions over a Trace)."""

from __future__ import annotations

import dataclasses
import string

import numpy as np
import pytest

from cbert_core.analyses import attention, projection
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from cbert_core.text.tokenization import compare, fertility
from cbert_core.text.tokens import tokenize_note
from notes import CLINICAL_NOTE


@pytest.fixture(scope="module")
def note_trace(bundled):
    return trace(bundled, plan_note(bundled, CLINICAL_NOTE))


def test_head_statistics_match_direct_computation(note_trace) -> None:
    stats = attention.head_statistics(note_trace)
    weights = note_trace.attentions[0].astype(np.float32)
    layer, head = 2, 5
    row = weights[layer, head]
    size = row.shape[-1]
    entropy = float(np.mean([-(p[p > 0] * np.log(p[p > 0])).sum() for p in row]))
    assert stats.entropy[layer, head] == pytest.approx(entropy, rel=1e-4)
    distance = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :])
    assert stats.mean_distance[layer, head] == pytest.approx(float((row * distance).sum(-1).mean()), rel=1e-4)
    assert stats.cls_share[layer, head] == pytest.approx(float(row[:, 0].mean()), rel=1e-4)
    assert stats.sep_share[layer, head] == pytest.approx(float(row[:, -1].mean()), rel=1e-4)
    assert ((stats.normalized_entropy >= 0) & (stats.normalized_entropy <= 1.0001)).all()
    punctuation = [i for i, t in enumerate(note_trace.tokens)
                   if t.removeprefix("##") and all(c in string.punctuation for c in t.removeprefix("##"))]
    assert stats.punctuation_share[layer, head] == pytest.approx(float(row[:, punctuation].sum(-1).mean()),
                                                                 rel=1e-3)


def test_the_most_structured_head_looks_at_one_content_piece(note_trace) -> None:
    weights = np.array(note_trace.attentions[0], dtype=np.float16)  # [layer, head, q, k]
    size = weights.shape[-1]
    weights[:] = 1.0 / size  # every head spreads evenly ...
    weights[0, 1] = 0
    weights[0, 1, :, 0] = 1.0  # ... one parks all of its attention on [CLS] ...
    weights[1, 2] = np.eye(size, k=-1) + np.eye(size, k=size - 1)  # ... one reads the previous piece
    stats = attention.head_statistics(dataclasses.replace(note_trace, attentions=(weights,)), 0)
    assert stats.most_structured() == (1, 2)
    assert stats.structure[0, 1] == pytest.approx(0, abs=1e-3)  # one key, but the no-op [CLS]
    assert stats.structure[0, 0] == pytest.approx(0, abs=1e-3)  # spread evenly
    assert stats.structure[1, 2] > 0.9


def test_word_level_rows_sum_to_one_and_group_pieces(note_trace) -> None:
    groups, labels, firsts = attention.window_groups(note_trace, 0)
    assert labels[0] == "[CLS]" and labels[-1] == "[SEP]"
    assert "exacerbation" in labels  # several pieces, one word
    words = attention.to_words(note_trace.attentions[0][1, 3], groups)
    np.testing.assert_allclose(words.sum(-1), 1.0, atol=2e-3)
    assert words.shape == (len(labels), len(labels))
    # A one-piece word's row equals its piece row summed over each key word's pieces.
    one_piece = [g for g in range(len(labels)) if (groups == g).sum() == 1][3]
    piece = int(np.flatnonzero(groups == one_piece)[0])
    row = note_trace.attentions[0][1, 3, piece].astype(np.float32)
    expected = np.bincount(groups, weights=row, minlength=len(labels))
    np.testing.assert_allclose(words[one_piece], expected, atol=1e-5)


def test_hide_specials_renormalizes(note_trace) -> None:
    weights = note_trace.attentions[0][0, 0]
    keep = ~note_trace.special
    hidden = attention.hide_specials(weights, keep)
    assert hidden.shape == (keep.sum(), keep.sum())
    np.testing.assert_allclose(hidden.sum(-1), 1.0, atol=1e-5)


def test_rollout_rows_sum_to_one_and_first_layer_is_the_mixed_mean(note_trace) -> None:
    flows = attention.rollout(note_trace)
    np.testing.assert_allclose(flows.sum(-1), 1.0, atol=1e-3)
    first = note_trace.attentions[0][0].astype(np.float32).mean(0)
    mixed = 0.5 * first + 0.5 * np.eye(first.shape[0])
    np.testing.assert_allclose(flows[0], mixed / mixed.sum(-1, keepdims=True), atol=1e-5)
    plain = attention.rollout(note_trace, residual=False)
    np.testing.assert_allclose(plain[1], (note_trace.attentions[0][1].astype(np.float32).mean(0) /
                                          note_trace.attentions[0][1].astype(np.float32).mean(0).sum(-1,
                                          keepdims=True)) @ plain[0], atol=1e-4)


@pytest.mark.parametrize("rows", [5, 40, 900])  # fewer rows than features, and more (the covariance's path)
def test_principal_plane_is_the_data_svds_first_two_axes(rows: int) -> None:
    rng = np.random.default_rng(rows)
    data = rng.standard_normal((rows, 64)) @ rng.standard_normal((64, 64)) + 3.0  # correlated, off-centre
    coords, explained = projection.principal_plane(data.astype(np.float32))
    centred = data - data.mean(0)
    left, singular, right = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ right[:2].T  # [rows, 2]: each axis up to its sign
    assert coords.dtype == np.float32 and coords.shape == (rows, 2)
    for axis in range(2):
        sign = np.sign(expected[:, axis] @ coords[:, axis])
        np.testing.assert_allclose(coords[:, axis], sign * expected[:, axis], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(explained, singular[:2] ** 2 / (singular ** 2).sum(), rtol=1e-5)


def test_pca_projection_and_trajectories(note_trace) -> None:
    projected = projection.project(note_trace, 3)
    assert projected.coords.shape == (note_trace.num_positions, 2)
    assert 0 < sum(projected.explained) <= 1
    positions = np.array([3, 10, 20])
    paths = projection.trajectories(note_trace, positions)
    assert paths.coords.shape == (note_trace.num_layers + 1, 3, 2)


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_nonlinear_projections_report_progress(note_trace, method: str) -> None:
    seen: list[str] = []
    projected = projection.project(note_trace, 6, method, positions=np.arange(40),
                                   progress=lambda fraction, message: seen.append(message))
    assert projected.coords.shape == (40, 2) and np.isfinite(projected.coords).all()
    assert seen and seen[-1].endswith("done")


def test_cosine_and_note_embeddings(note_trace) -> None:
    vectors = note_trace.hidden_states[6, 1:5]
    matrix = projection.cosine_matrix(vectors)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    note = projection.note_embeddings(note_trace)
    np.testing.assert_allclose(note.mean[6], note_trace.hidden_states[6, 1:-1].astype(np.float32).mean(0), atol=1e-5)
    assert note.cls_to_final[-1] == pytest.approx(1.0, abs=1e-5)


def test_piece_kinds(bundled) -> None:
    kinds = projection.piece_kinds(trace(bundled, plan_note(bundled, "COPD [MASK] exacerbation, stable.")))
    assert kinds[0].startswith("special") and "[MASK]" in kinds and "continuation piece (##)" in kinds


def test_fertility_and_casing_comparison(tiny) -> None:
    text = "COPD exacerbation"
    lowered = tokenize_note(tiny.tokenizer(True), text)
    stats = fertility(text, lowered, "[UNK]")
    assert stats.piece_count == len(lowered)
    assert stats.most_split(1)[0].word == "COPD" and stats.most_split(1)[0].pieces == ("cop", "##d")
    other = compare(text, tiny.tokenizer(True), tiny.tokenizer(False))
    assert ("COPD", ("cop", "##d"), ("CO", "##PD")) in other.differing
