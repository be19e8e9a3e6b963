"""Train a sequence-classification head on a labelled collection, and save it as a checkpoint.

The shared :class:`~cbert_core.model.loading.LoadedModel` is never touched: a fresh
``AutoModelForSequenceClassification`` is built from its config (eager
attention) and the encoder weights are copied into it. By default only the
head (classifier, and the pooler where the architecture has one) is trained;
``unfreeze_layers`` also trains the top N encoder layers at a lower learning
rate. Examples are the note's word pieces between [CLS] and [SEP] (as a trace
feeds them), cut to ``max_length``, padded to the longest in each batch.

The frozen bottom (embeddings and the layers below the trained ones) runs
without dropout, as a fixed feature extractor; when its outputs for the
training notes fit in ``cache_bytes`` they are computed once and reused every
epoch (:mod:`cbert_core.training.frozen_trunk`), which makes an epoch cost only the
trained layers. Batches group notes of similar length (less padding).

Training is cancellable: ``cancel()`` is checked before every step and a
cancelled run returns what it did (losses so far, no validation metrics); an
exception raised from ``progress``/``on_step`` propagates unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.model_selection import train_test_split
from transformers import (
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from cbert_core.analyses.intervals import wilson_interval
from cbert_core.corpus.collection import Collection
from cbert_core.errors import DataFileError
from cbert_core.model.architecture import anatomy_of
from cbert_core.model.device import device_of
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report
from cbert_core.run.encode import pad_id
from cbert_core.serving.speed import Training
from cbert_core.text.tokens import tokenize_note
from cbert_core.training.frozen_trunk import padded, train_top
from cbert_core.training.loop import (
    StepReport,
    TrainingConfig,
    planned_steps,
    private_model,
    private_tokenizer,
    seeded_rng,
    trainable_parts,
    write_checkpoint,
)

SUMMARY_FILE = "cbert_finetune.json"
FEW_VALIDATION_NOTES = 30  # below this, a validation accuracy is shown with a warning and its 95% interval


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(TrainingConfig):
    """Training settings of a note classifier (the shared ones in :class:`TrainingConfig`)."""

    class_weighted: bool = True  # loss weights inversely proportional to class frequency
    cache_bytes: int = 1024**3  # reuse the frozen bottom's outputs when they fit in this many bytes


@dataclass(frozen=True, kw_only=True)
class FineTuneResult:
    """What a training run did and how well it classifies the held-out notes."""

    labels: tuple[str, ...]  # class names; index = class id
    losses: np.ndarray  # float32 [step]: training loss of each step
    total_steps: int  # planned steps
    cancelled: bool
    train_rows: np.ndarray  # int64 [train]: note indices in the collection
    validation_rows: np.ndarray  # int64 [validation]
    majority_baseline: float  # accuracy of always answering the most common class (validation)
    truncated_examples: int  # notes cut to max_length pieces
    trained_layers: tuple[int, ...]  # encoder layers trained (0-based), besides the head
    cached_trunk: bool  # True when the frozen bottom ran once and its outputs were reused
    seconds: float
    config: FineTuneConfig
    validation_predictions: np.ndarray | None = None  # int64 [validation]; None when cancelled
    validation_accuracy: float | None = None
    macro_f1: float | None = None
    per_class_f1: np.ndarray | None = None  # float32 [label]
    confusion: np.ndarray | None = None  # int64 [true label, predicted label]
    setup_seconds: float = 0.0  # of ``seconds``: splitting, tokenizing and building the private model copy

    def __post_init__(self) -> None:
        for array in (self.losses, self.train_rows, self.validation_rows, self.validation_predictions,
                      self.per_class_f1, self.confusion):
            if array is not None:
                array.flags.writeable = False

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def validation_size(self) -> int:
        """Held-out notes the validation figures rest on."""
        return len(self.validation_rows)

    @property
    def validation_correct(self) -> int | None:
        """Held-out notes classified correctly (None when cancelled)."""
        return None if self.confusion is None else int(np.trace(self.confusion))

    def accuracy_interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """Wilson interval of the validation accuracy (None when cancelled or nothing was held out)."""
        if self.validation_correct is None or self.validation_size == 0:
            return None
        return wilson_interval(self.validation_correct, self.validation_size, confidence)


@dataclass(eq=False)
class FineTuned:
    """The trained model (owned by the caller, never shared) with its result; save it with :meth:`save`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    result: FineTuneResult
    base_name: str

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write a standard Hugging Face checkpoint folder (loadable by ``load_model``).

        Raises:
            ExportError: the folder cannot be written, or already holds a model and ``overwrite`` is False.
        """
        return save_checkpoint(self, folder, overwrite=overwrite)


def _examples(loaded: LoadedModel, texts: tuple[str, ...], lowercase: bool, max_length: int) -> tuple[list, int]:
    tokenizer = loaded.tokenizer(lowercase)
    limit = max(1, min(max_length, loaded.info.max_tokens) - 2)
    examples, truncated = [], 0
    for text in texts:
        ids = tokenize_note(tokenizer, text).ids
        truncated += int(len(ids) > limit)
        examples.append(np.concatenate([[tokenizer.cls_token_id], ids[:limit], [tokenizer.sep_token_id]])
                        .astype(np.int64))
    return examples, truncated


def _split(label_ids: np.ndarray, names: tuple[str, ...], fraction: float,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(label_ids, minlength=len(names))
    if len(names) < 2:
        raise DataFileError("Training needs at least two different labels; this collection has "
                            f"{len(names)}. Choose another label column.")
    rare = [names[i] for i in np.flatnonzero(counts < 2)]
    if rare:
        raise DataFileError(f"Each label needs at least 2 notes (one to train on, one to check); "
                            f"too few for: {', '.join(rare[:10])}.")
    validation = math.ceil(len(label_ids) * fraction)
    if validation < len(names) or len(label_ids) - validation < len(names):
        raise DataFileError(f"{len(label_ids)} notes are too few to hold out {fraction:.0%} for validation with "
                            f"{len(names)} labels. Add notes or change the validation share.")
    train, held_out = train_test_split(np.arange(len(label_ids)), test_size=validation, stratify=label_ids,
                                       random_state=seed)
    return np.sort(train).astype(np.int64), np.sort(held_out).astype(np.int64)


def _build_model(loaded: LoadedModel, labels: tuple[str, ...]) -> PreTrainedModel:
    def configure(config: PretrainedConfig) -> None:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: index for index, label in enumerate(labels)}
        config.problem_type = "single_label_classification"

    return private_model(loaded, AutoModelForSequenceClassification, configure=configure)


def _evaluate(model: PreTrainedModel, examples: list[np.ndarray], rows: np.ndarray, padding: int,
              batch_size: int) -> np.ndarray:
    """int64 [rows]: predicted class of each held-out example (the whole model, eval mode)."""
    model.eval()
    predictions = np.empty(len(rows), dtype=np.int64)
    order = np.argsort([-len(examples[row]) for row in rows], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            ids, mask = padded(examples, rows[chosen], padding, device_of(model))
            predictions[chosen] = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu().numpy()
    return predictions


def planned_passes(loaded: LoadedModel, collection: Collection, config: FineTuneConfig | None = None) -> Training:
    """The work :func:`fine_tune` does with ``config`` on ``collection`` (for time estimates).

    The same split and examples (cut to ``max_length``) as the run: ``epochs`` x training
    examples at their lengths are trained (fewer when ``max_steps`` ends the run early), then
    the held-out examples are checked. Frozen lower layers make a step cheaper: the cost model
    of :class:`cbert_core.serving.speed.Training` counts them by the share of the encoder's layers that
    is trained, and by whether their outputs are cached (run once) as :func:`fine_tune` decides.
    Tokenizes every note.

    Raises:
        DataFileError: as :func:`fine_tune` (no labels, one label only, too few notes per label).
    """
    config = config or FineTuneConfig()
    if collection.labels is None:
        raise DataFileError("Training needs a label column: choose which column holds each note's class.")
    train_rows, validation_rows = _split(collection.label_ids, collection.label_names, config.validation_fraction,
                                         config.seed)
    examples, _truncated = _examples(loaded, collection.texts, loaded.resolve_lowercase(config.lowercase),
                                     config.max_length)
    lengths = np.asarray([len(example) for example in examples], dtype=np.int64)

    def counted(rows: np.ndarray) -> tuple[tuple[int, int], ...]:
        sizes, counts = np.unique(lengths[rows], return_counts=True)
        return tuple((int(size), int(count)) for size, count in zip(sizes, counts))

    steps_per_epoch, steps = planned_steps(len(train_rows), config)
    layers = loaded.info.num_layers
    trained = max(0, min(int(config.unfreeze_layers), layers))
    return Training(examples=counted(train_rows), validation=counted(validation_rows),
                    epochs=steps / max(steps_per_epoch, 1), trained_share=trained / max(layers, 1),
                    cached_trunk=int(lengths[train_rows].sum()) * loaded.info.hidden_size * 4 <= config.cache_bytes)


def fine_tune(loaded: LoadedModel, collection: Collection, *, config: FineTuneConfig | None = None,
              progress: Progress | None = None, on_step: Callable[[StepReport], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> FineTuned:
    """Train a classification head on ``collection``'s labels with a stratified, seeded split.

    The frozen bottom (embeddings and the layers below the trained ones) runs
    without dropout; when its outputs for the training notes fit in
    ``config.cache_bytes`` they are computed once and reused every epoch.

    Args:
        loaded: the shared model; only read (its weights are copied).
        collection: notes with labels.
        config: training settings.
        progress: (fraction, message) as work advances; raising from it stops training and propagates.
        on_step: called with a :class:`StepReport` (step, loss) after every step.
        cancel: checked before every step (and every batch of the preparation); returning True
            ends training early and returns what was done (``result.cancelled``, no metrics).

    Raises:
        DataFileError: no labels, one label only, or too few notes per label.
    """
    config = config or FineTuneConfig()
    started = time.perf_counter()
    if collection.labels is None:
        raise DataFileError("Training needs a label column: choose which column holds each note's class.")
    names = collection.label_names
    label_ids = collection.label_ids
    train_rows, validation_rows = _split(label_ids, names, config.validation_fraction, config.seed)
    lowercase = loaded.resolve_lowercase(config.lowercase)
    examples, truncated = _examples(loaded, collection.texts, lowercase, config.max_length)
    lengths = np.asarray([len(example) for example in examples], dtype=np.int64)
    padding = pad_id(loaded)
    _per_epoch, total = planned_steps(len(train_rows), config)
    device = loaded.device
    targets = torch.from_numpy(label_ids).to(device)
    counts = np.bincount(label_ids[train_rows], minlength=len(names)).astype(np.float64)
    weights = (counts.sum() / (len(names) * counts)) if config.class_weighted else np.ones(len(names))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
    cache_fits = int(lengths[train_rows].sum()) * loaded.info.hidden_size * 4 <= config.cache_bytes

    with seeded_rng(device, config.seed):
        model = _build_model(loaded, names)
        head, encoder, trained_layers = trainable_parts(model, config.unfreeze_layers)
        setup_seconds = time.perf_counter() - started
        losses, cancelled = train_top(
            model, examples=examples, lengths=lengths, rows=train_rows,
            first_trained=len(anatomy_of(model).layers) - len(trained_layers), padding=padding, config=config,
            total=total, cache=cache_fits, head=head, encoder=encoder,
            loss_of=lambda logits, rows: loss_fn(logits, targets[torch.from_numpy(rows).to(device)]),  # logits [b, label]
            cancel=cancel, on_step=on_step, progress=progress)
    model.eval()
    model.requires_grad_(False)
    validation_labels = label_ids[validation_rows]
    fields: dict[str, object] = {}
    if not cancelled:
        report(progress, 0.95, f"Checking {len(validation_rows):,} held-out notes")
        predicted = _evaluate(model, examples, validation_rows, padding, config.eval_batch_size)
        classes = list(range(len(names)))
        fields = dict(
            validation_predictions=predicted,
            validation_accuracy=float((predicted == validation_labels).mean()),
            macro_f1=float(f1_score(validation_labels, predicted, labels=classes, average="macro", zero_division=0)),
            per_class_f1=f1_score(validation_labels, predicted, labels=classes, average=None,
                                  zero_division=0).astype(np.float32),
            confusion=confusion_matrix(validation_labels, predicted, labels=classes).astype(np.int64),
        )
        report(progress, 1.0, "Done")
    result = FineTuneResult(
        labels=names, losses=np.asarray(losses, dtype=np.float32), total_steps=total, cancelled=cancelled,
        train_rows=train_rows, validation_rows=validation_rows,
        majority_baseline=float(np.bincount(validation_labels).max() / len(validation_labels)),
        truncated_examples=truncated, trained_layers=trained_layers, cached_trunk=cache_fits,
        seconds=time.perf_counter() - started, config=config, setup_seconds=setup_seconds, **fields,
    )
    return FineTuned(model=model, tokenizer=private_tokenizer(loaded, lowercase), result=result,
                     base_name=loaded.info.name)


def save_checkpoint(fine_tuned: FineTuned, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``fine_tuned`` as a Hugging Face checkpoint: config (id2label, label2id,
    architectures [*ForSequenceClassification]), model.safetensors, tokenizer files,
    and a training summary (metrics and settings, no note text).

    Raises:
        ExportError: the folder cannot be written, or already holds a model and ``overwrite`` is False.
    """
    result = fine_tuned.result
    summary = {
        "base_model": fine_tuned.base_name, "labels": list(result.labels), "cancelled": result.cancelled,
        "steps_done": result.steps_done, "total_steps": result.total_steps,
        "validation_accuracy": result.validation_accuracy, "macro_f1": result.macro_f1,
        "majority_baseline": result.majority_baseline, "train_notes": int(len(result.train_rows)),
        "validation_notes": int(len(result.validation_rows)), "trained_layers": list(result.trained_layers),
        "confusion": None if result.confusion is None else result.confusion.tolist(),
        "config": asdict(result.config),
    }
    return write_checkpoint(fine_tuned.model, fine_tuned.tokenizer, folder, summary=summary,
                            summary_file=SUMMARY_FILE, overwrite=overwrite)
