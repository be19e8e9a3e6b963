"""Device bench: trace, Integrated Gradients and a fine-tune step on the chosen device, against the CPU.

    .venv/bin/python bench/device.py [--device auto|cpu|cuda] [--precision fp32|bf16|fp16] [--quick]

The device comes from ``--device``, else from ``CBERT_DEVICE`` (auto: the GPU when torch sees one).
On a GPU server each measure runs on the GPU and, as the baseline in the same run, on the CPU, and
the report gives CPU time / device time; on a CPU-only machine the chosen device is the CPU and the
report says so (``--device cuda`` there stops with the app's own message). Times are medians of
repeated runs after a warm-up; results come back to the CPU as numpy, so each time includes the
copy back (the GPU's work is finished when it is taken).

Needs ../shared (the real-size, random-weight Bio_ClinicalBERT-shaped checkpoint and MTSamples text).
``--quick``: a tiny model and tiny sizes, no ../shared.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from common import announce, bench_checkpoint, bench_parser, best_time, cpu_line, note_with_tokens

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def step_time(run: Callable[[Callable[[object], None]], object]) -> float:
    """Median seconds between fine-tune steps (the first step, which warms up, is left out)."""
    marks: list[float] = []
    started = time.perf_counter()
    run(lambda _report: marks.append(time.perf_counter()))
    gaps = [later - earlier for earlier, later in zip([started, *marks], marks)][1:]
    return statistics.median(gaps) if gaps else float("nan")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where to run (default: CBERT_DEVICE, else auto)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    announce(args.quick)

    import torch

    from cbert_core.analyses.attribution import attribute
    from cbert_core.analyses.targets import masked_token_target
    from cbert_core.corpus.collection import collection_from_texts
    from cbert_core.errors import DeviceError
    from cbert_core.model.device import describe_device, resolve_device
    from cbert_core.model.loading import load_model
    from cbert_core.model.precision import bf16_is_fast, precisions_for
    from cbert_core.run.plan import RunOptions, plan_note
    from cbert_core.run.trace import trace
    from cbert_core.training.finetune import FineTuneConfig, fine_tune

    try:
        chosen = resolve_device(args.device)
    except DeviceError as problem:
        print(problem)
        return 2
    if args.precision not in precisions_for(chosen):
        print(f"precision {args.precision} is not offered on {chosen.type}; choose one of "
              f"{', '.join(precisions_for(chosen))}")
        return 2
    print(f"{cpu_line()}; {'native' if bf16_is_fast() else 'no native'} bf16; torch {torch.__version__}")
    print(f"device: {describe_device(chosen)} (asked: {args.device or os.environ.get('CBERT_DEVICE') or 'auto'})")
    devices = [chosen] if chosen.type == "cpu" else [chosen, torch.device("cpu")]
    if chosen.type == "cpu":
        print("no GPU in this run: the chosen device is the CPU, so there is no second column "
              "(set CBERT_DEVICE=cuda or --device cuda on a GPU server)")
    checkpoint = str(bench_checkpoint(args.quick))
    sizes = (24, 48) if args.quick else (128, 512)
    steps = 8 if args.quick else 50
    repeats = 1 if args.quick else args.repeats
    options = RunOptions(precision=args.precision)
    results: dict[str, dict[str, float]] = {}
    for device in devices:
        loaded = load_model(checkpoint, device=device)
        tokenizer = loaded.tokenizer()
        label = device.type
        print(f"checkpoint on {label}: {loaded.info.name} ({loaded.info.num_layers} layers, hidden "
              f"{loaded.info.hidden_size}), precision {args.precision}, torch threads {torch.get_num_threads()}",
              flush=True)
        timings: dict[str, float] = {}
        for size in sizes:
            note = note_with_tokens(tokenizer, size, quick=args.quick)
            plan = plan_note(loaded, note, options)
            timings[f"trace, {size} tokens"] = best_time(lambda plan=plan: trace(loaded, plan), repeats)
        masked = note_with_tokens(tokenizer, sizes[0] - 1, quick=args.quick) + f" {loaded.info.mask_token}."
        plan = plan_note(loaded, masked, options)
        target = masked_token_target(loaded, "the")
        timings[f"Integrated Gradients, {steps} steps, {len(plan.tokens) + 2} positions"] = best_time(
            lambda: attribute(loaded, plan, target, steps=steps), repeats)
        texts = [note_with_tokens(tokenizer, sizes[0] + index % 7, quick=args.quick) for index in range(48)]
        collection = collection_from_texts(texts, labels=["a" if index % 2 else "b" for index in range(48)])
        config = FineTuneConfig(epochs=1, batch_size=16, unfreeze_layers=2, max_steps=4 if args.quick else 8,
                                max_length=sizes[0] + 8, cache_bytes=0)
        timings["fine-tune step (batch 16, top 2 layers + head)"] = step_time(
            lambda on_step: fine_tune(loaded, collection, config=config, on_step=on_step))
        results[label] = timings
    names = list(results[devices[0].type])
    if len(devices) == 1:
        print(f"{'what':<60} {devices[0].type + ' s':>10}")
        for name in names:
            print(f"{name:<60} {results[devices[0].type][name]:>10.4f}")
    else:
        print(f"{'what':<60} {chosen.type + ' s':>10} {'cpu s':>10} {'cpu/' + chosen.type:>10}")
        for name in names:
            on_device, on_cpu = results[chosen.type][name], results["cpu"][name]
            print(f"{name:<60} {on_device:>10.4f} {on_cpu:>10.4f} {on_cpu / on_device:>10.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the CPU may be shared with other work)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
