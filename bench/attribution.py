"""Attribution and pseudo-likelihood speed and memory on the real-size (Bio_ClinicalBERT-shaped) checkpoint.

Prints, for notes of 128 and 512 positions (the target: the log-probability of the
original word at a [MASK] a quarter into the note):

  * our integrated gradients (50 Gauss-Legendre steps) vs captum's
    LayerIntegratedGradients at its defaults (n_steps=50, Gauss-Legendre, all 50
    steps in one batch at 128; internal_batch_size=10 at 512, where one batch would
    need about 25 GB), both on the word-embedding layer, same target, same baseline;
  * seconds, peak resident memory of the measuring process (each measurement runs
    in a fresh process; the model alone is shown as "idle"), the speed ratio, and
    the convergence delta as % of the score difference;
  * pseudo-log-likelihood time at 128 and 512 positions, exact and strided;
  * the same with precision="bf16" (bfloat16 autocast for the matrix products; IG's end
    points stay float32, so its delta shows what bf16 costs). bf16 is only fast on CPUs
    with native bf16 (AVX512-BF16 or AMX); the header says whether this one has it;
  * every method of the Attribution page (``whole_note.METHOD_SPECS``: ours and captum's) at 128
    and 512 positions, at the page's defaults (50 steps, 16 samples; perturbation methods remove
    words), seconds and peak memory; a run longer than ``--budget`` seconds is stopped and its
    time extrapolated from the progress it reported;
  * the whole-note Integrated Gradients of a similarity on a 2,000-piece note (every window with
    the others as read), and leave-one-section-out on a 5,000-piece note (goal: under a minute).

Machine noise: the measurements alternate ours / captum, and the 128-position pair
runs twice; the ratio is computed per round. Each row also shows the process's CPU
time and the load average during the measurement: on a shared machine wall time can
vary threefold between identical runs, CPU time much less.

    .venv/bin/python bench/attribution.py [--quick] [--whole-note-only] [--budget SECONDS]

``--quick``: a tiny masked-LM, notes of 32 and 64 positions, one round; only the first
measurement runs in a fresh process (the rest run in this one, so peak memory is cumulative).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time
from typing import Any

from common import announce, bench_checkpoint, bench_parser, note_with_tokens

GOALS = {"ratio_128": 3.0, "seconds_512": 15.0, "gb_512": 3.0, "delta_pct": 5.0, "pll_512_s": 10.0,
         "sections_5000_s": 60.0}
SIZES = (128, 512)  # positions, [CLS] and [SEP] included
QUICK_SIZES = (32, 64)  # the tiny model's window holds 64
LONG_NOTES = (2000, 5000)  # content pieces of the whole-note rows
QUICK_LONG_NOTES = (200, 500)


def masked_note(tokenizer: Any, content_tokens: int, quick: bool) -> tuple[str, str, int]:
    """A note of exactly ``content_tokens`` pieces with one single-piece word replaced by [MASK].

    Returns:
        (text, the masked word, its global position).
    """
    from cbert_core.text.tokens import tokenize_note

    text = note_with_tokens(tokenizer, content_tokens, quick=quick)
    note = tokenize_note(tokenizer, text)
    numbers = note.piece_numbers
    for index in range(content_tokens // 4, content_tokens):
        single = numbers[index] == 0 and (index + 1 == len(note) or numbers[index + 1] == 0)
        if single and note.tokens[index].isalpha():
            start, end = (int(v) for v in note.offsets[index])
            return text[:start] + "[MASK]" + text[end:], note.tokens[index], index + 1
    raise ValueError("no single-piece word to mask")


def _cpu_seconds() -> float:
    """User + system CPU time of this process: less sensitive than wall time to other work on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _child(kind: str, folder: str, positions: int, options: dict[str, Any], pipe: Any) -> None:
    """Load the model and run one measurement; send back a dict (normally runs in a fresh process)."""
    try:
        import torch

        from cbert_core.model.loading import load_model

        loaded = load_model(folder)
        tokenizer = loaded.tokenizer()
        with torch.inference_mode():  # start the thread pool outside the timed part, for both sides alike
            loaded.model(input_ids=torch.tensor([[tokenizer.cls_token_id, tokenizer.sep_token_id]]))
        idle = _peak_gb()
        cpu_before, load_before = _cpu_seconds(), os.getloadavg()[0]
        result = {"ours": _ours, "captum": _captum, "pll": _pll, "method": _method,
                  "whole": _whole}[kind](loaded, positions, options)
        result.update(idle_gb=idle, peak_gb=_peak_gb(), cpu=_cpu_seconds() - cpu_before,
                      load=(load_before + os.getloadavg()[0]) / 2)
        pipe.send(result)
    except BaseException as failure:  # noqa: BLE001 - reported by the parent
        pipe.send({"error": f"{type(failure).__name__}: {failure}"})
    finally:
        pipe.close()


def _ours(loaded: Any, positions: int, options: dict[str, Any]) -> dict[str, Any]:
    from cbert_core.analyses.attribution import attribute
    from cbert_core.analyses.targets import masked_token_target
    from cbert_core.run.plan import RunOptions, plan_note

    text, word, _ = masked_note(loaded.tokenizer(), positions - 2, options["quick"])
    target = masked_token_target(loaded, word)
    started = time.perf_counter()
    plan = plan_note(loaded, text, RunOptions(precision=options.get("precision", "fp32")))
    result = attribute(loaded, plan, target, steps=options.get("steps", 50), rule=options.get("rule", "gauss-legendre"),
                       tolerance=options.get("tolerance"))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "delta": result.delta, "gap": result.score - result.baseline_score,
            "batch": result.batch_size, "tokens": len(result.tokens), "steps": result.steps}


def _captum(loaded: Any, positions: int, options: dict[str, Any]) -> dict[str, Any]:
    import torch
    from captum.attr import LayerIntegratedGradients
    from transformers import AutoModelForMaskedLM

    from cbert_core.run.forward import vocabulary_id
    from cbert_core.run.plan import plan_note

    text, word, position = masked_note(loaded.tokenizer(), positions - 2, options["quick"])
    tokenizer = loaded.tokenizer()
    plan = plan_note(loaded, text)
    ids = torch.from_numpy(plan.window_ids(plan.windows[0]))[None]
    baseline = ids.clone()
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[0, [0, -1, position]] = True  # [CLS], [SEP] and the target [MASK], as ours
    baseline[~keep] = tokenizer.pad_token_id
    token = vocabulary_id(loaded, word)
    model = loaded.model
    if options.get("sdpa"):
        model = AutoModelForMaskedLM.from_pretrained(loaded.info.folder, attn_implementation="sdpa").eval()
        model.requires_grad_(False)

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(model(input_ids=input_ids).logits[:, position], dim=-1)[:, token]

    explainer = LayerIntegratedGradients(forward, model.base_model.embeddings.word_embeddings)
    started = time.perf_counter()
    _, delta = explainer.attribute(ids, baseline, n_steps=50, internal_batch_size=options.get("internal_batch_size"),
                                   return_convergence_delta=True)
    seconds = time.perf_counter() - started
    with torch.inference_mode():
        gap = float(forward(ids) - forward(baseline))
    return {"seconds": seconds, "delta": float(delta), "gap": gap, "batch": options.get("internal_batch_size") or 50,
            "tokens": int(ids.shape[1])}


class _Enough(Exception):
    """Raised from the progress callback to stop an extrapolated run."""


def _pll(loaded: Any, positions: int, options: dict[str, Any]) -> dict[str, Any]:
    from cbert_core.analyses.predict import pseudo_log_likelihood
    from cbert_core.run.plan import RunOptions, plan_note

    text = note_with_tokens(loaded.tokenizer(), positions - 2, quick=options["quick"])
    stop_after = options.get("stop_after")
    seen: dict[str, float] = {}
    started = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        seen["fraction"] = fraction
        if stop_after is not None and fraction >= stop_after:
            raise _Enough

    try:
        plan = plan_note(loaded, text, RunOptions(precision=options.get("precision", "fp32")))
        result = pseudo_log_likelihood(loaded, plan, stride=options.get("stride", 0), batch_size=8, progress=progress)
        rows = result.forward_rows
    except _Enough:
        rows = None
    seconds = time.perf_counter() - started
    fraction = seen.get("fraction", 1.0)
    return {"seconds": seconds / fraction, "measured_s": seconds, "fraction": fraction, "rows": rows,
            "tokens": positions}


def _budgeted(budget: float | None, seen: dict[str, float]):
    """A progress callback that records the fraction done and stops the run after ``budget`` seconds."""
    started = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        seen["fraction"] = max(fraction, seen.get("fraction", 0.0))
        if budget is not None and time.perf_counter() - started > budget and fraction < 1:
            raise _Enough

    return progress


def _explained(loaded: Any, text: str, target_of: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Time whole_note.explain with ``options`` (method, grouping, precision, budget); extrapolated if stopped."""
    from cbert_core.analyses.whole_note import explain
    from cbert_core.run.plan import RunOptions, plan_note

    seen: dict[str, float] = {}
    started = time.perf_counter()
    plan = plan_note(loaded, text, RunOptions(precision=options.get("precision", "fp32")))
    target = target_of(plan)
    result = None
    try:
        result = explain(loaded, plan, target, method=options["method"], grouping=options.get("grouping", "sentence"),
                         progress=_budgeted(options.get("budget"), seen))
    except _Enough:
        pass
    seconds = time.perf_counter() - started
    fraction = 1.0 if result is not None else max(seen.get("fraction", 1.0), 1e-3)
    return {"seconds": seconds / fraction, "measured_s": seconds, "fraction": fraction,
            "windows": len(plan.windows), "tokens": len(plan.tokens),
            "runs": result.steps if result is not None else None,
            "delta_pct": 100 * result.relative_delta if result is not None else float("nan")}


def _method(loaded: Any, positions: int, options: dict[str, Any]) -> dict[str, Any]:
    """One method of the page on one window: the masked word of the IG rows."""
    from cbert_core.analyses.targets import masked_token_target

    text, word, _ = masked_note(loaded.tokenizer(), positions - 2, options["quick"])
    return _explained(loaded, text, lambda plan: masked_token_target(loaded, word), options)


def _whole(loaded: Any, pieces: int, options: dict[str, Any]) -> dict[str, Any]:
    """A note-level target (the similarity to a description) on a note of ``pieces`` content pieces."""
    from cbert_core.analyses.targets import similarity_target

    text = note_with_tokens(loaded.tokenizer(), pieces, quick=options["quick"])
    return _explained(loaded, text, lambda plan: similarity_target(loaded, "shortness of breath"), options)


def _method_row(label: str, r: dict[str, Any]) -> str:
    how = (f"extrapolated from {r['measured_s']:.1f} s for {100 * r['fraction']:.0f} %" if r["fraction"] < 1
           else f"{r['runs']:,} gradient rows or copies")
    delta = f"  delta {r['delta_pct']:.3f} %" if r["delta_pct"] == r["delta_pct"] else ""
    return (f"  {label:<44} {r['seconds']:7.1f} s wall {r['cpu'] / r['fraction']:7.1f} s CPU (load {r['load']:3.1f})  "
            f"peak {r['peak_gb']:4.2f} GB (idle {r['idle_gb']:4.2f})  {r['windows']} window(s)  ({how}){delta}")


def measure(kind: str, folder: str, positions: int, *, fresh: bool = True, **options: Any) -> dict[str, Any]:
    """One measurement, in a fresh process (``fresh=False``: in this one, the same way)."""
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    if fresh:
        process = context.Process(target=_child, args=(kind, folder, positions, options, sender))
        process.start()
        sender.close()
        result = receiver.recv()
        process.join()
    else:
        _child(kind, folder, positions, options, sender)
        result = receiver.recv()
    if "error" in result and not options.get("refusal_ok"):
        raise SystemExit(f"{kind} at {positions} positions failed: {result['error']}")
    return result


def _row(label: str, r: dict[str, Any]) -> str:
    pct = 100 * abs(r["delta"]) / abs(r["gap"]) if r["gap"] else float("nan")
    return (f"  {label:<36} {r['seconds']:6.1f} s wall {r['cpu']:6.1f} s CPU (load {r['load']:3.1f})  "
            f"peak {r['peak_gb']:4.2f} GB (idle {r['idle_gb']:4.2f})  batch {r['batch']:>2}  "
            f"delta {r['delta']:+.1e} = {pct:.4f} % of {r['gap']:+.3f}")


def whole_note_rows(run: Any, small: int, large: int, long_notes: tuple[int, int], quick: bool,
                    sizes: list[int] | None = None) -> None:
    """The method list at ``small`` and ``large`` positions, then the whole-note rows."""
    from cbert_core.analyses.whole_note import METHOD_SPECS

    print("\nEvery method of the Attribution page (defaults: 50 steps, 16 samples, 0.1 noise; perturbation "
          "methods remove words), target log p(word | [MASK]), fp32:")
    for positions in sizes or (small, large):
        for method in METHOD_SPECS:
            r = run("method", positions, method=method, grouping="word", refusal_ok=True)
            label = f"{positions} positions, {method}"
            # A method over the page's memory bound refuses with a message, as on the page.
            print(_method_row(label, r) if "error" not in r else f"  {label:<44} refused: {r['error']}")
    two, five = long_notes
    print("\nWhole notes (similarity to 'shortness of breath'; every window, the others as the model read them):")
    for precision in ("fp32", "bf16"):
        r = run("whole", two, method="integrated-gradients", precision=precision)
        print(_method_row(f"{two:,} pieces, Integrated Gradients {precision}", r))
    for precision in ("fp32", "bf16"):
        r = run("whole", five, method="occlusion", grouping="section", precision=precision)
        print(_method_row(f"{five:,} pieces, leave one section out {precision}", r))
        if not quick:
            met = r["seconds"] <= GOALS["sections_5000_s"]
            print(f"    goal <= {GOALS['sections_5000_s']:.0f} s: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--whole-note-only", action="store_true",
                        help="only the rows of every method and of whole notes")
    parser.add_argument("--positions", type=int, nargs="+",
                        help="window sizes of the rows of every method (default: 128 512; quick: 32 64)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds a method row may run before it is stopped and extrapolated (default 60)")
    args = parser.parse_args()
    announce(args.quick)

    import torch

    from cbert_core.model.precision import bf16_is_fast

    folder = str(bench_checkpoint(args.quick))
    small, large = QUICK_SIZES if args.quick else SIZES
    measured = 0

    def run(kind: str, positions: int, **options: Any) -> dict[str, Any]:
        """Normal mode: every measurement in a fresh process; quick mode: only the first."""
        nonlocal measured
        measured += 1
        if kind in {"method", "whole"}:
            options.setdefault("budget", None if args.quick else args.budget)
        return measure(kind, folder, positions, fresh=not args.quick or measured == 1, quick=args.quick, **options)

    print(f"checkpoint: {folder} ({'tiny test model' if args.quick else 'BERT-base shape'}, random weights); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs, "
          f"{'native' if bf16_is_fast() else 'no native'} bf16; load average {os.getloadavg()[0]:.1f} at start")

    if args.whole_note_only:
        whole_note_rows(run, small, large, QUICK_LONG_NOTES if args.quick else LONG_NOTES, args.quick,
                        args.positions)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end (2 CPUs shared with other work)")
        return

    rounds = 1 if args.quick else 2
    print("\nIntegrated gradients, 50 steps, target log p(word | [MASK] a quarter into the note)")
    print(f"{small} positions ({rounds} alternating round{'s' if rounds > 1 else ''}; captum: one batch of 50):")
    ratios: dict[str, tuple[list[float], list[float]]] = {"fp32": ([], []), "bf16": ([], [])}
    for round_index in range(rounds):
        runs = {precision: run("ours", small, precision=precision) for precision in ("fp32", "bf16")}
        theirs = run("captum", small)
        for precision, ours in runs.items():
            ratios[precision][0].append(theirs["seconds"] / ours["seconds"])
            ratios[precision][1].append(theirs["cpu"] / ours["cpu"])
            print(_row(f"round {round_index + 1} ours {precision}", ours))
        print(_row(f"round {round_index + 1} captum LIG defaults", theirs))
    for precision, (wall_ratios, cpu_ratios) in ratios.items():
        ratio = statistics.median(wall_ratios)
        print(f"  speed ratio captum / ours {precision}, wall: {', '.join(f'{r:.2f}' for r in wall_ratios)} -> "
              f"median {ratio:.2f}x; CPU time: {', '.join(f'{r:.2f}' for r in cpu_ratios)} -> median "
              f"{statistics.median(cpu_ratios):.2f}x (goal >= {GOALS['ratio_128']:.0f}x: "
              f"{'met' if ratio >= GOALS['ratio_128'] else 'NOT met'} by wall time)")

    print(f"{large} positions (captum internal_batch_size=10):")
    ours = run("ours", large)
    print(_row("ours fp32", ours))
    fast = run("ours", large, precision="bf16")
    print(_row("ours bf16", fast))
    theirs = run("captum", large, internal_batch_size=10)
    print(_row("captum LIG, internal_batch_size=10", theirs))
    sdpa = run("captum", large, internal_batch_size=10, sdpa=True)
    print(_row("captum LIG, ibs=10, SDPA model copy", sdpa))
    fewer = run("ours", large, steps=16)
    print(_row("ours, 16 Gauss-Legendre steps (info)", fewer))
    early = run("ours", large, precision="bf16", tolerance=0.01)
    print(_row("ours bf16, stop early at 1 % (info)", early) + f"  ({early['steps']} steps)")
    for precision, mine in (("fp32", ours), ("bf16", fast)):
        pct = 100 * abs(mine["delta"]) / abs(mine["gap"])
        print(f"  ours {precision}: speed ratio captum / ours, wall (CPU): {theirs['seconds'] / mine['seconds']:.2f}x "
              f"({theirs['cpu'] / mine['cpu']:.2f}x) with the app's eager-attention model, "
              f"{sdpa['seconds'] / mine['seconds']:.2f}x ({sdpa['cpu'] / mine['cpu']:.2f}x) with an SDPA copy")
        print(f"    goals at {large}: <= {GOALS['seconds_512']:.0f} s: "
              f"{'met' if mine['seconds'] <= GOALS['seconds_512'] else 'NOT met'} ({mine['seconds']:.1f} s); "
              f"<= {GOALS['gb_512']:.0f} GB peak: {'met' if mine['peak_gb'] <= GOALS['gb_512'] else 'NOT met'} "
              f"({mine['peak_gb']:.2f} GB); delta <= {GOALS['delta_pct']:.0f} %: "
              f"{'met' if pct <= GOALS['delta_pct'] else 'NOT met'} ({pct:.3f} %)")

    print("\nPseudo-log-likelihood (batch 8 masked copies; exact = one mask per copy):")
    for positions, options, label in [(small, {}, "exact"), (large, {"stop_after": 0.08}, "exact"),
                                      (large, {"stop_after": 0.08, "precision": "bf16"}, "exact, bf16"),
                                      (large, {"stride": 16}, f"stride 16 ({large // 16} masks per copy)"),
                                      (large, {"stride": 16, "precision": "bf16"}, "stride 16, bf16")]:
        r = run("pll", positions, **options)
        how = (f"extrapolated from {r['measured_s']:.1f} s for {100 * r['fraction']:.0f} % of the copies"
               if r["fraction"] < 1 else f"{r['rows']} copies")
        cpu = r["cpu"] / r["fraction"]
        print(f"  {positions} positions, {label:<30} {r['seconds']:7.1f} s wall {cpu:7.1f} s CPU (load "
              f"{r['load']:3.1f})  ({how}; peak {r['peak_gb']:.2f} GB)")
        if positions == large:
            met = r["seconds"] <= GOALS["pll_512_s"]
            print(f"    goal <= {GOALS['pll_512_s']:.0f} s at {large}: {'met' if met else 'NOT met'}")
    whole_note_rows(run, small, large, QUICK_LONG_NOTES if args.quick else LONG_NOTES, args.quick, args.positions)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (2 CPUs shared with other work)")


if __name__ == "__main__":
    main()
