"""Word-tagger bench: NegEx conditions tagged with their negation status, the bundled all-MiniLM-L6-v2
against a dictionary baseline, entity-level F1 on the same held-out sentences in the same run.

Needs ../shared (the public NegEx test set). Each NegEx row gives a sentence, a condition written in it
and the condition's negation status; the condition's span in its sentence (found case-insensitively) is
labelled with that status, and rows sharing a sentence become one text with all its spans. A seeded share
of the texts is held out. The tagger (a token-classification head on the bundled encoder,
:func:`cbert_core.training.tagger.train_tagger`) is scored on them with seqeval (exact span and label,
on words); so is the baseline: every condition seen in the training texts found again (whole words,
case-insensitive, longest first), labelled by the nearest NegEx cue before it in the sentence
(a negation cue: negated; a possibility cue: possible; none: affirmed).

    .venv/bin/python bench/tagger.py [--epochs 3] [--unfreeze 2] [--batch-size 16] [--quick]

``--quick``: a tiny BERT encoder, 40 made-up sentences in the NegEx file's format, one epoch; no ../shared.
"""

from __future__ import annotations

import os
import re
import time

from finetune import quick_negex

from common import (
    NEGEX,
    bench_parser,
    cpu_line,
    tiny_checkpoint,
    training_args,
    training_options,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A short list of NegEx's pre-condition triggers (Chapman et al. 2001), lower case.
NEGATION_CUES = ("no", "not", "denies", "denied", "denying", "without", "no evidence of", "no sign of",
                 "no signs of", "negative for", "free of", "absence of", "absent", "never", "none", "ruled out",
                 "fails to reveal", "no new", "resolved", "no history of", "nor")
POSSIBLE_CUES = ("possible", "possibly", "probable", "probably", "may", "might", "suspicious for", "suspected",
                 "question of", "questionable", "rule out", "r/o", "cannot exclude", "cannot be excluded", "likely",
                 "versus", "vs", "concern for", "consider", "differential")


def whole_words(phrase: str) -> re.Pattern:
    return re.compile(r"(?<![\w/])" + r"\s+".join(re.escape(part) for part in phrase.split()) + r"(?![\w/])",
                      re.IGNORECASE)


CUES = [(whole_words(cue), "negated") for cue in NEGATION_CUES] + [(whole_words(cue), "possible")
                                                                  for cue in POSSIBLE_CUES]


def negex_dataset(path: object) -> tuple[object, int, int]:
    """(a SpanDataset of the NegEx sentences with their conditions' spans, rows left out (condition not found,
    or overlapping another condition of its sentence), rows repeating a sentence's condition)."""
    from cbert_core.corpus.collection import read_table
    from cbert_core.errors import DataFileError
    from cbert_core.text.spans import Span, SpanDataset, SpanExample, check_spans

    frame = read_table(path).frame
    status = next(column for column in frame.columns if column.startswith("negation_status"))
    spans: dict[str, list] = {}
    skipped = repeated = 0
    for condition, sentence, label in zip(frame["Condition"], frame["sentence"], frame[status]):
        text = " ".join(str(sentence).split())  # NegEx pads with runs of spaces
        found = whole_words(" ".join(str(condition).split())).search(text)
        if found is None:
            skipped += 1
            continue
        spans.setdefault(text, [])
        if any((s.start, s.end) == found.span() for s in spans[text]):
            repeated += 1  # the same condition of the same sentence again (kept once)
            continue
        if any(s.start < found.end() and found.start() < s.end for s in spans[text]):
            skipped += 1  # a second condition overlapping the first: one label per word
            continue
        spans[text].append(Span(start=found.start(), end=found.end(), label=str(label).strip().lower()))
    examples = []
    for text, found in spans.items():
        try:
            examples.append(SpanExample(text=text, spans=check_spans(text, found, "NegEx")))
        except DataFileError:
            skipped += len(found)
    return SpanDataset(examples=tuple(examples)), skipped, repeated


def dictionary_spans(text: str, patterns: list) -> list:
    """The baseline's spans on ``text``: dictionary matches, longest first, not overlapping, labelled by cue."""
    from cbert_core.text.spans import Span

    taken: list[tuple[int, int]] = []
    for pattern in patterns:  # longest condition first
        for match in pattern.finditer(text):
            if not any(a < match.end() and match.start() < b for a, b in taken):
                taken.append((match.start(), match.end()))
    spans = []
    for start, end in sorted(taken):
        cues = [(found.end(), label) for pattern, label in CUES for found in pattern.finditer(text[:start])]
        spans.append(Span(start=start, end=end, label=max(cues)[1] if cues else "affirmed"))
    return spans


def main() -> int:
    parser = bench_parser(__doc__)
    training_options(parser, epochs=3)
    args = training_args(parser)
    if args is None:
        return 2

    import torch

    from cbert_core.model.loading import BUNDLED, load_model
    from cbert_core.text.spans import align_spans
    from cbert_core.text.tokens import tokenize_note
    from cbert_core.training.tagger import ALL_LABELS, TaggerConfig, entity_scores, train_tagger

    torch.set_num_threads(args.threads)
    dataset, skipped, repeated = negex_dataset(quick_negex() if args.quick else NEGEX)
    loaded = load_model(str(tiny_checkpoint("encoder")) if args.quick else BUNDLED)
    config = TaggerConfig(epochs=args.epochs, batch_size=args.batch_size, unfreeze_layers=args.unfreeze,
                          lr_head=5e-3, lr_encoder=1e-4, seed=args.seed)
    counts = {label: sum(span.label == label for e in dataset.examples for span in e.spans) for label in dataset.labels}
    print(f"data: {len(dataset):,} {'made-up' if args.quick else 'NegEx'} sentences with {dataset.span_count:,} "
          f"condition spans {counts}; {skipped} rows left out (condition not found in its sentence, or overlapping "
          f"another), {repeated} repeating a sentence's condition")
    print(f"model: {loaded.info.name} ({loaded.info.num_layers} layers, hidden {loaded.info.hidden_size}); "
          f"torch threads {torch.get_num_threads()}")
    print(f"settings: epochs {config.epochs}, batch {config.batch_size}, top {config.unfreeze_layers} layers + head, "
          f"lr {config.lr_encoder:g} (encoder) / {config.lr_head:g} (head), first piece of each word tagged, "
          f"held-out share {config.validation_fraction:.0%}, seed {config.seed}")
    print(cpu_line(), flush=True)

    started = time.perf_counter()
    result = train_tagger(loaded, dataset, config=config).result
    seconds = time.perf_counter() - started
    print(f"tagger: {result.steps_done} steps on {len(result.train_rows):,} sentences in {seconds:.1f} s "
          f"(training + tagging the held-out {len(result.validation_rows):,})")

    # The baseline, on the same held-out texts and the same units (the first piece of each word).
    seen = {" ".join(e.text[s.start:s.end].lower().split()) for row in result.train_rows.tolist()
            for e in [dataset.examples[row]] for s in e.spans}
    patterns = [whole_words(condition) for condition in sorted(seen, key=len, reverse=True)]
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(None))
    tag_ids = {name: index for index, name in enumerate(dataset.tag_names)}
    baseline_ids = dict(tag_ids)
    if "possible" not in dataset.labels:  # NegEx's test set has no "possible": a possibility cue is then an error
        baseline_ids.update({"B-possible": len(tag_ids), "I-possible": len(tag_ids) + 1})
    names = {index: name for name, index in baseline_ids.items()}
    expected, guessed = [], []
    for row in result.validation_rows.tolist():
        example = dataset.examples[row]
        tokens = tokenize_note(tokenizer, example.text)
        gold = align_spans(tokens, example.spans, tag_ids, all_pieces=False)
        found = align_spans(tokens, dictionary_spans(example.text, patterns), baseline_ids, all_pieces=False)
        expected.append([names[tag] for tag in gold.unit_tags()])
        guessed.append([names[tag] for tag in found.unit_tags()])
    baseline = {score.label: score for score in entity_scores(dataset.labels, expected, guessed)}
    tagger = {score.label: score for score in result.scores}
    print(f"held-out: {len(result.validation_rows):,} sentences, {tagger[ALL_LABELS].support:,} condition spans; "
          f"{len(seen):,} conditions in the dictionary")
    print(f"{'label':<20}{'tagger P':>10}{'R':>7}{'F1':>7}   {'dictionary P':>13}{'R':>7}{'F1':>7}{'spans':>8}")
    for label in (*dataset.labels, ALL_LABELS):
        ours, theirs = tagger[label], baseline[label]
        print(f"{label:<20}{ours.precision:>10.3f}{ours.recall:>7.3f}{ours.f1:>7.3f}   {theirs.precision:>13.3f}"
              f"{theirs.recall:>7.3f}{theirs.f1:>7.3f}{ours.support:>8}")
    print(f"entity F1, all labels: tagger {tagger[ALL_LABELS].f1:.3f}, dictionary baseline "
          f"{baseline[ALL_LABELS].f1:.3f}")
    kinds: dict[str, int] = {}
    for item in result.wrong:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    print("tagger's wrong spans: " + (", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "none"))
    print(cpu_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
