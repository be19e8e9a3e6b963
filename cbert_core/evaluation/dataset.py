"""A labelled collection to evaluate on: an uploaded CSV/JSONL (sampled when too large) or the built-in example,
and how its label names meet the model's.

The file is read within the upload limit (:data:`MAX_FILE_BYTES`); a file with more rows than
:data:`MAX_EVALUATION_ROWS` is evaluated on a random sample of that many rows (seeded, in file
order), with a message: a sample keeps every label in its share, where the first rows of a file
sorted by label would hold one class. Every column besides the note and the label is kept as metadata.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cbert_core.corpus.collection import CorpusLimits, DataTable, collection_from_table, read_table
from cbert_core.errors import DataFileError
from cbert_core.text.examples import LABELLED_COLUMNS, LABELLED_EXAMPLES

MAX_FILE_BYTES = 60 * 1024 * 1024  # the app's upload limit (server.maxUploadSize)
MAX_READ_ROWS = 1_000_000  # rows parsed at most (a 60 MB file of short sentences holds fewer)
MAX_EVALUATION_ROWS = 20_000  # rows evaluated; a larger file is sampled
MAX_NOTE_CHARS = 100_000
LEAVE_OUT = "(leave out)"  # a label mapped to this is not evaluated
# Label spellings that mean the same (compared lower-case, without punctuation).
_SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"negated", "negative", "neg", "absent", "no", "0", "false", "denied", "notpresent"}),
    frozenset({"affirmed", "positive", "pos", "present", "yes", "1", "true", "asserted"}),
    frozenset({"possible", "uncertain", "probable", "hypothetical"}),
)


@dataclass(frozen=True, kw_only=True)
class LabelledSet:
    """Notes with a gold label each and the file's other columns as metadata."""

    texts: tuple[str, ...]  # [row]
    labels: tuple[str, ...]  # [row]: as written (a note's label, or a word-by-word tag sequence)
    ids: tuple[str, ...]  # [row]
    metadata: pd.DataFrame  # [row, column]: every other column, as text
    text_column: str
    label_column: str
    source: str  # the file's name, or "example"
    warnings: tuple[str, ...] = ()
    sampled_from: int | None = None  # rows in the file when only a sample is evaluated

    def __post_init__(self) -> None:
        if not len(self.texts) == len(self.labels) == len(self.ids) == len(self.metadata):
            raise ValueError("LabelledSet texts, labels, ids and metadata must have one entry per row")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Distinct labels, sorted."""
        return tuple(sorted(set(self.labels)))


def example_set() -> LabelledSet:
    """The built-in labelled example (``cbert_core.text.examples.LABELLED_EXAMPLES``): works on a fresh machine."""
    frame = pd.DataFrame(list(LABELLED_EXAMPLES), columns=list(LABELLED_COLUMNS))
    return LabelledSet(texts=tuple(frame["text"]), labels=tuple(frame["label"]), ids=tuple(frame["id"]),
                       metadata=frame.drop(columns=["id", "text", "label"]).reset_index(drop=True),
                       text_column="text", label_column="label", source="example")


def read_evaluation_table(data: bytes, *, name: str) -> DataTable:
    """An uploaded file parsed within the upload limit (every row up to :data:`MAX_READ_ROWS`).

    Raises:
        DataFileError: too large, not UTF-8, not parseable, or empty.
    """
    return read_table(data, name=name, limits=CorpusLimits(max_rows=MAX_READ_ROWS, max_bytes=MAX_FILE_BYTES,
                                                          max_chars=MAX_NOTE_CHARS))


def labelled_from_table(table: DataTable, *, text_column: str, label_column: str, name: str,
                        max_rows: int = MAX_EVALUATION_ROWS, seed: int = 0) -> LabelledSet:
    """The rows of ``table`` with a note and a label, sampled down to ``max_rows``.

    Raises:
        DataFileError: a missing column, the same column for note and label, or no labelled note.
    """
    frame = table.frame
    for column, what in ((text_column, "note text"), (label_column, "label")):
        if column not in frame.columns:
            raise DataFileError(f"The file has no column named '{column}' (the {what} column). Its columns are: "
                                f"{', '.join(repr(str(c)) for c in frame.columns[:20])}.")
    if text_column == label_column:
        raise DataFileError("The note and the label must be different columns: choose the column that holds "
                            "each note's correct label.")
    warnings = [warning for warning in table.warnings]
    sampled_from = None
    if len(frame) > max_rows:
        sampled_from = len(frame)
        chosen = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
        frame = frame.iloc[chosen].reset_index(drop=True)
        warnings.append(f"The file has {sampled_from:,} rows; a random sample of {max_rows:,} of them (in file "
                        f"order, the same sample every time) is evaluated. Split the file to evaluate every row.")
    id_column = "id" if "id" in frame.columns and "id" not in (text_column, label_column) else None
    collection = collection_from_table(frame, text_column=text_column, label_column=label_column,
                                       id_column=id_column, limits=CorpusLimits(max_rows=max_rows,
                                                                                max_chars=MAX_NOTE_CHARS))
    metadata = frame.iloc[collection.rows].drop(columns=[c for c in (text_column, label_column, id_column) if c])
    metadata = metadata.astype(str).reset_index(drop=True)
    warnings += [warning for warning in collection.warnings if warning not in warnings]
    return LabelledSet(texts=collection.texts, labels=collection.labels, ids=collection.ids, metadata=metadata,
                       text_column=text_column, label_column=label_column, source=name,
                       warnings=tuple(warnings), sampled_from=sampled_from)


def _plain(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def guess_mapping(gold: Sequence[str], classes: Sequence[str]) -> dict[str, str]:
    """For each gold label name, the model class it most likely means, or :data:`LEAVE_OUT`.

    The same name (ignoring case and punctuation) first; then a known synonym ("negative" for
    "negated", "1" for "positive"...), when it names exactly one class.
    """
    plain = {_plain(name): name for name in classes}
    mapping: dict[str, str] = {}
    for label in gold:
        key = _plain(label)
        if key in plain:
            mapping[label] = plain[key]
            continue
        group = next((words for words in _SYNONYMS if key in words), frozenset())
        matches = [name for name in classes if _plain(name) in group]
        mapping[label] = matches[0] if len(matches) == 1 else LEAVE_OUT
    return mapping


def unknown_labels(gold: Sequence[str], classes: Sequence[str]) -> tuple[str, ...]:
    """The gold label names that are not among the model's classes (sorted)."""
    known = set(classes)
    return tuple(sorted(set(gold) - known))
