"""The Evaluate page's core: metrics and calibration against scikit-learn or a hand computation, slices with
bootstrap intervals, clinical features and behaviour-test edits on written sentences, the collection's bad
inputs, and predictions of the whole collection through the batch engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from cbert_core.analyses.labelling import classify
from cbert_core.analyses.similarity import embedding_similarity
from cbert_core.errors import DataFileError, LabelMismatchError, TargetError, WrongHeadError
from cbert_core.evaluation import behaviour, clinical_features
from cbert_core.evaluation.calibration import calibrate, fit_temperature, reliability, scaled
from cbert_core.evaluation.dataset import (
    LEAVE_OUT,
    MAX_EVALUATION_ROWS,
    example_set,
    guess_mapping,
    labelled_from_table,
    read_evaluation_table,
    unknown_labels,
)
from cbert_core.evaluation.metrics import macro_f1_along, metrics
from cbert_core.evaluation.outcomes import Outcomes, outcomes
from cbert_core.evaluation.predictions import planned_passes, predict_collection
from cbert_core.evaluation.slices import in_slice, slice_table
from cbert_core.model.loading import load_model
from cbert_core.run.plan import RunOptions, plan_notes
from notes import CLINICAL_NOTE
from tiny_models import write_bert

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fixed(gold: list[int], probs: list[list[float]], classes: tuple[str, ...] = ("a", "b", "c")) -> Outcomes:
    count = len(gold)
    return Outcomes(classes=classes, gold=np.asarray(gold), probs=np.asarray(probs, dtype=np.float32),
                    rows=np.arange(count), spans=np.zeros((count, 2), np.int32), unit="note")


# ---------------------------------------------------------------- metrics and calibration

def test_metrics_match_scikit_learn_and_a_hand_count() -> None:
    found = fixed([0, 0, 1, 1, 2, 2], [[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .6, .3], [.7, .2, .1],
                                      [.1, .1, .8]])
    measured = metrics(found)
    gold, predicted = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2]
    assert measured.accuracy == pytest.approx(4 / 6) == accuracy_score(gold, predicted)
    # By hand: class a P 1/2 R 1/2, b P 2/3 R 1, c P 1 R 1/2 -> F1 1/2, 4/5, 2/3.
    np.testing.assert_allclose(measured.f1, [1 / 2, 4 / 5, 2 / 3])
    assert measured.macro_f1 == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3) == \
        pytest.approx(f1_score(gold, predicted, average="macro"))
    precision, recall, _f1, support = precision_recall_fscore_support(gold, predicted)
    np.testing.assert_allclose(measured.precision, precision)
    np.testing.assert_allclose(measured.recall, recall)
    assert measured.support.tolist() == support.tolist() == [2, 2, 2]
    assert measured.confusion.tolist() == confusion_matrix(gold, predicted).tolist() == [[1, 1, 0], [0, 2, 0],
                                                                                         [1, 0, 1]]


def test_macro_f1_of_many_resamples_at_once_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 4, size=(50, 40))
    predicted = np.where(rng.random((50, 40)) < 0.6, gold, rng.integers(0, 4, size=(50, 40)))
    predicted[0] = gold[0]  # a perfect sample
    gold[1], predicted[1] = 2, 2  # one class only
    batch = macro_f1_along(gold, predicted, 4)
    expected = [f1_score(g, p, average="macro") for g, p in zip(gold, predicted)]
    np.testing.assert_allclose(batch, expected)


def test_reliability_bins_and_expected_calibration_error_by_hand() -> None:
    confidence = np.array([0.95, 0.85, 0.55, 0.65, 0.6, 0.0])
    correct = np.array([True, False, True, True, False, False])
    found = reliability(confidence, correct, bins=10)
    # Bins are (low, high]: 0.6 falls in (0.5, 0.6] with 0.55; 0.0 in the first bin.
    assert found.counts.tolist() == [1, 0, 0, 0, 0, 2, 1, 0, 1, 1]
    assert found.accuracy[5] == pytest.approx(0.5) and found.confidence[5] == pytest.approx(0.575)
    expected = (abs(0 - 0.0) + 2 * abs(0.5 - 0.575) + abs(1 - 0.65) + abs(0 - 0.85) + abs(1 - 0.95)) / 6
    assert found.ece == pytest.approx(expected)
    assert np.isnan(found.accuracy[1])


def test_temperature_scaling_fitted_on_one_split_and_checked_on_the_other() -> None:
    rng = np.random.default_rng(0)
    count = 400
    gold = rng.integers(0, 2, count)
    right = rng.random(count) < 0.7  # right 70% of the time...
    predicted = np.where(right, gold, 1 - gold)
    confident = np.full((count, 2), 0.02, dtype=np.float32)  # ... but 98% sure every time
    confident[np.arange(count), predicted] = 0.98
    found = fixed(gold.tolist(), confident.tolist(), classes=("no", "yes"))
    result = calibrate(found, fit_share=0.5, seed=1)
    assert set(result.fit_rows.tolist()).isdisjoint(result.check_rows.tolist())
    assert len(result.fit_rows) + len(result.check_rows) == count
    assert result.temperature > 1.5  # an overconfident model is softened
    assert result.after.ece < result.before.ece and result.nll_after < result.nll_before
    temperature = fit_temperature(confident[result.fit_rows], gold[result.fit_rows])
    assert temperature == pytest.approx(result.temperature)
    # The best temperature makes the mean confidence on the fit rows about their accuracy.
    softened = scaled(confident[result.fit_rows], temperature).max(-1).mean()
    assert softened == pytest.approx(right[result.fit_rows].mean(), abs=0.03)


# ---------------------------------------------------------------- slices

def test_slices_sorted_by_gap_with_intervals_around_the_metric() -> None:
    rng = np.random.default_rng(1)
    count = 120
    gold = rng.integers(0, 2, count)
    style = np.where(np.arange(count) % 3 == 0, "upper case", "prose")
    predicted = np.where(style == "upper case", 1 - gold, gold)  # every upper-case note wrong, all others right
    probs = np.eye(2, dtype=np.float32)[predicted] * 0.8 + 0.1
    found = fixed(gold.tolist(), probs.tolist(), classes=("neg", "pos"))
    features = pd.DataFrame({"style": style, "source": ["a"] * count})
    table = slice_table(found, features, metric="accuracy", resamples=300).table
    worst = table.iloc[0]
    assert (worst["slice by"], worst["value"], worst["size"], worst["metric"]) == ("style", "upper case", 40, 0.0)
    assert worst["gap"] == pytest.approx(-2 / 3)
    assert list(table["gap"]) == sorted(table["gap"])
    assert (table["low"] <= table["metric"] + 1e-9).all() and (table["metric"] <= table["high"] + 1e-9).all()
    whole = table[table["slice by"] == "source"].iloc[0]
    assert whole["low"] < whole["metric"] < whole["high"]  # a mixed slice has a real interval
    member = in_slice(found, features, "style", "prose")
    assert member.sum() == 80 and found.subset(member).correct.all()
    f1 = slice_table(found, features, metric="macro-F1", resamples=200)
    assert f1.overall == pytest.approx(f1_score(gold, predicted, average="macro"))


# ---------------------------------------------------------------- clinical features

def test_negation_and_uncertainty_cues_on_written_sentences() -> None:
    sentences = ["Patient denies chest pain.", "Patient reports chest pain.", "No evidence of pneumonia.",
                 "Possible pneumonia in the right lower lobe.", "Mother had breast cancer.",
                 "IMPRESSION: NO PNEUMOTHORAX.", "Pleural effusion cannot be excluded.", "The rash is resolving."]
    negated, uncertain = clinical_features.cues(sentences)
    assert negated.tolist() == [True, False, True, False, False, True, False, False]
    assert uncertain.tolist() == [False, False, False, True, False, False, True, False]


def test_text_features_section_placeholders_abbreviations_case_and_length() -> None:
    texts = ["IMPRESSION: NO ACUTE CARDIOPULMONARY PROCESS.", "Seen by Dr. [**Last Name 123**] for SOB.",
             "REVIEW OF SYSTEMS: Negative for fever.", "He is comfortable."]
    table = clinical_features.text_features(texts)
    assert table[clinical_features.SECTION].tolist() == ["IMPRESSION", "(none)", "REVIEW OF SYSTEMS", "(none)"]
    assert table[clinical_features.PLACEHOLDERS].tolist() == ["no", "yes", "no", "no"]
    assert table[clinical_features.ABBREVIATION].tolist() == ["no", "yes", "no", "no"]
    assert table[clinical_features.UPPER].tolist() == ["yes", "no", "no", "no"]
    lengths = clinical_features.length_features(np.array([3, 16, 17, 600]), np.array([1, 1, 2, 4]))
    assert lengths[clinical_features.PIECES].tolist() == ["≤16", "≤16", "17–32", ">510"]
    assert lengths[clinical_features.WINDOWS].tolist() == ["1", "1", "2", "3+"]


# ---------------------------------------------------------------- behaviour-test edits

@pytest.mark.parametrize(("test", "before", "after"), [
    ("negation flip", "Patient denies chest pain.", "Patient reports chest pain."),
    ("negation flip", "No fever.", "Fever."),
    ("negation flip", "Negative for fever and chills.", "Positive for fever and chills."),
    ("negation flip", "Patient reports a cough.", "Patient denies a cough."),
    ("negation flip", "IMPRESSION: NO PNEUMOTHORAX.", "IMPRESSION: PNEUMOTHORAX."),
    ("uncertainty", "Patient reports chest pain.", "Patient reports possible chest pain."),
    ("uncertainty", "Possible pneumonia.", "Pneumonia."),
    ("abbreviation ↔ expansion", "Pt c/o SOB x 3 days.", "Patient c/o SOB x 3 days."),
    ("abbreviation ↔ expansion", "He has shortness of breath.", "He has SOB."),
    ("de-id placeholder ↔ name or date", "Seen by Dr. [**Last Name 123**] on [**2101-3-4**].",
     "Seen by Dr. Smith on 03/04/2101."),
    ("de-id placeholder ↔ name or date", "Seen by Dr. Jones on 3/4/2101.",
     "Seen by Dr. [**Last Name 123**] on [**2101-3-4**]."),
    ("case change", "History of COPD.", "History of copd."),
    ("case change", "IMPRESSION: NO PNEUMOTHORAX.", "Impression: No pneumothorax."),
    ("number change", "Cough for 3 days, aspirin 81 mg on 03/04/2101.", "Cough for 4 days, aspirin 82 mg on 03/04/2101."),
])
def test_behaviour_edits_on_written_sentences(test: str, before: str, after: str) -> None:
    edit = behaviour.TESTS[test].edit(before)
    assert edit is not None and edit.apply(before) == after


def test_behaviour_edits_that_do_not_apply_and_scoring() -> None:
    assert behaviour.TESTS["de-id placeholder ↔ name or date"].edit("No fever.") is None
    assert behaviour.TESTS["number change"].edit("No fever.") is None
    test = behaviour.TESTS["negation flip"]
    texts = ["Patient denies chest pain.", "The weather.", "No fever."]
    applied = behaviour.edits(test, texts)
    assert [row for row, _edit in applied] == [0, 2]
    before = np.array([[0.9, 0.1], [0.5, 0.5], [0.8, 0.2]])  # rows 0 and 2 predicted class 0
    after = np.array([[0.2, 0.8], [0.7, 0.3]])  # the first flipped, the second not
    result = behaviour.compare(test, "change", applied, before, after, tested=3)
    assert result.changed.tolist() == [True, False] and result.failed.tolist() == [False, True]
    assert result.changed_share == 0.5 and result.failure_rate == 0.5
    np.testing.assert_allclose(result.after_prob, [0.2, 0.7])
    same = behaviour.compare(test, "same", applied, before, after, tested=3)
    assert same.failed.tolist() == [True, False]


# ---------------------------------------------------------------- the collection and its bad inputs

def csv(text: str) -> bytes:
    return text.encode("utf-8")


def test_example_set_has_a_few_hundred_rows_with_metadata() -> None:
    example = example_set()
    assert len(example) >= 300 and example.label_names == ("affirmed", "negated")
    assert {"note_type", "section", "style", "certainty", "experiencer"} <= set(example.metadata.columns)
    styles = set(example.metadata["style"])
    assert {"abbreviated", "upper case", "de-identified", "prose"} <= styles
    assert set(example.metadata["experiencer"]) == {"patient", "family"}
    assert "uncertain" in set(example.metadata["certainty"])


def test_bad_inputs_give_clear_messages() -> None:
    with pytest.raises(DataFileError, match="not UTF-8"):
        read_evaluation_table("text,label\ncaf\xe9,pos\n".encode("latin-1"), name="notes.csv")
    table = read_evaluation_table(csv("text,label,ward\nPatient denies pain.,neg,A\n,pos,B\nNo fever.,neg,B\n"
                                      "Cough.,,A\n"), name="notes.csv")
    with pytest.raises(DataFileError, match="no column named 'diagnosis'"):
        labelled_from_table(table, text_column="text", label_column="diagnosis", name="notes.csv")
    with pytest.raises(DataFileError, match="different columns"):
        labelled_from_table(table, text_column="text", label_column="text", name="notes.csv")
    found = labelled_from_table(table, text_column="text", label_column="label", name="notes.csv")
    assert found.texts == ("Patient denies pain.", "No fever.") and found.labels == ("neg", "neg")
    assert found.metadata["ward"].tolist() == ["A", "B"]
    assert any("empty" in warning for warning in found.warnings)
    assert any("without a value in 'label'" in warning for warning in found.warnings)
    with pytest.raises(DataFileError, match="empty"):
        read_evaluation_table(b"", name="notes.csv")


def test_labels_not_in_the_head_are_mapped_or_refused() -> None:
    assert guess_mapping(["Negative", "POS", "maybe"], ("negated", "affirmed")) == \
        {"Negative": "negated", "POS": "affirmed", "maybe": LEAVE_OUT}
    assert guess_mapping(["neg", "pos"], ("LABEL_0", "LABEL_1")) == {"neg": LEAVE_OUT, "pos": LEAVE_OUT}
    assert unknown_labels(["NEG", "POS", "POS"], ("NEG", "OTHER")) == ("POS",)
    predictions = _fake_predictions(("NEG", "POS"), [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    with pytest.raises(LabelMismatchError, match="'negated'.*NEG"):
        outcomes(predictions, ["negated", "affirmed", "negated"])
    mapped = outcomes(predictions, ["negated", "affirmed", "negated"], {"negated": "NEG", "affirmed": "POS"})
    assert mapped.gold.tolist() == [0, 1, 0] and mapped.correct.tolist() == [True, True, True]
    partly = outcomes(predictions, ["negated", "affirmed", "negated"], {"negated": "NEG", "affirmed": LEAVE_OUT})
    assert partly.rows.tolist() == [0, 2] and partly.left_out == 1
    assert any("same label" in warning for warning in partly.warnings)  # one class left
    with pytest.raises(LabelMismatchError, match="No row is left"):
        outcomes(predictions, ["x", "x", "x"], {"x": LEAVE_OUT})


def test_a_collection_of_one_class_is_evaluated_with_a_message() -> None:
    predictions = _fake_predictions(("NEG", "POS"), [[0.9, 0.1], [0.3, 0.7]])
    found = outcomes(predictions, ["NEG", "NEG"])
    assert found.correct.tolist() == [True, False]
    assert any("same label ('NEG')" in warning for warning in found.warnings)


def test_a_200000_row_upload_is_sampled_with_a_message() -> None:
    rows = ["text,label"] + [f"Patient denies pain number {i}.,negated" for i in range(100_000)] + \
        [f"Patient reports pain number {i}.,affirmed" for i in range(100_000)]  # sorted by label
    data = ("\n".join(rows) + "\n").encode("utf-8")
    assert len(data) < 60 * 1024 * 1024  # within the upload limit
    table = read_evaluation_table(data, name="big.csv")
    found = labelled_from_table(table, text_column="text", label_column="label", name="big.csv")
    assert len(found) == MAX_EVALUATION_ROWS and found.sampled_from == 200_000
    assert set(found.labels) == {"negated", "affirmed"}  # not the first rows of a sorted file
    assert any("random sample of 20,000" in warning for warning in found.warnings)
    again = labelled_from_table(table, text_column="text", label_column="label", name="big.csv")
    assert again.texts == found.texts  # the same sample every time


def _fake_predictions(classes, probs):
    from cbert_core.evaluation.predictions import CollectionPredictions

    count = len(probs)
    return CollectionPredictions(mode="head", unit="note", classes=classes, descriptions=(),
                                 probs=np.asarray(probs, np.float32), unit_rows=np.arange(count, dtype=np.int32),
                                 unit_spans=np.zeros((count, 2), np.int32), n_tokens=np.ones(count, np.int64),
                                 n_windows=np.ones(count, np.int64), seconds=0.0, engine="local")


# ---------------------------------------------------------------- the whole collection through the model

TEXTS = ("Patient denies chest pain.", "Patient reports fever and cough.", CLINICAL_NOTE, "No evidence of pneumonia.")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = write_bert(tmp_path_factory.mktemp("clf") / "m", head="sequence-classification",
                        labels=("negated", "affirmed"))
    return str(folder), load_model(str(folder))


def test_collection_predictions_through_the_engine_match_the_head(classifier) -> None:
    spec, loaded = classifier
    messages = []
    found = predict_collection(loaded, TEXTS, model_spec=spec, chunk_size=2,
                               progress=lambda fraction, message: messages.append((fraction, message)))
    plans = plan_notes(loaded, TEXTS, RunOptions(max_chars=2**62))
    assert found.classes == ("negated", "affirmed") and found.unit == "note"
    for plan, probs in zip(plans, found.probs):
        np.testing.assert_allclose(probs, classify(loaded, plan).probs, atol=2e-5)
    assert found.n_windows.tolist() == [len(plan.windows) for plan in plans] and found.n_windows[2] > 1
    assert messages[-1][0] == 1.0 and "4 of 4 notes" in messages[-1][1]
    assert any("left" in message or "almost done" in message for _fraction, message in messages[1:])
    assert planned_passes(loaded, TEXTS).rows == sum(len(plan.windows) for plan in plans)


def test_zero_shot_and_token_level_predictions(classifier, tiny, tmp_path) -> None:
    _spec, loaded = classifier
    classes, descriptions = ("negated", "affirmed"), ("no chest pain", "chest pain")
    zero_shot = predict_collection(loaded, TEXTS, model_spec="", mode="zero-shot", classes=classes,
                                   descriptions=descriptions)
    plans = plan_notes(loaded, TEXTS, RunOptions(max_chars=2**62))
    for plan, probs in zip(plans, zero_shot.probs):
        np.testing.assert_allclose(probs, embedding_similarity(loaded, plan, descriptions, per_sentence=False)
                                   .note_probs, atol=2e-4)
    with pytest.raises(TargetError, match="description for 'affirmed'"):
        predict_collection(loaded, TEXTS, model_spec="", mode="zero-shot", classes=classes, descriptions=("x", " "))
    with pytest.raises(WrongHeadError, match="no classification head"):
        predict_collection(tiny, TEXTS, model_spec="", mode="head")
    tagger = load_model(str(write_bert(tmp_path / "ner", head="token-classification", labels=("O", "B-X"))))
    words = predict_collection(tagger, TEXTS[:2], model_spec="")
    assert words.unit == "word" and words.unit_rows.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    tags = ["O O B-X B-X", "O O B-X O O"]
    found = outcomes(words, tags)
    assert len(found) == 9 and found.gold.tolist() == [0, 0, 1, 1, 0, 0, 1, 0, 0]
    misfit = outcomes(words, ["O O", "O O B-X O O"])
    assert len(misfit) == 5 and any("number of tags" in warning for warning in misfit.warnings)


# ---------------------------------------------------------------- what the Evaluate page shows and opens

def test_behaviour_tests_planned_over_rows_edited_then_scored_test_by_test() -> None:
    texts = ["Patient denies chest pain.", "Pt has SOB.", "No fever.", "History of COPD.", "Denies cough."]
    planned = behaviour.plan_edits(["negation flip", "case change"], texts, rows=(0, 1, 2, 3))
    assert [name for name, _applied in planned] == ["negation flip", "case change"]
    assert [row for row, _edit in planned[0][1]] == [0, 2]  # row 4 is outside the rows asked for
    edited = behaviour.edited_texts(planned, texts)
    assert edited[:2] == ("Patient reports chest pain.", "Fever.")
    assert len(edited) == sum(len(applied) for _name, applied in planned)
    limited = behaviour.plan_edits(["negation flip"], texts, limit=2)
    assert [row for row, _edit in limited[0][1]] == [0, 4]  # evenly spread: first and last of 0, 2, 4
    before = np.tile([[0.9, 0.1]], (len(texts), 1))
    after = np.tile([[0.2, 0.8]], (len(edited), 1))  # every edited note flips to class 1
    results = behaviour.score_all(planned, {"case change": "same"}, before, after, tested=4)
    assert [result.name for result in results] == ["negation flip", "case change"]
    assert results[0].failure_rate == 0.0  # a negation flip should change the prediction: it did
    assert results[1].failure_rate == 1.0  # a case change should not: it did
    assert results[1].rows.tolist() == [row for row, _edit in planned[1][1]]


@pytest.mark.parametrize("text, edit, expected", [
    ("Patient denies chest pain.", behaviour.negation_flip("Patient denies chest pain."), (8, 14, "reports")),
    ("No fever.", behaviour.negation_flip("No fever."), None),  # "No " -> "": no word put in its place
    ("Patient denies chest pain.", behaviour.Edit(spans=((8, 20, "reports chest"),)), (8, 14, "reports")),
    ("Pt has SOB.", behaviour.Edit(spans=((7, 10, "shortness of breath"),)), (7, 10, "shortness of breath")),
    ("Pt has SOB.", behaviour.Edit(spans=((0, 2, "Patient"), (7, 10, "shortness of breath"))), None),
])
def test_an_edit_as_the_one_word_the_counterfactual_replaces(text: str, edit: behaviour.Edit, expected) -> None:
    found = edit.one_word(text)
    assert found == expected
    if found is not None:
        start, end, replacement = found
        assert text[:start] + replacement + text[end:] == edit.apply(text)


def test_errors_table_lists_only_mistakes_most_confident_first_within_a_slice() -> None:
    from cbert_core.evaluation.slices import MAX_VALUES, slice_options
    from cbert_core.evaluation.tables import behaviour_summary, errors_table, units_table

    found = fixed([0, 0, 1, 1, 2, 2], [[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .6, .3], [.9, .05, .05],
                                      [.3, .3, .4]])
    ids = [f"n{i}" for i in range(6)]
    texts = [f"note {i}" for i in range(6)]
    features = pd.DataFrame({"ward": ["A", "A", "B", "B", "B", "A"], "text id": ids})
    many = pd.DataFrame({"serial": [str(i) for i in range(MAX_VALUES + 1)]})
    table = errors_table(found, ids, texts, features)
    assert table["id"].tolist() == ["n4", "n1"]  # misclassified: n1 (0.7) and n4 (0.9), surest first
    assert (table["gold"] != table["predicted"]).all() and "right" not in table.columns
    ward_a = in_slice(found, features, "ward", "A")
    assert errors_table(found, ids, texts, features, ward_a)["id"].tolist() == ["n1"]
    every = units_table(found, ids, texts, features, with_probabilities=True)
    assert every["right"].tolist() == found.correct.tolist()
    np.testing.assert_allclose(every[["p(a)", "p(b)", "p(c)"]].to_numpy(), found.probs)
    options = slice_options(features)
    assert ("ward", "A") in options and ("ward", "B") in options
    assert slice_options(many) == []  # too many values to offer as slices
    applied = behaviour.edits(behaviour.TESTS["negation flip"], ["No fever.", "Cough."])
    result = behaviour.compare(behaviour.TESTS["negation flip"], "change", applied, np.array([[.9, .1], [.5, .5]]),
                               np.array([[.8, .2]]), tested=2)
    summary = behaviour_summary([result])
    assert summary.to_dict("records") == [{"test": "negation flip", "expect": "a change", "notes tried": 2,
                                          "edited": 1, "changed": 0.0, "failed": 1.0}]


def test_tables_export_as_parquet_that_reads_back() -> None:
    import io

    from cbert_core.views.export import table_to_parquet_bytes

    table = pd.DataFrame({"id": ["a", "b"], "mixed": [1, "two"], 3: [0.5, 0.25]})
    back = pd.read_parquet(io.BytesIO(table_to_parquet_bytes(table)))
    assert back.columns.tolist() == ["id", "mixed", "3"]
    assert back["mixed"].tolist() == ["1", "two"] and back["3"].tolist() == [0.5, 0.25]
