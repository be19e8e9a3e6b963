"""Hostile input: every case gives a clear typed message or a correct result, and views show text as text.

Browser-level cases (uploads, a 1 MB paste, markup in every view) are in test_browser.py and
test_hostile_browser.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from cbert_core.errors import CbertError, EmptyNoteError, NoteTooLongError, ResourceLimitError
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.run.trace import trace, trace_budget
from cbert_core.views.labels import position_labels
from cbert_core.views.text_html import pieces_html, segments_html

ONE_MB = "Patient denies chest pain. " * 40_000  # 1.08 MB

# name -> (note, expected error type or None, extra trace arguments)
CASES: dict[str, tuple[str, type[CbertError] | None, dict]] = {
    "empty": ("", EmptyNoteError, {}),
    "whitespace": (" \t  ", EmptyNoteError, {}),
    "newlines only": ("\n\n\r\n", EmptyNoteError, {}),
    "zero-width only": ("\u200b\u200c\u200d\ufeff", EmptyNoteError, {}),
    "control only": ("\x00\x01\x02\x1b", EmptyNoteError, {}),
    "1 MB note": (ONE_MB, NoteTooLongError, {}),
    "1 MB note, limit raised": (ONE_MB, ResourceLimitError, {"max_chars": 2_000_000}),
    "control characters": ("Patient\x00 denies\x07 chest\x1b pain.", None, {}),
    "zero-width characters": ("Pa\u200btient de\u200cnies\u200d chest\ufeff pain.", None, {}),
    "bidi override": ("Patient \u202edenies\u202c chest pain \u2067x\u2069.", None, {}),
    "emoji": ("Patient 😀 denies 🫀 chest pain 👍🏽.", None, {}),
    "CJK": ("患者否认胸痛。 Patient denies chest pain.", None, {}),
    "right-to-left": ("المريض ينفي ألم الصدر. Patient denies.", None, {}),
    "punctuation only": ("?!.,;:()[]{}--//..", None, {}),
    "10,000-character word": ("x" * 10_000, None, {}),
    "literal [CLS]": ("[CLS] Patient denies chest pain.", None, {}),
    "literal [SEP]": ("Patient [SEP] denies [SEP] pain.", None, {}),
    "literal [UNK] and [PAD]": ("Patient [UNK] denies [PAD] pain.", None, {}),
    "many [MASK]": ("[MASK] " * 100 + "pain.", None, {}),
    "only [MASK]": ("[MASK]", None, {}),
    "script tag": ("<script>alert(1)</script> Patient denies.", None, {}),
    "img onerror": ("<img src=x onerror=alert(2)> Patient denies.", None, {}),
    "closing script inside": ("Patient </script><script>alert(3)</script> denies.", None, {}),
    "HTML entities": ("Patient &lt;b&gt; denies &amp; reports.", None, {}),
    "markdown and links": ("**Patient** [click](http://evil.example) `code` # heading", None, {}),
    "lone surrogate": ("Patient \ud800 denies chest pain.", None, {}),
    "combining marks": ("Pa\u0301tient de\u0308nies cafe\u0301.", None, {}),
    "CRLF and tabs": ("HISTORY:\r\n\tPatient denies.\r\n\tNo fever.\r\n", None, {}),
    "line and paragraph separators": ("Patient denies.\u2028No fever.\u2029NEL\x85here.", None, {}),
    "one long unbroken line": ("a/b-c.d,e;" * 800, None, {}),
    # a trace holds queries and keys, not every attention weight: 30,000 pieces fit in its memory, 120,000 do not
    "120,000 one-character pieces": ("a/b-c.d,e;" * 12_000, ResourceLimitError, {"max_chars": 200_000}),
    "thousands of tiny sentences": ("a. " * 3000, None, {}),
    "de-identification only": ("[**First Name8 (NamePattern2) 123**] [**Hospital 1**]", None, {}),
}


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_note(bundled, name: str) -> None:
    text, error, options = CASES[name]
    if error is not None:
        with pytest.raises(error) as raised:
            trace(bundled, plan_note(bundled, text, RunOptions(**options), budget=trace_budget(bundled)))
        message = str(raised.value)
        assert len(message) > 30 and "Traceback" not in message  # a sentence a clinician can act on
        return
    result = trace(bundled, plan_note(bundled, text, RunOptions(**options), budget=trace_budget(bundled)))
    content = result.offsets[1:-1]
    assert len(content) > 0
    assert ((content[:, 0] >= 0) & (content[:, 1] <= len(text)) & (content[:, 0] < content[:, 1])).all()
    for attention in result.attentions:
        assert np.abs(attention.astype(np.float32).sum(-1) - 1).max() < 2e-3
    # Whatever the note holds, views show it as text: no markup from the note survives.
    pages = [
        pieces_html(text, content, result.word_ids[1:-1]),
        segments_html(text, [(s.title, s.start, s.body_start) for s in result.segmentation.sections],
                      [(s.start, s.end) for s in result.segmentation.sentences]),
        " ".join(position_labels(result.tokens, range(len(result.tokens)))),
    ]
    for page in pages:
        assert not re.search(r"<(script|img|/script)", page, flags=re.IGNORECASE)
        assert "\u202e" not in page  # a bidi override cannot reorder what follows


def test_the_server_keeps_serving_after_hostile_input(bundled) -> None:
    for text, error, options in CASES.values():
        if error is None:
            continue
        with pytest.raises(CbertError):
            trace(bundled, plan_note(bundled, text, RunOptions(**options), budget=trace_budget(bundled)))
    result = trace(bundled, plan_note(bundled, "Patient denies chest pain."))
    assert result.tokens[1:3] == ("patient", "denies")
