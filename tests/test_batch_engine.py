"""The batch engine runs each note through the model once for every analysis asked, and what it reads from
that one pass equals what the single-note analyses compute; the README's batch example runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbert_core.analyses.labelling import classify, span_probabilities, token_labels
from cbert_core.analyses.similarity import embedding_similarity
from cbert_core.corpus.batch import BatchSettings, run_local
from cbert_core.corpus.embeddings import note_embeddings
from cbert_core.model.loading import load_model
from cbert_core.run.encode import planned_passes
from cbert_core.run.plan import RunOptions, plan_notes
from cbert_core.text.words import whitespace_words
from notes import CLINICAL_NOTE, LONG_NOTE
from tiny_models import write_bert

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTS = ["Patient denies chest pain.", "No fever.", CLINICAL_NOTE, LONG_NOTE[:1500], "Patient reports cough and fever."]


def frame(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"row": range(len(texts)), "id": [f"n{i}" for i in range(len(texts))], "text": texts})


@contextmanager
def counted_passes(loaded):
    """How many times the model's word embeddings are looked up (once per forward pass of a batch)."""
    calls = []
    handle = loaded.anatomy.embeddings.word.register_forward_hook(lambda *_args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return load_model(str(write_bert(tmp_path_factory.mktemp("clf") / "m", head="sequence-classification")))


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return load_model(str(write_bert(tmp_path_factory.mktemp("ner") / "m", head="token-classification",
                                     labels=("O", "B-PROBLEM", "I-PROBLEM"))))


def test_one_pass_for_tokens_embeddings_and_class_predictions(classifier) -> None:
    plans = plan_notes(classifier, TEXTS, RunOptions(max_chars=2**62))
    windows = sum(len(plan.windows) for plan in plans)
    assert windows > len(TEXTS)  # long notes run in several windows
    settings = BatchSettings(model="unused", analyses=("tokens", "embeddings", "predictions"), batch_size=64)
    with counted_passes(classifier) as calls:
        out = run_local(frame(TEXTS), settings, chunk_size=len(TEXTS), loaded=classifier)
    # Every window once, in the batches the engine plans: one pass for tokens, embeddings and predictions.
    batches = planned_passes([window.size + 2 for plan in plans for window in plan.windows], batch_size=64)
    assert len(calls) == len(batches.forward) < windows
    for plan, probs, label in zip(plans, out["label_probs"], out["predicted_label"]):
        alone = classify(classifier, plan)
        np.testing.assert_allclose(probs, alone.probs, atol=2e-5)
        assert label == alone.labels[int(np.argmax(alone.probs))]
    vectors = note_embeddings(classifier, plans)[:, -1]
    np.testing.assert_allclose(np.stack(out["embedding"].to_numpy()), vectors, atol=2e-5)


def test_zero_shot_from_the_pass_matches_embedding_similarity(tiny) -> None:
    descriptions = ("chest pain", "no fever")
    settings = BatchSettings(model="unused", analyses=("zero-shot", "embeddings"), labels=descriptions, layer=1,
                             pooling="cls", batch_size=64)
    with counted_passes(tiny) as calls:
        out = run_local(frame(TEXTS), settings, chunk_size=len(TEXTS), loaded=tiny)
    plans = plan_notes(tiny, TEXTS, RunOptions(max_chars=2**62))
    # The windows in the batches the engine plans, and one batch of the descriptions with the reference phrases
    # for the whole run.
    batches = planned_passes([window.size + 2 for plan in plans for window in plan.windows], batch_size=64)
    assert len(calls) == len(batches.forward) + 1
    for plan, similarity, probs in zip(plans, out["zero_shot_similarity"], out["zero_shot_probs"]):
        alone = embedding_similarity(tiny, plan, descriptions, per_sentence=False)
        np.testing.assert_allclose(similarity, alone.note_similarity, atol=2e-5)
        np.testing.assert_allclose(probs, alone.note_probs, atol=2e-4)
    np.testing.assert_allclose(np.stack(out["embedding"].to_numpy()),
                               note_embeddings(tiny, plans, pooling="cls")[:, 1], atol=2e-5)


def test_token_labels_and_word_probabilities_from_the_pass(tagger) -> None:
    settings = BatchSettings(model="unused", analyses=("predictions",), word_probs=True)
    out = run_local(frame(TEXTS), settings, chunk_size=2, loaded=tagger)
    plans = plan_notes(tagger, TEXTS, RunOptions(max_chars=2**62))
    for plan, entities, word_probs in zip(plans, out["entities"], out["word_probs"]):
        alone = token_labels(tagger, plan)
        assert [(e["label"], e["start"], e["end"]) for e in entities] == \
            [(e.label, e.start, e.end) for e in alone.entities]
        expected = span_probabilities(alone, whitespace_words(plan.text))
        assert word_probs.shape == (len(plan.text.split()), 3)
        np.testing.assert_allclose(word_probs, expected, atol=2e-5)


def test_span_probabilities_read_the_first_piece_of_each_word(tagger) -> None:
    plan = plan_notes(tagger, ["Patient denies  chest-pain ."])[0]
    tagged = token_labels(tagger, plan)
    spans = whitespace_words(plan.text)
    assert [plan.text[a:b] for a, b in spans] == ["Patient", "denies", "chest-pain", "."]
    probs = span_probabilities(tagged, spans)
    for (start, _end), row in zip(spans, probs):
        first = int(np.flatnonzero(tagged.offsets[:, 0] == start)[0])
        np.testing.assert_array_equal(row, tagged.probs[first])


def test_readme_batch_example_runs_as_written(tmp_path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Batch analyses from the command line"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:3] == [".venv/bin/python", "-m", "cbert_core"]
    output = words[words.index("-o") + 1]
    words[words.index("-o") + 1] = str(tmp_path / output)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a fresh machine without a network: the bundled model
    finished = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, env=environment, capture_output=True,
                              text=True, timeout=850)
    assert finished.returncode == 0, finished.stderr[-3000:]
    written = pd.read_parquet(tmp_path / output)
    assert len(written) > 200 and {"tokens", "embedding"} <= set(written.columns)
    assert written.filter(like="label").notna().all().all()
