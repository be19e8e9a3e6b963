"""Trace speed and memory on the real-size (Bio_ClinicalBERT-shaped) checkpoint.

Prints, for notes of 128, 512 and 5,000 tokens:
  * trace time / plain forward time (the same weights loaded with the default
    SDPA attention, no extra outputs, over the same windows), same process;
  * the trace's memory size (it keeps queries and keys, not every attention weight);
  * the 5,000-token trace time as a multiple of the 512-token one;
then how long one head's weights take to compute on demand and how far they are from the model's own
(an eager copy of the same weights that returns them), the bf16 autocast speed-up with its largest attention difference, the cost
of the optional captures, and the offline start-up decision time.

    .venv/bin/python bench/trace.py [--quick]

``--quick``: a tiny masked-LM (64 positions) and notes of 16, 64 and 300 tokens (several
windows), one repeat; the hub is a closed local port instead of the unreachable internet.
"""

from __future__ import annotations

import os
import socket
import time

from common import announce, bench_checkpoint, bench_parser, best_time, note_with_tokens, paired_times

# isort: split
# after common, which puts the repository on the path and sets the OpenMP wait policy before torch loads
import numpy as np
import torch
from transformers import AutoModelForMaskedLM

from cbert_core.model.loading import load_model, resolve_default_model
from cbert_core.model.precision import bf16_is_fast
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.run.trace import trace

GOALS = {"ratio_512": 1.25, "mb_512": 45.0, "mb_5000": 400.0, "multiple_5000": 12.0, "decision_s": 3.0,
         "head_ms": 20.0, "recomputed_difference": 2e-3}
SIZES = (128, 512, 5000)  # short, one full window, a long note of many windows
QUICK_SIZES = (16, 64, 300)  # the same on the tiny model, whose window holds 64 positions


def plain_forward(model: torch.nn.Module, result) -> None:
    """The model with SDPA attention over the trace's windows, nothing captured."""
    with torch.inference_mode():
        for window in range(len(result.windows)):
            ids = torch.from_numpy(result.input_ids[result.window_positions(window)].copy())[None]
            model(input_ids=ids)


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    announce(args.quick)
    repeats = 1 if args.quick else None  # None: the counts below
    torch.manual_seed(0)
    folder = bench_checkpoint(args.quick)
    loaded = load_model(str(folder))
    plain = AutoModelForMaskedLM.from_pretrained(folder).eval()  # default attention: SDPA
    print(f"checkpoint: {folder} ({loaded.info.num_layers} layers x {loaded.info.num_heads} heads, "
          f"hidden {loaded.info.hidden_size}); plain model attention: {plain.config._attn_implementation}; "
          f"torch threads: {torch.get_num_threads()}; CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    tokenizer = loaded.tokenizer()
    _, full, long = sizes = QUICK_SIZES if args.quick else SIZES
    rows = []
    times: dict[int, float] = {}
    for size in sizes:
        content = size - 2 if size <= loaded.info.max_tokens else size
        text = note_with_tokens(tokenizer, content, quick=args.quick)
        result = trace(loaded, plan_note(loaded, text))
        traced, base = paired_times(lambda: trace(loaded, plan_note(loaded, text)), lambda: plain_forward(plain, result),
                                    repeats=repeats or (7 if size <= full else 3))
        times[size] = traced
        rows.append((size, len(result.tokens), len(result.windows), traced, base, traced / base,
                     result.nbytes / 2**20))
    print("\n tokens  positions  windows  trace s  plain s  trace/plain  trace MB")
    for size, positions, windows, traced, base, ratio, megabytes in rows:
        print(f"{size:7d}  {positions:9d}  {windows:7d}  {traced:7.3f}  {base:7.3f}  {ratio:11.2f}  {megabytes:8.1f}")
    ratio_full = rows[1][5]
    mb_full = rows[1][6]
    multiple = times[long] / times[full]
    print(f"\n{full:,} tokens: trace/plain = {ratio_full:.2f}x (goal <= {GOALS['ratio_512']}x); "
          f"trace size {mb_full:.1f} MB (goal <= {GOALS['mb_512']:.0f} MB)")
    print(f"{long:,} tokens: {multiple:.1f}x the {full:,}-token time (goal <= {GOALS['multiple_5000']:.0f}x), "
          f"{rows[2][2]} windows; trace size {rows[2][6]:.1f} MB (goal <= {GOALS['mb_5000']:.0f} MB)")

    text = note_with_tokens(tokenizer, full - 2, quick=args.quick)
    fp32 = trace(loaded, plan_note(loaded, text))
    bf16 = trace(loaded, plan_note(loaded, text, RunOptions(precision="bf16")))
    t_fp32, t_bf16 = paired_times(lambda: trace(loaded, plan_note(loaded, text)),
                                  lambda: trace(loaded, plan_note(loaded, text, RunOptions(precision="bf16"))),
                                  repeats=repeats or 2)
    heads = [(layer, head) for layer in range(loaded.info.num_layers) for head in range(loaded.info.num_heads)]
    window = fp32.attentions[0]
    head_s = best_time(lambda: [window.head(layer, head) for layer, head in heads[::7]], repeats=repeats or 5)
    head_s /= len(heads[::7])
    whole_s = best_time(lambda: np.stack([window.layer(layer) for layer in range(loaded.info.num_layers)]),
                        repeats=repeats or 2)
    eager = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.inference_mode():
        own = torch.stack(eager(input_ids=torch.from_numpy(fp32.input_ids.copy())[None], output_attentions=True).attentions)
    recomputed = float(np.abs(np.asarray(window, dtype=np.float32) - own[:, 0].float().numpy()).max())
    del eager, own
    print(f"\none head's weights on demand at {full:,} tokens: {head_s * 1000:.1f} ms (goal <= {GOALS['head_ms']:.0f} ms); "
          f"a whole window {whole_s:.2f} s")
    print(f"recomputed attention vs the model's own (eager copy): largest difference {recomputed:.2e} "
          f"(goal <= {GOALS['recomputed_difference']:.0e}; queries float16, keys float32)")
    difference = max(float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())
                     for a, b in zip(fp32.attentions, bf16.attentions))
    print(f"\nbf16 autocast at {full:,} tokens: {t_fp32 / t_bf16:.2f}x the fp32 speed "
          f"({t_fp32:.3f} s fp32, {t_bf16:.3f} s bf16); largest attention difference {difference:.4f} "
          f"(this CPU {'has' if bf16_is_fast() else 'lacks'} native bf16 (AVX512-BF16 or AMX), without which "
          f"bf16 is slower than fp32)")

    everything = {"embeddings.word", "embeddings.position", "embeddings.token_type", "attention_update", "ffn_update"}
    with_qk = best_time(lambda: trace(loaded, plan_note(loaded, text), capture_qk=True), repeats=repeats or 3)
    with_all = best_time(lambda: trace(loaded, plan_note(loaded, text), capture_qk=True, capture_ffn=True,
                                       extra_sites=everything), repeats=repeats or 3)
    print(f"optional captures at {full:,} tokens: +queries/keys {with_qk / t_fp32:.2f}x, "
          f"+everything for 'Inside the model' {with_all / t_fp32:.2f}x the default trace")

    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}}
    if args.quick:  # a closed local port stands for the unreachable hub: quick mode never leaves the machine
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
    decision = resolve_default_model(env=env)
    print(f"\noffline start-up decision (hub unreachable here): {decision.seconds:.2f} s -> {decision.spec.label} "
          f"(goal <= {GOALS['decision_s']:.0f} s)")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{silent.getsockname()[1]}"
    started = time.perf_counter()
    decision = resolve_default_model(env=env)
    silent.close()
    print(f"start-up decision with a hub that accepts but never answers: {time.perf_counter() - started:.2f} s "
          f"-> {decision.spec.label}")


if __name__ == "__main__":
    main()
