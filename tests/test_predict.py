"""Prediction invariants: the lean forward equals transformers, fill-mask, pseudo-likelihood, heads, errors, hooks."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cbert_core.analyses.labelling import classify, merge_entities, token_labels
from cbert_core.analyses.predict import fill_mask, mask_word, pseudo_log_likelihood
from cbert_core.analyses.similarity import embedding_similarity
from cbert_core.errors import CbertError, EmptyNoteError, ResourceLimitError, TargetError, WrongHeadError
from cbert_core.model.hooks import hook_count, knockout, whole_layers
from cbert_core.model.loading import LoadedModel, load_model
from cbert_core.run.forward import explicit_attention, forward_ids, vocabulary_id
from cbert_core.run.plan import RunOptions, plan_note
from tiny_models import tiny_vocab, write_bert, write_family

NOTE = "Patient denies chest pain . No fever ."


def plain_logits(loaded: LoadedModel, ids: np.ndarray) -> torch.Tensor:
    """The checkpoint's own forward (transformers), as the reference."""
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None])
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state)[0]


def input_ids(loaded: LoadedModel, text: str) -> np.ndarray:
    tokenizer = loaded.tokenizer()
    from cbert_core.text.tokens import tokenize_note

    return np.concatenate([[tokenizer.cls_token_id], tokenize_note(tokenizer, text).ids, [tokenizer.sep_token_id]])


@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("heads")


@pytest.fixture(scope="module")
def tagger(heads_dir: Path) -> LoadedModel:
    return load_model(str(write_bert(heads_dir / "tok", head="token-classification",
                                     labels=("O", "B-PROBLEM", "I-PROBLEM"))))


@pytest.fixture(scope="module")
def classifier(heads_dir: Path) -> LoadedModel:
    return load_model(str(write_bert(heads_dir / "seq", head="sequence-classification", max_positions=24)))


@pytest.fixture(scope="module")
def short_mlm(heads_dir: Path) -> LoadedModel:
    return load_model(str(write_bert(heads_dir / "short", max_positions=24)))


def test_lean_forward_equals_transformers_for_every_family_and_head(tiny, bundled, tagger, classifier,
                                                                    heads_dir) -> None:
    others = [load_model(str(write_family(heads_dir / family, family))) for family in ("roberta", "distilbert",
                                                                                        "electra")]
    ids = torch.randint(5, len(tiny_vocab()), (2, 11))
    for loaded in (tiny, bundled, tagger, classifier, *others):
        with torch.inference_mode():
            out = loaded.model(input_ids=ids)
            reference = out.logits if hasattr(out, "logits") else out.last_hidden_state
            ours = forward_ids(loaded, ids)
            assert ours.shape == reference.shape
            assert torch.allclose(ours, reference, atol=2e-5), loaded.info.family
            if loaded.info.head_kind == "masked-lm":  # last layer and head only at chosen rows
                rows = torch.tensor([[3, 7], [1, 9]])
                picked = reference.gather(1, rows[..., None].expand(-1, -1, reference.shape[-1]))
                assert torch.allclose(forward_ids(loaded, ids, rows=rows), picked, atol=2e-5)


def test_fill_mask_equals_the_plain_model(tiny) -> None:
    text = "Patient denies chest [MASK] . No [MASK] ."
    result = fill_mask(tiny, plan_note(tiny, text), top_k=5, candidates=["pain", "fever"])
    probs = torch.softmax(plain_logits(tiny, input_ids(tiny, text)), -1)
    assert result.positions.tolist() == [4, 7]
    for row, position in enumerate(result.positions):
        values, indices = torch.topk(probs[position], 5)
        np.testing.assert_array_equal(result.top_ids[row], indices.numpy())
        np.testing.assert_allclose(result.top_probs[row], values.numpy(), atol=1e-6)
        expected = probs[position, [vocabulary_id(tiny, "pain"), vocabulary_id(tiny, "fever")]].numpy()
        np.testing.assert_allclose(result.candidate_probs[row], expected, atol=1e-7)
    assert (result.original_ids == -1).all() and np.isnan(result.original_probs).all()
    assert text[slice(*result.char_spans[0])] == "[MASK]"


def test_mask_word_masks_every_piece_and_scores_the_originals(tiny) -> None:
    text = "Patient has COPD exacerbation ."
    start = text.index("COPD")
    result = mask_word(tiny, plan_note(tiny, text), start + 1, start + 2)  # a character inside the word selects all of it
    assert result.masked_span == (start, start + 4)
    assert len(result.positions) >= 2  # "cop" + "##d" (lower-cased)
    assert "".join(t.removeprefix("##") for t in result.original_tokens) == "copd"
    ids = input_ids(tiny, text)
    ids[result.positions] = tiny.tokenizer().mask_token_id
    probs = torch.softmax(plain_logits(tiny, ids), -1)
    expected = probs[result.positions, result.original_ids].numpy()
    np.testing.assert_allclose(result.original_probs, expected, atol=1e-7)
    assert np.isclose(result.original_logprob, np.log(expected).sum(), atol=1e-4)
    with pytest.raises(TargetError, match="no word"):
        mask_word(tiny, plan_note(tiny, text), 3, 3)


def test_pseudo_likelihood_equals_fill_mask_probability(tiny) -> None:
    words = NOTE.split(" ")
    result = pseudo_log_likelihood(tiny, plan_note(tiny, NOTE), batch_size=3)
    assert np.isnan(result.token_logprobs[[0, -1]]).all()
    assert len(result.tokens) == len(words) + 2  # every word of NOTE is one piece in the tiny vocabulary
    for index, word in enumerate(words):
        masked = " ".join("[MASK]" if i == index else w for i, w in enumerate(words))
        piece = result.tokens[index + 1]  # the piece scored (lower-cased by the tokenizer)
        probability = fill_mask(tiny, plan_note(tiny, masked), candidates=[piece]).candidate_probs[0, 0]
        assert np.isclose(np.exp(result.token_logprobs[index + 1]), probability, rtol=1e-4)
    np.testing.assert_allclose(result.word_logprobs, result.token_logprobs[1:-1], rtol=1e-6)
    assert result.total == pytest.approx(float(np.sum(result.token_logprobs[1:-1])), rel=1e-6)


def test_pseudo_likelihood_batches_strides_and_word_sums(tiny) -> None:
    text = "Patient has COPD exacerbation , no fever ."
    exact = pseudo_log_likelihood(tiny, plan_note(tiny, text), batch_size=1)
    batched = pseudo_log_likelihood(tiny, plan_note(tiny, text), batch_size=16)
    np.testing.assert_allclose(batched.token_logprobs, exact.token_logprobs, atol=1e-5)
    wide = pseudo_log_likelihood(tiny, plan_note(tiny, text), stride=100)  # a stride wider than the note is exact
    np.testing.assert_allclose(wide.token_logprobs, exact.token_logprobs, atol=1e-5)
    strided = pseudo_log_likelihood(tiny, plan_note(tiny, text), stride=3)
    assert strided.forward_rows == 3 and np.isfinite(strided.token_logprobs[1:-1]).all()
    copd = np.flatnonzero(exact.word_ids == exact.word_ids[3])
    assert copd.size >= 2
    assert np.isclose(exact.word_logprobs[exact.word_ids[3]], exact.token_logprobs[copd].sum(), atol=1e-5)


def test_explicit_attention_equals_the_flash_kernel() -> None:
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5 if i == 0 else 7, 4) for i in range(3))  # [b, h, q|t, dh]
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False  # the second row has two padded keys
    for keys in (None, mask):
        expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=keys)
        torch.testing.assert_close(explicit_attention(query, key, value, keys), expected, atol=1e-6, rtol=1e-5)


def test_pseudo_likelihood_in_bf16_is_close_to_fp32(tiny) -> None:
    text = "Patient has COPD exacerbation , no fever ."
    exact = pseudo_log_likelihood(tiny, plan_note(tiny, text))
    fast = pseudo_log_likelihood(tiny, plan_note(tiny, text, RunOptions(precision="bf16")))
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    scored = np.isfinite(exact.token_logprobs)
    assert np.array_equal(scored, np.isfinite(fast.token_logprobs))
    assert not np.array_equal(exact.token_logprobs[scored], fast.token_logprobs[scored])  # autocast was on
    np.testing.assert_allclose(fast.token_logprobs[scored], exact.token_logprobs[scored], atol=0.05)
    with pytest.raises(ValueError, match="precision"):
        pseudo_log_likelihood(tiny, plan_note(tiny, text, RunOptions(precision="half")))


def test_pseudo_likelihood_windows_a_long_note(short_mlm) -> None:
    text = " ".join(f"Patient denies chest pain number {i} ." for i in range(8))
    result = pseudo_log_likelihood(short_mlm, plan_note(short_mlm, text, RunOptions(overlap=6)))
    assert len(result.windows) > 2
    assert np.isfinite(result.token_logprobs[1:-1]).all()
    mask_id = short_mlm.tokenizer().mask_token_id
    ids = input_ids(short_mlm, text)
    for position in (1, len(ids) // 2, len(ids) - 2):
        content = position - 1
        owner = max(result.windows, key=lambda w: min(content - w.start, w.stop - 1 - content)
                    if w.start <= content < w.stop else -1)
        window_ids = np.concatenate([[ids[0]], ids[owner.start + 1:owner.stop + 1], [ids[-1]]])
        local = content - owner.start + 1
        window_ids[local] = mask_id
        expected = torch.log_softmax(plain_logits(short_mlm, window_ids)[local], -1)[ids[position]]
        assert np.isclose(result.token_logprobs[position], float(expected), atol=1e-5)


def test_knockout_none_changes_nothing_and_a_whole_layer_does(tiny) -> None:
    text = "Patient denies chest [MASK] ."
    intact = fill_mask(tiny, plan_note(tiny, text))
    none = fill_mask(tiny, plan_note(tiny, text, RunOptions(knocked_out=[])))
    layer = fill_mask(tiny, plan_note(tiny, text, RunOptions(knocked_out=whole_layers([1], tiny.anatomy.num_heads))))
    np.testing.assert_array_equal(none.top_probs, intact.top_probs)
    assert layer.knocked_out == whole_layers([1], 4)
    assert not np.allclose(layer.top_probs, intact.top_probs, atol=1e-7)
    with torch.inference_mode(), knockout(tiny.anatomy, whole_layers([1], 4)):
        reference = torch.softmax(plain_logits(tiny, input_ids(tiny, text))[4], -1)
    np.testing.assert_allclose(layer.top_probs[0], reference[layer.top_ids[0]].numpy(), atol=1e-7)


def test_token_labels_match_the_head_and_merge_into_entities(tagger) -> None:
    text = "Patient has COPD exacerbation and chest pain ."
    result = token_labels(tagger, plan_note(tagger, text))
    reference = torch.softmax(plain_logits(tagger, input_ids(tagger, text)), -1).numpy()
    np.testing.assert_allclose(result.probs, reference, atol=1e-6)
    assert result.labels == ("O", "B-PROBLEM", "I-PROBLEM")
    for entity in result.entities:
        assert entity.text == text[entity.start:entity.end] and entity.label == "PROBLEM"
        assert (result.word_labels[entity.first_word:entity.last_word + 1] > 0).all()
        assert 0 <= entity.score <= 1
    labelled = int((result.word_labels > 0).sum())
    assert sum(e.last_word - e.first_word + 1 for e in result.entities) == labelled


def test_merge_entities_rules() -> None:
    text = "chest pain and cough fever"
    spans = np.array([[0, 5], [6, 10], [11, 14], [15, 20], [21, 26]])
    labels = ("O", "B-PROBLEM", "I-PROBLEM", "B-TEST", "S-DRUG")
    got = merge_entities(text, labels, spans, np.array([1, 2, 0, 2, 3]), np.array([0.9, 0.7, 1, 0.5, 0.8]))
    assert [(e.label, e.text) for e in got] == [("PROBLEM", "chest pain"), ("PROBLEM", "cough"), ("TEST", "fever")]
    assert got[0].score == pytest.approx(0.8)
    plain = merge_entities(text, ("none", "SYMPTOM"), spans, np.array([1, 1, 0, 1, 1]), np.ones(5))
    assert [e.text for e in plain] == ["chest pain", "cough fever"]


def test_classify_averages_windows(classifier) -> None:
    short = classify(classifier, plan_note(classifier, "Patient denies chest pain ."))
    reference = torch.softmax(plain_logits(classifier, input_ids(classifier, "Patient denies chest pain .")), -1)
    np.testing.assert_allclose(short.probs, reference.numpy(), atol=1e-6)
    long = classify(classifier, plan_note(classifier, " ".join(f"Patient denies chest pain number {i} ." for i in range(6))))
    assert len(long.windows) > 1 and long.window_probs.shape == (len(long.windows), 2)
    np.testing.assert_allclose(long.probs, long.window_probs.mean(0), atol=1e-6)
    np.testing.assert_allclose(long.window_probs.sum(-1), 1, atol=1e-6)


def test_embedding_similarity_is_mean_pooled_cosine(bundled) -> None:
    text = "The patient has pneumonia on the chest x-ray. The left ankle is broken."
    descriptions = ["pneumonia present", "fractured ankle"]
    result = embedding_similarity(bundled, plan_note(bundled, text), descriptions, temperature=0.05)
    with torch.inference_mode():
        def pooled(sentence: str) -> torch.Tensor:
            return plain_logits(bundled, input_ids(bundled, sentence)).mean(0)
        note = pooled(text)
        expected = [float(torch.cosine_similarity(note, pooled(d), dim=0)) for d in descriptions]
    np.testing.assert_allclose(result.note_similarity, expected, atol=1e-5)
    np.testing.assert_allclose(result.note_probs, torch.softmax(torch.tensor(expected) / 0.05, 0).numpy(), atol=1e-5)
    assert result.sentence_spans.shape == (2, 2)
    first, second = result.sentence_probs
    assert first[0] > first[1] and second[1] > second[0]  # each sentence is closest to its own description
    np.testing.assert_allclose(result.sentence_probs.sum(-1), 1, atol=1e-6)


def test_typed_errors(tiny, bundled, tagger, classifier) -> None:
    with pytest.raises(TargetError, match=r"no \[MASK\]"):
        fill_mask(tiny, plan_note(tiny, "Patient denies chest pain."))
    with pytest.raises(WrongHeadError, match="embedding similarity"):
        fill_mask(bundled, plan_note(bundled, "Patient denies chest [MASK]."))
    with pytest.raises(WrongHeadError):
        pseudo_log_likelihood(classifier, plan_note(classifier, "Patient denies chest pain."))
    with pytest.raises(WrongHeadError):
        token_labels(tiny, plan_note(tiny, "Patient."))
    with pytest.raises(WrongHeadError):
        classify(tagger, plan_note(tagger, "Patient."))
    with pytest.raises(TargetError, match="pieces"):
        fill_mask(tiny, plan_note(tiny, "Patient denies chest [MASK]."), candidates=["pneumothorax"])
    with pytest.raises(TargetError):
        vocabulary_id(tiny, "   ")
    with pytest.raises(TargetError):
        embedding_similarity(bundled, plan_note(bundled, "Patient."), [])
    with pytest.raises(EmptyNoteError):
        fill_mask(tiny, plan_note(tiny, "  "))
    with pytest.raises(ResourceLimitError, match="memory"):
        pseudo_log_likelihood(tiny, plan_note(tiny, NOTE), batch_size=64, memory_limit=1000)
    assert issubclass(WrongHeadError, CbertError)


def test_no_hook_left_after_any_function_or_a_cancelled_run(tiny, bundled) -> None:
    heads = [(0, 1), (1, 2)]
    fill_mask(tiny, plan_note(tiny, "Patient [MASK] .", RunOptions(knocked_out=heads)))
    mask_word(tiny, plan_note(tiny, NOTE, RunOptions(knocked_out=heads)), 0, 3)
    pseudo_log_likelihood(tiny, plan_note(tiny, NOTE, RunOptions(knocked_out=heads)))
    embedding_similarity(bundled, plan_note(bundled, "Patient has pneumonia.", RunOptions(knocked_out=[(0, 0)])), ["pneumonia"])
    assert hook_count(tiny.model) == 0 and hook_count(bundled.model) == 0

    def cancel(fraction: float, message: str) -> None:
        raise RuntimeError("the note changed")

    with pytest.raises(RuntimeError, match="note changed"):
        pseudo_log_likelihood(tiny, plan_note(tiny, NOTE, RunOptions(knocked_out=heads)), batch_size=2, progress=cancel)
    with pytest.raises(RuntimeError, match="note changed"):
        embedding_similarity(bundled, plan_note(bundled, "Patient has pneumonia.", RunOptions(knocked_out=[(0, 0)])), ["pneumonia"], progress=cancel)
    assert hook_count(tiny.model) == 0 and hook_count(bundled.model) == 0


def test_results_are_frozen_readonly_and_pickle(tiny) -> None:
    result = pseudo_log_likelihood(tiny, plan_note(tiny, NOTE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.token_logprobs[1] = 0.0
    clone = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(clone.token_logprobs, result.token_logprobs)
    assert not any(isinstance(v, torch.Tensor | torch.nn.Module) for v in vars(fill_mask(tiny, plan_note(tiny, "a [MASK]"))).values())


def test_embedding_similarity_carries_the_unrelated_text_reference(bundled) -> None:
    from cbert_core.analyses.similarity import REFERENCE_DESCRIPTIONS

    text = "The patient has pneumonia on the chest x-ray. The left ankle is broken."
    result = embedding_similarity(bundled, plan_note(bundled, text), ["pneumonia present", "fractured ankle"])
    assert result.reference_descriptions == REFERENCE_DESCRIPTIONS
    with torch.inference_mode():
        def pooled(sentence: str) -> torch.Tensor:
            return plain_logits(bundled, input_ids(bundled, sentence)).mean(0)
        note = pooled(text)
        expected = [float(torch.cosine_similarity(note, pooled(r), dim=0)) for r in REFERENCE_DESCRIPTIONS]
    np.testing.assert_allclose(result.note_reference_similarity, expected, atol=1e-5)  # computed the same way
    assert result.note_reference == pytest.approx(max(expected), abs=1e-5)
    assert result.note_margin == pytest.approx(float(np.std(expected)), abs=1e-5)
    assert result.sentence_reference_similarity.shape == (2, len(REFERENCE_DESCRIPTIONS))
    np.testing.assert_allclose(result.sentence_reference, result.sentence_reference_similarity.max(-1), atol=1e-6)
    np.testing.assert_allclose(result.sentence_margin, result.sentence_reference_similarity.std(-1), atol=1e-6)
    assert len(result.sentence_verdicts) == 2
    with pytest.raises(ValueError):
        result.sentence_reference[0] = 1.0
    knocked = embedding_similarity(bundled, plan_note(bundled, text, RunOptions(knocked_out=whole_layers([0, 1], 12))), ["pneumonia present"])
    assert not np.allclose(knocked.note_reference_similarity, result.note_reference_similarity, atol=1e-4)


def test_standing_out_needs_the_margin_over_the_runner_up_and_the_reference() -> None:
    from cbert_core.analyses.similarity import STANDS_OUT, TOO_CLOSE, UNRELATED, standing_out

    unrelated = np.array([0.10, -0.10, 0.0, 0.0], np.float32)  # max 0.10, standard deviation sqrt(0.005) ~ 0.0707
    rows = np.array([[0.44, 0.43],  # 0.01 apart: within the margin
                     [0.80, 0.05],  # far above both
                     [0.15, 0.00],  # above the reference by 0.05 only
                     [0.60, 0.20]], np.float32)
    reference, margin, verdicts = standing_out(rows, np.tile(unrelated, (4, 1)))
    np.testing.assert_allclose(reference, 0.10, atol=1e-7)
    np.testing.assert_allclose(margin, np.sqrt(0.005), atol=1e-6)
    assert verdicts == (TOO_CLOSE, STANDS_OUT, UNRELATED, STANDS_OUT)
    _, _, alone = standing_out(rows[:, :1], np.tile(unrelated, (4, 1)))  # one description: only the reference counts
    assert alone == (STANDS_OUT, STANDS_OUT, UNRELATED, STANDS_OUT)


def test_no_description_stands_out_when_two_are_within_the_margin(bundled) -> None:
    from cbert_core.analyses.similarity import REFERENCE_DESCRIPTIONS, STANDS_OUT, TOO_CLOSE, UNRELATED

    text = "Chest x-ray shows a right lower lobe pneumonia."
    same = embedding_similarity(bundled, plan_note(bundled, text), ["pneumonia present", "pneumonia present"])
    assert same.note_similarity[0] == same.note_similarity[1] and same.note_probs[0] == pytest.approx(0.5)
    assert same.note_verdict == TOO_CLOSE and not same.stands_out  # a 50 % share says nothing
    as_unrelated = embedding_similarity(bundled, plan_note(bundled, text), [REFERENCE_DESCRIPTIONS[0]])
    assert as_unrelated.note_verdict == UNRELATED  # a description no closer than unrelated text
    clear = embedding_similarity(bundled, plan_note(bundled, "The left ankle is broken."), ["fractured ankle", "pneumonia present"])
    assert clear.note_verdict == STANDS_OUT and clear.stands_out


def test_pseudo_likelihood_mean_per_piece_for_each_word(tiny) -> None:
    text = "Patient has COPD exacerbation , no fever ."
    result = pseudo_log_likelihood(tiny, plan_note(tiny, text))
    content = result.token_logprobs[1:-1]
    words = result.word_ids[1:-1]
    for word in range(len(result.word_spans)):
        pieces = content[words == word].astype(np.float64)
        assert result.word_piece_counts[word] == pieces.size
        assert result.word_logprobs[word] == pytest.approx(pieces.sum(), abs=1e-5)
        assert result.word_mean_logprobs[word] == pytest.approx(pieces.sum() / pieces.size, abs=1e-5)
    copd = int(result.word_ids[3])
    assert result.word_piece_counts[copd] >= 2  # "cop ##d": its sum is lower than its mean
    assert result.word_mean_logprobs[copd] > result.word_logprobs[copd]
    with pytest.raises(ValueError):
        result.word_mean_logprobs[0] = 0.0
    typed = pseudo_log_likelihood(tiny, plan_note(tiny, "Patient has COPD [MASK] ."))
    masked_word = int(typed.word_ids[np.flatnonzero(np.array(typed.tokens) == "[MASK]")[0]])
    assert np.isnan(typed.word_mean_logprobs[masked_word]) and np.isnan(typed.word_logprobs[masked_word])
