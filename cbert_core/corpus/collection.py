"""A collection of notes read from a CSV or JSONL file, with optional labels.

Reading is bounded: the file's size, its number of rows and each note's length
have settable limits (:class:`CorpusLimits`), so a 100,000-row upload is cut to
the first rows with a message instead of hanging the app. Problems a user can
fix (not UTF-8, no text column, empty rows) raise :class:`DataFileError` or are
reported in :attr:`Collection.warnings`; note text is never logged.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cbert_core.errors import DataFileError

TableFormat = Literal["csv", "tsv", "jsonl"]
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


@dataclass(frozen=True, kw_only=True)
class CorpusLimits:
    """Bounds on an uploaded collection (each settable)."""

    max_rows: int = 5_000  # rows beyond this are left out, with a warning
    max_bytes: int = 50 * 1024 * 1024  # larger files are refused
    max_chars: int = 100_000  # longer notes are left out, with a warning


DEFAULT_LIMITS = CorpusLimits()


@dataclass(frozen=True, kw_only=True)
class DataTable:
    """A parsed file, before the user has chosen its columns."""

    frame: pd.DataFrame  # one row per record, at most ``limits.max_rows`` rows, values as read
    format: TableFormat
    truncated: bool  # True when the file had more rows than the limit
    warnings: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(str(column) for column in self.frame.columns)


@dataclass(frozen=True, kw_only=True)
class Collection:
    """Notes ready for analysis: non-empty texts with their ids and (optionally) labels."""

    texts: tuple[str, ...]  # [note]
    ids: tuple[str, ...]  # [note]
    labels: tuple[str, ...] | None  # [note], or None without a label column
    rows: np.ndarray = field(compare=False)  # int64 [note]: 0-based data row in the file each note came from
    text_column: str
    label_column: str | None = None
    id_column: str | None = None
    rows_read: int = 0  # data rows read from the file (after the row limit)
    dropped_empty: int = 0
    dropped_too_long: int = 0
    dropped_unlabelled: int = 0
    truncated: bool = False
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        count = len(self.texts)
        if len(self.ids) != count or (self.labels is not None and len(self.labels) != count):
            raise ValueError("Collection texts, ids and labels must have the same length")
        if self.rows.shape != (count,):
            raise ValueError("Collection.rows must be [note]")
        self.rows.flags.writeable = False

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Distinct labels, sorted (empty without labels)."""
        return tuple(sorted(set(self.labels))) if self.labels is not None else ()

    @property
    def label_ids(self) -> np.ndarray:
        """int64 [note]: index of each note's label in :attr:`label_names`."""
        if self.labels is None:
            raise DataFileError("This collection has no label column; choose one to train or colour by label.")
        lookup = {name: index for index, name in enumerate(self.label_names)}
        return np.asarray([lookup[label] for label in self.labels], dtype=np.int64)


def _is_blank(value: object) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    return not str(value).strip().strip(_INVISIBLE).strip()


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFileError("The file is UTF-16 text. Save it as UTF-8 (in Excel: 'CSV UTF-8') and upload it again.")
    if data.startswith(b"PK\x03\x04"):
        raise DataFileError("This looks like an Excel workbook or a zip file. Save the sheet as 'CSV UTF-8' "
                            "and upload the CSV file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as bad:
        line = data[:bad.start].count(b"\n") + 1
        raise DataFileError(
            f"The file is not UTF-8 text (unreadable byte on line {line}). It was probably saved in another "
            f"encoding such as Windows-1252. Save it as UTF-8 (in Excel: 'CSV UTF-8') and upload it again."
        ) from bad


def _guess_format(name: str | None, text: str) -> TableFormat:
    suffix = Path(name).suffix.lower() if name else ""
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".csv":
        return "csv"
    start = text.lstrip()[:1]
    if start in {"{", "["}:
        return "jsonl"
    lines = [line for line in text[:20_000].splitlines()[:6] if line.strip()]
    tabs = {line.count("\t") for line in lines}
    # Tab-separated when every sampled line has the same (non-zero) number of tabs.
    return "tsv" if len(tabs) == 1 and min(tabs) > 0 else "csv"


def _read_csv(text: str, separator: str, max_rows: int) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, nrows=max_rows + 1,
                            skip_blank_lines=True, engine="c")
    except pd.errors.EmptyDataError as empty:
        raise DataFileError("The file is empty: it has no header row and no notes.") from empty
    except (pd.errors.ParserError, csv.Error, ValueError) as broken:
        kind = "tab-separated" if separator == "\t" else "CSV"
        raise DataFileError(
            f"The file could not be read as {kind} ({str(broken).splitlines()[0][:200]}). Check that text with "
            f"commas or line breaks is enclosed in double quotes, or save it again from a spreadsheet as CSV UTF-8."
        ) from broken
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


def _read_jsonl(text: str, max_rows: int) -> pd.DataFrame:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as broken:
            raise DataFileError(f"The file is not valid JSON ({broken.msg}, line {broken.lineno}).") from broken
        if not isinstance(records, list):
            raise DataFileError("A JSON file must hold a list of objects, one per note.")
        records = records[:max_rows + 1]
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if len(records) > max_rows:
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as broken:
                raise DataFileError(
                    f"Line {number} of the JSONL file is not valid JSON ({broken.msg}). Each line must hold one "
                    f"object such as {{\"text\": \"...\", \"label\": \"...\"}}."
                ) from broken
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataFileError(f"Record {number} of the JSON file is not an object with named fields "
                                f"(such as {{\"text\": \"...\"}}).")
    return pd.DataFrame.from_records(records)


def read_table(source: bytes | str | os.PathLike[str], *, name: str | None = None,
               limits: CorpusLimits | None = None) -> DataTable:
    """Parse a CSV, TSV or JSONL file (or its bytes) into a table, within the limits.

    Args:
        source: the file's bytes (an upload) or a path to it.
        name: the file name, used to tell the format by its extension (a path gives its own).
        limits: size bounds; rows past ``limits.max_rows`` are left out with a warning.

    Raises:
        DataFileError: missing file, too large, not UTF-8, not parseable, or no rows.
    """
    limits = limits or DEFAULT_LIMITS
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, str) and ("\n" in source or len(source) > 4096):
        raise TypeError("read_table takes a file's bytes or a path; encode text content with .encode('utf-8')")
    else:
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise DataFileError(f"There is no file at '{path}'. Check the path and try again.")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise DataFileError(_too_big(size, limits.max_bytes))
        try:
            data = path.read_bytes()
        except OSError as failed:
            raise DataFileError(f"The file '{path}' could not be read ({failed.strerror}).") from failed
    if len(data) > limits.max_bytes:
        raise DataFileError(_too_big(len(data), limits.max_bytes))
    text = _decode(data)
    if not text.strip():
        raise DataFileError("The file is empty: it holds no notes.")
    fmt = _guess_format(name, text)
    frame = _read_jsonl(text, limits.max_rows) if fmt == "jsonl" else \
        _read_csv(text, "\t" if fmt == "tsv" else ",", limits.max_rows)
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataFileError("The file has a header but no rows of data.")
    warnings: list[str] = []
    truncated = len(frame) > limits.max_rows
    if truncated:
        frame = frame.iloc[:limits.max_rows].reset_index(drop=True)
        warnings.append(f"The file has more than {limits.max_rows:,} rows: only the first {limits.max_rows:,} "
                        f"were read. Raise the row limit in the settings or split the file.")
    return DataTable(frame=frame, format=fmt, truncated=truncated, warnings=tuple(warnings))


def _too_big(size: int, limit: int) -> str:
    return (f"The file is {size / 1e6:,.1f} MB; the limit is {limit / 1e6:,.1f} MB. Upload a smaller file "
            f"(for example the first few thousand notes) or raise the limit in the settings.")


def _text_share(values: pd.Series) -> tuple[float, float]:
    """(share of non-empty values that read as words, mean length of those values)."""
    sample = [value for value in values.head(500).tolist() if not _is_blank(value)]
    texts = [value for value in sample if isinstance(value, str) and sum(ch.isalpha() for ch in value) >= 2]
    if not sample:
        return 0.0, 0.0
    return len(texts) / len(sample), float(np.mean([len(t) for t in texts])) if texts else 0.0


def candidate_text_columns(table: DataTable | pd.DataFrame) -> list[str]:
    """Columns that hold free text, the likeliest note column first (longest text on average).

    A column qualifies when most of its non-empty values contain letters; short
    codes (mean under 8 characters) are listed only when nothing longer exists.
    """
    frame = table.frame if isinstance(table, DataTable) else table
    scored = []
    for column in frame.columns:
        share, mean_length = _text_share(frame[column])
        if share >= 0.5:
            scored.append((mean_length, str(column)))
    scored.sort(key=lambda item: -item[0])
    long = [column for length, column in scored if length >= 8]
    return long or [column for _length, column in scored]


def candidate_label_columns(table: DataTable | pd.DataFrame, max_classes: int = 50) -> list[str]:
    """Columns with between 2 and ``max_classes`` distinct values (fewest first): likely labels."""
    frame = table.frame if isinstance(table, DataTable) else table
    found = []
    for column in frame.columns:
        values = [str(v).strip() for v in frame[column].tolist() if not _is_blank(v)]
        distinct = len(set(values))
        if 2 <= distinct <= min(max_classes, max(2, len(values) // 2)):
            found.append((distinct, str(column)))
    return [column for _distinct, column in sorted(found)]


def _require_column(frame: pd.DataFrame, column: str | None, what: str) -> None:
    if column is not None and column not in frame.columns:
        columns = ", ".join(f"'{c}'" for c in frame.columns[:20])
        hint = ""
        if what == "text":
            candidates = candidate_text_columns(frame)
            hint = f" Columns that hold text: {', '.join(repr(c) for c in candidates)}." if candidates else \
                " No column holds text."
        raise DataFileError(f"The file has no column named '{column}' (the {what} column). "
                            f"Its columns are: {columns}.{hint}")


def collection_from_table(table: DataTable | pd.DataFrame, *, text_column: str, label_column: str | None = None,
                          id_column: str | None = None, limits: CorpusLimits | None = None) -> Collection:
    """Pick the note, label and id columns of a parsed file.

    Empty notes are left out (and counted); notes over ``limits.max_chars`` are
    left out (and counted); with a label column, notes without a label are left
    out (and counted). Ids default to "row N" (1-based data row).

    Raises:
        DataFileError: a column that does not exist, or no usable note at all.
    """
    limits = limits or DEFAULT_LIMITS
    frame = table.frame if isinstance(table, DataTable) else table
    warnings = list(table.warnings) if isinstance(table, DataTable) else []
    truncated = table.truncated if isinstance(table, DataTable) else False
    for column, what in ((text_column, "text"), (label_column, "label"), (id_column, "id")):
        _require_column(frame, column, what)
    texts, ids, labels, rows = [], [], [], []
    empty = too_long = unlabelled = 0
    raw_texts = frame[text_column].tolist()
    raw_labels = frame[label_column].tolist() if label_column else None
    raw_ids = frame[id_column].tolist() if id_column else None
    for row, value in enumerate(raw_texts):
        if _is_blank(value) or not isinstance(value, str):
            empty += 1
            continue
        if len(value) > limits.max_chars:
            too_long += 1
            continue
        if raw_labels is not None:
            if _is_blank(raw_labels[row]):
                unlabelled += 1
                continue
            labels.append(str(raw_labels[row]).strip())
        texts.append(value)
        ids.append(str(raw_ids[row]).strip() if raw_ids is not None and not _is_blank(raw_ids[row])
                   else f"row {row + 1}")
        rows.append(row)
    if not texts:
        if too_long:
            raise DataFileError(f"Every note in '{text_column}' is over {limits.max_chars:,} characters. "
                                f"Split the notes or raise the length limit in the settings.")
        candidates = [c for c in candidate_text_columns(frame) if c != text_column]
        hint = f" Columns that hold text: {', '.join(repr(c) for c in candidates)}." if candidates else ""
        raise DataFileError(f"The column '{text_column}' holds no usable note text.{hint}")
    if empty:
        warnings.append(f"{empty:,} row(s) with an empty (or non-text) note were left out.")
    if too_long:
        warnings.append(f"{too_long:,} note(s) over {limits.max_chars:,} characters were left out; split them "
                        f"or raise the length limit in the settings.")
    if unlabelled:
        warnings.append(f"{unlabelled:,} note(s) without a value in '{label_column}' were left out.")
    if id_column and len(set(ids)) < len(ids):
        warnings.append(f"Some ids in '{id_column}' repeat; results are still kept one row per note.")
    return Collection(texts=tuple(texts), ids=tuple(ids), labels=tuple(labels) if label_column else None,
                      rows=np.asarray(rows, dtype=np.int64), text_column=text_column, label_column=label_column,
                      id_column=id_column, rows_read=len(raw_texts), dropped_empty=empty, dropped_too_long=too_long,
                      dropped_unlabelled=unlabelled, truncated=truncated, warnings=tuple(warnings))


def load_collection(source: bytes | str | os.PathLike[str], *, text_column: str, label_column: str | None = None,
                    id_column: str | None = None, name: str | None = None,
                    limits: CorpusLimits | None = None) -> Collection:
    """:func:`read_table` then :func:`collection_from_table`, for callers that know the columns."""
    table = read_table(source, name=name, limits=limits)
    return collection_from_table(table, text_column=text_column, label_column=label_column, id_column=id_column,
                                 limits=limits)


def collection_from_texts(texts: Sequence[str], *, labels: Sequence[str] | None = None,
                          ids: Sequence[str] | None = None, limits: CorpusLimits | None = None) -> Collection:
    """A collection from in-memory texts (and labels), with the same checks as a file."""
    columns: dict[str, list[object]] = {"text": list(texts)}
    if labels is not None:
        columns["label"] = [str(label) for label in labels]
    if ids is not None:
        columns["id"] = [str(value) for value in ids]
    frame = pd.DataFrame(columns)
    limits = limits or DEFAULT_LIMITS
    warnings: tuple[str, ...] = ()
    truncated = len(frame) > limits.max_rows
    if truncated:
        frame = frame.iloc[:limits.max_rows]
        warnings = (f"Only the first {limits.max_rows:,} notes were kept (the row limit).",)
    table = DataTable(frame=frame, format="csv", truncated=truncated, warnings=warnings)
    return collection_from_table(table, text_column="text", label_column="label" if labels is not None else None,
                                 id_column="id" if ids is not None else None, limits=limits)


def column_values(table: DataTable | pd.DataFrame, collection: Collection, column: str) -> tuple[str, ...]:
    """``column``'s value for each note of ``collection`` (made from ``table``), as text ("" where empty).

    For a column the collection does not keep itself, such as a target phrase (NegEx's Condition).

    Raises:
        DataFileError: the table has no such column.
    """
    frame = table.frame if isinstance(table, DataTable) else table
    _require_column(frame, column, "target phrase")
    values = frame[column].tolist()
    return tuple("" if _is_blank(values[row]) else str(values[row]).strip() for row in collection.rows.tolist())
