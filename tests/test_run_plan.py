"""One road for a note: every analysis of one note with one set of options reads the same windows.

A long note, with options that differ from every default (keeping case, a narrow overlap, a
lower length limit, bf16, heads knocked out), is planned once; the trace, the lean forward pass
(fill-mask, a hidden word, the surprise map, attribution, the head scan, the counterfactual),
the exact inside walk, similarity and batch encoding each report the windows and positions they
used, and those must be the trace's.
"""

from __future__ import annotations

import numpy as np
import pytest

from cbert_core.analyses.attribution import attribute
from cbert_core.analyses.counterfactual import counterfactual
from cbert_core.analyses.knockout_scan import head_importance
from cbert_core.analyses.predict import fill_mask, mask_word, pseudo_log_likelihood
from cbert_core.analyses.similarity import embedding_similarity
from cbert_core.analyses.targets import masked_token_target, similarity_target
from cbert_core.corpus.embeddings import note_embeddings, planned_passes
from cbert_core.run.inside_capture import inside_trace
from cbert_core.run.plan import RunOptions, plan_note, plan_notes
from cbert_core.run.trace import trace
from cbert_core.text.windows import DEFAULT_OVERLAP

SENTENCES = [f"Patient {i} denies chest pain and reports a dry cough with no fever." for i in range(9)]
NOTE = " ".join(SENTENCES[:4]) + " COPD [MASK] exacerbation was treated. " + " ".join(SENTENCES[4:])
OPTIONS = RunOptions(lowercase=False, overlap=12, max_chars=5_000, precision="bf16", knocked_out=frozenset({(1, 2)}))


@pytest.fixture(scope="module")
def planned(tiny):
    assert OPTIONS.overlap != DEFAULT_OVERLAP
    plan = plan_note(tiny, NOTE, OPTIONS)
    result = trace(tiny, plan)
    assert len(result.windows) >= 3 and result.lowercase is False and result.precision == "bf16"
    assert result.knocked_out == OPTIONS.knocked_out
    return plan, result


def spans(windows) -> list[tuple[int, int]]:
    return [(window.start, window.stop) for window in windows]


def test_the_plan_and_the_trace_agree(tiny, planned) -> None:
    plan, result = planned
    assert spans(plan.windows) == spans(result.windows)
    assert result.tokens == plan.global_tokens()
    np.testing.assert_array_equal(result.owner[1:-1], plan.owner)
    # The same options planned again give the same windows; another overlap gives other windows.
    assert spans(plan_note(tiny, NOTE, OPTIONS).windows) == spans(result.windows)
    assert spans(plan_note(tiny, NOTE, RunOptions(lowercase=False)).windows) != spans(result.windows)


def test_predictions_read_the_trace_windows(tiny, planned) -> None:
    plan, result = planned
    filled = fill_mask(tiny, plan)
    mask = int(result.mask_positions[0])
    assert filled.positions.tolist() == [mask]
    assert filled.knocked_out == OPTIONS.knocked_out
    start, end = (int(v) for v in result.word_spans[result.word_ids[5]])
    hidden = mask_word(tiny, plan, start, end)
    assert set(hidden.positions.tolist()) >= {p for p in range(result.num_positions) if result.word_ids[p] ==
                                             result.word_ids[5]}
    surprise = pseudo_log_likelihood(tiny, plan, stride=4)
    assert spans(surprise.windows) == spans(result.windows) and surprise.precision == "bf16"
    assert surprise.knocked_out == OPTIONS.knocked_out


def test_explanations_read_the_window_the_trace_gives_their_target(tiny, planned) -> None:
    plan, result = planned
    mask = int(result.mask_positions[0])
    window = result.windows[int(result.owner[mask])]
    target = masked_token_target(tiny, "patient", lowercase=False)
    explained = attribute(tiny, plan, target, method="gradient-x-input")
    assert explained.window == window and explained.precision == "bf16"
    assert explained.positions.tolist() == result.window_positions(window.index).tolist()
    assert explained.knocked_out == OPTIONS.knocked_out
    scan = head_importance(tiny, plan, target)
    assert scan.window == window and scan.knocked_out == OPTIONS.knocked_out
    edit = counterfactual(tiny, plan, *map(int, result.word_spans[result.word_ids[3]]), "reports", target,
                          method="saliency")
    assert edit.original.attribution.window == window
    assert edit.original.attribution.positions.tolist() == result.window_positions(window.index).tolist()
    assert edit.edited.attribution.lowercase is False


def test_note_level_targets_the_inside_walk_and_similarity_read_the_trace_windows(tiny, planned) -> None:
    plan, result = planned
    similar = similarity_target(tiny, "cough", lowercase=False)
    for index, window in enumerate(result.windows):
        explained = attribute(tiny, plan, similar, method="saliency", window=index)
        assert explained.window == window
        walked = inside_trace(tiny, plan, window=index)
        assert walked.note_positions.tolist() == result.window_positions(index).tolist()
        assert walked.tokens == result.window_tokens(index)
    scored = embedding_similarity(tiny, plan, ["cough", "chest pain"], per_sentence=False)
    assert spans(scored.windows) == spans(result.windows) and scored.lowercase is False
    assert scored.knocked_out == OPTIONS.knocked_out


def test_batch_encoding_reads_the_trace_windows(tiny, planned) -> None:
    plan, result = planned
    (collection_plan,) = plan_notes(tiny, [NOTE], OPTIONS)
    assert spans(collection_plan.windows) == spans(result.windows)
    sizes = sorted(window.size + 2 for window in result.windows)
    encoded = planned_passes([collection_plan], batch_size=1)  # one window per pass: the lengths run
    assert sorted(positions for positions, _rows in encoded.forward) == sizes
    vectors = note_embeddings(tiny, [collection_plan])
    assert vectors.shape == (1, tiny.info.num_layers + 1, tiny.info.hidden_size)
