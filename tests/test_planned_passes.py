"""The passes each long computation plans (for time estimates), counted by hand on small notes.

The tiny test model reads at most 64 positions (62 word pieces between [CLS] and [SEP]); every
word of its vocabulary is one piece, so a note's pieces are counted from its words.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cbert_core.analyses import predict
from cbert_core.corpus.collection import collection_from_texts
from cbert_core.corpus.embeddings import planned_passes
from cbert_core.run.encode import planned_passes as planned_batches
from cbert_core.run.plan import RunOptions, plan_note, plan_notes
from cbert_core.serving.speed import GRADIENT_COST, Passes
from cbert_core.training.finetune import FineTuneConfig, fine_tune
from cbert_core.training.finetune import planned_passes as planned_training

WORDS = "patient denies chest pain and cough with no fever on aspirin".split()  # 11 words, 11 pieces


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_surprise_map_copies_per_window_counted_by_hand(tiny) -> None:
    # 16 pieces (one a typed [MASK]) in windows of 10 sharing 4: window 0 holds pieces 0-9 and owns 0-7
    # (one of them the mask), window 1 holds pieces 6-15 and owns 8-15.
    words = (WORDS + WORDS)[:15]
    plan = plan_note(tiny, " ".join(words[:3] + ["[MASK]"] + words[3:]), RunOptions(overlap=4), max_content=10)
    assert [(w.start, w.stop) for w in plan.windows] == [(0, 10), (6, 16)]
    assert plan.owner.tolist() == [0] * 8 + [1] * 8
    positions = 10 + 2  # [CLS] + 10 pieces + [SEP]
    assert predict.planned_passes(plan, stride=0) == Passes(forward=((positions, 7), (positions, 8)))
    assert predict.planned_passes(plan, stride=4) == Passes(forward=((positions, 4), (positions, 4)))
    # A stride at least the window's own pieces is exact: 7 and 8 copies.
    assert predict.planned_passes(plan, stride=8).rows == 7 + 8


def test_surprise_map_runs_what_it_planned(tiny) -> None:
    note = " ".join(WORDS[:5] + ["[MASK]"] + WORDS[5:])  # 11 scorable pieces and one typed mask
    plan = plan_note(tiny, note)
    for stride, copies in ((0, 11), (8, 8), (4, 4)):
        assert predict.planned_passes(plan, stride=stride) == Passes(forward=((12 + 2, copies),))
        assert predict.pseudo_log_likelihood(tiny, plan, stride=stride).forward_rows == copies


def test_collection_windows_are_batched_and_padded_as_the_embedding_runs_them(tiny) -> None:
    long_note = " ".join((WORDS * 10)[:100])  # 100 pieces: windows of 62 with an overlap of 31
    texts = [" ".join(WORDS[:4]), " ".join(WORDS[:2]), long_note]
    # Windows of the long note: [0, 62), [31, 93), [62, 100) -> 64, 64 and 40 positions.
    lengths = [4 + 2, 2 + 2, 64, 64, 40]
    plans = plan_notes(tiny, texts)
    assert planned_passes(plans) == Passes(forward=((64, 5),))  # one batch of 16, padded to 64
    assert planned_passes(plans, batch_size=2) == Passes(forward=((64, 2), (40, 2), (4, 1)))
    assert planned_passes(plans, long_notes="first") == Passes(forward=((64, 3),))
    assert planned_batches(lengths, batch_size=16, batch_tokens=130) == Passes(forward=((64, 2), (40, 3)))


def test_training_counts_epochs_times_examples_at_their_cut_lengths(tiny) -> None:
    texts = [" ".join(np.roll(WORDS, shift)[:9]) for shift in range(10)]  # 9 pieces each
    collection = collection_from_texts(texts, labels=["A", "B"] * 5)
    config = FineTuneConfig(epochs=3, batch_size=4, unfreeze_layers=1, max_length=8, validation_fraction=0.2)
    plan = planned_training(tiny, collection, config)
    # 2 held out (20 % of 10), 8 trained; every example cut to 8 positions ([CLS] + 6 pieces + [SEP]).
    assert plan.examples == ((8, 8),) and plan.validation == ((8, 2),)
    assert plan.epochs == 3 and plan.trained_share == pytest.approx(1 / 2) and plan.cached_trunk
    # Frozen half once (cached), trained half forward + backward every epoch; one row per held-out note.
    (trained, trained_rows), (checked, checked_rows) = plan.forward_rows()
    assert (trained, checked, checked_rows) == (8, 8, 2.0)
    assert trained_rows == pytest.approx(8 * (0.5 + 3 * GRADIENT_COST * 0.5))
    early = planned_training(tiny, collection, dataclasses.replace(config, max_steps=3))
    assert early.epochs == pytest.approx(1.5)  # 2 steps an epoch
    uncached = planned_training(tiny, collection, dataclasses.replace(config, cache_bytes=100))
    assert not uncached.cached_trunk
    assert uncached.forward_rows()[0][1] == pytest.approx(8 * (3 * 0.5 + 3 * GRADIENT_COST * 0.5))
    run = fine_tune(tiny, collection, config=config).result
    assert run.cached_trunk == plan.cached_trunk and len(run.train_rows) == 8 and run.truncated_examples == 10
    assert 0 < run.setup_seconds < run.seconds
