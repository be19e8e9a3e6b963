"""Shared bench helpers: the checkpoint (real-size, or tiny in quick mode), notes of an exact token count,
and timing.

Every bench takes ``--quick``: the same code path end to end on tiny models the bench writes itself and
tiny sizes, without ../shared, in seconds. Its numbers mean nothing; it shows the script still runs
(tests/test_bench.py runs each bench that way).
"""

from __future__ import annotations

import argparse
import atexit
import csv
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models, browser_support, load_sessions
# As app.py does, before torch is imported: OpenMP threads sleep instead of spinning while they wait
# (spinning made torch several times slower when other work shares the two cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = ROOT.parent / "shared"
SHAPED_TOOL = SHARED / "tools" / "make_shaped_checkpoint.py"
MTSAMPLES = SHARED / "data" / "clinical_text" / "mtsamples_subset_240.csv"
NEGEX = SHARED / "data" / "clinical_text" / "negex_rsAnnotations-1-120-random.txt"
FALLBACK_NOTE = (
    "HISTORY OF PRESENT ILLNESS: The patient is a 67-year-old man with COPD who presents with two days of "
    "worsening shortness of breath and a productive cough. He denies chest pain. No fever. He takes "
    "metoprolol 25 mg b.i.d. and aspirin 81 mg q.d. ASSESSMENT/PLAN: COPD exacerbation. No evidence of "
    "pneumonia on chest x-ray. Start prednisone and nebulizers. "
)
QUICK_NOTICE = ("quick mode: tiny test models and tiny sizes; the numbers below mean nothing (this run only "
                "shows that the bench still works)")


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is the first line of ``doc``, with ``--quick``."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny test models and sizes, no ../shared: checks in seconds that the bench runs "
                             "(the numbers mean nothing)")
    return parser


def training_options(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    """The fine-tuning benches' options: --epochs (default ``epochs``), --unfreeze, --batch-size, --threads, --seed."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--unfreeze", type=int, default=2, help="top encoder layers to train with the head")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)


def training_args(parser: argparse.ArgumentParser) -> argparse.Namespace | None:
    """Parse a NegEx fine-tuning bench's arguments and announce quick mode (one epoch there).

    None when the NegEx set is missing outside quick mode (said on stderr): the bench then returns 2.
    """
    args = parser.parse_args()
    announce(args.quick)
    if args.quick:
        args.epochs = 1
    elif negex_missing():
        return None
    return args


def negex_missing() -> bool:
    """Whether the public NegEx set (../shared) is missing; if so, says so on stderr."""
    if NEGEX.is_file():
        return False
    print(f"{NEGEX} is missing: this bench needs ../shared (the public NegEx test set), or run with --quick.",
          file=sys.stderr)
    return True


def announce(quick: bool) -> None:
    """Say first, in quick mode, that the numbers mean nothing."""
    if quick:
        print(QUICK_NOTICE, flush=True)


def cpu_line() -> str:
    """The CPU's model name and whether it has bf16/AMX instructions, and the load average."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        text = ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")),
                 platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("Flags")), [])
    extras = [flag for flag in ("avx512_bf16", "amx_bf16", "amx_tile") if flag in flags]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"cpu: {model} ({os.cpu_count()} cores; {' '.join(extras) or 'no avx512_bf16/amx'}); load average {load}"


def scratch_folder(prefix: str = "cbert-bench-") -> Path:
    """A temporary folder removed when this process exits (also when it is stopped with SIGTERM)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return folder


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the atexit clean-up, which a plain SIGTERM skips


def shaped_checkpoint(layout: str = "modern") -> Path:
    """Write (once per run) the Bio_ClinicalBERT-shaped random checkpoint from ../shared."""
    if not SHAPED_TOOL.is_file():
        raise SystemExit(f"{SHAPED_TOOL} is missing: the benchmarks need ../shared for the real-size checkpoint "
                         f"(or run with --quick).")
    folder = scratch_folder() / layout
    args = [sys.executable, str(SHAPED_TOOL), str(folder)] + (["--hub-layout"] if layout == "hub" else [])
    subprocess.run(args, check=True, capture_output=True)
    return folder


def tiny_checkpoint(head: str = "masked-lm", max_positions: int = 64) -> Path:
    """A tiny seeded BERT (tests/tiny_models.py: 2 layers x 4 heads, hidden 32, a small cased vocabulary)."""
    from tiny_models import write_bert

    return write_bert(scratch_folder() / head, head=head, max_positions=max_positions)


def bench_checkpoint(quick: bool) -> Path:
    """The real-size checkpoint, or in quick mode a tiny masked-LM."""
    return tiny_checkpoint() if quick else shaped_checkpoint()


def corpus_text(quick: bool = False) -> str:
    """Public clinical text (MTSamples) when ../shared has it (not in quick mode), else a synthetic note repeated."""
    if MTSAMPLES.is_file() and not quick:
        with MTSAMPLES.open(encoding="utf-8") as handle:
            return " ".join(row["transcription"] for row in csv.DictReader(handle))
    return FALLBACK_NOTE * 400


def note_with_tokens(tokenizer: object, content_tokens: int, text: str | None = None, *, quick: bool = False) -> str:
    """A prefix of the corpus that tokenizes to exactly ``content_tokens`` word pieces."""
    from cbert_core.text.tokens import tokenize_note

    source = text or corpus_text(quick)
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

