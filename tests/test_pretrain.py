"""Continued masked-LM pretraining: transformers' masking at its documented rates, the new head's decoder
tied to the word embeddings, the held-out pseudo-perplexity falling as a tiny model learns a tiny corpus,
cancelling that keeps what was done, and the checkpoint the picker loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbert_core.errors import ExportError
from cbert_core.model.loading import load_model
from cbert_core.run.plan import plan_note
from cbert_core.training.pretrain import (
    PretrainConfig,
    masked_lm_model,
    masking_collator,
    note_examples,
    pretrain,
)
from tiny_models import tiny_vocab, write_bert

SENTENCES = ("patient denies chest pain .", "patient reports fever and cough .", "no evidence of pneumonia .",
             "history of present illness : shortness of breath .", "aspirin daily and metoprolol daily .")
CORPUS = tuple(SENTENCES[index % len(SENTENCES)] for index in range(40))
FAST = dict(batch_size=8, unfreeze_layers=2, lr_head=3e-2, lr_encoder=1e-2, weight_decay=0.0, warmup_fraction=0.05,
            max_length=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_model(str(write_bert(tmp_path_factory.mktemp("encoder") / "bare", head="encoder")))


def random_batch(tiny, rows: int, width: int, seed: int = 0) -> list[dict]:
    tokenizer = tiny.tokenizer()
    rng = np.random.default_rng(seed)
    ordinary = np.arange(len(tokenizer.all_special_ids) + 1, len(tiny_vocab()))
    examples = []
    for _row in range(rows):
        ids = rng.choice(ordinary, size=width).tolist()
        examples.append({"input_ids": [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id],
                         "special_tokens_mask": [1] + [0] * width + [1],
                         "offset_mapping": [(0, 0)] + [(2 * i, 2 * i + 1) for i in range(width)] + [(0, 0)]})
    return examples


def test_collator_masks_15_percent_of_pieces_80_10_10_and_never_a_special(tiny) -> None:
    examples = random_batch(tiny, rows=256, width=60)
    batch = masking_collator(tiny.tokenizer(), seed=1)(examples)
    original = torch.tensor([example["input_ids"] for example in examples])
    chosen = batch["labels"] != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # [CLS] and [SEP]
    content = 256 * 60
    share = chosen.sum().item() / content
    assert abs(share - 0.15) < 0.015  # 15,360 pieces: the binomial's standard deviation is 0.003
    assert torch.equal(batch["labels"][chosen], original[chosen])
    mask_id = tiny.tokenizer().mask_token_id
    masked = (batch["input_ids"][chosen] == mask_id).float().mean().item()
    kept = (batch["input_ids"][chosen] == original[chosen]).float().mean().item()
    replaced = 1 - masked - kept
    # About 2,300 chosen pieces: each share within 3 of its standard deviations (0.008 for 80 %, 0.006 for 10 %).
    assert abs(masked - 0.8) < 0.03 and abs(kept - 0.1) < 0.025 and abs(replaced - 0.1) < 0.025
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])  # nothing else changes
    again = masking_collator(tiny.tokenizer(), seed=1)
    first, second = again(examples)["labels"], again(examples)["labels"]
    assert not torch.equal(first != -100, second != -100)  # dynamic: a new draw at every batch


def test_whole_word_masking_hides_every_piece_of_a_chosen_word(tiny) -> None:
    text = " ".join(["COPD exacerbation coughed daily , patient reports fever"] * 6)
    examples = note_examples(tiny.tokenizer(), [text] * 64, max_length=64)
    batch = masking_collator(tiny.tokenizer(), whole_word=True, seed=2)(examples)
    chosen = batch["labels"] != -100
    assert chosen.any()
    mask_id = tiny.tokenizer().mask_token_id
    assert (batch["input_ids"][chosen] == mask_id).all()  # transformers' whole-word masking uses [MASK] only
    tokens = tiny.tokenizer().convert_ids_to_tokens(examples[0]["input_ids"])
    for row in range(len(examples)):
        for position, token in enumerate(tokens):
            if token.startswith("##"):  # a continuation piece is chosen exactly when its word's first piece is
                assert chosen[row, position] == chosen[row, position - 1]


def test_a_bare_encoder_gets_a_masked_lm_head_whose_decoder_is_the_word_embeddings(encoder, tmp_path) -> None:
    model, new = masked_lm_model(encoder)
    decoder, words = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert new and decoder is words and decoder.data_ptr() == words.data_ptr()
    assert torch.equal(words, encoder.model.get_input_embeddings().weight)  # a copy of the shared encoder...
    assert words.data_ptr() != encoder.model.get_input_embeddings().weight.data_ptr()  # ...not the same memory
    trained = pretrain(encoder, CORPUS, config=PretrainConfig(**FAST, max_steps=3, checks=1, held_out_pieces=20))
    tied = trained.model.get_output_embeddings().weight
    assert tied is trained.model.get_input_embeddings().weight and trained.result.new_head
    folder = trained.save(tmp_path / "adapted")
    reloaded = load_model(str(folder))
    assert reloaded.info.head_kind == "masked-lm"
    assert reloaded.model.get_output_embeddings().weight is reloaded.model.get_input_embeddings().weight
    head = dict(trained.model.named_parameters())
    for name, value in reloaded.model.named_parameters():
        assert torch.equal(value, head[name]), name


def test_a_masked_lm_keeps_its_own_head(tiny) -> None:
    model, new = masked_lm_model(tiny)
    assert not new
    shared = dict(tiny.model.named_parameters())
    for name, value in model.named_parameters():
        assert torch.equal(value, shared[name]), name


@pytest.fixture(scope="module")
def learned(tiny):
    before = {name: value.clone() for name, value in tiny.model.state_dict().items()}
    probe = plan_note(tiny, "patient denies chest [MASK] .")
    steps, checks = [], []
    trained = pretrain(tiny, CORPUS, config=PretrainConfig(**FAST, epochs=20, checks=2), probe=probe,
                       on_step=steps.append, on_check=checks.append)
    return trained, before, steps, checks


def test_held_out_pseudo_perplexity_falls_as_a_tiny_model_learns_a_tiny_corpus(tiny, learned) -> None:
    trained, shared_before, steps, checks = learned
    result = trained.result
    assert not result.cancelled and result.steps_done == result.total_steps == len(steps)
    assert [check.step for check in result.checks] == [0, result.total_steps // 2, result.total_steps]
    assert checks == list(result.checks)
    first, last = result.checks[0], result.checks[-1]
    assert first.pieces == last.pieces > 0
    assert last.pseudo_perplexity < first.pseudo_perplexity / 2
    assert result.losses[-10:].mean() < result.losses[:10].mean()
    # The held-out notes are a visible, separate share of the corpus.
    assert len(result.held_out_rows) == 4 and not set(result.held_out_rows) & set(result.train_rows)
    # The note's fill-mask before and after: the untrained guesses are any of the ~200 pieces, the trained
    # ones the corpus's own words.
    corpus_words = set(" ".join(SENTENCES).split())
    before = sum(token in corpus_words for token in result.fill_before.top_tokens[0][:5])
    after = sum(token in corpus_words for token in result.fill_after.top_tokens[0][:5])
    assert after == 5 and before < after
    for name, value in tiny.model.state_dict().items():  # the shared model is untouched
        assert torch.equal(value, shared_before[name]), name


def test_cancelling_keeps_the_steps_done_and_the_scores_measured(tiny, tmp_path) -> None:
    done: list[int] = []
    probe = plan_note(tiny, "patient denies chest [MASK] .")
    start = {name: value.clone() for name, value in masked_lm_model(tiny)[0].named_parameters()}
    trained = pretrain(tiny, CORPUS, config=PretrainConfig(**FAST, epochs=20, checks=2), probe=probe,
                       on_step=lambda report: done.append(report.step), cancel=lambda: len(done) >= 3)
    result = trained.result
    assert result.cancelled and result.steps_done == 3 and done == [1, 2, 3] and result.total_steps > 3
    assert [check.step for check in result.checks] == [0]  # scored before training; the next score was not due
    assert result.fill_before is not None and result.fill_after is not None  # the note as the model stands now
    changed = [name for name, value in trained.model.named_parameters() if not torch.equal(value, start[name])]
    assert changed  # the three steps' training is in the model that is kept
    reloaded = load_model(str(trained.save(tmp_path / "part-trained")))
    assert reloaded.info.head_kind == "masked-lm"
    # Cancelling while the held-out notes are scored stops the scoring too.
    calls = []
    stopped = pretrain(tiny, CORPUS, config=PretrainConfig(**FAST, epochs=2, checks=1),
                       cancel=lambda: calls.append(1) or len(calls) > 2)
    assert stopped.result.cancelled and stopped.result.checks == () and stopped.result.steps_done == 0


def test_an_unwritable_folder_is_a_message(learned, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="could not be saved to .*a-file.* Choose a folder you can write to"):
        learned[0].save(blocker / "model")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        learned[0].save(blocker)


def test_extra_checks_when_asked_and_examples_no_longer_than_the_model_reads(tiny) -> None:
    long_notes = tuple(" ".join(SENTENCES * 6) for _ in range(10))  # about 150 pieces each
    asked = []
    trained = pretrain(tiny, long_notes, config=PretrainConfig(**{**FAST, "max_length": 100_000}, max_steps=3,
                                                               checks=0, held_out_pieces=30),
                       check_when=lambda step: asked.append(step) or step == 2)
    result = trained.result
    assert asked == [1, 2, 3] and [check.step for check in result.checks] == [0, 2, 3]  # 3: the last step
    assert result.config.max_length == tiny.info.max_tokens  # cut to the positions the model has
    assert result.examples > 9  # so each long note became several examples
