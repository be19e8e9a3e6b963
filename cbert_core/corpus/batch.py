"""Per-note batch work for the command line and the Evaluate page: the same code under a local loop or Ray Data.

:class:`NoteProcessor` is a callable class: built once (it loads the model, or
takes the one the app already holds), then called on pandas batches of notes
(columns ``row``, ``id``, ``text``), it returns one result row per note. Each
batch runs through the model once for everything asked (token counts, the
embedding, zero-shot similarity and a classifier's predictions all read
:func:`cbert_core.corpus.note_pass.pass_notes`); only a masked-LM's
pseudo-likelihood and attributions need passes of their own. The local engine
calls it on consecutive chunks of ``chunk_size`` notes; the Ray engine hands it
to ``Dataset.map_batches`` (one actor per worker, so the model loads once per
worker) over blocks of the same chunks, in order. Both engines therefore run
exactly the same computations and give the same numbers. Nothing here logs note
text: progress counts notes only.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from cbert_core.corpus.batch_columns import BatchColumns
from cbert_core.corpus.note_pass import pass_notes
from cbert_core.errors import CbertError
from cbert_core.model.loading import LoadedModel, load_model
from cbert_core.run.plan import RunOptions, plan_notes

ANALYSES = ("tokens", "embeddings", "predictions", "zero-shot", "attributions")
Engine = Literal["local", "ray"]
DEFAULT_CHUNK = 32


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    """What to compute for every note (picklable: it travels to Ray workers)."""

    model: str  # spec text for cbert_core.model.loading.parse_spec ("" or "bundled": the bundled model)
    analyses: tuple[str, ...] = ("tokens", "embeddings")
    lowercase: bool | None = None
    pooling: Literal["mean", "cls"] = "mean"
    layer: int = -1  # hidden-state index of the embedding column (0 = embeddings, -1 = last)
    batch_size: int = 8  # windows per forward pass
    labels: tuple[str, ...] = ()  # zero-shot descriptions (predictions of an encoder; "zero-shot" for any model)
    temperature: float = 0.05  # zero-shot shares: softmax(cosine / temperature)
    word_probs: bool = False  # token classifiers: also each whitespace-separated word's label probabilities
    pll_stride: int = 8  # masked-LM pseudo-log-likelihood: pieces this far apart are masked together (0: exact)
    attribution_method: str = "integrated-gradients"
    attribution_steps: int = 20
    top_words: int = 10  # attribution words kept per note (by |score|)
    threads: int | None = None  # torch threads in the process doing the work
    env: dict[str, str] = field(default_factory=dict)  # environment for Ray workers (e.g. HF_HUB_OFFLINE)


class NoteProcessor:
    """Loads the model once; each call turns a batch of notes into a batch of result rows."""

    def __init__(self, settings: BatchSettings, loaded: LoadedModel | None = None) -> None:
        if settings.threads:
            torch.set_num_threads(int(settings.threads))
        self.settings = settings
        self.loaded = loaded if loaded is not None else load_model(settings.model)
        layers = self.loaded.info.num_layers + 1
        if not -layers <= settings.layer < layers:
            raise CbertError(f"--layer {settings.layer} does not exist: {self.loaded.info.name} has layers 0 "
                             f"(embeddings) to {layers - 1}, or -1 for the last.")
        self.columns = BatchColumns(self.loaded, settings)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        settings = self.settings
        texts = [str(text) for text in batch["text"].tolist()]
        # The collection was already bounded by the command line's --max-chars.
        notes = plan_notes(self.loaded, texts, RunOptions(lowercase=settings.lowercase, max_chars=2**62))
        embedded = "embeddings" in settings.analyses
        passes = pass_notes(self.loaded, notes, embedding_layer=settings.layer if embedded else None,
                            pooling=settings.pooling, text_vectors=self.columns.needs_text_vectors,
                            head=self.columns.needs_head, batch_size=settings.batch_size)
        out = pd.DataFrame({
            "row": batch["row"].astype("int64").to_numpy(),
            "id": [str(value) for value in batch["id"].tolist()],
            "text_length": np.asarray([len(text) for text in texts], dtype=np.int64),
            "n_tokens": np.asarray([len(note.tokens) for note in notes], dtype=np.int64),
            "n_windows": np.asarray([len(note.windows) for note in notes], dtype=np.int64),
        })
        if "tokens" in settings.analyses:
            out["tokens"] = [list(note.tokens.tokens) for note in notes]
        if embedded:
            out["embedding"] = [note_pass.embedding for note_pass in passes]
        for name, compute in self.columns.columns.items():
            out[name] = [compute(note, note_pass) for note, note_pass in zip(notes, passes)]
        return out


def _chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[start:start + size].reset_index(drop=True) for start in range(0, len(frame), size)]


def run_local(frame: pd.DataFrame, settings: BatchSettings, *, chunk_size: int = DEFAULT_CHUNK,
              progress: Callable[[int], None] | None = None, loaded: LoadedModel | None = None) -> pd.DataFrame:
    """Process ``frame`` (columns row, id, text) in this process, chunk by chunk, in order.

    ``loaded``: the model already in memory (the app's); None loads ``settings.model``. ``progress``
    is told how many notes each chunk held; an exception it raises stops the work (the app's cancel).
    """
    processor = NoteProcessor(settings, loaded)
    parts = []
    for chunk in _chunks(frame, chunk_size):
        parts.append(processor(chunk))
        if progress is not None:
            progress(len(chunk))
    return pd.concat(parts, ignore_index=True)


def run_ray(frame: pd.DataFrame, settings: BatchSettings, *, chunk_size: int = DEFAULT_CHUNK, workers: int = 1,
            num_cpus: int = 2, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Process ``frame`` with Ray Data: one actor per worker runs :class:`NoteProcessor` on each chunk.

    Starts a private local Ray instance (``num_cpus`` CPUs, no dashboard, worker
    logs not forwarded, a small object store) and shuts it down afterwards.

    Raises:
        CbertError: Ray is not installed.
    """
    try:  # an optional engine: imported only when asked for (Ray is large and slow to import)
        import ray
        import ray.data
    except ImportError as missing:
        raise CbertError("The ray engine needs the 'ray' package (pip install ray==2.60.0), or use --engine local.") \
            from missing
    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")])),
           "TOKENIZERS_PARALLELISM": "false",
           # Passive OpenMP waiting: busy-waiting torch threads crawl on a CPU shared with other work.
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), **settings.env}
    started_here = not ray.is_initialized()
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray's own INFO lines would drown the progress bar
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if started_here:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=128 * 1024**2, runtime_env={"env_vars": env})
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        blocks = _chunks(frame, chunk_size)  # one block per chunk: the same batches as run_local
        dataset = ray.data.from_pandas(blocks)
        per_worker = max(1, num_cpus // max(1, workers))
        with warnings.catch_warnings():  # max_restarts=0: a failed model load fails fast, not in a restart loop
            warnings.simplefilter("ignore")
            mapped = dataset.map_batches(NoteProcessor, fn_constructor_kwargs={"settings": settings},
                                         batch_size=chunk_size, batch_format="pandas",
                                         compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=per_worker,
                                         max_restarts=0)
        parts = []
        for part in mapped.iter_batches(batch_size=None, batch_format="pandas"):
            parts.append(part)
            if progress is not None:
                progress(len(part))
    finally:
        if started_here:
            ray.shutdown()
    result = pd.concat(parts, ignore_index=True)
    return result.sort_values("row", kind="stable").reset_index(drop=True)


def to_parquet_bytes(results: pd.DataFrame, settings: BatchSettings, model_name: str) -> bytes:
    """The results as Parquet: list<string> tokens, list<float> embedding, run settings in the metadata."""
    columns: dict[str, pa.Array] = {
        "id": pa.array(results["id"].tolist(), type=pa.string()),
        "row": pa.array(results["row"].to_numpy(), type=pa.int64()),
        "text_length": pa.array(results["text_length"].to_numpy(), type=pa.int64()),
        "n_tokens": pa.array(results["n_tokens"].to_numpy(), type=pa.int64()),
        "n_windows": pa.array(results["n_windows"].to_numpy(), type=pa.int64()),
    }
    if "tokens" in results:
        columns["tokens"] = pa.array([list(t) for t in results["tokens"]], type=pa.list_(pa.string()))
    if "embedding" in results:
        columns["embedding"] = pa.array([np.asarray(v, dtype=np.float32) for v in results["embedding"]],
                                        type=pa.list_(pa.float32()))
    for name in results.columns:
        if name not in columns and name not in {"tokens", "embedding"}:
            columns[name] = pa.array(results[name].tolist())
    table = pa.table(columns)
    described = {key: value for key, value in dataclasses.asdict(settings).items() if key not in {"env", "threads"}}
    metadata = {b"cbert": json.dumps({"model_name": model_name, **described}).encode("utf-8")}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def progress_bar(total: int, enabled: bool = True) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance by n notes, close) for a tqdm bar on stderr that shows counts only, never text."""
    if not enabled:
        return (lambda _count: None), (lambda: None)
    bar = tqdm(total=total, unit="note", file=sys.stderr, desc="notes", dynamic_ncols=True)
    return bar.update, bar.close
