"""Fine-tuning a classification head: learning, cancelling, saving and loading the checkpoint."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from cbert_core.analyses.intervals import wilson_interval
from cbert_core.corpus.collection import Collection, collection_from_texts
from cbert_core.errors import DataFileError, ExportError
from cbert_core.model.loading import load_model
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from cbert_core.training.finetune import FineTuneConfig, fine_tune
from tiny_models import write_family

FILLER = "patient the history of with and for in on is was daily normal left right reports alert".split()
FAST = dict(epochs=8, batch_size=8, unfreeze_layers=2, lr_encoder=3e-3, lr_head=1e-2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_task(count: int = 80, seed: int = 0) -> Collection:
    """Notes holding "fever" (label FEVER) or "cough" (label COUGH) among random filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        word = "fever" if index % 2 == 0 else "cough"
        words = rng.sample(FILLER, 5)
        words.insert(rng.randrange(6), word)
        texts.append(" ".join(words) + ".")
        labels.append(word.upper())
    return collection_from_texts(texts, labels=labels)


@pytest.fixture(scope="module")
def trained(tiny):
    before = {name: value.clone() for name, value in tiny.model.state_dict().items()}
    steps = []
    tuned = fine_tune(tiny, toy_task(), config=FineTuneConfig(**FAST), on_step=steps.append)
    return tuned, before, steps


def test_learns_a_separable_task_without_touching_the_shared_model(tiny, trained) -> None:
    tuned, before, steps = trained
    result = tuned.result
    assert result.validation_accuracy == 1.0 and result.macro_f1 == 1.0
    assert result.labels == ("COUGH", "FEVER") and result.confusion.sum() == len(result.validation_rows) == 16
    assert np.diag(result.confusion).tolist() == [8, 8]  # stratified split
    assert not set(result.train_rows) & set(result.validation_rows)
    assert result.steps_done == result.total_steps == len(steps) == 64 and not result.cancelled  # 64 notes / 8 x 8
    assert [report.step for report in steps[:3]] == [1, 2, 3] and steps[-1].loss == pytest.approx(result.losses[-1])
    assert result.losses[-10:].mean() < result.losses[:10].mean()
    assert result.cached_trunk and result.trained_layers == (0, 1)
    for name, value in tiny.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not any(parameter.requires_grad for parameter in tiny.model.parameters())
    assert tuned.model is not tiny.model


def test_saved_checkpoint_loads_as_a_classifier_and_traces(trained, tmp_path) -> None:
    tuned, _before, _steps = trained
    folder = tuned.save(tmp_path / "fever-vs-cough")
    loaded = load_model(str(folder))
    assert loaded.info.head_kind == "sequence-classification"
    assert loaded.info.labels == ("COUGH", "FEVER")
    result = trace(loaded, plan_note(loaded, "patient reports fever daily."))
    assert result.head.labels == ("COUGH", "FEVER")
    ids = torch.from_numpy(result.input_ids)[None]
    with torch.inference_mode():
        expected = tuned.model(input_ids=ids).logits[0].numpy()
    np.testing.assert_allclose(result.head.sequence_logits[0], expected, atol=1e-5)
    assert result.head.sequence_logits[0].argmax() == 1
    with pytest.raises(ExportError, match="already holds a model"):
        tuned.save(folder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        tuned.save(tmp_path / "file")


def test_cancel_stops_after_two_steps(tiny) -> None:
    done = []
    tuned = fine_tune(tiny, toy_task(), config=FineTuneConfig(**FAST), on_step=lambda r: done.append(r.step),
                      cancel=lambda: len(done) >= 2)
    result = tuned.result
    assert result.cancelled and result.steps_done == 2 and done == [1, 2]
    assert result.validation_accuracy is None and result.confusion is None

    def stale(fraction: float, message: str) -> None:
        if message.startswith("Step"):
            raise RuntimeError("the user changed the settings")

    with pytest.raises(RuntimeError, match="changed the settings"):
        fine_tune(tiny, toy_task(), config=FineTuneConfig(**FAST), progress=stale)


def test_cached_frozen_layers_train_exactly_like_running_them(tiny) -> None:
    settings = dict(epochs=1, batch_size=8, unfreeze_layers=1, max_steps=4)
    cached = fine_tune(tiny, toy_task(40), config=FineTuneConfig(**settings)).result
    direct = fine_tune(tiny, toy_task(40), config=FineTuneConfig(**settings, cache_bytes=0)).result
    assert cached.cached_trunk and not direct.cached_trunk
    np.testing.assert_allclose(cached.losses, direct.losses, rtol=1e-4)
    assert cached.trained_layers == (1,)


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_other_families_train_save_and_load(family, tmp_path) -> None:
    loaded = load_model(str(write_family(tmp_path / family, family)))
    settings = dict(epochs=1, batch_size=4, unfreeze_layers=1, max_steps=3)
    cached = fine_tune(loaded, toy_task(20), config=FineTuneConfig(**settings))
    direct = fine_tune(loaded, toy_task(20), config=FineTuneConfig(**settings, cache_bytes=0)).result
    np.testing.assert_allclose(cached.result.losses, direct.losses, rtol=1e-4)
    reloaded = load_model(str(cached.save(tmp_path / f"{family}-classifier")))
    assert reloaded.info.head_kind == "sequence-classification" and reloaded.info.labels == ("COUGH", "FEVER")
    assert trace(reloaded, plan_note(reloaded, "patient reports fever.")).head.sequence_logits.shape == (1, 2)


def test_unusable_labels_are_refused(tiny) -> None:
    with pytest.raises(DataFileError, match="label column"):
        fine_tune(tiny, collection_from_texts(["fever", "cough"]))
    with pytest.raises(DataFileError, match="two different labels"):
        fine_tune(tiny, collection_from_texts(["fever", "cough", "fever"], labels=["A", "A", "A"]))
    with pytest.raises(DataFileError, match="at least 2 notes"):
        fine_tune(tiny, collection_from_texts(["fever", "cough", "fever", "cough", "fever"],
                                              labels=["A", "A", "A", "A", "B"]))


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile (1.96 in printed tables)


def wilson_by_hand(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson bounds are the proportions p that an observed share p̂ = k/n lies within z standard
    errors of: (p̂ - p)² = z² p (1 - p) / n, i.e. (1 + z²/n) p² - (2 p̂ + z²/n) p + p̂² = 0.
    Solved with the quadratic formula."""
    share = successes / total
    a = 1 + z * z / total
    b = -(2 * share + z * z / total)
    c = share * share
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("successes", "total"), [(5, 6), (1, 6), (3, 6), (17, 20), (83, 100), (1, 2)])
def test_wilson_interval_solves_the_score_equation(successes: int, total: int) -> None:
    lower, upper = wilson_interval(successes, total)
    assert (lower, upper) == pytest.approx(wilson_by_hand(successes, total), abs=1e-12)
    assert lower < successes / total < upper


def test_wilson_interval_at_the_edges_and_other_confidences() -> None:
    # No success: the lower bound is 0 and the upper solves p = z²(1-p)/n, i.e. p = z²/(n+z²); n successes mirror it.
    assert wilson_interval(0, 6) == pytest.approx((0.0, Z95**2 / (6 + Z95**2)), abs=1e-12)
    assert wilson_interval(6, 6) == pytest.approx((6 / (6 + Z95**2), 1.0), abs=1e-12)
    # Half right: symmetric around one half.
    lower, upper = wilson_interval(10, 20)
    assert lower + upper == pytest.approx(1.0)
    # 90% uses z = 1.6449 (the 95% quantile); a wider confidence gives a wider interval.
    assert wilson_interval(5, 6, 0.90) == pytest.approx(wilson_by_hand(5, 6, z=1.6448536269514722), abs=1e-12)
    assert wilson_interval(5, 6, 0.99)[0] < wilson_interval(5, 6)[0] < wilson_interval(5, 6, 0.90)[0]
    # The same share on ten times the notes: a narrower interval.
    widths = [upper - lower for lower, upper in (wilson_interval(5 * k, 6 * k) for k in (1, 10, 100))]
    assert widths[0] > widths[1] > widths[2]
    for successes, total in ((7, 6), (-1, 6), (0, 0)):
        with pytest.raises(ValueError):
            wilson_interval(successes, total)


def test_a_result_says_how_many_notes_its_accuracy_rests_on(trained) -> None:
    result = trained[0].result
    assert result.validation_size == 16 and result.validation_correct == 16
    assert result.accuracy_interval() == pytest.approx((16 / (16 + Z95**2), 1.0), abs=1e-12)
