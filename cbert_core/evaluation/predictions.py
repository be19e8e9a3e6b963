"""Every note of a collection through the model once, through the batch command line's engine.

:func:`predict_collection` hands the notes to :func:`cbert_core.corpus.batch.run_local` (the model
the app holds, in this process) or :func:`cbert_core.corpus.batch.run_ray` (Ray workers that load
the model themselves), asking for the predictions alone: a classifier's head, or zero-shot
similarity to one description per class for any encoder. One pass per note gives the predictions
and the word-piece and window counts the length slices use. Progress says how many notes are done
and about how long the rest takes; an exception raised by the progress callback stops the work
(the app's cancel).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from cbert_core.corpus.batch import DEFAULT_CHUNK, BatchSettings, run_local, run_ray
from cbert_core.errors import TargetError, WrongHeadError
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.records import frozen
from cbert_core.run import encode
from cbert_core.run.plan import RunOptions, plan_notes
from cbert_core.serving.speed import Passes
from cbert_core.text.words import whitespace_words

Mode = Literal["head", "zero-shot"]
Engine = Literal["local", "ray"]
HEAD_KINDS = ("sequence-classification", "token-classification")
ESTIMATE_SAMPLE = 300  # notes tokenized to estimate the passes of a larger collection


@dataclass(frozen=True, kw_only=True)
class CollectionPredictions:
    """The model's predictions for every row of a collection (a note each), per note or per word."""

    mode: Mode
    unit: Literal["note", "word"]  # a token classifier is evaluated word by word
    classes: tuple[str, ...]  # [class]: the head's labels, or the labels the zero-shot descriptions stand for
    descriptions: tuple[str, ...]  # [class]: zero-shot descriptions (empty for a head)
    probs: np.ndarray  # float32 [unit, class]; NaN rows: a word no word piece starts in
    unit_rows: np.ndarray  # int32 [unit]: the row each unit belongs to
    unit_spans: np.ndarray  # int32 [unit, 2]: characters of each unit in its row's note (a note: all of it)
    n_tokens: np.ndarray  # int64 [row]: word pieces
    n_windows: np.ndarray  # int64 [row]
    seconds: float
    engine: Engine

    def __post_init__(self) -> None:
        units = len(self.unit_rows)
        if self.probs.shape != (units, len(self.classes)) or self.unit_spans.shape != (units, 2):
            raise ValueError("CollectionPredictions arrays must be [unit, class], [unit] and [unit, 2]")
        if self.n_tokens.shape != self.n_windows.shape:
            raise ValueError("n_tokens and n_windows must be [row]")
        frozen(self.probs, self.unit_rows, self.unit_spans, self.n_tokens, self.n_windows)

    @property
    def rows(self) -> int:
        return len(self.n_tokens)

    @property
    def predicted(self) -> np.ndarray:
        """int64 [unit]: the most probable class."""
        return np.nan_to_num(self.probs, nan=-1.0).argmax(-1)


def check_mode(loaded: LoadedModel, mode: Mode, classes: Sequence[str], descriptions: Sequence[str]) -> None:
    """Raise a typed error for predictions the model cannot make.

    Raises:
        WrongHeadError: "head" on a model without a classification head.
        TargetError: zero-shot without one non-empty description per class.
    """
    if mode == "head" and loaded.info.head_kind not in HEAD_KINDS:
        raise WrongHeadError(f"{loaded.info.name} has no classification head ({loaded.info.head_kind}): evaluate it "
                             f"by zero-shot similarity to label descriptions, or fine-tune a head on the Fine-tune "
                             f"page and load the saved checkpoint.")
    if mode == "zero-shot":
        if not classes or len(classes) != len(descriptions):
            raise TargetError("Zero-shot evaluation needs one description per label.")
        empty = [name for name, text in zip(classes, descriptions) if not str(text).strip()]
        if empty:
            raise TargetError(f"Write a description for {', '.join(repr(n) for n in empty)} (for example "
                              f"'the finding is absent'): zero-shot similarity compares each note with them.")


def predict_collection(loaded: LoadedModel, texts: Sequence[str], *, model_spec: str, mode: Mode = "head",
                       classes: Sequence[str] = (), descriptions: Sequence[str] = (), temperature: float = 0.05,
                       lowercase: bool | None = None, engine: Engine = "local", chunk_size: int = DEFAULT_CHUNK,
                       batch_size: int = encode.DEFAULT_BATCH_SIZE, workers: int = 1,
                       progress: Progress | None = None) -> CollectionPredictions:
    """Predictions for every note in ``texts`` (through the batch engine; see the module notes).

    Args:
        loaded: the model in this process (the local engine runs it; Ray workers load ``model_spec``).
        model_spec: how the model was named (``cbert_core.model.loading.parse_spec`` text).
        mode: "head" (the checkpoint's classifier) or "zero-shot" (``descriptions`` against each note).
        classes: zero-shot: the label each description stands for (the head's labels otherwise).
        temperature: zero-shot shares are softmax(cosine / temperature).

    Raises:
        WrongHeadError, TargetError: see :func:`check_mode`.
    """
    check_mode(loaded, mode, classes, descriptions)
    token_level = mode == "head" and loaded.info.head_kind == "token-classification"
    settings = BatchSettings(
        model=model_spec, analyses=("predictions",) if mode == "head" else ("zero-shot",), lowercase=lowercase,
        labels=tuple(descriptions) if mode == "zero-shot" else (), temperature=temperature, batch_size=batch_size,
        word_probs=token_level,
        env={key: os.environ[key] for key in ("HF_HUB_OFFLINE", "HF_HOME", "CBERT_MODEL") if key in os.environ})
    frame = pd.DataFrame({"row": np.arange(len(texts), dtype=np.int64), "id": [str(i) for i in range(len(texts))],
                          "text": list(texts)})
    started = time.perf_counter()
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        elapsed = time.perf_counter() - started
        left = elapsed / done[0] * (len(texts) - done[0])
        report(progress, done[0] / len(texts), f"{done[0]:,} of {len(texts):,} notes, {_left(left)}")

    report(progress, 0.0, f"0 of {len(texts):,} notes")
    if engine == "ray":
        results = run_ray(frame, settings, chunk_size=chunk_size, workers=workers, progress=advance)
    else:
        results = run_local(frame, settings, chunk_size=chunk_size, progress=advance, loaded=loaded)
    seconds = time.perf_counter() - started
    counts = dict(n_tokens=results["n_tokens"].to_numpy(np.int64), n_windows=results["n_windows"].to_numpy(np.int64))
    if token_level:
        labels = loaded.info.labels or tuple(f"LABEL_{i}" for i in range(results["word_probs"][0].shape[-1]))
        probs, rows, spans = [], [], []
        for row, (text, word_probs) in enumerate(zip(texts, results["word_probs"])):
            words = whitespace_words(text)
            probs.append(np.asarray(word_probs, dtype=np.float32).reshape(len(words), len(labels)))
            rows += [row] * len(words)
            spans += words
        return CollectionPredictions(
            mode=mode, unit="word", classes=tuple(labels), descriptions=(), probs=np.concatenate(probs),
            unit_rows=np.asarray(rows, np.int32), unit_spans=np.asarray(spans, np.int32).reshape(-1, 2),
            seconds=seconds, engine=engine, **counts)
    column = "label_probs" if mode == "head" else "zero_shot_probs"
    probs = np.stack([np.asarray(row, dtype=np.float32) for row in results[column]])  # [row, class]
    names = (loaded.info.labels or tuple(f"LABEL_{i}" for i in range(probs.shape[1]))) if mode == "head" \
        else tuple(classes)
    return CollectionPredictions(
        mode=mode, unit="note", classes=tuple(names), descriptions=tuple(descriptions) if mode == "zero-shot" else (),
        probs=probs, unit_rows=np.arange(len(texts), dtype=np.int32),
        unit_spans=np.asarray([(0, len(text)) for text in texts], np.int32).reshape(-1, 2), seconds=seconds,
        engine=engine, **counts)


def _left(seconds: float) -> str:
    if seconds < 1:
        return "almost done"
    return f"about {seconds:.0f} s left" if seconds < 90 else f"about {seconds / 60:.0f} min left"


def planned_passes(loaded: LoadedModel, texts: Sequence[str], *, lowercase: bool | None = None,
                   batch_size: int = encode.DEFAULT_BATCH_SIZE, sample: int = ESTIMATE_SAMPLE) -> Passes:
    """The forward passes :func:`predict_collection` runs, for an estimate before it runs.

    A large collection is estimated from an evenly spread sample of ``sample`` notes (their windows
    repeated to the collection's size), so the estimate costs a moment, not a tokenization of every note.
    """
    if not texts:
        return Passes()
    step = max(1, len(texts) // max(1, sample))
    chosen = list(texts[::step])[:sample]
    plans = plan_notes(loaded, chosen, RunOptions(lowercase=lowercase, max_chars=2**62))
    lengths = np.asarray([window.size + 2 for plan in plans for window in plan.windows], dtype=np.int64)
    total = max(1, round(len(lengths) * len(texts) / len(chosen)))
    return encode.planned_passes(np.resize(lengths, total).tolist(), batch_size=batch_size)
