"""Clinical segmentation, offsets and windows."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from cbert_core.errors import EmptyNoteError, NoteTooLongError
from cbert_core.text.segment import segment
from cbert_core.text.tokens import check_note, tokenize_note
from cbert_core.text.windows import owner_windows, plan_windows
from cbert_core.text.words import count_words
from notes import CLINICAL_NOTE, HOSTILE_NOTES


def sentences_of(text: str) -> list[str]:
    return [text[s.start:s.end] for s in segment(text).sentences]


def test_sections_all_caps_and_title_case() -> None:
    result = segment(CLINICAL_NOTE)
    titles = [section.title for section in result.sections]
    assert titles == ["HISTORY OF PRESENT ILLNESS", "MEDICATIONS", "Assessment/Plan"]
    first = result.sections[0]
    assert CLINICAL_NOTE[first.start:first.body_start] == "HISTORY OF PRESENT ILLNESS:"


def test_inline_mtsamples_headers() -> None:
    text = "PREOPERATIVE DIAGNOSIS: ,Cataract, right eye.  POSTOPERATIVE DIAGNOSIS: ,Same.  PROCEDURE: ,Phaco."
    titles = [section.title for section in segment(text).sections]
    assert titles == ["PREOPERATIVE DIAGNOSIS", "POSTOPERATIVE DIAGNOSIS", "PROCEDURE"]


def test_vitals_and_short_labels_are_not_headers() -> None:
    assert segment("BP: 120/80. HR: 72. Time 10:30 today.").sections[0].title == ""


def test_sentences_respect_clinical_abbreviations() -> None:
    got = sentences_of(CLINICAL_NOTE)
    assert "He takes metoprolol 25 mg b.i.d. and aspirin 81 mg q.d. for CAD." in got
    assert "The pt is a 67 y/o M seen by Dr. Smith on [**2101-3-4**]." in got
    assert "BP 120/80, HR 72." in got
    assert "1. Lisinopril 10 mg p.o. daily." in got
    assert "2. Atorvastatin 40 mg q.h.s." in got


def test_abbreviation_ending_a_sentence_still_splits() -> None:
    got = sentences_of("Take one tablet p.o. b.i.d. He will return in two weeks.")
    assert got == ["Take one tablet p.o. b.i.d.", "He will return in two weeks."]


def test_deidentification_placeholders_kept_whole() -> None:
    text = "Seen at [**Hospital 1. St. Mary's**]. Discharged to [**Location (un) 86**] on [**3-4**]."
    result = segment(text)
    assert [text[a:b] for a, b in result.placeholders] == [
        "[**Hospital 1. St. Mary's**]", "[**Location (un) 86**]", "[**3-4**]"]
    assert sentences_of(text) == ["Seen at [**Hospital 1. St. Mary's**].",
                                  "Discharged to [**Location (un) 86**] on [**3-4**]."]


def test_sentence_and_section_lookup() -> None:
    result = segment(CLINICAL_NOTE)
    position = CLINICAL_NOTE.index("Atorvastatin")
    assert result.sections[result.section_at(position)].title == "MEDICATIONS"
    sentence = result.sentences[result.sentence_at(position)]
    assert CLINICAL_NOTE[sentence.start:sentence.end].startswith("2. Atorvastatin")


@pytest.mark.parametrize("text", ["", "   \n\t ", "\u200b\u200b \ufeff"])
def test_empty_notes_are_refused(text: str) -> None:
    with pytest.raises(EmptyNoteError, match="empty"):
        check_note(text)


def test_long_notes_are_refused_with_the_limit() -> None:
    with pytest.raises(NoteTooLongError, match="limit is 1,000"):
        check_note("a" * 1001, max_chars=1000)
    check_note("a" * 1000, max_chars=1000)


def test_offsets_point_at_the_original_characters(tiny) -> None:
    text = "Patient denies COPD café 😀 and [CLS] here."
    tokens = tokenize_note(tiny.tokenizer(True), text)
    for token, (start, end) in zip(tokens.tokens, tokens.offsets):
        piece = text[start:end]
        if token == "[UNK]":
            assert piece == "😀"
        else:  # lower-casing also strips accents: "é" is read as "e"
            plain = "".join(c for c in unicodedata.normalize("NFD", piece.lower()) if not unicodedata.combining(c))
            assert token.removeprefix("##") == plain


@pytest.mark.parametrize("name", sorted(HOSTILE_NOTES))
def test_hostile_text_tokenizes_with_valid_offsets(tiny, bundled, name: str) -> None:
    text = HOSTILE_NOTES[name]
    for loaded in (tiny, bundled):
        tokens = tokenize_note(loaded.tokenizer(), text)
        assert len(tokens) > 0
        assert (tokens.offsets[:, 0] < tokens.offsets[:, 1]).all()
        assert (tokens.offsets[:, 1] <= len(text)).all()
        assert (np.diff(tokens.offsets[:, 0]) >= 0).all()


def test_literal_special_tokens_are_text_but_mask_is_a_mask(bundled) -> None:
    tokenizer = bundled.tokenizer()
    tokens = tokenize_note(tokenizer, "[CLS] a [SEP] b [UNK] c [MASK] d")
    assert tokenizer.cls_token_id not in tokens.ids.tolist()
    assert tokenizer.sep_token_id not in tokens.ids.tolist()
    assert tokenizer.unk_token_id not in tokens.ids.tolist()
    assert tokens.ids.tolist().count(tokenizer.mask_token_id) == 1
    mask_index = tokens.ids.tolist().index(tokenizer.mask_token_id)
    start, end = tokens.offsets[mask_index]
    assert "[CLS] a [SEP] b [UNK] c [MASK] d"[start:end] == "[MASK]"


def test_word_alignment(bundled) -> None:
    text = "exacerbation of COPD"
    tokens = tokenize_note(bundled.tokenizer(), text)
    words = [text[a:b] for a, b in tokens.word_spans]
    assert words == ["exacerbation", "of", "COPD"]
    by_word = {}
    for word, token in zip(tokens.word_ids, tokens.tokens):
        by_word.setdefault(int(word), []).append(token)
    assert "".join(t.removeprefix("##") for t in by_word[0]) == "exacerbation"
    assert tokens.piece_numbers.tolist()[: len(by_word[0])] == list(range(len(by_word[0])))


def test_windows_cover_every_token_with_overlap() -> None:
    boundaries = list(range(0, 5000, 17))
    windows = plan_windows(5000, 510, overlap=32, boundaries=boundaries)
    assert windows[0].start == 0 and windows[-1].stop == 5000
    for left, right in zip(windows, windows[1:]):
        assert right.start <= left.stop - 32  # overlap at least as asked
        assert right.start > left.start
    assert all(w.size <= 510 for w in windows)
    # Ends snap to sentence starts where one is near.
    assert all(w.stop in boundaries for w in windows[:-1])
    owner = owner_windows(windows, 5000)
    assert owner[0] == 0 and owner[-1] == len(windows) - 1
    assert set(np.unique(owner)) == set(range(len(windows)))


def test_short_note_is_one_window() -> None:
    assert plan_windows(100, 510) == plan_windows(100, 510, overlap=64)
    assert len(plan_windows(510, 510)) == 1 and len(plan_windows(511, 510)) == 2


@pytest.mark.parametrize(("text", "words"), [
    # Seen on 08/27/2007 INR 2.0 (5) metoprolol 25 mg b.i.d. and (10) 95 O2 s/p PCI (14)
    ("Seen on 08/27/2007 -- INR 2.0, metoprolol 25 mg b.i.d. and 95% O2 (s/p PCI).", 14),
    # HISTORY OF PRESENT ILLNESS (4) The patient is well (8) BP 120/80 at 10:30 (12)
    ("HISTORY OF PRESENT ILLNESS:  ,The patient is well.,BP 120/80 at 10:30.", 12),
    ("?!.,;:()[]{}--//.. ## ___", 0),
    ("Patient denies chest pain.", 4),
])
def test_words_are_counted_as_a_reader_would(text: str, words: int) -> None:
    assert count_words(text) == words
