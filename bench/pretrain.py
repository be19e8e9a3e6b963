"""Continued-pretraining bench: the bundled all-MiniLM-L6-v2 (a new masked-LM head) on the MTSamples notes.

Needs ../shared (the public MTSamples subset). Holds out a seeded share of the notes and prints their
pseudo-perplexity (strided pseudo-likelihood) before training, after 1 minute and after 3 minutes of
training on this machine (held-out scoring not counted as training time); then the training speed in
word pieces per second against a plain ``transformers.Trainer`` run with the same collator (transformers'
DataCollatorForLanguageModeling, 15 %, 80/10/10), batch size, length grouping and frozen layers, in the same
process, the two alternated (goal: ours at least as fast).

    .venv/bin/python bench/pretrain.py [--minutes 1 3] [--unfreeze 2] [--batch-size 16] [--quick]

``--quick``: a tiny BERT encoder, 24 made-up notes, budgets of 1 and 2 seconds, 3 steps for the speed
comparison; no ../shared.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import time

from common import FALLBACK_NOTE, MTSAMPLES, announce, bench_parser, cpu_line, scratch_folder, tiny_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def notes(quick: bool) -> list[str]:
    if quick:
        return [f"Visit {index + 1}. " + FALLBACK_NOTE * (1 + index % 3) for index in range(24)]
    with MTSAMPLES.open(encoding="utf-8") as handle:
        return [row["transcription"] for row in csv.DictReader(handle) if (row["transcription"] or "").strip()]


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--minutes", type=float, nargs=2, default=(1.0, 3.0),
                        help="the two training budgets after which the held-out notes are scored")
    parser.add_argument("--unfreeze", type=int, default=2, help="top encoder layers trained with the head")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--held-out-pieces", type=int, default=4000, help="held-out pieces scored (0: all)")
    parser.add_argument("--speed-steps", type=int, default=30, help="steps of each side of the speed comparison")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    announce(args.quick)
    budgets = (1.0, 2.0) if args.quick else tuple(60.0 * minutes for minutes in args.minutes)
    speed_steps = 3 if args.quick else args.speed_steps
    if not args.quick and not MTSAMPLES.is_file():
        print(f"{MTSAMPLES} is missing: this bench needs ../shared (the MTSamples subset), or run with --quick.",
              file=sys.stderr)
        return 2

    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from cbert_core.model.loading import BUNDLED, load_model
    from cbert_core.training.loop import random_split, trainable_parts
    from cbert_core.training.pretrain import PretrainConfig, fitted, masked_lm_model, note_examples, pretrain

    torch.set_num_threads(args.threads)
    texts = notes(args.quick)
    loaded = load_model(str(tiny_checkpoint("encoder")) if args.quick else BUNDLED)
    # Time-budgeted: many planned epochs, no warm-up, so the learning rate is about constant over the budget.
    config = fitted(loaded, PretrainConfig(epochs=50, batch_size=args.batch_size, unfreeze_layers=args.unfreeze,
                                           warmup_fraction=0.0, max_length=args.max_length, checks=0,
                                           held_out_pieces=args.held_out_pieces or None))
    train_rows, held_rows = random_split(len(texts), config.validation_fraction, config.seed, "notes")
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(None))
    examples = note_examples(tokenizer, [texts[row] for row in train_rows.tolist()], config.max_length)
    print(f"data: {len(texts)} {'made-up' if args.quick else 'MTSamples'} notes: {len(train_rows)} trained on "
          f"({len(examples):,} examples of up to {config.max_length} pieces, "
          f"{sum(len(e['input_ids']) for e in examples):,} pieces), {len(held_rows)} held out (seed {config.seed})")
    print(f"model: {loaded.info.name} ({loaded.info.num_layers} layers, hidden {loaded.info.hidden_size}, head "
          f"{loaded.info.head_kind}); torch threads {torch.get_num_threads()}")
    print(f"settings: batch {config.batch_size}, top {config.unfreeze_layers} layers + masked-LM head, lr "
          f"{config.lr_encoder:g} (encoder) / {config.lr_head:g} (head), masking {config.mlm_probability:.0%} "
          f"(80/10/10), held-out stride {config.held_out_stride}, "
          f"{config.held_out_pieces or 'all'} held-out pieces scored")
    print(cpu_line(), flush=True)

    # ---- held-out pseudo-perplexity before, after 1 and after 3 minutes of training
    clock = {"began": None, "checking": 0.0, "done": 0, "checks": 0}

    def training_seconds() -> float:
        return 0.0 if clock["began"] is None else time.perf_counter() - clock["began"] - clock["checking"]

    def on_step(_report: object) -> None:
        if clock["began"] is None:
            clock["began"] = time.perf_counter()

    def check_when(_step: int) -> bool:
        if clock["done"] < len(budgets) and training_seconds() >= budgets[clock["done"]]:
            clock["done"] += 1
            return True
        return False

    def on_check(check: object) -> None:
        if clock["began"] is not None:  # the score before training is not inside the training time
            clock["checking"] += check.seconds
        clock["checks"] += 1
        label = "before training" if check.step == 0 else f"after {training_seconds():.0f} s of training"
        print(f"held-out pseudo-perplexity {label} (step {check.step}): {check.pseudo_perplexity:,.2f} "
              f"({check.pieces:,} pieces, scored in {check.seconds:.1f} s)", flush=True)

    run = pretrain(loaded, texts, config=config, on_step=on_step, on_check=on_check, check_when=check_when,
                   cancel=lambda: clock["checks"] > len(budgets))  # stop once the last budget's score is in
    result = run.result
    print(f"budgeted run: {result.steps_done} steps, {result.tokens_trained:,} pieces in {result.train_seconds:.1f} s "
          f"of training: {result.tokens_per_second:,.0f} pieces/s")
    values = [check.pseudo_perplexity for check in result.checks]
    if len(values) == 3:
        print(f"pseudo-perplexity before / after {budgets[0]:.0f} s / after {budgets[1]:.0f} s: "
              f"{values[0]:,.2f} / {values[1]:,.2f} / {values[2]:,.2f}")

    # ---- speed: ours against a plain transformers.Trainer, same collator, batch, length grouping, frozen layers
    counted = {"pieces": 0}
    plain_collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=True, mlm_probability=config.mlm_probability,
                                                     seed=config.seed)

    def trainer_collate(features: list[dict]) -> dict:
        batch = plain_collator(features)
        counted["pieces"] += int(batch["attention_mask"].sum())
        return batch

    dataset = [{"input_ids": e["input_ids"], "special_tokens_mask": e["special_tokens_mask"]} for e in examples]
    output = scratch_folder()

    def trainer_side() -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, _new = masked_lm_model(loaded)
        trainable_parts(model, config.unfreeze_layers)  # the same frozen bottom (and tied decoder) as ours
        arguments = TrainingArguments(
            output_dir=str(output), per_device_train_batch_size=config.batch_size, max_steps=speed_steps,
            learning_rate=config.lr_encoder, weight_decay=config.weight_decay, warmup_steps=0, report_to=[],
            save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
            remove_unused_columns=False, train_sampling_strategy="group_by_length", seed=config.seed)
        counted["pieces"] = 0
        trainer = Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=trainer_collate)
        metrics = trainer.train().metrics
        return counted["pieces"] / metrics["train_runtime"]

    def our_side() -> float:
        short = PretrainConfig(epochs=50, batch_size=config.batch_size, unfreeze_layers=config.unfreeze_layers,
                               max_length=config.max_length, max_steps=speed_steps, checks=0, held_out_pieces=1)
        return pretrain(loaded, texts, config=short).result.tokens_per_second

    ours, plain = [], []
    for _round in range(2):  # alternated, so that a change of load on the shared machine hits both
        plain.append(trainer_side())
        ours.append(our_side())
    ours_speed, plain_speed = statistics.median(ours), statistics.median(plain)
    print(f"tokens per second over {speed_steps} steps, 2 rounds alternated: ours {ours_speed:,.0f} "
          f"({', '.join(f'{v:,.0f}' for v in ours)}); transformers.Trainer {plain_speed:,.0f} "
          f"({', '.join(f'{v:,.0f}' for v in plain)})")
    print(f"speed ratio ours / Trainer: {ours_speed / plain_speed:.2f} (goal >= 1)")
    print(cpu_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
