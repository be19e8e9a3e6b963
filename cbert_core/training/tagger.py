"""Train a word tagger (a token-classification head) on labelled character spans, and score the spans it finds.

The spans become BIO tags on word pieces (:func:`cbert_core.text.spans.align_spans`): on each word's
first piece (the other pieces are ignored by the loss; the Predictions page reads a word by its first
piece too) or on every piece (``all_pieces``). A text longer than ``max_length`` pieces is read in
consecutive parts cut at word starts (a span cut in two starts again with B- in the second part).

Training shares the classifier's loop (:mod:`cbert_core.training.frozen_trunk`): a private copy of the
shared model with a new ``AutoModelForTokenClassification`` head, the head and the top layers trained,
the frozen bottom's outputs computed once when they fit in ``cache_bytes``; cancellable, keeping what was
done. The held-out texts (a seeded random split) are then tagged and scored at the entity level with
seqeval: a span counts only when its label and both its ends match exactly (on the units the tags live
on), precision, recall and F1 per label; every wrong span is listed with what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities
from transformers import AutoModelForTokenClassification, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from cbert_core.errors import DataFileError, EmptyNoteError
from cbert_core.model.architecture import anatomy_of
from cbert_core.model.device import device_of
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.run.encode import pad_id
from cbert_core.serving.speed import Training
from cbert_core.text.spans import IGNORED, AlignedTags, SpanDataset, align_spans
from cbert_core.text.tokens import tokenize_note
from cbert_core.training.frozen_trunk import padded, train_top
from cbert_core.training.loop import (
    StepReport,
    TrainingConfig,
    planned_steps,
    private_model,
    private_tokenizer,
    random_split,
    seeded_rng,
    trainable_parts,
    write_checkpoint,
)

SUMMARY_FILE = "cbert_tagger.json"
ALL_LABELS = "all labels (micro)"


@dataclass(frozen=True, kw_only=True)
class TaggerConfig(TrainingConfig):
    """Tagger settings (the shared ones in :class:`TrainingConfig`)."""

    epochs: int = 10
    lr_head: float = 5e-3
    all_pieces: bool = False  # tag every piece of a word (True) or only its first piece
    cache_bytes: int = 1024**3  # reuse the frozen bottom's outputs when they fit in this many bytes


@dataclass(frozen=True, kw_only=True)
class LabelScore:
    """Entity-level scores of one label on the held-out texts (exact span and label match)."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int  # annotated spans of this label


@dataclass(frozen=True, kw_only=True)
class WrongSpan:
    """A held-out span the tagger got wrong: missed, not annotated, or found with the wrong label or ends."""

    example: int  # index of the text in the dataset
    kind: str  # "missed", "not annotated", "wrong label" or "wrong boundaries"
    expected_label: str | None = None
    expected: tuple[int, int] | None = None  # characters of the annotated span
    predicted_label: str | None = None
    predicted: tuple[int, int] | None = None  # characters of the span the tagger found


@dataclass(frozen=True, kw_only=True)
class Chunks:
    """The word-piece sequences a dataset trains on: texts cut into parts of at most ``max_length``."""

    sequences: tuple[np.ndarray, ...]  # [chunk] int64 [t]: [CLS] + pieces + [SEP]
    targets: tuple[np.ndarray, ...]  # [chunk] int64 [t]: tag ids, IGNORED at specials and non-units
    owner: np.ndarray  # int64 [chunk]: the text each part comes from
    ranges: np.ndarray  # int64 [chunk, 2]: its pieces (start, stop) in the text
    aligned: tuple[AlignedTags, ...]  # [text] the text's tags on its pieces

    def __post_init__(self) -> None:
        self.owner.flags.writeable = False
        self.ranges.flags.writeable = False

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(sequence) for sequence in self.sequences], dtype=np.int64)

    def of(self, texts: np.ndarray) -> np.ndarray:
        """int64: the parts of ``texts``."""
        return np.flatnonzero(np.isin(self.owner, texts)).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class TaggerResult:
    """What a tagger run did and how well it finds the held-out spans."""

    labels: tuple[str, ...]  # span labels
    tag_names: tuple[str, ...]  # the head's classes: "O", "B-<label>", "I-<label>", ...
    losses: np.ndarray  # float32 [step]
    total_steps: int
    cancelled: bool
    train_rows: np.ndarray  # int64 [train]: texts trained on
    validation_rows: np.ndarray  # int64 [validation]: texts held out
    trained_layers: tuple[int, ...]
    cached_trunk: bool
    widened_spans: int  # spans that started or ended inside a word piece (or word) and were widened
    cut_texts: int  # texts longer than max_length, read in several parts
    seconds: float
    setup_seconds: float
    config: TaggerConfig
    scores: tuple[LabelScore, ...] = ()  # per label, then ALL_LABELS; empty when cancelled
    wrong: tuple[WrongSpan, ...] = ()
    predicted_tags: tuple[tuple[str, ...], ...] = field(default=(), repr=False)  # [validation][unit]

    def __post_init__(self) -> None:
        for array in (self.losses, self.train_rows, self.validation_rows):
            array.flags.writeable = False

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    def score(self, label: str = ALL_LABELS) -> LabelScore | None:
        return next((score for score in self.scores if score.label == label), None)


@dataclass(eq=False)
class TrainedTagger:
    """The trained tagger (owned by the caller, never shared) with its result; save it with :meth:`save`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    result: TaggerResult
    base_name: str

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write a standard token-classification checkpoint folder (loadable by ``load_model``).

        Raises:
            ExportError: the folder cannot be written, or already holds a model and ``overwrite`` is False.
        """
        result = self.result
        overall = result.score()
        summary = {
            "base_model": self.base_name, "stage": "token classification", "tags": list(result.tag_names),
            "cancelled": result.cancelled, "steps_done": result.steps_done, "total_steps": result.total_steps,
            "train_texts": int(len(result.train_rows)), "validation_texts": int(len(result.validation_rows)),
            "entity_f1": None if overall is None else overall.f1, "trained_layers": list(result.trained_layers),
            "config": asdict(result.config),
        }
        return write_checkpoint(self.model, self.tokenizer, folder, summary=summary, summary_file=SUMMARY_FILE,
                                overwrite=overwrite)


def _cut_points(word_ids: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """(start, stop) piece ranges of at most ``limit`` pieces, each ending before a word start when one fits."""
    ranges, start, n = [], 0, len(word_ids)
    while start < n:
        stop = min(start + limit, n)
        if stop < n:
            starts = np.flatnonzero(word_ids[start + 1:stop + 1] != word_ids[start:stop]) + start + 1
            if starts.size:
                stop = int(starts[-1])
        ranges.append((start, stop))
        start = stop
    return ranges


def chunk_dataset(loaded: LoadedModel, dataset: SpanDataset, *, lowercase: bool, max_length: int,
                  all_pieces: bool) -> Chunks:
    """Tokenize every text, tag its pieces and cut it into parts the model reads.

    Raises:
        DataFileError: a text without readable words, or spans that cannot be tagged (named by row).
    """
    tokenizer = loaded.tokenizer(lowercase)
    tag_ids = {name: index for index, name in enumerate(dataset.tag_names)}
    limit = max(1, min(max_length, loaded.info.max_tokens) - 2)
    sequences, targets, owner, ranges, aligned = [], [], [], [], []
    for row, example in enumerate(dataset.examples):
        where = f"Row {row + 1}"
        try:
            tokens = tokenize_note(tokenizer, example.text)
        except EmptyNoteError as empty:
            raise DataFileError(f"{where}: {empty}") from empty
        tags = align_spans(tokens, example.spans, tag_ids, all_pieces=all_pieces, where=where)
        aligned.append(tags)
        for start, stop in _cut_points(tokens.word_ids, limit):
            part = tags.tags[start:stop].copy()
            scored = np.flatnonzero(part != IGNORED)
            if scored.size and dataset.tag_names[part[scored[0]]].startswith("I-"):  # a span cut in two
                part[scored[0]] = tag_ids["B-" + dataset.tag_names[part[scored[0]]][2:]]
            sequences.append(np.concatenate([[tokenizer.cls_token_id], tokens.ids[start:stop],
                                             [tokenizer.sep_token_id]]).astype(np.int64))
            targets.append(np.concatenate([[IGNORED], part, [IGNORED]]).astype(np.int64))
            owner.append(row)
            ranges.append((start, stop))
    return Chunks(sequences=tuple(sequences), targets=tuple(targets), owner=np.asarray(owner, dtype=np.int64),
                  ranges=np.asarray(ranges, dtype=np.int64).reshape(-1, 2), aligned=tuple(aligned))


def _checked(dataset: SpanDataset) -> None:
    if len(dataset) < 2:
        raise DataFileError("Training a tagger needs at least two texts (one to train on, one to check).")
    if not dataset.labels:
        raise DataFileError("The texts hold no labelled span: there is nothing to learn.")


def _counted(lengths: np.ndarray) -> tuple[tuple[int, int], ...]:
    sizes, counts = np.unique(lengths, return_counts=True)
    return tuple((int(size), int(count)) for size, count in zip(sizes, counts))


def planned_passes(loaded: LoadedModel, dataset: SpanDataset, config: TaggerConfig | None = None) -> Training:
    """The work :func:`train_tagger` does with ``config`` on ``dataset`` (for time estimates): the same
    split and parts as the run. Tokenizes every text.

    Raises:
        DataFileError: as :func:`train_tagger`.
    """
    config = config or TaggerConfig()
    _checked(dataset)
    train_rows, validation_rows = random_split(len(dataset), config.validation_fraction, config.seed, "texts")
    chunks = chunk_dataset(loaded, dataset, lowercase=loaded.resolve_lowercase(config.lowercase),
                           max_length=config.max_length, all_pieces=config.all_pieces)
    lengths = chunks.lengths
    train, held = chunks.of(train_rows), chunks.of(validation_rows)
    per_epoch, steps = planned_steps(len(train), config)
    layers = loaded.info.num_layers
    return Training(examples=_counted(lengths[train]), validation=_counted(lengths[held]),
                    epochs=steps / max(per_epoch, 1),
                    trained_share=max(0, min(int(config.unfreeze_layers), layers)) / max(layers, 1),
                    cached_trunk=int(lengths[train].sum()) * loaded.info.hidden_size * 4 <= config.cache_bytes)


def _build_model(loaded: LoadedModel, tag_names: tuple[str, ...]) -> PreTrainedModel:
    def configure(config: PretrainedConfig) -> None:
        config.num_labels = len(tag_names)
        config.id2label = dict(enumerate(tag_names))
        config.label2id = {name: index for index, name in enumerate(tag_names)}
        config.problem_type = None

    return private_model(loaded, AutoModelForTokenClassification, configure=configure)


def _predict(model: PreTrainedModel, chunks: Chunks, parts: np.ndarray, padding: int,
             batch_size: int) -> dict[int, np.ndarray]:
    """{text: int64 [n] predicted tag per piece} for the texts of ``parts`` (their parts stitched back)."""
    model.eval()
    pieces: dict[int, np.ndarray] = {}
    for part in parts:
        owner = int(chunks.owner[part])
        if owner not in pieces:
            pieces[owner] = np.zeros(len(chunks.aligned[owner].tags), dtype=np.int64)
    with torch.inference_mode():
        for begin in range(0, len(parts), batch_size):
            chosen = parts[begin:begin + batch_size]
            ids, mask = padded(chunks.sequences, chosen, padding, device_of(model))
            best = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu().numpy()  # [b, t]
            for row, part in enumerate(chosen):
                start, stop = chunks.ranges[part]
                pieces[int(chunks.owner[part])][start:stop] = best[row, 1:1 + stop - start]
    return pieces


def _char_span(aligned: AlignedTags, first: int, last: int) -> tuple[int, int]:
    return int(aligned.unit_spans[first, 0]), int(aligned.unit_spans[last, 1])


def wrong_spans(example: int, aligned: AlignedTags, expected: list[str], predicted: list[str]) -> list[WrongSpan]:
    """The spans of one text that were not found exactly (entities read as seqeval reads them)."""
    gold = {(label, first, last) for label, first, last in get_entities(expected)}
    found = {(label, first, last) for label, first, last in get_entities(predicted)}
    unmatched = sorted(gold - found, key=lambda entity: entity[1])
    wrong: list[WrongSpan] = []
    for label, first, last in sorted(found - gold, key=lambda entity: entity[1]):
        same = next((g for g in unmatched if (g[1], g[2]) == (first, last)), None)
        overlapping = same or next((g for g in unmatched if g[1] <= last and first <= g[2]), None)
        if overlapping is not None:
            unmatched.remove(overlapping)
            wrong.append(WrongSpan(example=example, kind="wrong label" if same else "wrong boundaries",
                                   expected_label=overlapping[0], expected=_char_span(aligned, *overlapping[1:]),
                                   predicted_label=label, predicted=_char_span(aligned, first, last)))
        else:
            wrong.append(WrongSpan(example=example, kind="not annotated", predicted_label=label,
                                   predicted=_char_span(aligned, first, last)))
    wrong += [WrongSpan(example=example, kind="missed", expected_label=label, expected=_char_span(aligned, first, last))
              for label, first, last in unmatched]
    return sorted(wrong, key=lambda item: (item.expected or item.predicted)[0])


def entity_scores(labels: tuple[str, ...], expected: list[list[str]], predicted: list[list[str]]) -> tuple[LabelScore, ...]:
    """Per label, then over all labels (micro average): seqeval's entity-level precision, recall and F1."""
    table = classification_report(expected, predicted, output_dict=True, zero_division=0)
    rows = [(label, table.get(label)) for label in labels] + [(ALL_LABELS, table.get("micro avg"))]
    return tuple(LabelScore(label=label, precision=float(row["precision"]) if row else 0.0,
                            recall=float(row["recall"]) if row else 0.0, f1=float(row["f1-score"]) if row else 0.0,
                            support=int(row["support"]) if row else 0) for label, row in rows)


def train_tagger(loaded: LoadedModel, dataset: SpanDataset, *, config: TaggerConfig | None = None,
                 progress: Progress | None = None, on_step: Callable[[StepReport], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> TrainedTagger:
    """Train a token-classification head on ``dataset``'s spans and score it on held-out texts.

    Args:
        loaded: the shared model; only read (its weights are copied).
        dataset: texts with labelled spans (checked when they were read).
        progress, on_step, cancel: as :func:`cbert_core.training.finetune.fine_tune`; a cancelled run keeps
            the model as trained so far (``result.cancelled``, no scores).

    Raises:
        DataFileError: fewer than two texts, no span, or spans that cannot be tagged.
    """
    config = config or TaggerConfig()
    started = time.perf_counter()
    _checked(dataset)
    train_rows, validation_rows = random_split(len(dataset), config.validation_fraction, config.seed, "texts")
    lowercase = loaded.resolve_lowercase(config.lowercase)
    chunks = chunk_dataset(loaded, dataset, lowercase=lowercase, max_length=config.max_length,
                           all_pieces=config.all_pieces)
    lengths = chunks.lengths
    train_parts = chunks.of(train_rows)
    padding = pad_id(loaded)
    _per_epoch, total = planned_steps(len(train_parts), config)
    cache_fits = int(lengths[train_parts].sum()) * loaded.info.hidden_size * 4 <= config.cache_bytes
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORED)
    tag_names = dataset.tag_names

    def loss_of(logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:  # logits [b, t, tag]
        targets = torch.full(logits.shape[:2], IGNORED, dtype=torch.long)
        for index, row in enumerate(rows):
            targets[index, :len(chunks.targets[row])] = torch.from_numpy(chunks.targets[row])
        return loss_fn(logits.flatten(0, 1), targets.flatten().to(logits.device))

    with seeded_rng(loaded.device, config.seed):
        model = _build_model(loaded, tag_names)
        head, encoder, trained_layers = trainable_parts(model, config.unfreeze_layers)
        setup_seconds = time.perf_counter() - started
        losses, cancelled = train_top(
            model, examples=chunks.sequences, lengths=lengths, rows=train_parts,
            first_trained=len(anatomy_of(model).layers) - len(trained_layers), padding=padding, config=config,
            total=total, cache=cache_fits, head=head, encoder=encoder, loss_of=loss_of, cancel=cancel,
            on_step=on_step, progress=progress)
    model.eval()
    model.requires_grad_(False)
    fields: dict[str, object] = {}
    if not cancelled:
        report(progress, 0.95, f"Tagging {len(validation_rows):,} held-out texts")
        predicted = _predict(model, chunks, chunks.of(validation_rows), padding, config.eval_batch_size)
        expected_tags, predicted_tags, wrong = [], [], []
        for row in validation_rows.tolist():
            aligned = chunks.aligned[row]
            expected_tags.append([tag_names[tag] for tag in aligned.unit_tags()])
            predicted_tags.append([tag_names[tag] for tag in predicted[row][aligned.units]])
            wrong += wrong_spans(row, aligned, expected_tags[-1], predicted_tags[-1])
        fields = dict(scores=entity_scores(dataset.labels, expected_tags, predicted_tags), wrong=tuple(wrong),
                      predicted_tags=tuple(tuple(tags) for tags in predicted_tags))
        report(progress, 1.0, "Done")
    result = TaggerResult(
        labels=dataset.labels, tag_names=tag_names, losses=np.asarray(losses, dtype=np.float32), total_steps=total,
        cancelled=cancelled, train_rows=train_rows, validation_rows=validation_rows, trained_layers=trained_layers,
        cached_trunk=cache_fits, widened_spans=sum(tags.widened for tags in chunks.aligned),
        cut_texts=int(np.count_nonzero(np.bincount(chunks.owner, minlength=len(dataset)) > 1)),
        seconds=time.perf_counter() - started, setup_seconds=setup_seconds, config=config, **fields)
    return TrainedTagger(model=model, tokenizer=private_tokenizer(loaded, lowercase), result=result,
                         base_name=loaded.info.name)
