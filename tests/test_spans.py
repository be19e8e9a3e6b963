"""Labelled spans: checked against their text, aligned to word pieces as BIO tags and back, and read from files.

The tiny model's tokenizer (tests/tiny_models.py) lower-cases and splits
"COPD exacerbation, patient coughed daily." into
cop ##d | exacerbation | , | patient | cough ##ed | daily | .   (words separated by |)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbert_core.corpus.span_files import read_span_file
from cbert_core.errors import DataFileError
from cbert_core.text.spans import IGNORED, Span, SpanDataset, SpanExample, align_spans, check_spans, example_dataset
from cbert_core.text.tokens import tokenize_note

TEXT = "COPD exacerbation, patient coughed daily."
TAGS = ("O", "B-affirmed", "I-affirmed", "B-negated", "I-negated")
TAG_IDS = {name: index for index, name in enumerate(TAGS)}


def span(text: str, label: str = "affirmed", start_at: int = 0) -> Span:
    start = TEXT.index(text, start_at)
    return Span(start=start, end=start + len(text), label=label)


def named(tags: np.ndarray) -> list[str]:
    return ["-" if tag == IGNORED else TAGS[tag] for tag in tags]


@pytest.fixture(scope="module")
def pieces(tiny):
    tokens = tokenize_note(tiny.tokenizer(), TEXT)
    assert tokens.tokens == ("cop", "##d", "exacerbation", ",", "patient", "cough", "##ed", "daily", ".")
    return tokens


def test_whole_words_are_tagged_begin_inside_outside_in_both_modes(pieces) -> None:
    spans = (span("COPD exacerbation"), span("coughed", "negated"))
    every = align_spans(pieces, spans, TAG_IDS, all_pieces=True)
    assert named(every.tags) == ["B-affirmed", "I-affirmed", "I-affirmed", "O", "O", "B-negated", "I-negated", "O",
                                 "O"]
    assert every.widened == 0
    first = align_spans(pieces, spans, TAG_IDS, all_pieces=False)
    # One unit per word, on its first piece; the other pieces are left to the loss's ignore index.
    assert named(first.tags) == ["B-affirmed", "-", "I-affirmed", "O", "O", "B-negated", "-", "O", "O"]
    assert first.units.tolist() == [0, 2, 3, 4, 5, 7, 8] and first.widened == 0
    # Back to characters: a span's first unit starts where it starts, its last unit ends where it ends.
    for aligned in (every, first):
        for found, label in zip(spans, ("affirmed", "negated")):
            units = np.flatnonzero(np.isin(aligned.unit_tags(), [TAG_IDS[f"B-{label}"], TAG_IDS[f"I-{label}"]]))
            assert (aligned.unit_spans[units[0], 0], aligned.unit_spans[units[-1], 1]) == (found.start, found.end)


def test_a_span_ending_inside_a_word_keeps_its_piece_or_widens_to_the_word(pieces) -> None:
    cough = span("cough", "negated")  # "cough" of "coughed": a piece boundary, inside the word
    every = align_spans(pieces, [cough], TAG_IDS, all_pieces=True)
    assert named(every.tags)[5:7] == ["B-negated", "O"] and every.widened == 0
    first = align_spans(pieces, [cough], TAG_IDS, all_pieces=False)
    assert named(first.tags)[5:7] == ["B-negated", "-"] and first.widened == 1
    assert first.unit_spans[list(first.units).index(5)].tolist() == [27, 34]  # the whole word "coughed"


def test_spans_starting_or_ending_inside_a_piece_are_widened_to_whole_pieces(pieces) -> None:
    inside = [Span(start=1, end=4, label="affirmed"),  # "OPD": starts inside the piece "cop"
              Span(start=5, end=11, label="negated")]  # "exacer": ends inside the piece "exacerbation"
    for all_pieces in (True, False):
        aligned = align_spans(pieces, inside, TAG_IDS, all_pieces=all_pieces)
        assert aligned.widened == 2
        assert named(aligned.tags)[0] == "B-affirmed" and named(aligned.tags)[2] == "B-negated"
    assert named(align_spans(pieces, inside, TAG_IDS, all_pieces=True).tags)[1] == "I-affirmed"


def test_two_spans_in_one_unit_are_refused_with_a_message(pieces) -> None:
    cop, d = Span(start=0, end=3, label="affirmed"), Span(start=3, end=4, label="negated")
    tags = align_spans(pieces, [cop, d], TAG_IDS, all_pieces=True).tags
    assert named(tags)[:2] == ["B-affirmed", "B-negated"]  # different pieces: fine piece by piece
    with pytest.raises(DataFileError, match="fall in the same word, which can carry only one label"):
        align_spans(pieces, [cop, d], TAG_IDS, all_pieces=False, where="Row 4")
    with pytest.raises(DataFileError, match="Row 4: .*same word piece"):
        align_spans(pieces, [Span(start=5, end=7, label="affirmed"), Span(start=11, end=17, label="negated")],
                    TAG_IDS, all_pieces=True, where="Row 4")
    with pytest.raises(DataFileError, match="covers no word"):
        align_spans(pieces, [Span(start=4, end=5, label="affirmed")], TAG_IDS, all_pieces=True)


def test_overlapping_empty_unlabelled_and_out_of_text_spans_are_refused() -> None:
    with pytest.raises(DataFileError, match=r"Row 2: the spans 'COPD' .* and 'PD exacer' .* overlap"):
        check_spans(TEXT, [Span(start=0, end=4, label="affirmed"), Span(start=2, end=11, label="negated")], "Row 2")
    with pytest.raises(DataFileError, match=r"Row 3: .* lies past the text, which has 41 characters"):
        check_spans(TEXT, [Span(start=35, end=60, label="affirmed")], "Row 3")
    with pytest.raises(DataFileError, match="Row 3: .* lies past the text"):
        check_spans(TEXT, [Span(start=-1, end=3, label="affirmed")], "Row 3")
    with pytest.raises(DataFileError, match="empty or reversed"):
        check_spans(TEXT, [Span(start=5, end=5, label="affirmed")], "Row 3")
    with pytest.raises(DataFileError, match="has no label"):
        check_spans(TEXT, [Span(start=0, end=4, label=" ")], "Row 3")
    touching = check_spans(TEXT, [span("exacerbation"), span("COPD")], "Row 1")  # sorted; touching is fine
    assert [s.start for s in touching] == [0, 5]


def test_the_built_in_example_spans_name_their_phrases() -> None:
    dataset = example_dataset()
    assert dataset.labels == ("affirmed", "negated", "possible")
    assert dataset.tag_names == ("O", "B-affirmed", "I-affirmed", "B-negated", "I-negated", "B-possible", "I-possible")
    first = dataset.examples[0]
    assert [first.text[s.start:s.end] for s in first.spans] == ["chest pain"]
    assert len(dataset) >= 40 and all(example.spans for example in dataset.examples)


def test_span_files_in_three_formats_read_the_same_spans() -> None:
    rows = [{"text": TEXT, "spans": [[0, 4, "affirmed"], {"start": 27, "end": 34, "label": "negated"}]},
            {"text": "Patient denies fever.", "spans": [[15, 20, "negated"]]}]
    jsonl = read_span_file("\n".join(json.dumps(row) for row in rows).encode(), "spans.jsonl")
    csv = "text,spans\n" + "\n".join(f'"{row["text"]}","{json.dumps(row["spans"]).replace(chr(34), 2 * chr(34))}"'
                                     for row in rows)
    from_csv = read_span_file(csv.encode(), "spans.csv")
    expected = SpanDataset(examples=(
        SpanExample(text=TEXT, spans=(Span(start=0, end=4, label="affirmed"), Span(start=27, end=34, label="negated"))),
        SpanExample(text="Patient denies fever.", spans=(Span(start=15, end=20, label="negated"),))))
    assert jsonl.examples == from_csv.examples == expected.examples
    conll = "-DOCSTART- O\n\nCOPD B-affirmed\nexacerbation I-affirmed\n, O\ncoughed B-negated\n\nno O\nfever B-negated\n"
    read = read_span_file(conll.encode(), "spans.conll")
    assert [example.text for example in read.examples] == ["COPD exacerbation , coughed", "no fever"]
    assert [[(e.text[s.start:s.end], s.label) for s in e.spans] for e in read.examples] == [
        [("COPD exacerbation", "affirmed"), ("coughed", "negated")], [("fever", "negated")]]


def test_bad_span_files_say_which_row_and_what_to_fix() -> None:
    past = json.dumps({"text": "No fever.", "spans": [[3, 30, "negated"]]})
    with pytest.raises(DataFileError, match="Row 1: .* lies past the text"):
        read_span_file(past.encode(), "spans.jsonl")
    overlapping = json.dumps({"text": "No fever today.", "spans": [[3, 8, "negated"], [6, 14, "affirmed"]]})
    with pytest.raises(DataFileError, match="Row 1: the spans 'fever' .* overlap"):
        read_span_file(overlapping.encode(), "spans.jsonl")
    with pytest.raises(DataFileError, match="needs a text column and a spans column"):
        read_span_file(b"text,label\nNo fever.,negated\n", "notes.csv")
    with pytest.raises(DataFileError, match="not valid JSON"):
        read_span_file(b'text,spans\nNo fever.,"[[3, 8, negated]]"\n', "spans.csv")
    with pytest.raises(DataFileError, match="Line 2 is not 'word tag'"):
        read_span_file(b"no O\nfever NEGATED\n", "spans.conll")
