"""Read labelled spans from a file: CSV/JSONL with a text and its character spans, or CoNLL-style BIO.

* CSV or JSONL (one record per text): a text column ("text", or the column that reads most like text) and
  a spans column ("spans", "entities", "annotations" or "labels") holding a list of spans, each
  ``{"start": 0, "end": 10, "label": "negated"}`` or ``[0, 10, "negated"]`` (in a CSV cell, that list as
  JSON). Offsets are characters of the text, 0-based, the end excluded.
* CoNLL-style BIO (``.conll``, ``.bio``, ``.iob``, or any text whose lines end in such tags): one token
  per line, its tag in the last column (``B-negated``, ``I-negated``, ``O``), a blank line between
  sentences; ``-DOCSTART-`` lines are skipped. Each sentence becomes its tokens joined by single spaces,
  and each tagged run a span of that text.

Every span is checked (:func:`cbert_core.text.spans.check_spans`): past the text, overlapping or unlabelled
spans are refused with the row that holds them. Note text is never logged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from cbert_core.corpus.collection import CorpusLimits, candidate_text_columns, read_table
from cbert_core.errors import DataFileError
from cbert_core.text.spans import Span, SpanDataset, SpanExample, check_spans

SPAN_COLUMNS = ("spans", "entities", "annotations", "labels")
CONLL_SUFFIXES = {".conll", ".bio", ".iob", ".iob2"}
_TAG = re.compile(r"^(O|[BIESLU][-_]\S+)$")
SPAN_FORMAT_HELP = ('a CSV or JSONL file with a "text" column and a "spans" column holding a list of '
                    '[start, end, label] (character offsets, end excluded), or a CoNLL file with one word and its '
                    'BIO tag (B-label, I-label, O) per line and a blank line between sentences')


def read_span_file(data: bytes, name: str, limits: CorpusLimits | None = None) -> SpanDataset:
    """Parse an uploaded span file (see the module notes for the formats).

    Raises:
        DataFileError: unreadable, no text or spans column, malformed spans, or spans that do not fit.
    """
    if _looks_like_conll(data, name):
        return conll_dataset(data.decode("utf-8-sig", errors="strict"))
    table = read_table(data, name=name, limits=limits)
    frame = table.frame
    text_column = "text" if "text" in frame.columns else next(iter(candidate_text_columns(frame)), None)
    spans_column = next((column for column in frame.columns if str(column).lower() in SPAN_COLUMNS), None)
    if text_column is None or spans_column is None:
        raise DataFileError(f"{name} needs a text column and a spans column: {SPAN_FORMAT_HELP}. Its columns are: "
                            f"{', '.join(map(str, frame.columns))}.")
    examples = []
    for number, (text, spans) in enumerate(zip(frame[text_column], frame[spans_column]), start=1):
        where = f"Row {number}"
        if not isinstance(text, str) or not text.strip():
            raise DataFileError(f"{where} has no text.")
        examples.append(SpanExample(text=text, spans=check_spans(text, _spans_of(spans, where), where)))
    return SpanDataset(examples=tuple(examples), warnings=table.warnings)


def _spans_of(value: object, where: str) -> list[Span]:
    """A cell's spans: a list (JSONL) or its JSON text (CSV); empty for a blank cell."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as broken:
            raise DataFileError(f"{where}: the spans are not valid JSON ({broken.msg}). Write them as "
                                f'[[start, end, "label"], ...].') from broken
    if not isinstance(value, list):
        raise DataFileError(f'{where}: the spans must be a list such as [[0, 10, "negated"]].')
    spans = []
    for item in value:
        if isinstance(item, dict):
            start, end, label = item.get("start"), item.get("end"), item.get("label")
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            start, end, label = item
        else:
            raise DataFileError(f'{where}: a span must be [start, end, "label"] or {{"start": ..., "end": ..., '
                                f'"label": ...}}; found {json.dumps(item)[:80]}.')
        if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool):
            raise DataFileError(f"{where}: span offsets must be whole numbers; found {start!r} and {end!r}.")
        spans.append(Span(start=start, end=end, label=str(label or "").strip()))
    return spans


def _looks_like_conll(data: bytes, name: str) -> bool:
    if Path(name).suffix.lower() in CONLL_SUFFIXES:
        return True
    if Path(name).suffix.lower() not in {".txt", ""}:
        return False
    lines = [line for line in data[:20_000].decode("utf-8", errors="ignore").splitlines()[:40] if line.strip()]
    return bool(lines) and all(_TAG.match(line.split()[-1]) for line in lines if not line.startswith("-DOCSTART-"))


def conll_dataset(text: str) -> SpanDataset:
    """Sentences of a CoNLL-style BIO file as texts (tokens joined by spaces) with their spans.

    Raises:
        DataFileError: a line whose last column is not a BIO tag, or no sentence.
    """
    examples: list[SpanExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    sentence = 0

    def close() -> None:
        nonlocal tokens, tags, sentence
        if tokens:
            sentence += 1
            examples.append(_conll_sentence(tokens, tags, f"Sentence {sentence}"))
        tokens, tags = [], []

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            close()
            continue
        if line.startswith("-DOCSTART-"):
            continue
        columns = line.split()
        if len(columns) < 2 or not _TAG.match(columns[-1]):
            raise DataFileError(f"Line {number} is not 'word tag' with a BIO tag (B-label, I-label or O) last; "
                                f"found {len(columns)} column(s).")
        tokens.append(columns[0])
        tags.append(columns[-1])
    close()
    if not examples:
        raise DataFileError("The CoNLL file holds no sentence (one word and its tag per line).")
    return SpanDataset(examples=tuple(examples))


def _conll_sentence(tokens: list[str], tags: list[str], where: str) -> SpanExample:
    starts, cursor = [], 0
    for token in tokens:
        starts.append(cursor)
        cursor += len(token) + 1
    text = " ".join(tokens)
    spans: list[Span] = []
    current: list | None = None  # [label, start, end]
    for token, tag, start in zip(tokens, tags, starts):
        prefix, label = (tag[0], tag[2:]) if tag != "O" else ("O", "")
        if prefix == "O" or prefix in "BSU" or current is None or current[0] != label:
            if current is not None:
                spans.append(Span(start=current[1], end=current[2], label=current[0]))
            current = None if prefix == "O" else [label, start, start + len(token)]
        else:
            current[2] = start + len(token)
        if current is not None and prefix in "ELSU":
            spans.append(Span(start=current[1], end=current[2], label=current[0]))
            current = None
    if current is not None:
        spans.append(Span(start=current[1], end=current[2], label=current[0]))
    return SpanExample(text=text, spans=check_spans(text, spans, where))
