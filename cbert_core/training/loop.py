"""What every training stage shares: the private model copy, which parameters train, the step loop, the
split, and the checkpoint written to the folder the user chose.

The stages (:mod:`cbert_core.training.finetune` for a note classifier, :mod:`cbert_core.training.pretrain`
for continued masked-LM pretraining, :mod:`cbert_core.training.tagger` for a word tagger) differ in their
examples, their head and their metrics; the rest is here, once:

* :func:`private_model` builds a fresh model of the wanted head from the shared model's config (eager
  attention) and copies the encoder (and, when asked, the head) into it; the shared
  :class:`~cbert_core.model.loading.LoadedModel` is only read.
* :func:`trainable_parts` freezes everything but the head and the top ``unfreeze`` encoder layers;
  :func:`frozen_to_eval` runs the frozen bottom without dropout.
* :func:`train_steps` is the loop: AdamW (head and encoder learning rates), linear warm-up then linear
  decay, ``cancel()`` checked before every step (a cancelled run keeps what it did), a report after
  every step.
* :func:`write_checkpoint` writes a standard Hugging Face folder with a summary (no note text).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from cbert_core.errors import DataFileError, ExportError, ModelLoadError
from cbert_core.model.architecture import anatomy_of
from cbert_core.model.loading import LoadedModel
from cbert_core.progress import Progress, report

Batch = TypeVar("Batch")


@contextmanager
def seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seeded head initialisation and dropout, without disturbing anyone else's random state.

    On a GPU, dropout draws from the GPU's generator, which is forked and seeded too.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Settings every stage shares (defaults suit a small encoder on a 2-core CPU)."""

    epochs: int = 3
    batch_size: int = 16
    unfreeze_layers: int = 0  # top N encoder layers trained along with the head
    lr_encoder: float = 5e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # linear warm-up, then linear decay to 0
    max_length: int = 128  # pieces per example, [CLS] and [SEP] included
    validation_fraction: float = 0.2
    seed: int = 0
    lowercase: bool | None = None  # None: the checkpoint's default casing
    max_steps: int | None = None  # stop after this many steps (None: all epochs)
    eval_batch_size: int = 64


@dataclass(frozen=True, kw_only=True)
class StepReport:
    """Sent to ``on_step`` after every optimisation step."""

    step: int  # 1-based
    total_steps: int
    epoch: int  # 0-based
    loss: float


class Cancelled(Exception):
    """Raised inside a preparation when ``cancel()`` says stop (caught by the stage that raised it)."""


def planned_steps(train_examples: int, config: TrainingConfig) -> tuple[int, int]:
    """(steps per epoch, total steps) for ``train_examples`` examples under ``config``."""
    per_epoch = math.ceil(train_examples / max(config.batch_size, 1))
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, int(config.max_steps))
    return per_epoch, total


def random_split(count: int, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), sorted int64: a seeded random split holding out ``fraction``.

    Raises:
        DataFileError: fewer than two examples, or nothing left on one side.
    """
    held = math.ceil(count * fraction)
    if count < 2 or held < 1 or count - held < 1:
        raise DataFileError(f"{count} {what} are too few to train on some and hold out {fraction:.0%}: add "
                            f"{what} or change the held-out share.")
    train, held_out = train_test_split(np.arange(count), test_size=held, random_state=seed)
    return np.sort(train).astype(np.int64), np.sort(held_out).astype(np.int64)


def private_model(loaded: LoadedModel, auto_class: type, *, configure: Callable[[PretrainedConfig], None],
                  keep_head: bool = False) -> PreTrainedModel:
    """A fresh ``auto_class`` model (eager attention) holding a copy of the shared model's weights.

    Args:
        auto_class: e.g. ``AutoModelForMaskedLM``; built from a copy of the shared model's config.
        configure: changes the copied config (labels, tying) before the model is built.
        keep_head: copy the whole model, head included (the shared model has this head already);
            otherwise only the encoder is copied and the head starts as the class initialises it.

    Raises:
        ModelLoadError: the shared model's weights do not fit the new model.
    """
    config = copy.deepcopy(loaded.model.config)
    configure(config)
    config.architectures = None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = auto_class.from_config(config, attn_implementation="eager")
    finally:
        hf_logging.set_verbosity(verbosity)
    # Copy the shared weights into the new model (state_dict() is read only; nothing is shared after).
    target, source = (model, loaded.model) if keep_head else (model.base_model, loaded.model.base_model)
    incompatible = target.load_state_dict(source.state_dict(), strict=False)
    unexpected = [key for key in incompatible.unexpected_keys
                  if "position_ids" not in key and not key.startswith("pooler.")]  # e.g. RoBERTa drops its pooler
    missing = [key for key in incompatible.missing_keys if "position_ids" not in key and not key.startswith("pooler.")]
    if missing or unexpected:
        raise ModelLoadError(f"The encoder of {loaded.info.name} does not fit a model with this head "
                             f"({(missing + unexpected)[0]}).")
    return model.to(loaded.device)  # a new head is drawn on the CPU (the same on any device), then moved


def trainable_parts(model: PreTrainedModel, unfreeze: int) -> tuple[list, list, tuple[int, ...]]:
    """(head parameters, encoder parameters to train, trained layer indices); freezes everything else.

    The head is every parameter outside the encoder (and the pooler where there is one). A masked-LM
    decoder tied to the word embeddings is the embedding tensor itself, inside the encoder: it trains
    only if the embeddings do, which they never do here (they belong to the frozen bottom).
    """
    model.requires_grad_(False)
    base = model.base_model
    base_ids = {id(p) for p in base.parameters()}
    head = [p for p in model.parameters() if id(p) not in base_ids]
    pooler = getattr(base, "pooler", None)
    if pooler is not None:
        head += list(pooler.parameters())
    layers = anatomy_of(model).layers
    count = max(0, min(int(unfreeze), len(layers)))
    chosen = tuple(range(len(layers) - count, len(layers)))
    encoder = [p for index in chosen for p in layers[index].layer.parameters()]
    for parameter in head + encoder:
        parameter.requires_grad_(True)
    return head, encoder, chosen


def frozen_to_eval(model: PreTrainedModel, first_trained: int) -> None:
    """Train mode for the head and trained layers; eval mode (no dropout) for the frozen bottom."""
    model.train()
    anatomy = anatomy_of(model)
    anatomy.embeddings.module.eval()
    for part in anatomy.layers[:first_trained]:
        part.layer.eval()


def private_tokenizer(loaded: LoadedModel, lowercase: bool) -> PreTrainedTokenizerBase:
    """A copy of the shared tokenizer with the casing in force, limited to the model's positions (to save)."""
    tokenizer = copy.deepcopy(loaded.tokenizer(lowercase))
    tokenizer.model_max_length = loaded.info.max_tokens
    return tokenizer


def train_steps(model: PreTrainedModel, *, head: list, encoder: list, config: TrainingConfig, total: int,
                batches: Callable[[int], Iterable[Batch]], loss_of: Callable[[Batch], torch.Tensor | None],
                cancel: Callable[[], bool] | None = None, on_step: Callable[[StepReport], None] | None = None,
                progress: Progress | None = None, span: tuple[float, float] = (0.0, 0.95),
                after_step: Callable[[int], None] | None = None) -> tuple[list[float], bool]:
    """Run up to ``total`` optimisation steps over ``batches(epoch)`` for ``config.epochs`` epochs.

    Args:
        head, encoder: the parameters to train, at ``config.lr_head`` and ``config.lr_encoder``.
        batches: the batches of one epoch (called at the start of each).
        loss_of: the loss of a batch; None skips the batch (nothing to learn from it, no step counted).
        cancel: checked before every step; True ends the run and keeps what was done.
        on_step: told every step's loss.
        progress: the bar moves from ``span[0]`` to ``span[1]`` over the steps.
        after_step: called with the step number after each step (a stage's own checks, e.g. held-out scores).

    Returns:
        (the loss of every step, whether the run was cancelled before ``total`` steps).
    """
    groups = [{"params": head, "lr": config.lr_head}]
    if encoder:
        groups.append({"params": encoder, "lr": config.lr_encoder})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    warmup = max(1, int(total * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    losses: list[float] = []
    cancelled = False
    step = 0
    for epoch in range(config.epochs):
        if cancelled or step >= total:
            break
        for batch in batches(epoch):
            if step >= total or (cancel is not None and cancel()):
                cancelled = step < total
                break
            loss = loss_of(batch)
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(StepReport(step=step, total_steps=total, epoch=epoch, loss=losses[-1]))
            report(progress, span[0] + (span[1] - span[0]) * step / max(total, 1),
                   f"Step {step} of {total} (epoch {epoch + 1}): loss {losses[-1]:.4f}")
            if after_step is not None:
                after_step(step)
    return losses, cancelled


def write_checkpoint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path, *,
                     summary: dict, summary_file: str, overwrite: bool = False) -> Path:
    """Write a Hugging Face checkpoint (config, model.safetensors, tokenizer files) and ``summary`` as JSON.

    Raises:
        ExportError: the folder cannot be written, or already holds a model and ``overwrite`` is False.
    """
    target = Path(folder).expanduser()
    if target.exists() and not target.is_dir():
        raise ExportError(f"'{target}' is a file, not a folder. Choose a folder to save the model in.")
    if target.is_dir() and not overwrite and any((target / name).exists() for name in
                                                 ("config.json", "model.safetensors", "pytorch_model.bin")):
        raise ExportError(f"The folder '{target}' already holds a model. Choose an empty folder, or allow "
                          f"overwriting.")
    try:
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        (target / summary_file).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    except OSError as failed:
        reason = failed.strerror or str(failed)
        raise ExportError(f"The model could not be saved to '{target}' ({reason}). Choose a folder you can "
                          f"write to, with enough free space.") from failed
    return target
