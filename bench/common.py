"""Shared bench helpers: the real-size checkpoint, notes of an exact token count, timing."""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
SHAPED_TOOL = SHARED / "tools" / "make_shaped_checkpoint.py"
MTSAMPLES = SHARED / "data" / "clinical_text" / "mtsamples_subset_240.csv"
FALLBACK_NOTE = (
    "HISTORY OF PRESENT ILLNESS: The patient is a 67-year-old man with COPD who presents with two days of "
    "worsening shortness of breath and a productive cough. He denies chest pain. No fever. He takes "
    "metoprolol 25 mg b.i.d. and aspirin 81 mg q.d. ASSESSMENT/PLAN: COPD exacerbation. No evidence of "
    "pneumonia on chest x-ray. Start prednisone and nebulizers. "
)


def shaped_checkpoint(layout: str = "modern") -> Path:
    """Write (once per run) the Bio_ClinicalBERT-shaped random checkpoint from ../shared."""
    if not SHAPED_TOOL.is_file():
        raise SystemExit(f"{SHAPED_TOOL} is missing: the benchmarks need ../shared for the real-size checkpoint.")
    folder = Path(tempfile.mkdtemp(prefix="cbert-bench-")) / layout
    args = [sys.executable, str(SHAPED_TOOL), str(folder)] + (["--hub-layout"] if layout == "hub" else [])
    subprocess.run(args, check=True, capture_output=True)
    return folder


def corpus_text() -> str:
    """Public clinical text (MTSamples) when ../shared has it, else a synthetic note repeated."""
    if MTSAMPLES.is_file():
        with MTSAMPLES.open(encoding="utf-8") as handle:
            return " ".join(row["transcription"] for row in csv.DictReader(handle))
    return FALLBACK_NOTE * 400


def note_with_tokens(tokenizer: object, content_tokens: int, text: str | None = None) -> str:
    """A prefix of the corpus that tokenizes to exactly ``content_tokens`` word pieces."""
    from cbert_core.text.tokens import tokenize_note

    source = text or corpus_text()
    tokens = tokenize_note(tokenizer, source[: content_tokens * 12])
    if len(tokens) < content_tokens:
        raise ValueError("corpus too short")
    return source[: int(tokens.offsets[content_tokens - 1, 1])]


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_times(first: Callable[[], object], second: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """Median wall times of two functions run alternately (after a warm-up of each).

    Alternating keeps slow drifts of a shared machine from favouring either side.
    """
    first()
    second()
    a_times, b_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        first()
        a_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        second()
        b_times.append(time.perf_counter() - started)
    return statistics.median(a_times), statistics.median(b_times)
