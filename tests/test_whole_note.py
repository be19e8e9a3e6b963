"""Whole-note attribution: every window stitched, groups, captum's methods, agreement, faithfulness by group,
layer conductance, bad inputs and cancelled runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

from cbert_core.analyses import whole_note
from cbert_core.analyses.agreement import holds_up, method_agreement
from cbert_core.analyses.attribution import attribute
from cbert_core.analyses.attribution_groups import GROUPINGS, group_scores, note_groups, shares
from cbert_core.analyses.faithfulness import faithfulness, group_faithfulness
from cbert_core.analyses.labelling import classify
from cbert_core.analyses.layer_conductance import layer_conductance
from cbert_core.analyses.similarity import embedding_similarity
from cbert_core.analyses.targets import class_target, masked_token_target, similarity_target, token_class_target
from cbert_core.analyses.whole_note import METHOD_SPECS, NOTE_METHODS, explain
from cbert_core.errors import ResourceLimitError, TargetError
from cbert_core.model.hooks import hook_count
from cbert_core.model.loading import LoadedModel, load_model
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.serving.cache import ResultCache
from notes import CLINICAL_NOTE, LONG_NOTE
from tiny_models import bert_config, write_bert, write_tokenizer

MASKED = "Patient denies chest [MASK] . No fever with cough ."
SHORT = "Patient denies chest pain . No fever with cough ."
# 66 word pieces: five windows of the tiny models with 24 positions.
LONG = " ".join(f"Patient denies chest pain number {i} ." for i in range(6))
QUICK = dict(steps=8, samples=4)  # enough to check shapes; the methods' own defaults are larger


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    folder = tmp_path_factory.mktemp("whole")
    torch.manual_seed(3)
    BertForMaskedLM(bert_config(initializer_range=0.2)).eval().save_pretrained(folder / "sharp")
    write_tokenizer(folder / "sharp")
    return {
        "sharp": load_model(str(folder / "sharp")),
        "classifier": load_model(str(write_bert(folder / "seq", head="sequence-classification", max_positions=24))),
        "tagger": load_model(str(write_bert(folder / "tok", head="token-classification",
                                            labels=("O", "B-PROBLEM", "I-PROBLEM")))),
        "encoder": load_model(str(write_bert(folder / "enc", head="encoder"))),
        "short encoder": load_model(str(write_bert(folder / "senc", head="encoder", max_positions=24))),
    }


def targets(models: dict[str, LoadedModel]) -> dict[str, tuple[LoadedModel, str, object]]:
    """One target of every kind, on a note that fits one window."""
    tagger = models["tagger"]
    return {
        "masked-token": (models["sharp"], MASKED, masked_token_target(models["sharp"], "pain")),
        "class": (models["classifier"], SHORT, class_target(models["classifier"], "POS")),
        "token-class": (tagger, SHORT, token_class_target(tagger, SHORT.index("fever"), "B-PROBLEM")),
        "similarity": (models["encoder"], SHORT, similarity_target(models["encoder"], "fever")),
    }


@pytest.mark.parametrize("kind", ["masked-token", "class", "token-class", "similarity"])
@pytest.mark.parametrize("method", ["integrated-gradients", "gradient-x-input", "saliency"])
def test_whole_note_explanation_of_a_note_in_one_window_equals_the_single_window_run(models, kind, method) -> None:
    loaded, text, target = targets(models)[kind]
    plan = plan_note(loaded, text)
    single = attribute(loaded, plan, target, method=method)
    note = explain(loaded, plan, target, method=method)
    assert not note.whole_note and note.windows == (single.window,)
    np.testing.assert_allclose(note.piece_scores, single.piece_scores[1:-1], atol=1e-7)
    np.testing.assert_allclose(note.special_scores[0], single.piece_scores[[0, -1]], atol=1e-7)
    assert note.score == pytest.approx(single.score, abs=1e-6)  # float32 rounding across batch shapes
    if method == "integrated-gradients":
        assert note.baseline_score == pytest.approx(single.baseline_score, abs=1e-6)
        assert note.delta == pytest.approx(single.delta, abs=2e-6)


def mean_probability(loaded: LoadedModel, windows: list[np.ndarray], label: int) -> float:
    """log of the windows' mean probability of ``label``, from the checkpoint's own forward pass."""
    with torch.inference_mode():
        probs = [torch.softmax(loaded.model(input_ids=torch.tensor(ids)[None]).logits[0], -1)[label] for ids in windows]
    return float(torch.log(torch.stack(probs).mean()))


def test_a_long_note_is_explained_over_every_window_as_the_model_read_it(models) -> None:
    loaded = models["classifier"]
    plan = plan_note(loaded, LONG)
    assert len(plan.windows) >= 4
    target = class_target(loaded, "POS")
    found = explain(loaded, plan, target)
    assert found.whole_note and found.windows == plan.windows and found.covered.all()
    # The explained score is the note's, as the Predictions page shows it (mean of the windows' probabilities)...
    ids = [plan.window_ids(window) for window in plan.windows]
    assert found.score == pytest.approx(mean_probability(loaded, ids, 1), abs=1e-5)
    assert found.score == pytest.approx(float(np.log(classify(loaded, plan).probs[1])), abs=1e-5)
    # ... and each window's attributions add up to the change when that window alone reads baseline pieces.
    pad = loaded.tokenizer().pad_token_id
    for index in range(len(plan.windows)):
        blanked = list(ids)
        blanked[index] = np.concatenate([ids[index][:1], np.full(ids[index].size - 2, pad), ids[index][-1:]])
        assert found.window_gaps[index] == pytest.approx(found.score - mean_probability(loaded, blanked, 1), abs=1e-5)
    assert np.abs(found.window_deltas).max() <= 0.05 * np.abs(found.window_gaps).max()
    assert found.delta == pytest.approx(found.window_sums.sum() - found.window_gaps.sum())
    # Stitching: each piece shows the score of the window that owns it; captum's Integrated Gradients of the
    # same windows (an independent integral) gives the same pieces.
    reference = explain(loaded, plan, target, method="captum-integrated-gradients")
    np.testing.assert_allclose(found.piece_scores, reference.piece_scores, atol=1e-6)
    overlap = found.window_sums.sum() - found.total  # what the non-owning windows gave the shared pieces
    assert abs(overlap) > 0 and found.total == pytest.approx(float(found.piece_scores.sum() + found.special_scores.sum()))


def test_a_long_note_similarity_is_the_length_weighted_mean_of_its_windows(models) -> None:
    loaded = models["short encoder"]
    plan = plan_note(loaded, LONG)
    target = similarity_target(loaded, "fever")
    found = explain(loaded, plan, target, method="saliency")
    shown = embedding_similarity(loaded, plan, ["fever"], per_sentence=False).note_similarity[0]
    assert found.whole_note and found.score == pytest.approx(float(shown), abs=1e-5)


def test_groups_partition_the_note_and_their_scores_sum_to_the_pieces(models) -> None:
    loaded = models["sharp"]
    plan = plan_note(loaded, CLINICAL_NOTE.replace("Patient denies chest pain", "Patient denies chest [MASK]"))
    found = explain(loaded, plan, masked_token_target(loaded, "pain"))
    for grouping in GROUPINGS:
        groups = note_groups(plan, grouping)
        assert groups.members.shape == (len(plan.tokens),) and groups.sizes.min() >= 1
        assert (np.diff(groups.members) >= 0).all()  # groups follow the text
        assert (groups.spans[1:, 0] >= groups.spans[:-1, 1]).all()  # shaded spans never overlap
        scores = group_scores(found.piece_scores, groups)
        assert scores.sum() == pytest.approx(float(found.piece_scores.astype(np.float64).sum()), abs=1e-6)
        assert np.abs(shares(scores)).sum() == pytest.approx(1.0)
    sections = note_groups(plan, "section")
    assert not sections.fell_back and sections.labels[:2] == ("HISTORY OF PRESENT ILLNESS", "MEDICATIONS")
    # Every piece of a section's header or body is in it; a sentence's header goes with its first sentence.
    hpi = np.flatnonzero(sections.members == 0)
    assert plan.text[plan.tokens.offsets[hpi[0], 0]:].startswith("HISTORY")
    sentences = note_groups(plan, "sentence")
    first_sentence = int(np.flatnonzero(plan.tokens.offsets[:, 0] == plan.text.index("The pt"))[0])
    assert sentences.members[0] == sentences.members[first_sentence] == 0


def test_a_note_without_headers_is_grouped_by_sentence(models) -> None:
    plan = plan_note(models["sharp"], SHORT)
    groups = note_groups(plan, "section")
    assert groups.fell_back and groups.grouping == "sentence" and len(groups) == 2
    assert groups.labels[0] == "Patient denies chest pain ."


def test_perturbation_methods_remove_whole_groups(models) -> None:
    """Leave one sentence out: each sentence's score is the prediction lost without it, from the model itself."""
    loaded = models["classifier"]
    plan = plan_note(loaded, SHORT)
    target = class_target(loaded, "POS")
    found = explain(loaded, plan, target, method="occlusion", grouping="sentence")
    groups = note_groups(plan, "sentence")
    assert found.grouping == "sentence" and found.steps == len(groups) + 1
    ids = plan.window_ids(plan.windows[0])
    pad = loaded.tokenizer().pad_token_id
    for group, value in enumerate(group_scores(found.piece_scores, groups)):
        removed = ids.copy()
        removed[1:-1][groups.members == group] = pad
        assert value == pytest.approx(found.score - mean_probability(loaded, [removed], 1), abs=1e-5)
    # Shapley values add up to the change when every group is removed (efficiency).
    shapley = explain(loaded, plan, target, method="shapley-sampling", grouping="sentence", samples=4)
    assert shapley.delta == pytest.approx(0.0, abs=1e-5) and shapley.completeness == "note"


@pytest.mark.parametrize("method", NOTE_METHODS)
def test_every_method_runs_on_every_kind_of_tiny_model(models, method: str) -> None:
    for kind, (loaded, text, target) in targets(models).items():
        plan = plan_note(loaded, text)
        found = explain(loaded, plan, target, method=method, grouping="word", **QUICK)
        n = len(plan.tokens)
        assert found.piece_scores.shape == (n,) and found.covered.all(), (method, kind)
        assert np.isfinite(found.piece_scores).all() and np.abs(found.piece_scores).max() > 0, (method, kind)
        if kind == "masked-token":  # the [MASK] being explained is never perturbed
            assert found.fixed.sum() == 1
            if METHOD_SPECS[method].kind == "perturbation" or method in {"integrated-gradients", "deeplift"}:
                assert found.piece_scores[found.fixed] == 0
    long = plan_note(models["classifier"], LONG)
    found = explain(models["classifier"], long, class_target(models["classifier"], 1), method=method,
                    grouping="sentence", **QUICK)
    assert found.whole_note and found.piece_scores.shape == (len(long.tokens),)
    assert np.isfinite(found.piece_scores).all()


@pytest.mark.parametrize("method", NOTE_METHODS)
def test_every_method_finds_the_obvious_word(models, method: str) -> None:
    """The similarity of a note to the description "fever": the word "fever" raises it the most.

    On a small random encoder the residual stream carries each word's own embedding to the pooled note vector,
    so removing "fever" is what lowers the cosine to "fever" most: every signed method must rank it first and
    positive; magnitude-only methods must score every word at least 0.
    """
    loaded = models["encoder"]
    plan = plan_note(loaded, "the patient denies chest pain . fever .")
    found = explain(loaded, plan, similarity_target(loaded, "fever"), method=method, grouping="word")
    groups = note_groups(plan, "word")
    scores = group_scores(found.piece_scores, groups)
    if found.signed:
        assert groups.labels[int(np.argmax(scores))] == "fever" and scores.max() > 0
    else:
        assert (scores >= 0).all()


@pytest.mark.parametrize("method", ["integrated-gradients", "occlusion", "shapley-sampling", "kernel-shap", "lime"])
def test_the_real_model_puts_pneumonia_in_the_pneumonia_sentence(bundled, method: str) -> None:
    text = ("The weather is sunny and warm today. The chest x-ray shows pneumonia in the left lung. "
            "We ate chocolate cake at the party.")
    plan = plan_note(bundled, text)
    found = explain(bundled, plan, similarity_target(bundled, "pneumonia"), method=method, grouping="sentence")
    scores = group_scores(found.piece_scores, note_groups(plan, "sentence"))
    assert int(np.argmax(scores)) == 1 and scores[1] > 0


def test_agreement_of_a_method_with_itself_is_one(models) -> None:
    loaded = models["classifier"]
    plan = plan_note(loaded, LONG)
    target = class_target(loaded, "POS")
    groups = note_groups(plan, "sentence")
    found = [explain(loaded, plan, target, method=m, grouping="sentence") for m in
             ("integrated-gradients", "occlusion", "saliency")]
    agreement = method_agreement([found[0], found[0], *found[1:]], groups)
    assert agreement.compared == len(groups)
    np.testing.assert_allclose(np.diag(agreement.correlation), 1.0)
    assert agreement.correlation[0, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(agreement.correlation, agreement.correlation.T)
    reversed_scores = dataclasses.replace(found[0], method="reversed", piece_scores=-found[0].piece_scores)
    assert method_agreement([found[0], reversed_scores], groups).correlation[0, 1] == pytest.approx(-1.0)
    scored = [group_faithfulness(loaded, plan, f, groups) for f in found]
    verdict = holds_up(scored, method_agreement(found, groups))
    margins = [f.comprehensiveness - f.sufficiency for f in scored]
    assert verdict.best == found[int(np.argmax(margins))].method
    assert set(verdict.agreeing) | set(verdict.disagreeing) == {f.method for f in found} - {verdict.best}


def test_faithfulness_by_piece_equals_ferrets_and_by_group_removes_groups(models) -> None:
    loaded = models["sharp"]
    plan = plan_note(loaded, MASKED)
    target = masked_token_target(loaded, "pain")
    for method in ("integrated-gradients", "saliency"):
        single = faithfulness(loaded, attribute(loaded, plan, target, method=method))
        grouped = group_faithfulness(loaded, plan, explain(loaded, plan, target, method=method),
                                     note_groups(plan, "piece"))
        assert grouped.comprehensiveness == pytest.approx(single.comprehensiveness, abs=1e-7)
        assert grouped.sufficiency == pytest.approx(single.sufficiency, abs=1e-7)
        assert grouped.removed.tolist() == single.removed.tolist()
    classifier = models["classifier"]
    long = plan_note(classifier, LONG)
    groups = note_groups(long, "sentence")
    found = explain(classifier, long, class_target(classifier, "POS"), method="occlusion", grouping="sentence")
    scored = group_faithfulness(classifier, long, found, groups, only_positive=False)
    assert scored.grouping == "sentence" and scored.removed.max() <= len(groups)
    assert -1 <= scored.comprehensiveness <= 1 and -1 <= scored.sufficiency <= 1


def test_layer_conductance_passes_the_whole_change_through_every_layer(models) -> None:
    for loaded, text, target in (targets(models)["masked-token"],
                                 (models["classifier"], LONG, class_target(models["classifier"], "POS"))):
        found = layer_conductance(loaded, plan_note(loaded, text), target, steps=32)
        assert found.piece_scores.shape == (len(loaded.anatomy.layers), len(plan_note(loaded, text).tokens))
        np.testing.assert_allclose(found.layer_sums, found.gap, atol=0.05 * abs(found.gap) + 1e-6)
        assert hook_count(loaded.model, ours_only=False) == 0


def test_bad_inputs_are_clear_messages(models, monkeypatch) -> None:
    loaded = models["sharp"]
    plan = plan_note(loaded, MASKED)
    with pytest.raises(TargetError, match="predicted from the window that holds it"):
        explain(loaded, plan, masked_token_target(loaded, "pain"), whole_note=True)
    with pytest.raises(ValueError, match="unknown method"):
        explain(loaded, plan, masked_token_target(loaded, "pain"), method="magic")
    with pytest.raises(ValueError, match="unknown grouping"):
        note_groups(plan, "paragraph")
    with pytest.raises(ResourceLimitError, match="memory"):
        explain(loaded, plan, masked_token_target(loaded, "pain"), memory_limit=10_000)
    one_sentence = plan_note(models["classifier"], "Patient denies chest pain and fever")
    for method in ("kernel-shap", "lime"):  # a surrogate model over one group: a message, not captum's NaN
        with pytest.raises(TargetError, match="needs at least two"):
            explain(models["classifier"], one_sentence, class_target(models["classifier"], "POS"), method=method,
                    grouping="sentence")
    monkeypatch.setattr(whole_note, "MAX_PERTURBED_GROUPS", 3)
    with pytest.raises(ResourceLimitError, match="Score by sentence or section"):
        explain(loaded, plan, masked_token_target(loaded, "pain"), method="occlusion", grouping="word")


def test_a_cancelled_run_leaves_no_hook_and_caches_nothing(models) -> None:
    loaded = models["classifier"]
    plan = plan_note(loaded, LONG, RunOptions(knocked_out=[(0, 1)]))
    target = class_target(loaded, "POS")
    seen: list[float] = []

    def cancel_at_the_second_report(fraction: float, message: str) -> None:
        seen.append(fraction)
        if len(seen) == 2:  # the user changes the note while the run is under way
            raise RuntimeError("the note changed")

    cache: ResultCache = ResultCache(max_items=4)
    for method in ("integrated-gradients", "deeplift", "occlusion"):
        seen.clear()
        with pytest.raises(RuntimeError, match="note changed"):
            cache.get_or_compute(method, lambda: explain(loaded, plan, target, method=method, grouping="sentence",
                                                         progress=cancel_at_the_second_report))
        assert method not in cache and hook_count(loaded.model, ours_only=False) == 0
        assert seen[0] < 1  # stopped part-way
    done = explain(loaded, plan, target)  # the model works as before
    assert done.knocked_out == frozenset({(0, 1)})


def test_records_are_frozen(models) -> None:
    loaded, text, target = targets(models)["class"]
    found = explain(loaded, plan_note(loaded, text), target, method="occlusion", grouping="sentence")
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.score = 0.0  # type: ignore[misc]
    for array in (found.piece_scores, found.covered, found.window_sums):
        with pytest.raises(ValueError):
            array[0] = 1
    assert not any(isinstance(v, torch.Tensor | torch.nn.Module) for v in vars(found).values())


def test_long_clinical_note_by_section_stays_within_tens_of_window_runs(bundled: LoadedModel) -> None:
    """Leave one section out on a note of several windows runs each section's windows once, not each piece."""
    text = LONG_NOTE * 2
    plan = plan_note(bundled, text, RunOptions())
    groups = note_groups(plan, "section")
    assert len(plan.windows) >= 2 and not groups.fell_back
    found = explain(bundled, plan, similarity_target(bundled, "pneumonia"), method="occlusion", grouping="section")
    assert found.whole_note and found.steps == len(groups) + 1
    assert found.forward_rows <= 2 * len(plan.windows) + 2 * len(groups)  # the note, the baseline, each section

