"""Layer-wise linear probes: a synthetic task readable at one layer, the control task, the features, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbert_core.analyses.probes import control_labels, fit_probes, phrase_span, probe_features, run_probes
from cbert_core.corpus.collection import collection_from_table, column_values, read_table
from cbert_core.errors import DataFileError
from cbert_core.model.loading import LoadedModel
from cbert_core.run.forward import embed, run_encoder, word_vectors
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.text.examples import EXAMPLE_COLLECTION, EXAMPLE_COLLECTION_FINDINGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic(n: int = 240, layers: int = 4, width: int = 16, readable: int = 2, seed: int = 0):
    """Labels readable linearly at layer ``readable`` only; 40 phrase types, labels independent of the phrase."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    phrases = [f"finding {i}" for i in rng.integers(0, 40, n)]
    features = rng.normal(size=(n, layers, width))
    features[:, readable, 0] += 4.0 * (2 * labels - 1)
    return features, labels, phrases


def test_a_task_separable_at_one_layer_is_read_there_and_its_control_stays_near_chance() -> None:
    features, labels, phrases = synthetic()
    control = control_labels(labels, phrases)
    accuracy, controlled = fit_probes(features, labels, control, folds=5)
    assert accuracy.shape == controlled.shape == (4, 5)
    assert accuracy[2].mean() > 0.97
    assert np.all(np.delete(accuracy.mean(1), 2) < 0.65)
    chance = max(control.mean(), 1 - control.mean())  # the control's commonest label
    assert np.all(controlled.mean(1) < chance + 0.08)
    selectivity = accuracy.mean(1) - controlled.mean(1)
    assert int(np.argmax(selectivity)) == 2 and selectivity[2] > 0.3


def test_the_control_task_gives_each_phrase_one_label_drawn_from_the_label_frequencies() -> None:
    labels = np.array([0] * 300 + [1] * 100)
    phrases = [f"p{i % 200}" for i in range(400)]
    control = control_labels(labels, phrases, seed=3)
    for phrase in set(phrases):
        assert len({int(control[i]) for i in range(400) if phrases[i] == phrase}) == 1
    assert 0.1 < control.mean() < 0.4  # about a quarter, as the labels
    shuffled = control_labels(labels, None)
    assert sorted(shuffled) == sorted(labels) and not np.array_equal(shuffled, labels)


def test_phrase_span_ignores_case_and_spacing() -> None:
    assert phrase_span("No  Chest\tpain today", "chest pain") == (4, 14)
    assert phrase_span("No fever", "cough") is None


def test_probe_features_read_every_layer_of_one_pass(tiny: LoadedModel) -> None:
    plans = [plan_note(tiny, text) for text in ("Patient denies chest pain.", "No fever today and cough.")]
    cls = probe_features(tiny, plans, pooling="cls")
    mean = probe_features(tiny, plans, pooling="mean")
    phrase = probe_features(tiny, plans, pooling="phrase", spans=[phrase_span(p.text, "chest pain") or (0, 1)
                                                                    for p in plans])
    assert cls.shape == (2, tiny.info.num_layers + 1, tiny.info.hidden_size)
    with torch.inference_mode():
        ids = torch.tensor(plans[0].window_ids(plans[0].windows[0]))[None]
        inputs: list[torch.Tensor] = []
        last = run_encoder(tiny, embed(tiny, word_vectors(tiny, ids)), layer_inputs=inputs)
    states = torch.cat([*inputs, last]).numpy()  # [layer + 1, t, d]
    np.testing.assert_allclose(cls[0], states[:, 0], atol=1e-4)
    np.testing.assert_allclose(mean[0], states[:, 1:-1].mean(1), atol=1e-4)
    span = plans[0].text.index("chest pain")
    pieces = np.flatnonzero((plans[0].tokens.offsets[:, 0] < span + 10) & (plans[0].tokens.offsets[:, 1] > span))
    np.testing.assert_allclose(phrase[0], states[:, pieces + 1].mean(1), atol=1e-4)


def test_probes_over_the_example_collection_and_without_heads(tiny: LoadedModel) -> None:
    texts, labels = zip(*EXAMPLE_COLLECTION)
    plans = [plan_note(tiny, text) for text in texts]
    result = run_probes(tiny, plans, labels, pooling="phrase", phrases=EXAMPLE_COLLECTION_FINDINGS, folds=3)
    assert result.label_names == ("affirmed", "negated")
    assert result.accuracy.shape == (tiny.info.num_layers + 1, 3) and result.dropped == 0
    assert 0 <= result.best_layer <= tiny.info.num_layers
    assert result.selectivity.shape == (tiny.info.num_layers + 1,)
    knocked = [plan.with_options(knocked_out=frozenset({(0, 0), (1, 1)})) for plan in plans]
    without = run_probes(tiny, knocked, labels, pooling="cls", folds=3)
    intact = run_probes(tiny, plans, labels, pooling="cls", folds=3)
    assert without.knocked_out == frozenset({(0, 0), (1, 1)})
    np.testing.assert_array_equal(without.accuracy[0], intact.accuracy[0])  # the embeddings have no heads
    features_without = probe_features(tiny, knocked[:2], pooling="cls")
    features_intact = probe_features(tiny, plans[:2], pooling="cls")
    assert not np.allclose(features_without[:, -1], features_intact[:, -1])


def test_bad_probe_inputs_are_messages(tiny: LoadedModel) -> None:
    plans = [plan_note(tiny, text, RunOptions()) for text in ("No fever.", "Fever.", "Cough.", "No cough.")]
    with pytest.raises(DataFileError, match="two different labels"):
        run_probes(tiny, plans, ["a"] * 4)
    with pytest.raises(DataFileError, match="at least two notes"):
        run_probes(tiny, plans, ["a", "a", "a", "b"])
    with pytest.raises(DataFileError, match="target phrase column"):
        run_probes(tiny, plans, ["a", "b", "a", "b"], pooling="phrase")
    with pytest.raises(DataFileError, match="No note contains"):
        run_probes(tiny, plans, ["a", "b", "a", "b"], pooling="phrase", phrases=["rash"] * 4)
    with pytest.raises(DataFileError, match="disagree"):
        run_probes(tiny, plans, ["a", "b"])
    plans.append(plan_note(tiny, "Rash.", RunOptions()))
    dropped = run_probes(tiny, plans, ["n", "a", "a", "n", "a"], pooling="phrase",
                         phrases=["fever", "fever", "cough", "cough", "wheeze"], folds=2)
    assert dropped.dropped == 1 and dropped.examples == 4


def test_an_uploaded_target_phrase_column_follows_the_notes_kept() -> None:
    data = b"text,label,finding\nNo fever.,negated,fever\n,affirmed,cough\nReports cough.,affirmed, cough \n"
    table = read_table(data, name="upload.csv")
    collection = collection_from_table(table, text_column="text", label_column="label")
    assert len(collection) == 2  # the empty note is left out
    assert column_values(table, collection, "finding") == ("fever", "cough")
    with pytest.raises(DataFileError):
        column_values(table, collection, "Condition")
