"""Layer-wise probes on NegEx: can Affirmed vs Negated be read linearly at the condition's pieces, and where?

The 2,376 NegEx sentences from ../shared (whitespace runs collapsed) on the bundled all-MiniLM-L6-v2:
features at the mean of the Condition's word pieces for every layer (0 = the embeddings), all layers from
ONE batched pass per sentence (:func:`cbert_core.analyses.probes.probe_features`), then a logistic
regression per layer with 5-fold stratified cross-validation, and the control task (a random label fixed
per condition, drawn from the label frequencies). Prints accuracy (mean ± spread over folds), control
accuracy and selectivity per layer, the majority baseline, and the time of the pass and of the fits,
with the time one pass per layer would take measured on a sample.

    .venv/bin/python bench/probes.py [--quick]

``--quick``: a tiny BERT encoder and 40 made-up sentences in the NegEx file's format, 3 folds, no ../shared.
"""

from __future__ import annotations

import os
import time

from finetune import quick_negex

from common import NEGEX, announce, bench_parser, cpu_line, negex_missing, tiny_checkpoint


def main() -> int:
    parser = bench_parser(__doc__)
    args = parser.parse_args()
    announce(args.quick)
    if not args.quick and negex_missing():
        return 2
    import numpy as np
    import torch

    from cbert_core.analyses.probes import control_labels, fit_probes, phrase_span, probe_features
    from cbert_core.corpus.collection import read_table
    from cbert_core.model.loading import BUNDLED, load_model
    from cbert_core.run.encode import run_sequences
    from cbert_core.run.plan import plan_note

    table = read_table(quick_negex() if args.quick else NEGEX).frame
    status = next(column for column in table.columns if column.startswith("negation_status"))
    sentences = [" ".join(str(text).split()) for text in table["sentence"]]
    conditions = [" ".join(str(text).split()) for text in table["Condition"]]
    labels = [str(value).strip() for value in table[status]]
    loaded = load_model(str(tiny_checkpoint("encoder")) if args.quick else BUNDLED)
    folds = 3 if args.quick else 5
    print(f"model: {loaded.info.name} ({loaded.info.num_layers} layers, hidden {loaded.info.hidden_size}); torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(cpu_line())

    started = time.perf_counter()
    plans = [plan_note(loaded, sentence) for sentence in sentences]
    spans = [phrase_span(sentence, condition) for sentence, condition in zip(sentences, conditions)]
    keep = [i for i, span in enumerate(spans) if span is not None and labels[i] in ("Affirmed", "Negated")]
    planned_s = time.perf_counter() - started
    names = ("Affirmed", "Negated")
    label_ids = np.asarray([names.index(labels[i]) for i in keep], dtype=np.int64)
    counts = {name: int((label_ids == index).sum()) for index, name in enumerate(names)}
    print(f"data: {len(sentences):,} {'made-up' if args.quick else 'NegEx'} sentences, {len(keep):,} with their "
          f"condition found and labelled Affirmed/Negated {counts}; features at the condition's pieces")

    started = time.perf_counter()
    features = probe_features(loaded, [plans[i] for i in keep], pooling="phrase", spans=[spans[i] for i in keep])
    features_s = time.perf_counter() - started
    control = control_labels(label_ids, [conditions[i].lower() for i in keep])
    started = time.perf_counter()
    accuracy, controlled = fit_probes(features, label_ids, control, folds=folds)
    fit_s = time.perf_counter() - started

    # One pass per layer (what we avoid), timed on a sample: the same windows encoded once for each layer kept.
    sample = [plans[i].window_ids(plans[i].windows[0]) for i in keep[:200]]
    started = time.perf_counter()
    for _index, _hidden in run_sequences(loaded, sample):
        pass
    one_pass_s = time.perf_counter() - started
    started = time.perf_counter()
    for layer in range(loaded.info.num_layers + 1):
        for _index, _hidden in run_sequences(loaded, sample, layers=[layer]):
            pass
    per_layer_s = time.perf_counter() - started

    majority = float(np.bincount(label_ids).max() / label_ids.size)
    print(f"\n layer       accuracy (± fold sd)  control (± sd)  selectivity   ({folds}-fold CV, logistic regression)")
    for layer in range(accuracy.shape[0]):
        name = "embeddings" if layer == 0 else f"layer {layer}"
        print(f" {name:<11} {accuracy[layer].mean():>8.3f} ± {accuracy[layer].std():.3f}   "
              f"{controlled[layer].mean():>6.3f} ± {controlled[layer].std():.3f}   "
              f"{accuracy[layer].mean() - controlled[layer].mean():>+8.3f}")
    selectivity = accuracy.mean(1) - controlled.mean(1)
    best = int(np.argmax(selectivity))
    print(f"majority baseline (always {names[int(np.argmax(np.bincount(label_ids)))]}): {majority:.3f}; "
          f"most selective: {'embeddings' if best == 0 else f'layer {best}'} ({selectivity[best]:+.3f})")
    print(f"time: planning {planned_s:.1f} s, features for all {accuracy.shape[0]} layers in one pass per sentence "
          f"{features_s:.1f} s ({len(keep) / features_s:.0f} sentences/s), {accuracy.shape[0]} x {folds} x 2 fits "
          f"{fit_s:.1f} s")
    print(f"one full pass per layer instead (sample of {len(sample)} sentences): {per_layer_s:.2f} s vs one pass "
          f"{one_pass_s:.2f} s ({per_layer_s / one_pass_s:.1f}x)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (2 CPUs shared with other work)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
