"""Attribution invariants: IG completeness, independence, knockout, head importance, faithfulness, hooks."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

from cbert_core.analyses.attribution import METHODS, Attribution, attribute, quadrature
from cbert_core.analyses.counterfactual import counterfactual
from cbert_core.analyses.faithfulness import faithfulness, rationales
from cbert_core.analyses.knockout_scan import head_importance
from cbert_core.analyses.predict import fill_mask
from cbert_core.analyses.targets import class_target, masked_token_target, similarity_target, token_class_target
from cbert_core.errors import ResourceLimitError, TargetError, WrongHeadError
from cbert_core.model.hooks import hook_count, knockout, whole_layers
from cbert_core.model.loading import LoadedModel, load_model
from cbert_core.run.plan import RunOptions, plan_note
from tiny_models import bert_config, write_bert, write_tokenizer

MASKED = "Patient denies chest [MASK] . No fever ."


@pytest.fixture(scope="module")
def sharp(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A tiny masked-LM with large random weights, so words visibly move its predictions."""
    folder = tmp_path_factory.mktemp("sharp") / "mlm"
    torch.manual_seed(3)
    BertForMaskedLM(bert_config(initializer_range=0.2)).eval().save_pretrained(folder)
    write_tokenizer(folder)
    return load_model(str(folder))


@pytest.fixture(scope="module")
def others(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    folder = tmp_path_factory.mktemp("heads")
    return {
        "short": load_model(str(write_bert(folder / "short", max_positions=24))),
        "classifier": load_model(str(write_bert(folder / "seq", head="sequence-classification", max_positions=24))),
        "tagger": load_model(str(write_bert(folder / "tok", head="token-classification",
                                            labels=("O", "B-PROBLEM", "I-PROBLEM")))),
    }


def plain_score(loaded: LoadedModel, attribution: Attribution, ids: np.ndarray) -> float:
    """The target computed by the checkpoint's own forward pass (transformers), not by our code."""
    target = attribution.target
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None])
        if target.kind == "similarity":
            pooled = out.last_hidden_state[0].mean(0)
            return float(torch.cosine_similarity(pooled, torch.tensor(target.reference), dim=0))
        logits = out.logits[0] if target.kind == "class" else out.logits[0, attribution.target_position]
        index = target.token_id if target.kind == "masked-token" else target.class_index
        return float(torch.log_softmax(logits, -1)[index])


def baseline_of(loaded: LoadedModel, attribution: Attribution) -> np.ndarray:
    pad = loaded.tokenizer().pad_token_id
    return np.where(attribution.fixed, attribution.input_ids, pad)


@pytest.mark.parametrize("which", ["tiny", "sharp", "bundled"])
def test_integrated_gradients_completeness(which: str, tiny, sharp, bundled) -> None:
    loaded = {"tiny": tiny, "sharp": sharp, "bundled": bundled}[which]
    if which == "bundled":
        text = "Patient has a productive cough and fever. Chest x-ray shows consolidation."
        target = similarity_target(loaded, "pneumonia present")
    else:
        text, target = MASKED, masked_token_target(loaded, "pain")
    result = attribute(loaded, plan_note(loaded, text), target, steps=50)
    score, base = plain_score(loaded, result, result.input_ids), plain_score(loaded, result, baseline_of(loaded, result))
    assert result.score == pytest.approx(score, abs=1e-5)
    assert result.baseline_score == pytest.approx(base, abs=1e-5)
    gap = score - base
    assert abs(result.piece_scores.sum() - gap) <= abs(result.delta) + 1e-5
    assert abs(result.delta) <= 0.05 * abs(gap)  # converged: the delta is under 5 % of the score difference
    assert result.piece_scores[result.fixed].tolist() == [0.0] * int(result.fixed.sum())
    np.testing.assert_allclose(result.word_scores.sum(), result.piece_scores.sum(), atol=1e-5)


@pytest.mark.parametrize("which", ["sharp", "bundled"])
def test_bf16_integrated_gradients_keep_exact_end_points_and_converge(which: str, sharp, bundled) -> None:
    loaded = {"sharp": sharp, "bundled": bundled}[which]
    if which == "bundled":
        text = "Patient has a productive cough and fever. Chest x-ray shows consolidation."
        target = similarity_target(loaded, "pneumonia present")
    else:
        text, target = MASKED, masked_token_target(loaded, "pain")
    exact = attribute(loaded, plan_note(loaded, text), target)
    fast = attribute(loaded, plan_note(loaded, text, RunOptions(precision="bf16")), target)
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    # The end points run in float32 under bf16 too: the prediction explained is the exact one.
    assert fast.score == pytest.approx(plain_score(loaded, fast, fast.input_ids), abs=1e-5)
    assert fast.baseline_score == pytest.approx(exact.baseline_score, abs=1e-5)
    gap = fast.score - fast.baseline_score
    assert fast.delta == pytest.approx(fast.piece_scores.sum() - gap, abs=1e-5)
    assert abs(fast.delta) <= 0.05 * abs(gap)
    assert not np.array_equal(fast.piece_scores, exact.piece_scores)  # the gradients ran in bfloat16
    scale = np.abs(exact.piece_scores).max()
    np.testing.assert_allclose(fast.piece_scores, exact.piece_scores, atol=0.1 * scale)
    assert np.argmax(np.abs(fast.word_scores)) == np.argmax(np.abs(exact.word_scores))
    with pytest.raises(ValueError, match="precision"):
        attribute(loaded, plan_note(loaded, text, RunOptions(precision="fp16")), target)


def test_integrated_gradients_equal_captum_and_do_not_depend_on_batching(sharp) -> None:
    from captum.attr import LayerIntegratedGradients

    target = masked_token_target(sharp, "pain")
    ours = attribute(sharp, plan_note(sharp, MASKED), target)
    uneven = attribute(sharp, plan_note(sharp, MASKED), target, batch_size=7)  # 7 + 7 + ... + 1 rows
    np.testing.assert_allclose(uneven.piece_scores, ours.piece_scores, atol=1e-6)
    position = ours.target_position

    def forward(ids: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(sharp.model(input_ids=ids).logits[:, position], -1)[:, target.token_id]

    explainer = LayerIntegratedGradients(forward, sharp.anatomy.embeddings.word)
    theirs = explainer.attribute(torch.tensor(ours.input_ids)[None], torch.tensor(baseline_of(sharp, ours))[None],
                                 n_steps=50).sum(-1)[0]
    np.testing.assert_allclose(ours.piece_scores, theirs.detach().numpy(), atol=1e-5)


def test_tolerance_stops_early_only_when_converged(sharp) -> None:
    target = masked_token_target(sharp, "pain")
    fixed = attribute(sharp, plan_note(sharp, MASKED), target)
    early = attribute(sharp, plan_note(sharp, MASKED), target, tolerance=0.05)
    assert early.steps == 16 and abs(early.delta) <= 0.05 * abs(early.score - early.baseline_score)
    strict = attribute(sharp, plan_note(sharp, MASKED), target, tolerance=0.0)  # never met: the 50-point result is kept
    assert strict.steps == 16 + 50
    np.testing.assert_allclose(strict.piece_scores, fixed.piece_scores, atol=1e-6)
    assert strict.delta == pytest.approx(fixed.delta, abs=1e-6)


def test_quadrature_rules() -> None:
    for rule in ("gauss-legendre", "riemann-trapezoid"):
        alphas, weights = quadrature(50, rule)
        assert alphas.min() >= 0 and alphas.max() <= 1 and weights.sum() == pytest.approx(1)
    alphas, weights = quadrature(5, "gauss-legendre")
    assert (weights * alphas**9).sum() == pytest.approx(0.1)  # exact up to degree 2n - 1


def test_occluding_words_that_cannot_reach_the_target_scores_zero(sharp) -> None:
    """With every head knocked out no position can see another, so only the target's own piece matters."""
    target = masked_token_target(sharp, "pain")
    everything = whole_layers(range(len(sharp.anatomy.layers)), sharp.anatomy.num_heads)
    isolated = {method: attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=everything)), target, method=method)
                for method in METHODS}
    for method, result in isolated.items():
        others = ~result.fixed
        noise = 1e-6 * max(1.0, abs(result.score))  # float32 rounding of the score across batch shapes
        assert np.abs(result.piece_scores[others]).max() < noise, method
    intact = attribute(sharp, plan_note(sharp, MASKED), target, method="occlusion")
    assert np.abs(intact.word_scores).max() > 1e-3  # the control: with attention, words do matter
    # One occluded word checked against the plain model.
    word = int(intact.word_ids[2])
    occluded = intact.input_ids.copy()
    occluded[intact.word_ids == word] = sharp.tokenizer().pad_token_id
    expected = intact.score - plain_score(sharp, intact, occluded)
    assert intact.word_scores[list(intact.words).index(word)] == pytest.approx(expected, abs=1e-5)


def test_gradient_methods(sharp) -> None:
    target = masked_token_target(sharp, "pain")
    saliency = attribute(sharp, plan_note(sharp, MASKED), target, method="saliency")
    gxi = attribute(sharp, plan_note(sharp, MASKED), target, method="gradient-x-input")
    assert (saliency.piece_scores >= 0).all() and saliency.piece_scores.max() > 0
    ids = torch.as_tensor(gxi.input_ids)[None]
    words = sharp.anatomy.embeddings.word(ids).detach().requires_grad_(True)
    logits = sharp.model(inputs_embeds=words).logits[0, gxi.target_position]
    (gradient,) = torch.autograd.grad(torch.log_softmax(logits, -1)[target.token_id], words)
    np.testing.assert_allclose(gxi.piece_scores, (gradient * words).sum(-1)[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(saliency.piece_scores, gradient.norm(dim=-1)[0].numpy(), atol=1e-5)


def test_knockout_none_changes_nothing_and_a_whole_layer_does(sharp) -> None:
    target = masked_token_target(sharp, "pain")
    intact = attribute(sharp, plan_note(sharp, MASKED), target, method="saliency")
    none = attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=[])), target, method="saliency")
    layer = attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=whole_layers([0], 4))), target, method="saliency")
    np.testing.assert_array_equal(none.piece_scores, intact.piece_scores)
    assert none.score == intact.score
    assert layer.score != pytest.approx(intact.score, abs=1e-4)
    with knockout(sharp.anatomy, whole_layers([0], 4)):
        assert layer.score == pytest.approx(plain_score(sharp, layer, layer.input_ids), abs=1e-5)


def test_head_importance_agrees_with_a_direct_knockout(sharp, bundled) -> None:
    target = masked_token_target(sharp, "pain")
    result = head_importance(sharp, plan_note(sharp, MASKED), target, batch_size=3)
    assert result.scores.shape == (2, 4) and np.isfinite(result.scores).all()
    reference = attribute(sharp, plan_note(sharp, MASKED), target, method="saliency")
    for layer, head in [(0, 2), (1, 3)]:
        with knockout(sharp.anatomy, [(layer, head)]):
            knocked = plain_score(sharp, reference, reference.input_ids)
        assert result.intact_score + result.scores[layer, head] == pytest.approx(knocked, abs=1e-5)
    with_base = head_importance(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=[(0, 0)])), target)
    assert np.isnan(with_base.scores[0, 0]) and with_base.knocked_out == frozenset({(0, 0)})
    with knockout(sharp.anatomy, [(0, 0), (1, 1)]):
        both = plain_score(sharp, reference, reference.input_ids)
    assert with_base.intact_score + with_base.scores[1, 1] == pytest.approx(both, abs=1e-5)

    text = "Patient has a productive cough and fever."
    similar = similarity_target(bundled, "pneumonia present")
    encoder = head_importance(bundled, plan_note(bundled, text), similar)
    assert encoder.scores.shape == (6, 12)
    probe = attribute(bundled, plan_note(bundled, text), similar, method="saliency")
    with knockout(bundled.anatomy, [(3, 7)]):
        knocked = plain_score(bundled, probe, probe.input_ids)
    assert encoder.intact_score + encoder.scores[3, 7] == pytest.approx(knocked, abs=1e-5)


def test_rationales_follow_ferret() -> None:
    scores = np.array([3.0, -1.0, 2.0, 0.5])
    got = rationales(scores, [0.1, 0.25, 0.5, 0.75, 1.0], only_positive=True)
    # 0.1 -> k=0 skipped; 0.25 -> [0]; 0.5 -> [0, 2]; 0.75 -> [0, 2, 3]; 1.0 -> same set again (negative dropped)
    assert [(f, r.tolist()) for f, r in got] == [(0.25, [0]), (0.5, [0, 2]), (0.75, [0, 2, 3])]
    assert len(rationales(scores, [1.0], only_positive=False)[0][1]) == 4


def test_faithfulness_ranks_the_true_ranking_above_the_reversed_one(sharp) -> None:
    """Two removable pieces: AOPC averages 'remove the top one' and 'remove both'."""
    text = "[MASK] fever ."
    target = masked_token_target(sharp, "pain")
    base = attribute(sharp, plan_note(sharp, text), target, method="occlusion")
    assert (~base.fixed).sum() == 2

    def probability(note: str) -> float:
        return float(fill_mask(sharp, plan_note(sharp, note), candidates=["pain"]).candidate_probs[0, 0])

    full = probability(text)
    drop = {"fever": full - probability("[MASK] ."), ".": full - probability("[MASK] fever")}
    both = full - probability("[MASK]")
    true_scores = np.zeros(len(base.tokens), np.float32)
    true_scores[[2, 3]] = [drop["fever"], drop["."]]
    truth = dataclasses.replace(base, piece_scores=true_scores)
    reverse = dataclasses.replace(base, piece_scores=-true_scores)
    good = faithfulness(sharp, truth, only_positive=False)
    bad = faithfulness(sharp, reverse, only_positive=False)
    assert good.removed.tolist() == [1, 2]
    assert good.comprehensiveness == pytest.approx((max(drop.values()) + both) / 2, abs=1e-6)
    assert good.comprehensiveness >= bad.comprehensiveness
    assert good.sufficiency <= bad.sufficiency
    assert good.full_probability == pytest.approx(full, abs=1e-7)


def test_faithfulness_values_are_in_range(sharp, bundled) -> None:
    text = "Patient denies chest [MASK] . No fever with cough and shortness of breath ."
    for method in METHODS:
        result = faithfulness(sharp, attribute(sharp, plan_note(sharp, text), masked_token_target(sharp, "pain"), method=method))
        assert -1 <= result.comprehensiveness <= 1 and -1 <= result.sufficiency <= 1
        assert len(result.fractions) == len(result.comprehensiveness_drops) <= 10
    masked = faithfulness(sharp, attribute(sharp, plan_note(sharp, text), masked_token_target(sharp, "pain")), removal="mask")
    assert -1 <= masked.comprehensiveness <= 1
    similar = attribute(bundled, plan_note(bundled, "Patient has a cough and fever."), similarity_target(bundled, "pneumonia"))
    cosine = faithfulness(bundled, similar)
    assert -2 <= cosine.comprehensiveness <= 2 and cosine.full_probability == pytest.approx(similar.score, abs=1e-5)


def test_counterfactual_edit(sharp, others) -> None:
    target = masked_token_target(sharp, "pain")
    start = MASKED.index("denies")
    result = counterfactual(sharp, plan_note(sharp, MASKED), start, start + len("denies"), "reports", target, method="occlusion")
    assert result.edited.text == MASKED.replace("denies", "reports")

    def probs(note: str) -> np.ndarray:
        return fill_mask(sharp, plan_note(sharp, note), candidates=list(result.names)).candidate_probs[0]

    np.testing.assert_allclose(result.original_probs, probs(MASKED), atol=1e-6)
    np.testing.assert_allclose(result.edited_probs, probs(result.edited.text), atol=1e-6)
    assert result.score_change == pytest.approx(
        np.log(result.edited_probs[result.names.index("pain")] / result.original_probs[result.names.index("pain")]),
        abs=1e-4)
    assert result.word_alignment[:4].tolist() == [0, -1, 2, 3]  # Patient, denies (edited), chest, [MASK]
    assert np.isnan(result.word_score_change[1]) and np.isfinite(result.word_score_change[[0, 2]]).all()
    with pytest.raises(TargetError):
        counterfactual(sharp, plan_note(sharp, MASKED), start, start + 6, "[MASK]", target)
    with pytest.raises(TargetError):
        counterfactual(sharp, plan_note(sharp, MASKED), 5, 5, "x", target)

    tagger = others["tagger"]
    text = "Patient denies chest pain ."
    labelled = token_class_target(tagger, text.index("pain"), "B-PROBLEM")
    moved = counterfactual(tagger, plan_note(tagger, text), text.index("denies"), text.index("denies") + 6, "has", labelled)
    assert moved.names == ("O", "B-PROBLEM", "I-PROBLEM")
    np.testing.assert_allclose(moved.edited_probs.sum(), 1, atol=1e-6)
    with pytest.raises(TargetError, match="replaces the word"):
        counterfactual(tagger, plan_note(tagger, text), text.index("pain"), text.index("pain") + 4, "ache", labelled)


def test_long_notes_use_one_window(others) -> None:
    short, classifier = others["short"], others["classifier"]
    text = " ".join(f"Patient denies chest pain number {i} ." for i in range(5)) + " No [MASK] ."
    result = attribute(short, plan_note(short, text), masked_token_target(short, "fever"), method="occlusion")
    assert result.window.index > 0 and len(result.tokens) <= 24
    assert result.tokens[result.target_position] == "[MASK]"
    assert result.positions[0] == 0 and result.positions[1] == result.window.start + 1
    for token, (start, end) in zip(result.tokens[1:-1], result.offsets[1:-1]):
        assert text[start:end].lower() == token.removeprefix("##").lower()
    long = " ".join(f"Patient denies chest pain number {i} ." for i in range(5))
    with pytest.raises(ResourceLimitError, match="Select a section"):
        attribute(classifier, plan_note(classifier, long), class_target(classifier, "POS"))
    chosen = attribute(classifier, plan_note(classifier, long), class_target(classifier, 1), window=1, method="saliency")
    assert chosen.window.index == 1


def test_target_errors(tiny, bundled, others) -> None:
    with pytest.raises(TargetError, match="pieces"):
        masked_token_target(tiny, "pneumothorax")
    with pytest.raises(WrongHeadError):
        masked_token_target(bundled, "pain")
    with pytest.raises(TargetError, match=r"no \[MASK\]"):
        attribute(tiny, plan_note(tiny, "Patient denies chest pain."), masked_token_target(tiny, "pain"))
    with pytest.raises(TargetError, match="does not exist"):
        attribute(tiny, plan_note(tiny, MASKED), masked_token_target(tiny, "pain", mask_index=3))
    with pytest.raises(TargetError, match="labels"):
        class_target(others["classifier"], "MAYBE")
    with pytest.raises(TargetError, match="not inside a word"):
        attribute(others["tagger"], plan_note(others["tagger"], "Patient  denies"), token_class_target(others["tagger"], 7, 1))


def test_memory_bound_refuses_instead_of_crashing(tiny) -> None:
    target = masked_token_target(tiny, "pain")
    with pytest.raises(ResourceLimitError, match="memory"):
        attribute(tiny, plan_note(tiny, MASKED), target, memory_limit=10_000)
    with pytest.raises(ResourceLimitError, match="batch of 50"):
        attribute(tiny, plan_note(tiny, MASKED), target, batch_size=50, memory_limit=200_000)
    small = attribute(tiny, plan_note(tiny, MASKED), target, memory_limit=200_000)  # automatic batches fit the bound
    assert 1 <= small.batch_size < 50


def test_no_hook_left_after_any_function_or_a_cancelled_run(sharp, bundled) -> None:
    target = masked_token_target(sharp, "pain")
    heads = [(0, 1), (1, 2)]
    for method in METHODS:
        faithfulness(sharp, attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), target, method=method))
    head_importance(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), target)
    start = MASKED.index("denies")
    counterfactual(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), start, start + 6, "reports", target, method="saliency")
    assert hook_count(sharp.model) == 0

    def cancel(fraction: float, message: str) -> None:
        raise RuntimeError("the note changed")

    attribution = attribute(sharp, plan_note(sharp, MASKED), target)
    for run in (lambda: attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), target, batch_size=5, progress=cancel),
                lambda: attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), target, method="occlusion", progress=cancel),
                lambda: head_importance(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), target, progress=cancel),
                lambda: faithfulness(sharp, attribution, knocked_out=heads, progress=cancel),
                lambda: counterfactual(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=heads)), start, start + 6, "reports", target, method="integrated-gradients", progress=cancel),
                lambda: head_importance(bundled, plan_note(bundled, "Patient has a cough.", RunOptions(knocked_out=[(0, 0)])), similarity_target(bundled, "cough"), progress=cancel)):
        with pytest.raises(RuntimeError, match="note changed"):
            run()
        assert hook_count(sharp.model) == 0 and hook_count(bundled.model) == 0


def test_threads_get_their_own_knockouts(sharp) -> None:
    target = masked_token_target(sharp, "pain")
    settings = [[], [(0, 1)], [(1, 0), (1, 3)], whole_layers([0], 4)]
    serial = [attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=s)), target, method="saliency") for s in settings]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda s: attribute(sharp, plan_note(sharp, MASKED, RunOptions(knocked_out=s)), target, method="saliency"),
                                 settings * 2))
    for got, expected in zip(threaded, serial * 2):
        np.testing.assert_allclose(got.piece_scores, expected.piece_scores, atol=1e-6)
        assert got.knocked_out == expected.knocked_out
    assert hook_count(sharp.model) == 0


def test_attribution_record_is_frozen_and_holds_no_torch(sharp) -> None:
    result = attribute(sharp, plan_note(sharp, MASKED), masked_token_target(sharp, "pain"), method="occlusion")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.piece_scores[0] = 1.0
    assert not any(isinstance(v, torch.Tensor | torch.nn.Module) for v in vars(result).values())
    for start, end in result.offsets[~result.fixed]:
        assert 0 <= start < end <= len(MASKED)
