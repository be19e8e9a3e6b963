"""Evaluate bench: the Evaluate page's whole-collection run against transformers' pipeline, and the batch engine's one pass.

1. The 2,376 NegEx sentences (../shared) through a sequence-classification head on the real-size
   Bio_ClinicalBERT-shaped checkpoint (../shared/tools/make_shaped_checkpoint.py, with a seeded
   2-class head): :func:`cbert_core.evaluation.predictions.predict_collection` (the batch engine,
   local) against ``transformers.pipeline("text-classification")`` on the same sentences, run
   alternately in the same process. Goal: ours / pipeline <= 1.0, the same predicted classes.
2. 60 MTSamples notes through the bundled model: the batch engine asked for tokens + embeddings +
   zero-shot predictions at once, against a plain batched forward over the same windows (no
   hidden states kept). Goal: <= 1.5x the plain forward.
3. 20,000 rows (the NegEx sentences repeated) evaluated zero-shot through the bundled model:
   wall time and peak resident memory above the start.

    .venv/bin/python bench/evaluate.py [--rows 20000] [--notes 60] [--rounds 2] [--sentences N]
        [--parts pipeline,one-pass,rows] [--threads 2] [--quick]

``--quick``: tiny models the bench writes, made-up sentences, tiny sizes; no ../shared.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Callable

from common import (
    MTSAMPLES,
    NEGEX,
    announce,
    bench_parser,
    corpus_text,
    cpu_line,
    negex_missing,
    scratch_folder,
    shaped_checkpoint,
    tiny_checkpoint,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUICK_FINDINGS = ("chest pain", "fever", "cough", "shortness of breath", "pneumonia", "edema")


def load_line() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def sentences(quick: bool) -> tuple[list[str], list[str]]:
    """NegEx sentences (runs of spaces closed up) and their negation status, or made-up ones in quick mode."""
    if quick:
        texts = [f"The patient {'denies' if i % 2 else 'reports'} {QUICK_FINDINGS[i % 6]} today." for i in range(24)]
        return texts, ["Negated" if i % 2 else "Affirmed" for i in range(24)]
    if negex_missing():
        raise SystemExit(2)
    from cbert_core.corpus.collection import read_table

    table = read_table(NEGEX).frame
    status = next(column for column in table.columns if column.startswith("negation_status"))
    return [" ".join(text.split()) for text in table["sentence"]], [value.strip() for value in table[status]]


def classifier_checkpoint(quick: bool) -> str:
    """The real-size checkpoint with a seeded 2-class sequence-classification head (tiny in quick mode)."""
    if quick:
        return str(tiny_checkpoint("sequence-classification"))
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    shaped = shaped_checkpoint()
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        shaped, num_labels=2, id2label={0: "Affirmed", 1: "Negated"}, label2id={"Affirmed": 0, "Negated": 1})
    folder = scratch_folder() / "seq-cls"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(shaped).save_pretrained(folder)
    return str(folder)


def alternate(first: Callable[[], object], second: Callable[[], object], rounds: int) -> tuple[list[float],
                                                                                              list[float], tuple]:
    """Wall times of ``rounds`` alternate runs of each, and the last result of each."""
    a_times, b_times, last = [], [], [None, None]
    for _ in range(rounds):
        for index, (fn, times) in enumerate(((first, a_times), (second, b_times))):
            started = time.perf_counter()
            last[index] = fn()
            times.append(time.perf_counter() - started)
    return a_times, b_times, tuple(last)


def against_pipeline(texts: list[str], rounds: int, quick: bool) -> None:
    import numpy as np
    from transformers import pipeline

    from cbert_core.evaluation.predictions import predict_collection
    from cbert_core.model.loading import load_model

    folder = classifier_checkpoint(quick)
    loaded = load_model(folder)
    print(f"checkpoint: {loaded.info.name}: {loaded.info.num_layers} layers, hidden {loaded.info.hidden_size}, "
          f"head {loaded.info.head_kind} {loaded.info.labels}; casing: "
          f"{'lower-cased' if loaded.info.tokenizer_lowercases else 'kept'} (the checkpoint's default, as the pipeline)")
    classify = pipeline("text-classification", model=folder, tokenizer=folder, device=-1)
    labels = loaded.info.labels

    def ours(subset: list[str] = texts) -> np.ndarray:
        return predict_collection(loaded, subset, model_spec=folder).probs

    def theirs(subset: list[str] = texts) -> np.ndarray:
        found = classify(subset, batch_size=16, truncation=True, top_k=None)
        return np.asarray([[next(entry["score"] for entry in row if entry["label"] == name) for name in labels]
                           for row in found], dtype=np.float32)

    ours(texts[:32]), theirs(texts[:32])  # warm-up
    ours_times, pipe_times, (mine, pipes) = alternate(ours, theirs, rounds)
    same = float((mine.argmax(-1) == pipes.argmax(-1)).mean())
    ratio = statistics.median(ours_times) / statistics.median(pipe_times)
    print(f"{len(texts):,} {'made-up' if quick else 'NegEx'} sentences, {rounds} alternate round(s):")
    print("  ours (batch engine, local) s: " + ", ".join(f"{t:.2f}" for t in ours_times))
    print("  transformers pipeline s:     " + ", ".join(f"{t:.2f}" for t in pipe_times))
    print(f"ours / pipeline (median wall) = {ratio:.3f} (goal <= 1.0: {'met' if ratio <= 1.0 else 'NOT met'})")
    print(f"same predicted class: {same:.2%} of sentences; largest probability difference "
          f"{float(np.abs(mine - pipes).max()):.2e}")


def mtsamples_notes(count: int, quick: bool) -> list[str]:
    if quick or not MTSAMPLES.is_file():
        text = corpus_text(quick=True)
        return [text[i * 700:(i + 1) * 700] for i in range(count)]
    import csv

    with MTSAMPLES.open(encoding="utf-8") as handle:
        return [row["transcription"] for row in csv.DictReader(handle) if row["transcription"].strip()][:count]


def one_pass_against_plain(notes: list[str], rounds: int, quick: bool) -> None:
    import numpy as np
    import pandas as pd
    import torch

    from cbert_core.corpus.batch import BatchSettings, run_local
    from cbert_core.model.loading import load_model
    from cbert_core.run.encode import DEFAULT_BATCH_SIZE, pad_id
    from cbert_core.run.plan import RunOptions, plan_notes

    loaded = load_model("bundled")
    frame = pd.DataFrame({"row": np.arange(len(notes)), "id": [str(i) for i in range(len(notes))], "text": notes})
    settings = BatchSettings(model="bundled", analyses=("tokens", "embeddings", "zero-shot"),
                             labels=("pneumonia present", "no evidence of pneumonia"))

    def engine() -> object:
        return run_local(frame, settings, loaded=loaded)

    plans = plan_notes(loaded, notes, RunOptions(max_chars=2**62))
    windows = sorted((plan.window_ids(window) for plan in plans for window in plan.windows), key=len)
    padding = pad_id(loaded)

    def plain() -> None:  # the same windows, length-sorted batches of the engine's size, nothing kept
        for start in range(0, len(windows), DEFAULT_BATCH_SIZE):
            batch = windows[start:start + DEFAULT_BATCH_SIZE]
            width = max(len(ids) for ids in batch)
            ids = torch.full((len(batch), width), padding, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, sequence in enumerate(batch):
                ids[row, :len(sequence)] = torch.from_numpy(sequence)
                mask[row, :len(sequence)] = 1
            with torch.inference_mode():
                loaded.model.base_model(input_ids=ids, attention_mask=mask)

    run_local(frame.iloc[:2], settings, loaded=loaded), plain()  # warm-up
    engine_times, plain_times, _results = alternate(engine, plain, rounds)
    ratio = statistics.median(engine_times) / statistics.median(plain_times)
    print(f"{len(notes)} {'made-up' if quick or not MTSAMPLES.is_file() else 'MTSamples'} notes, {len(windows)} windows, "
          f"bundled model:")
    print("  batch engine, tokens + embeddings + zero-shot s: " + ", ".join(f"{t:.2f}" for t in engine_times))
    print("  plain batched forward s:                          " + ", ".join(f"{t:.2f}" for t in plain_times))
    print(f"one pass / plain forward (median wall) = {ratio:.3f} (goal <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def many_rows(texts: list[str], gold: list[str], rows: int) -> None:
    from cbert_core.evaluation.calibration import calibrate
    from cbert_core.evaluation.metrics import metrics
    from cbert_core.evaluation.outcomes import outcomes
    from cbert_core.evaluation.predictions import predict_collection
    from cbert_core.model.loading import load_model

    loaded = load_model("bundled")
    repeated = [texts[i % len(texts)] for i in range(rows)]
    labels = [gold[i % len(gold)] for i in range(rows)]
    classes = tuple(sorted(set(labels)))
    descriptions = tuple(f"the finding is {name.lower()}" for name in classes)
    base, peak, running = rss_bytes(), [rss_bytes()], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    started = time.perf_counter()
    found = predict_collection(loaded, repeated, model_spec="bundled", mode="zero-shot", classes=classes,
                               descriptions=descriptions)
    predicted = time.perf_counter() - started
    measured = metrics(outcomes(found, labels))
    calibrate(outcomes(found, labels))
    total = time.perf_counter() - started
    running[0] = False
    watcher.join()
    print(f"{rows:,} rows zero-shot through the bundled model: predictions {predicted:.1f} s "
          f"({rows / predicted:.0f} rows/s), with metrics and calibration {total:.1f} s; "
          f"peak resident memory {peak[0] / 2**20:.0f} MB ({(peak[0] - base) / 2**20:+.0f} MB over the start; "
          f"process maximum {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB); "
          f"accuracy {measured.accuracy:.3f}")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the large zero-shot run")
    parser.add_argument("--notes", type=int, default=60, help="MTSamples notes of the one-pass comparison")
    parser.add_argument("--rounds", type=int, default=2, help="alternate timed rounds of each comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=0,
                        help="an evenly spread sample of this many NegEx sentences (0: all 2,376)")
    parser.add_argument("--parts", default="pipeline,one-pass,rows",
                        help="which comparisons to run (comma-separated: pipeline, one-pass, rows)")
    args = parser.parse_args()
    announce(args.quick)
    if args.quick:
        args.rows, args.notes, args.rounds = 200, 4, 1
    import torch

    torch.set_num_threads(args.threads)
    print(cpu_line())
    print(load_line() + f"; torch threads {torch.get_num_threads()}")
    texts, gold = sentences(args.quick)
    if args.sentences and args.sentences < len(texts):
        keep = [round(i * (len(texts) - 1) / (args.sentences - 1)) for i in range(args.sentences)]
        texts, gold = [texts[i] for i in keep], [gold[i] for i in keep]
        print(f"an evenly spread sample of {len(texts):,} sentences (--sentences)")
    parts = {part.strip() for part in args.parts.split(",")}
    if "pipeline" in parts:
        against_pipeline(texts, args.rounds, args.quick)
        print(load_line())
    if "one-pass" in parts:
        one_pass_against_plain(mtsamples_notes(args.notes, args.quick), args.rounds, args.quick)
        print(load_line())
    if "rows" in parts:
        many_rows(texts, gold, args.rows)
        print(load_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
