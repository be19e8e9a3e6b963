"""Downloads: results as JSON / NPZ, tables as CSV, figures as HTML (all as bytes; PNGs come from the chart toolbar).

These functions return bytes for the UI's download buttons and never write
files; :func:`write_bytes` is the one place that writes, for callers (the CLI)
that were given an explicit output path. Exports contain whatever the record
holds, note text included: they are made only when the user asks.

JSON layout: ``{"format": "cbert-export", "version": 1, "kind": <record type>,
"data": ...}``; every numpy array becomes ``{"dtype": ..., "shape": [...],
"data": nested lists}`` (non-finite floats become null). NPZ layout: one entry
per array, named by its path in the record (``head/top_ids``,
``attentions/0``), plus ``__meta__`` holding the JSON of everything that is not
an array (arrays there are replaced by ``{"npz": <entry name>}``).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cbert_core.errors import ExportError

FORMAT = "cbert-export"
VERSION = 1
DEFAULT_MAX_JSON_BYTES = 200 * 1024**2


def _array_json(array: np.ndarray) -> dict[str, Any]:
    data: Any
    if array.dtype.kind == "f":
        wide = array.astype(np.float64)
        if np.isfinite(wide).all():
            data = wide.tolist()
        else:
            data = np.where(np.isfinite(wide), wide, None).tolist()  # object array: NaN/inf -> None
    elif array.dtype.kind in "US":
        data = array.astype(str).tolist()
    elif array.dtype.kind == "O":
        raise ExportError("An array of Python objects cannot be exported.")
    else:
        data = array.tolist()
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": data}


def _plain(value: Any, exclude: frozenset[str], path: str, arrays: dict[str, np.ndarray] | None) -> Any:
    """JSON-ready form of ``value``; arrays inline (arrays is None) or collected into ``arrays``."""
    if _is_array_like(value):
        value = np.asarray(value)  # computed on demand (a trace's attention weights): exported as the array
    if isinstance(value, np.ndarray):
        if arrays is None:
            return _array_json(value)
        name = path or "array"
        arrays[name] = value
        return {"npz": name, "dtype": str(value.dtype), "shape": list(value.shape)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for item in dataclasses.fields(value):
            if item.name in exclude or item.name.startswith("_"):
                continue
            child = getattr(value, item.name)
            if _is_opaque(child):
                continue
            out[item.name] = _plain(child, exclude, f"{path}/{item.name}".lstrip("/"), arrays)
        return out
    if isinstance(value, Mapping):
        return {str(key): _plain(child, exclude, f"{path}/{key}".lstrip("/"), arrays)
                for key, child in value.items() if str(key) not in exclude}
    if isinstance(value, (frozenset, set)):
        return [_plain(child, exclude, f"{path}/{index}", arrays)
                for index, child in enumerate(sorted(value, key=repr))]
    if isinstance(value, (list, tuple)):
        return [_plain(child, exclude, f"{path}/{index}".lstrip("/"), arrays) for index, child in enumerate(value)]
    if isinstance(value, np.generic):
        return _plain(value.item(), exclude, path, arrays)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value, exclude, path, arrays)
    if isinstance(value, Path):
        return str(value)
    raise ExportError(f"'{path or type(value).__name__}' ({type(value).__name__}) cannot be exported.")


def _is_array_like(value: Any) -> bool:
    """An array computed when read (it converts with ``np.asarray``), not a numpy array nor a torch object."""
    return (not isinstance(value, np.ndarray) and hasattr(value, "__array__") and hasattr(value, "shape")
            and not _is_opaque(value))


def _is_opaque(value: Any) -> bool:
    """Objects that are not data (a faiss index, a model): left out of exports."""
    module = type(value).__module__ or ""
    return module.startswith(("faiss", "torch", "transformers"))


def to_json_bytes(record: Any, *, exclude: Iterable[str] = (), max_bytes: int = DEFAULT_MAX_JSON_BYTES,
                  indent: int | None = None) -> bytes:
    """A result record (dataclass, dict, list, array) as UTF-8 JSON.

    Args:
        record: e.g. a Trace, a FineTuneResult, a dict of arrays.
        exclude: field names left out at any depth (e.g. ``("attentions",)`` for a small trace export).
        max_bytes: refuse a bigger export (JSON of attention weights grows fast).

    Raises:
        ExportError: an unexportable value, or the export would exceed ``max_bytes``.
    """
    estimate = _array_bytes(record, frozenset(exclude)) * 3  # ~3 text bytes per stored byte, at least
    if estimate > max_bytes:
        raise ExportError(_too_big_message(estimate, max_bytes))
    document = {"format": FORMAT, "version": VERSION, "kind": type(record).__name__,
                "data": _plain(record, frozenset(exclude), "", None)}
    encoded = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=indent).encode("utf-8")
    if len(encoded) > max_bytes:
        raise ExportError(_too_big_message(len(encoded), max_bytes))
    return encoded


def _too_big_message(size: int, limit: int) -> str:
    return (f"This export would be about {size / 1e6:,.0f} MB of JSON; the limit is {limit / 1e6:,.0f} MB. Leave out "
            f"the attention weights, export a shorter note, or download it as NPZ instead.")


def _array_bytes(value: Any, exclude: frozenset[str]) -> int:
    arrays: dict[str, np.ndarray] = {}
    try:
        _plain(value, exclude, "", arrays)
    except ExportError:
        return 0  # reported properly by the real export
    return sum(array.size * max(array.dtype.itemsize, 2) for array in arrays.values())


def to_npz_bytes(record: Any, *, exclude: Iterable[str] = ()) -> bytes:
    """A result record as a compressed NPZ archive (``numpy.load(..., allow_pickle=False)`` reads it).

    Raises:
        ExportError: an unexportable value.
    """
    arrays: dict[str, np.ndarray] = {}
    meta = {"format": FORMAT, "version": VERSION, "kind": type(record).__name__,
            "data": _plain(record, frozenset(exclude), "", arrays)}
    if "__meta__" in arrays:
        raise ExportError("A field named '__meta__' cannot be exported to NPZ.")
    buffer = io.BytesIO()
    stored = {name: (array.astype(str) if array.dtype.kind == "O" else array) for name, array in arrays.items()}
    np.savez_compressed(buffer, __meta__=np.array(json.dumps(meta, ensure_ascii=False, allow_nan=False)), **stored)
    return buffer.getvalue()


def table_to_csv_bytes(table: Any, *, index: bool = False, excel: bool = False) -> bytes:
    """A pandas DataFrame as CSV bytes (UTF-8; with a byte-order mark when ``excel`` so Excel reads accents)."""
    if not isinstance(table, pd.DataFrame):
        raise ExportError("Only tables (pandas DataFrames) can be exported as CSV.")
    return table.to_csv(index=index).encode("utf-8-sig" if excel else "utf-8")


def figure_to_html_bytes(figure: Any, *, full_html: bool = True) -> bytes:
    """A plotly figure as a self-contained HTML page: plotly.js is embedded, nothing loads from a CDN."""
    try:
        html = figure.to_html(include_plotlyjs=True, full_html=full_html, include_mathjax=False)
    except (AttributeError, TypeError, ValueError) as failed:
        raise ExportError(f"The chart could not be turned into HTML ({failed}).") from failed
    return html.encode("utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename).

    Raises:
        ExportError: the folder does not exist, is not writable, the path is a folder, or the disk is full.
    """
    target = Path(path).expanduser()
    check_writable(target)
    handle = None
    try:
        handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part",
                                             delete=False)
        with handle:
            handle.write(data)
        os.replace(handle.name, target)
    except OSError as failed:
        if handle is not None and os.path.exists(handle.name):
            os.unlink(handle.name)
        raise ExportError(f"Could not write '{target}' ({failed.strerror or failed}). Choose a folder you can "
                          f"write to, with enough free space.") from failed
    return target


def check_writable(target: Path) -> None:
    """Raise :class:`ExportError` unless a file can be created at ``target``."""
    if target.is_dir():
        raise ExportError(f"'{target}' is a folder. Give a file name for the output, such as "
                          f"'{target / 'results.parquet'}'.")
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(f"The folder '{folder}' does not exist. Create it first or choose another output path.")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ExportError(f"Cannot write to '{target}': permission denied. Choose a folder you can write to.")


def table_to_parquet_bytes(table: Any) -> bytes:
    """A pandas table as Parquet bytes (zstd); columns of mixed objects are written as text."""
    buffer = io.BytesIO()
    frame = table.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda value: value if value is None else str(value))
    frame.columns = [str(column) for column in frame.columns]
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()
