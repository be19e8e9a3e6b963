"""Fine-tune bench: negated vs affirmed NegEx sentences on the bundled all-MiniLM-L6-v2.

Needs ../shared (the public NegEx test set). Prints wall time, the majority
baseline, validation accuracy, macro-F1 and the confusion matrix.

    .venv/bin/python bench/finetune.py [--epochs 2] [--unfreeze 2] [--input sentence|condition] [--quick]

``--input sentence`` feeds the sentence alone (NegEx writes the condition in
capitals, which an uncased model cannot see); ``--input condition`` feeds
"<condition>: <sentence>" so the model knows which finding the label is about.

``--quick``: a tiny BERT encoder and 40 made-up sentences in the NegEx file's format
(written by the bench), one epoch, no ../shared.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# common sets OMP_WAIT_POLICY=PASSIVE before torch loads: busy-waiting OpenMP threads slow training
# several-fold when other work shares the two cores (measured here: 2.7 s vs 0.41 s per step).
from common import NEGEX, bench_parser, scratch_folder, tiny_checkpoint, training_args, training_options

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NEGEX_HEADER = ("line number", "Condition", "sentence", "negation_status (negated, affirmed, possible)",
                "temporality (historical, recent, hypothetical)", "experiencer (patient, other)")
FINDINGS = ("chest pain", "fever", "cough", "shortness of breath", "pneumonia", "edema", "nausea", "headache",
            "rash", "dizziness")


def quick_negex() -> Path:
    """40 made-up sentences, half negated, in the NegEx file's format (tab-separated, padded, capital findings)."""
    path = scratch_folder() / "negex_quick.txt"
    rows = ["\t".join(NEGEX_HEADER)]
    for index in range(40):
        finding = FINDINGS[index % len(FINDINGS)]
        negated = index % 2 == 0
        sentence = f"The patient {'denies' if negated else 'reports'}   {finding.upper()} today."
        rows.append("\t".join([str(index + 1), finding, sentence, "Negated" if negated else "Affirmed", "Recent",
                               "Patient"]))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def main() -> int:
    parser = bench_parser(__doc__)
    training_options(parser, epochs=2)
    parser.add_argument("--input", choices=("sentence", "condition"), default="condition")
    args = training_args(parser)
    if args is None:
        return 2

    import numpy as np
    import torch

    from cbert_core.corpus.collection import collection_from_texts, read_table
    from cbert_core.model.loading import BUNDLED, load_model
    from cbert_core.training.finetune import FineTuneConfig, fine_tune

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = read_table(quick_negex() if args.quick else NEGEX).frame
    status = next(column for column in table.columns if column.startswith("negation_status"))
    sentences = [" ".join(text.split()) for text in table["sentence"]]  # NegEx pads with runs of spaces
    if args.input == "condition":
        texts = [f"{condition.strip().lower()}: {sentence}" for condition, sentence in
                 zip(table["Condition"], sentences)]
    else:
        texts = sentences
    collection = collection_from_texts(texts, labels=[value.strip() for value in table[status]])
    loaded = load_model(str(tiny_checkpoint("encoder")) if args.quick else BUNDLED)
    config = FineTuneConfig(epochs=args.epochs, batch_size=args.batch_size, unfreeze_layers=args.unfreeze,
                            lr_encoder=5e-5, lr_head=1e-3, max_length=128, seed=args.seed)
    counts = {name: int((np.asarray(collection.labels) == name).sum()) for name in collection.label_names}
    print(f"data: {len(collection):,} {'made-up' if args.quick else 'NegEx'} sentences {counts}; "
          f"input = {args.input}")
    print(f"model: {loaded.info.name} ({loaded.info.num_layers} layers, hidden {loaded.info.hidden_size}); "
          f"torch threads {torch.get_num_threads()}")
    print(f"settings: epochs {config.epochs}, batch {config.batch_size}, top {config.unfreeze_layers} layers + head, "
          f"lr {config.lr_encoder:g} (encoder) / {config.lr_head:g} (head), class-weighted loss, "
          f"max {config.max_length} pieces, validation share {config.validation_fraction:.0%}, seed {config.seed}")
    last = [time.perf_counter()]

    def report(fraction: float, message: str) -> None:
        if time.perf_counter() - last[0] > 30:
            print(f"  {fraction:6.1%}  {message}", flush=True)
            last[0] = time.perf_counter()

    tuned = fine_tune(loaded, collection, config=config, progress=report)
    result = tuned.result
    wall = time.perf_counter() - started
    losses = result.losses
    per_epoch = np.array_split(losses, config.epochs)
    print(f"steps: {result.steps_done} ({len(result.train_rows):,} training / {len(result.validation_rows):,} "
          f"validation sentences, {result.truncated_examples} cut to {config.max_length} pieces)")
    print("mean training loss per epoch: " + ", ".join(f"{chunk.mean():.4f}" for chunk in per_epoch if len(chunk)))
    print(f"training + evaluation time: {result.seconds:.1f} s; wall time incl. loading: {wall:.1f} s")
    majority = result.labels[int(np.bincount(collection.label_ids[result.validation_rows]).argmax())]
    print(f"majority baseline (always '{majority}'): {result.majority_baseline:.4f}")
    print(f"validation accuracy: {result.validation_accuracy:.4f}")
    print(f"macro-F1: {result.macro_f1:.4f} (per class: "
          + ", ".join(f"{name} {score:.4f}" for name, score in zip(result.labels, result.per_class_f1)) + ")")
    width = max(len(name) for name in result.labels) + 2
    print("confusion matrix (rows = true, columns = predicted):")
    print(" " * width + "".join(f"{name:>{width}}" for name in result.labels))
    for name, row in zip(result.labels, result.confusion):
        print(f"{name:<{width}}" + "".join(f"{value:>{width}}" for value in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
