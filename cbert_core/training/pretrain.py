"""Continue masked-LM pretraining on a collection of notes (domain adaptation), and watch it work.

This is how Bio_ClinicalBERT was made from BioBERT: the masked-language-model objective continued on
clinical text. A private copy of the shared model is trained:

* a checkpoint with a masked-LM head keeps training its own head; any other (a bare encoder such as the
  bundled all-MiniLM-L6-v2, or a classifier) gets a new ``AutoModelForMaskedLM`` head whose decoder is
  tied to the word embeddings (one tensor: the output layer scores a piece by its own input vector).
  The new head's transform and bias start untrained, so its first guesses are noise (:attr:`PretrainResult.new_head`).
* Masking is dynamic and done by transformers' ``DataCollatorForLanguageModeling``: every batch draws
  new positions, 15 % of the pieces (80 % of them become [MASK], 10 % a random piece, 10 % stay), or
  whole words (``whole_word_mask``: every piece of a chosen word, all as [MASK], as transformers does it).
* Notes are cut into examples of ``max_length`` pieces at word starts; batches group similar lengths.
  The loss is the model's masked-LM cross-entropy, with the vocabulary projection computed only at the
  masked positions (the same value as the model's own loss at a sixth of the head's cost).
* The lower layers can stay frozen as in fine-tuning (the word embeddings, hence the tied decoder, always
  do); they run without dropout and without gradients.
* Held-out notes (a seeded split the caller can show) are scored before training and a few times during
  it by pseudo-perplexity, ``exp(-mean log p(piece | the rest))`` with the strided pseudo-likelihood of
  :func:`cbert_core.analyses.predict.pseudo_log_likelihood` in windows of ``max_length``; the current
  note's fill-mask is computed at the same moments, so a page can show it before and after.

Cancellable like fine-tuning: ``cancel()`` is checked before every step and between held-out notes; a
cancelled run keeps the model as trained so far and the scores measured so far. The result saves as a
standard masked-LM checkpoint that the model picker loads, only to the folder given.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from cbert_core.analyses.predict import FillMaskResult, fill_mask, mask_word, pseudo_log_likelihood
from cbert_core.errors import DataFileError, EmptyNoteError, NoteTooLongError
from cbert_core.model.architecture import anatomy_of
from cbert_core.model.heads import mlm_head
from cbert_core.model.loading import LoadedModel, ModelSpec
from cbert_core.progress import Progress, report
from cbert_core.run.plan import NotePlan, RunOptions, plan_note
from cbert_core.serving.speed import Training
from cbert_core.text.tokens import mask_positions, tokenize_note
from cbert_core.training.frozen_trunk import length_batches
from cbert_core.training.loop import (
    StepReport,
    TrainingConfig,
    frozen_to_eval,
    planned_steps,
    private_model,
    private_tokenizer,
    random_split,
    seeded_rng,
    train_steps,
    trainable_parts,
    write_checkpoint,
)

SUMMARY_FILE = "cbert_pretrain.json"
REDRAWS = 20  # masks drawn again for a batch in which none was drawn (then it is skipped)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(TrainingConfig):
    """Continued-pretraining settings (the shared ones in :class:`TrainingConfig`)."""

    epochs: int = 1
    lr_head: float = 5e-4
    validation_fraction: float = 0.1  # notes held out for the pseudo-perplexity
    mlm_probability: float = 0.15  # share of pieces (or words) chosen at each batch
    whole_word_mask: bool = False  # mask every piece of a chosen word (all as [MASK])
    checks: int = 3  # held-out scores during the run (besides the one before it)
    held_out_stride: int = 8  # pieces masked together when scoring held-out notes (0: one at a time)
    held_out_pieces: int | None = None  # score only this many held-out pieces (None: all of them)


@dataclass(frozen=True, kw_only=True)
class HeldOutCheck:
    """The held-out notes scored at one moment of the run."""

    step: int  # optimisation steps done before it (0: before training)
    pseudo_perplexity: float  # exp(-mean log-probability of a held-out piece given the rest)
    pieces: int  # pieces scored
    seconds: float
    fill: FillMaskResult | None = None  # the current note's fill-mask at that moment


@dataclass(frozen=True, kw_only=True)
class PretrainResult:
    """What a continued-pretraining run did."""

    losses: np.ndarray  # float32 [step]: masked-LM loss of each step
    total_steps: int
    cancelled: bool
    train_rows: np.ndarray  # int64 [train]: notes trained on
    held_out_rows: np.ndarray  # int64 [held out]: notes scored by pseudo-perplexity
    examples: int  # training examples (notes cut into parts of max_length pieces)
    trained_layers: tuple[int, ...]
    new_head: bool  # True: the masked-LM head was made for this run (it started untrained)
    checks: tuple[HeldOutCheck, ...]  # before training, then during it
    tokens_trained: int  # pieces (padding excluded) that went through training steps
    train_seconds: float  # of ``seconds``: the optimisation steps only
    seconds: float
    setup_seconds: float
    config: PretrainConfig
    fill_before: FillMaskResult | None = None  # the current note's fill-mask before training
    fill_after: FillMaskResult | None = None  # and after it (also after a cancelled run)

    def __post_init__(self) -> None:
        for array in (self.losses, self.train_rows, self.held_out_rows):
            array.flags.writeable = False

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_trained / self.train_seconds if self.train_seconds > 0 else float("nan")


@dataclass(eq=False)
class Pretrained:
    """The trained masked-LM (owned by the caller, never shared) with its result; save it with :meth:`save`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    result: PretrainResult
    base_name: str

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write a standard masked-LM checkpoint folder (loadable by ``load_model``; the decoder stays tied).

        Raises:
            ExportError: the folder cannot be written, or already holds a model and ``overwrite`` is False.
        """
        result = self.result
        summary = {
            "base_model": self.base_name, "stage": "continued masked-LM pretraining", "new_head": result.new_head,
            "cancelled": result.cancelled, "steps_done": result.steps_done, "total_steps": result.total_steps,
            "train_notes": int(len(result.train_rows)), "held_out_notes": int(len(result.held_out_rows)),
            "pseudo_perplexity": [{"step": check.step, "value": check.pseudo_perplexity} for check in result.checks],
            "trained_layers": list(result.trained_layers), "config": asdict(result.config),
        }
        return write_checkpoint(self.model, self.tokenizer, folder, summary=summary, summary_file=SUMMARY_FILE,
                                overwrite=overwrite)


def masking_collator(tokenizer: PreTrainedTokenizerBase, *, probability: float = 0.15, whole_word: bool = False,
                     seed: int | None = None) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """transformers' masked-LM collator, fed examples of ``{"input_ids", "special_tokens_mask",
    "offset_mapping"}`` (lists); returns ``{"input_ids", "attention_mask", "labels"}`` padded to the longest.

    Whole-word masking reads words from the offsets (a piece starting where the previous one ended
    continues its word); transformers masks every piece of a chosen word with [MASK] (no random or
    kept pieces), which is asked for explicitly here. The offsets are padded to the batch's longest
    example first (the tokenizer's ``pad`` leaves them as they are).
    """
    collator = DataCollatorForLanguageModeling(
        tokenizer=tokenizer, mlm=True, mlm_probability=probability, whole_word_mask=whole_word,
        mask_replace_prob=1.0 if whole_word else 0.8, random_replace_prob=0.0 if whole_word else 0.1, seed=seed)

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in examples)
        ready = []
        for example in examples:
            offsets = list(example["offset_mapping"])
            ready.append({**example, "offset_mapping": offsets + [(0, 0)] * (width - len(offsets))})
        return collator(ready if whole_word else [{key: value for key, value in example.items()
                                                    if key != "offset_mapping"} for example in examples])

    return collate


def note_examples(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[dict]:
    """Each note cut into examples of at most ``max_length`` pieces ([CLS] and [SEP] included), at word starts.

    A [MASK] typed in a note is kept out of the masking (marked special).

    Raises:
        DataFileError: a note with no readable word (named by number).
    """
    limit = max(1, max_length - 2)
    examples = []
    for number, text in enumerate(texts, start=1):
        try:
            tokens = tokenize_note(tokenizer, text)
        except EmptyNoteError as empty:
            raise DataFileError(f"Note {number}: {empty}") from empty
        starts = np.flatnonzero(np.diff(tokens.word_ids, prepend=-1) != 0)  # pieces that begin a word
        start = 0
        while start < len(tokens):
            stop = min(start + limit, len(tokens))
            if stop < len(tokens):
                inside = starts[(starts > start) & (starts <= stop)]
                stop = int(inside[-1]) if inside.size else stop
            ids = tokens.ids[start:stop]
            typed = np.isin(np.arange(start, stop), mask_positions(tokens.ids, tokenizer.mask_token_id))
            examples.append({
                "input_ids": [tokenizer.cls_token_id, *ids.tolist(), tokenizer.sep_token_id],
                "special_tokens_mask": [1, *typed.astype(int).tolist(), 1],
                "offset_mapping": [(0, 0), *map(tuple, tokens.offsets[start:stop].tolist()), (0, 0)],
            })
            start = stop
    return examples


def masked_lm_model(loaded: LoadedModel) -> tuple[PreTrainedModel, bool]:
    """(a private masked-LM copy of the shared model, whether its head is new).

    A masked-LM checkpoint is copied whole; any other gets a fresh head with the decoder tied to the word
    embeddings (``tie_word_embeddings``), the encoder copied.
    """
    keep = loaded.info.head_kind == "masked-lm"

    def configure(config: PretrainedConfig) -> None:
        if not keep:
            config.tie_word_embeddings = True
            for name in ("id2label", "label2id", "problem_type"):
                if hasattr(config, name):
                    setattr(config, name, None if name == "problem_type" else {})
            config.num_labels = 2

    model = private_model(loaded, AutoModelForMaskedLM, configure=configure, keep_head=keep)
    if not keep:
        model.tie_weights()
    return model, not keep


def training_view(loaded: LoadedModel, model: PreTrainedModel) -> LoadedModel:
    """The private model as a :class:`LoadedModel`, so the explorer's analyses (pseudo-likelihood, fill-mask)
    run on it; keyed apart from the shared model."""
    location = f"{loaded.info.folder}#continued-pretraining-{id(model)}"
    info = dataclasses.replace(loaded.info, name=f"{loaded.info.name} (continued pretraining)", head_kind="masked-lm",
                               labels=(), spec=ModelSpec(kind="folder", location=location), folder=location)
    return LoadedModel(model=model, anatomy=anatomy_of(model), info=info, tokenizers=loaded.tokenizers,
                       device=loaded.device)


def held_out_plans(loaded: LoadedModel, texts: Sequence[str], rows: np.ndarray, config: PretrainConfig) -> list[NotePlan]:
    """The held-out notes planned in windows of ``max_length`` (the length trained on)."""
    options = RunOptions(lowercase=loaded.resolve_lowercase(config.lowercase), max_chars=2**62)
    plans = []
    for row in rows.tolist():
        try:
            plans.append(plan_note(loaded, texts[row], options, max_content=config.max_length - 2,
                                   segment_in_background=False))
        except (EmptyNoteError, NoteTooLongError) as bad:
            raise DataFileError(f"Note {row + 1}: {bad}") from bad
    return plans


def fitted(loaded: LoadedModel, config: PretrainConfig | None) -> PretrainConfig:
    """``config`` (or the defaults) with ``max_length`` no longer than the model reads at once."""
    config = config or PretrainConfig()
    return dataclasses.replace(config, max_length=min(config.max_length, loaded.info.max_tokens))


def check_points(total: int, checks: int) -> set[int]:
    """The steps after which the held-out notes are scored: ``checks`` evenly spaced, the last at ``total``."""
    return {max(1, round(total * k / checks)) for k in range(1, checks + 1)} if total > 0 and checks > 0 else set()


def planned_passes(loaded: LoadedModel, texts: Sequence[str], config: PretrainConfig | None = None) -> Training:
    """The work :func:`pretrain` does on ``texts`` (for time estimates): its examples trained for the planned
    steps, and the held-out notes' masked copies scored ``checks + 1`` times. Tokenizes every note."""
    config = fitted(loaded, config)
    train_rows, held_rows = random_split(len(texts), config.validation_fraction, config.seed, "notes")
    tokenizer = loaded.tokenizer(loaded.resolve_lowercase(config.lowercase))
    examples = note_examples(tokenizer, [texts[row] for row in train_rows.tolist()], config.max_length)
    per_epoch, steps = planned_steps(len(examples), config)
    sizes, counts = np.unique([len(example["input_ids"]) for example in examples], return_counts=True)
    copies = config.held_out_stride if config.held_out_stride > 0 else config.max_length - 2
    scored = sum(len(tokenize_note(tokenizer, texts[row])) for row in held_rows.tolist())
    if config.held_out_pieces is not None:
        scored = min(scored, config.held_out_pieces)
    windows = max(1, math.ceil(scored / max(config.max_length - 2, 1)))
    layers = loaded.info.num_layers
    return Training(examples=tuple((int(size), int(count)) for size, count in zip(sizes, counts)),
                    validation=((config.max_length, windows * copies * (len(check_points(steps, config.checks)) + 1)),),
                    epochs=steps / max(per_epoch, 1),
                    trained_share=max(0, min(int(config.unfreeze_layers), layers)) / max(layers, 1),
                    cached_trunk=False)


def pseudo_perplexity(view: LoadedModel, plans: Sequence[NotePlan], *, stride: int, pieces: int | None,
                      cancel: Callable[[], bool] | None = None) -> tuple[float, int] | None:
    """(exp(-mean log p(piece | rest)), pieces scored) over ``plans``; None when cancelled part-way."""
    total, count = 0.0, 0
    for plan in plans:
        if cancel is not None and cancel():
            return None
        scored = pseudo_log_likelihood(view, plan, stride=stride, batch_size=16).token_logprobs
        scored = scored[np.isfinite(scored)]
        if pieces is not None:
            scored = scored[:max(pieces - count, 0)]
        total += float(scored.astype(np.float64).sum())
        count += int(scored.size)
        if pieces is not None and count >= pieces:
            break
    return (math.exp(-total / count) if count else float("nan")), count


def _probe(view: LoadedModel, probe: NotePlan | None, span: tuple[int, int] | None) -> FillMaskResult | None:
    """The probe note's fill-mask: at its [MASK]s, else with the word at ``span`` hidden."""
    if probe is None:
        return None
    if mask_positions(probe.tokens.ids, probe.mask_id).size:
        return fill_mask(view, probe)
    return mask_word(view, probe, *span) if span is not None else None


def pretrain(loaded: LoadedModel, texts: Sequence[str], *, config: PretrainConfig | None = None,
             probe: NotePlan | None = None, probe_span: tuple[int, int] | None = None,
             progress: Progress | None = None, on_step: Callable[[StepReport], None] | None = None,
             on_check: Callable[[HeldOutCheck], None] | None = None,
             check_when: Callable[[int], bool] | None = None,
             cancel: Callable[[], bool] | None = None) -> Pretrained:
    """Continue masked-LM pretraining of a private copy of ``loaded`` on ``texts``.

    Args:
        loaded: the shared model; only read (its weights are copied).
        texts: the notes; a seeded share (``config.validation_fraction``) is held out and scored.
        probe: the current note planned for ``loaded``: its fill-mask is computed at every check.
        probe_span: characters of a word to hide when the probe has no [MASK].
        on_step: told every step's loss; ``on_check``: told every held-out score (before training too).
        check_when: asked after every step (its number); True scores the held-out notes then too, besides
            the ``config.checks`` evenly spaced checks (e.g. after some minutes of training).
        cancel: checked before every step and between held-out notes; a cancelled run keeps the model as
            trained so far and the checks done so far.

    Raises:
        DataFileError: too few notes to hold some out, or a note with no readable word.
        ModelLoadError: the checkpoint's encoder does not fit a masked-LM model.
    """
    config = fitted(loaded, config)
    started = time.perf_counter()
    train_rows, held_rows = random_split(len(texts), config.validation_fraction, config.seed, "notes")
    lowercase = loaded.resolve_lowercase(config.lowercase)
    tokenizer = loaded.tokenizer(lowercase)
    examples = note_examples(tokenizer, [texts[row] for row in train_rows.tolist()], config.max_length)
    plans = held_out_plans(loaded, texts, held_rows, config)
    lengths = np.asarray([len(example["input_ids"]) for example in examples], dtype=np.int64)
    _per_epoch, total = planned_steps(len(examples), config)
    collate = masking_collator(tokenizer, probability=config.mlm_probability, whole_word=config.whole_word_mask,
                               seed=config.seed)
    checks: list[HeldOutCheck] = []
    due = check_points(total, config.checks)
    stopped_checking = [False]
    trained_tokens = [0]
    checking_seconds = [0.0]

    with seeded_rng(loaded.device, config.seed):
        model, new_head = masked_lm_model(loaded)
        head, encoder, trained_layers = trainable_parts(model, config.unfreeze_layers)
        first_trained = len(anatomy_of(model).layers) - len(trained_layers)
        view = training_view(loaded, model)
        predict_pieces = mlm_head(model)
        setup_seconds = time.perf_counter() - started

        def probed() -> FillMaskResult | None:
            model.eval()
            try:
                return _probe(view, probe, probe_span)
            finally:
                frozen_to_eval(model, first_trained)

        def check(step: int, fill: FillMaskResult | None = None) -> None:
            if stopped_checking[0] or (cancel is not None and cancel()):
                return
            began = time.perf_counter()
            report(progress, 0.95 * step / max(total, 1), f"Scoring {len(plans)} held-out notes after step {step}")
            model.eval()
            scored = pseudo_perplexity(view, plans, stride=config.held_out_stride, pieces=config.held_out_pieces,
                                       cancel=cancel)
            frozen_to_eval(model, first_trained)
            if scored is None:
                stopped_checking[0] = True
            else:
                checks.append(HeldOutCheck(step=step, pseudo_perplexity=scored[0], pieces=scored[1],
                                           fill=fill if fill is not None else probed(),
                                           seconds=time.perf_counter() - began))
                if on_check is not None:
                    on_check(checks[-1])
            checking_seconds[0] += time.perf_counter() - began

        def batch_loss(rows: np.ndarray) -> torch.Tensor | None:
            for _draw in range(REDRAWS):  # a short batch may draw no piece at all: draw its masks again
                batch = {key: value.to(loaded.device) for key, value in
                         collate([examples[row] for row in rows.tolist()]).items()}
                targets = batch["labels"]  # [b, t]: the original piece where masked, -100 elsewhere
                chosen = targets != -100
                if chosen.any():
                    break
            else:
                return None
            hidden = model.base_model(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"]).last_hidden_state  # [b, t, d]
            logits = predict_pieces(hidden[chosen])  # [masked, vocab]: the head only where it is scored
            trained_tokens[0] += int(batch["attention_mask"].sum())
            return F.cross_entropy(logits, targets[chosen])

        fill_before = probed()
        check(0, fill_before)
        shuffler = np.random.default_rng(config.seed)
        frozen_to_eval(model, first_trained)
        training_began = time.perf_counter()
        checking_seconds[0] = 0.0
        losses, cancelled = train_steps(
            model, head=head, encoder=encoder, config=config, total=total,
            batches=lambda epoch: length_batches(lengths, np.arange(len(examples)), config.batch_size, shuffler),
            loss_of=batch_loss, cancel=cancel, on_step=on_step, progress=progress, span=(0.0, 0.95),
            after_step=lambda step: check(step) if step in due or (check_when is not None and check_when(step))
            else None)
        train_seconds = time.perf_counter() - training_began - checking_seconds[0]
        if losses and not cancelled and (not checks or checks[-1].step != len(losses)):
            check(len(losses))  # the last score after the last step (a skipped batch moved it)
        fill_after = checks[-1].fill if checks and checks[-1].step == len(losses) and losses else (
            probed() if losses else None)
    model.eval()
    model.requires_grad_(False)
    report(progress, 1.0, "Done")
    result = PretrainResult(
        losses=np.asarray(losses, dtype=np.float32), total_steps=total, cancelled=cancelled or stopped_checking[0],
        train_rows=train_rows, held_out_rows=held_rows, examples=len(examples), trained_layers=trained_layers,
        new_head=new_head, checks=tuple(checks), tokens_trained=trained_tokens[0], train_seconds=train_seconds,
        seconds=time.perf_counter() - started, setup_seconds=setup_seconds, config=config,
        fill_before=fill_before, fill_after=fill_after)
    return Pretrained(model=model, tokenizer=private_tokenizer(loaded, lowercase), result=result,
                      base_name=loaded.info.name)
