"""The word tagger: it learns spans, scores them at the entity level, lists what it got wrong, stops keeping
what it did, and saves a checkpoint whose spans the Predictions page's labelling reads back."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cbert_core.analyses.labelling import token_labels
from cbert_core.errors import DataFileError
from cbert_core.model.loading import load_model
from cbert_core.run.plan import plan_note
from cbert_core.text.spans import IGNORED, SpanDataset, SpanExample, spans_of_phrases
from cbert_core.training.tagger import (
    ALL_LABELS,
    TaggerConfig,
    chunk_dataset,
    entity_scores,
    train_tagger,
    wrong_spans,
)

FINDINGS = ("fever", "cough", "pneumonia", "chest pain", "shortness of breath")
FAST = dict(epochs=12, batch_size=8, unfreeze_layers=2, lr_head=3e-2, lr_encoder=1e-2, weight_decay=0.0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_spans(count: int = 60, seed: int = 0) -> SpanDataset:
    """"patient denies X ." (X negated) or "patient reports X ." (X affirmed), with filler around."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        finding = FINDINGS[index % len(FINDINGS)]
        negated = (index // len(FINDINGS)) % 2 == 0
        text = f"{rng.choice(['the', 'alert'])} patient {'denies' if negated else 'reports'} {finding} daily ."
        examples.append(SpanExample(text=text, spans=spans_of_phrases(
            text, [(finding, "negated" if negated else "affirmed")], f"Row {index + 1}")))
    return SpanDataset(examples=tuple(examples))


@pytest.fixture(scope="module")
def trained(tiny):
    steps = []
    tagger = train_tagger(tiny, toy_spans(), config=TaggerConfig(**FAST), on_step=steps.append)
    return tagger, steps


def test_learns_negated_and_affirmed_spans_on_held_out_sentences(trained) -> None:
    tagger, steps = trained
    result = tagger.result
    assert not result.cancelled and result.steps_done == result.total_steps == len(steps)
    assert result.tag_names == ("O", "B-affirmed", "I-affirmed", "B-negated", "I-negated")
    assert len(result.validation_rows) == 12 and not set(result.validation_rows) & set(result.train_rows)
    overall = result.score(ALL_LABELS)
    assert overall.support == 12 and overall.f1 >= 0.9
    assert [score.label for score in result.scores] == ["affirmed", "negated", ALL_LABELS]
    assert result.losses[-5:].mean() < result.losses[:5].mean() / 3
    # Every held-out span missed or invented is listed, and the F1 agrees with the list.
    found_exactly = overall.support - sum(item.expected is not None for item in result.wrong)
    assert found_exactly == round(overall.recall * overall.support)


def test_wrong_spans_say_what_went_wrong() -> None:
    dataset = SpanDataset(examples=(SpanExample(text="no fever or chest pain today", spans=()),))

    class Units:  # one unit per word, as first-piece tagging gives
        unit_spans = np.array([[0, 2], [3, 8], [9, 11], [12, 17], [18, 22], [23, 28]], dtype=np.int32)

    expected = ["O", "B-negated", "O", "B-negated", "I-negated", "O"]
    predicted = ["O", "B-affirmed", "O", "O", "B-negated", "B-negated"]
    wrong = wrong_spans(0, Units, expected, predicted)
    text = dataset.examples[0].text
    described = [(item.kind, item.expected and text[slice(*item.expected)], item.predicted and
                  text[slice(*item.predicted)]) for item in wrong]
    assert described == [("wrong label", "fever", "fever"), ("wrong boundaries", "chest pain", "pain"),
                         ("not annotated", None, "today")]
    scores = {score.label: score for score in entity_scores(("affirmed", "negated"), [expected], [predicted])}
    # negated: 2 annotated, 2 found (pain, today), none exact; affirmed: 0 annotated, 1 found.
    assert (scores["negated"].precision, scores["negated"].recall, scores["negated"].support) == (0.0, 0.0, 2)
    assert scores[ALL_LABELS].precision == 0.0 and scores[ALL_LABELS].support == 2
    exact = {score.label: score for score in entity_scores(("negated",), [expected], [expected[:3] + ["B-negated",
                                                                                                     "I-negated", "O"]])}
    assert exact["negated"].f1 == 1.0


def test_long_texts_are_read_in_parts_cut_at_word_starts(tiny) -> None:
    text = "patient denies chest pain and shortness of breath , reports cough and fever daily ."
    dataset = SpanDataset(examples=(SpanExample(text=text, spans=spans_of_phrases(
        text, [("shortness of breath", "negated"), ("cough", "affirmed")], "Row 1")),))
    chunks = chunk_dataset(tiny, dataset, lowercase=True, max_length=8, all_pieces=True)  # 6 pieces a part
    ranges = chunks.ranges.tolist()
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(0 < stop - start <= 6 for start, stop in ranges)
    assert ranges[-1][1] == len(chunks.aligned[0].tags)
    names = ("O", "B-affirmed", "I-affirmed", "B-negated", "I-negated")
    for sequence, target in zip(chunks.sequences, chunks.targets):
        assert target[0] == target[-1] == IGNORED and len(sequence) == len(target)
        scored = [names[tag] for tag in target if tag != IGNORED]
        assert not scored[0].startswith("I-")  # a span cut in two starts again with B- in the next part
    whole = [names[tag] for tag in chunks.aligned[0].tags]
    assert whole.count("B-negated") == 1 and whole.count("I-negated") == 2  # the text itself keeps one span


def test_cancelling_keeps_the_steps_done_and_the_saved_tagger_still_loads(tiny, tmp_path) -> None:
    done: list[int] = []
    tagger = train_tagger(tiny, toy_spans(), config=TaggerConfig(**FAST), on_step=lambda r: done.append(r.step),
                          cancel=lambda: len(done) >= 2)
    result = tagger.result
    assert result.cancelled and result.steps_done == 2 and result.scores == () and result.wrong == ()
    loaded = load_model(str(tagger.save(tmp_path / "half-trained")))
    assert loaded.info.head_kind == "token-classification" and loaded.info.labels == result.tag_names


def test_saved_tagger_loads_and_its_spans_show_on_a_note(trained, tmp_path) -> None:
    tagger, _steps = trained
    folder = tagger.save(tmp_path / "tagger")
    loaded = load_model(str(folder))
    assert loaded.info.head_kind == "token-classification"
    for text, entity in (("the patient denies pneumonia daily .", ("pneumonia", "negated")),
                         ("alert patient reports chest pain daily .", ("chest pain", "affirmed"))):
        plan = plan_note(loaded, text)
        labelled = token_labels(loaded, plan)
        assert [(found.text, found.label) for found in labelled.entities] == [entity]
    with torch.inference_mode():  # the page's labels are the trained model's own
        expected = torch.softmax(tagger.model(input_ids=torch.from_numpy(plan.window_ids(plan.windows[0]))[None])
                                 .logits[0], -1).numpy()
    np.testing.assert_allclose(labelled.probs, expected, atol=1e-5)


def test_unusable_span_data_is_refused(tiny) -> None:
    with pytest.raises(DataFileError, match="at least two texts"):
        train_tagger(tiny, SpanDataset(examples=toy_spans(1).examples))
    with pytest.raises(DataFileError, match="no labelled span"):
        train_tagger(tiny, SpanDataset(examples=tuple(SpanExample(text=e.text, spans=()) for e in
                                                      toy_spans(4).examples)))
