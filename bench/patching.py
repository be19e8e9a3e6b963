"""Activation patching speed: our batched scans against a plain one-patch-per-forward loop, same hooks, same run.

On the real-size (Bio_ClinicalBERT-shaped, random weights) checkpoint, a minimal pair of 64 positions
("... denies chest pain ... [MASK] ..." against "... reports ..."), the target the log-probability of a
word at the [MASK]; for each of the four scans (residual stream at every layer x position, attention
block output and feed-forward output at every layer x position, each head's output at every layer):

  * the batched scan (:func:`cbert_core.analyses.patching.patched_scores`: runs grouped in batches under
    the memory bound, each starting at the layer it patches, the last layer at the target's row only);
  * the plain loop (:func:`cbert_core.analyses.patching.one_run_at_a_time`: one whole forward pass per
    patched run, every patch written by the same ``patch_activations`` hooks);

both from the same two recorded runs, interleaved per scan; the seconds, the speed ratio (goal >= 4x),
and the largest difference between the two (identical results up to float rounding).

    .venv/bin/python bench/patching.py [--quick]

``--quick``: the tiny test model and a 32-position pair.
"""

from __future__ import annotations

import os
import time

from common import announce, bench_checkpoint, bench_parser, cpu_line, note_with_tokens

GOAL_RATIO = 4.0
SCANS_MEASURED = ("residual", "attention", "ffn", "heads")
PAIR_SENTENCE = " The patient denies chest pain. [MASK] fever."


def pair_text(tokenizer: object, positions: int, quick: bool) -> str:
    """A note of ``positions`` positions ([CLS] and [SEP] included) ending with the pair's sentence."""
    from cbert_core.text.tokens import tokenize_note

    tail = len(tokenize_note(tokenizer, PAIR_SENTENCE))
    for content in range(positions - 2 - tail, 0, -1):
        text = note_with_tokens(tokenizer, content, quick=quick) + PAIR_SENTENCE
        if len(tokenize_note(tokenizer, text)) == positions - 2:
            return text
    raise ValueError(f"no note of {positions} positions")


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    announce(args.quick)
    import numpy as np
    import torch

    from cbert_core.analyses.minimal_pair import make_pair
    from cbert_core.analyses.patching import (
        first_changed_position,
        one_run_at_a_time,
        patched_scores,
        record_run,
        scan_runs,
    )
    from cbert_core.analyses.targets import masked_token_target
    from cbert_core.model.hooks import hook_count
    from cbert_core.model.loading import load_model
    from cbert_core.run.forward import DEFAULT_INFERENCE_MEMORY, fit_batch
    from cbert_core.run.plan import RunOptions, plan_note

    folder = bench_checkpoint(args.quick)
    loaded = load_model(str(folder))
    positions = 32 if args.quick else 64
    text = pair_text(loaded.tokenizer(), positions, args.quick)
    plan = plan_note(loaded, text, RunOptions())
    target = masked_token_target(loaded, "no")
    pair = make_pair(loaded, plan, text.replace("denies", "reports"), target)
    layers, heads = len(loaded.anatomy.layers), loaded.anatomy.num_heads
    print(f"checkpoint: {folder.name} ({'tiny test model' if args.quick else 'BERT-base shape'}, random weights), "
          f"{layers} layers x {heads} heads; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(cpu_line())
    print(f"pair: {pair.positions} positions, one to one: {pair.one_to_one}; target log p('no' at the [MASK]); "
          f"denoising (clean into the edited run)")
    clean = record_run(loaded, pair.clean_ids, target, pair.clean_row)
    corrupted = record_run(loaded, pair.corrupted_ids, pair.corrupted_target, pair.corrupted_row)
    print(f"clean {clean.score:.5f}, edited {corrupted.score:.5f}, difference {clean.score - corrupted.score:+.2e}")
    batch = fit_batch(loaded, pair.positions, 256, DEFAULT_INFERENCE_MEMORY, backward=False, what="patching")
    print(f"batched: up to {batch} runs per batch under the {DEFAULT_INFERENCE_MEMORY / 2**30:.1f} GB bound")
    print("\n scan        runs  batched s  one-per-forward s  ratio  largest |difference|  share range")
    position = first_changed_position(pair)
    total_batched = total_plain = 0.0
    worst = 0.0
    for name in SCANS_MEASURED:
        runs, _cells = scan_runs(name, pair, "denoising", layers, heads, frozenset(), position)
        started = time.perf_counter()
        batched = patched_scores(loaded, corrupted, clean, runs, pair.corrupted_target)
        batched_s = time.perf_counter() - started
        started = time.perf_counter()
        plain = one_run_at_a_time(loaded, corrupted, clean, runs, pair.corrupted_target)
        plain_s = time.perf_counter() - started
        difference = float(np.max(np.abs(batched - plain)))
        worst = max(worst, difference)
        share = (batched - corrupted.score) / (clean.score - corrupted.score)
        total_batched += batched_s
        total_plain += plain_s
        print(f" {name:<10} {len(runs):>5}  {batched_s:>9.2f}  {plain_s:>17.2f}  {plain_s / batched_s:>5.1f}x  "
              f"{difference:>20.2e}  {share.min():+.2f}..{share.max():+.2f}")
    ratio = total_plain / total_batched
    print(f"\nall four scans: batched {total_batched:.1f} s, one per forward {total_plain:.1f} s, "
          f"ratio {ratio:.1f}x (goal >= {GOAL_RATIO:.0f}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    print(f"identical results: largest |difference| of the target {worst:.2e} (float32 rounding)")
    print(f"hooks left on the model afterwards: {hook_count(loaded.model)}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (2 CPUs shared with other work)")


if __name__ == "__main__":
    main()
